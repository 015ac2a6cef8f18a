"""Feature-interaction layers over stacked field embeddings.

Notation: ``E in R^{B x n x d}`` holds the ``n`` field embeddings ``e_1..e_n in R^d`` of each example,
``x in R^{B x D}`` a flat feature vector. keras-rs already ships the DCN cross layer
(``keras_rs.layers.FeatureCross``) and the DLRM dot interaction (``keras_rs.layers.DotInteraction``);
this module adds what it lacks: ``FM`` (DeepFM), ``AttentionFM`` (C2AL / Wukong's optimized FM), ``AFM``,
``LowRankMixtureCross`` (DCN-Mix) and ``LinearCompression`` (Wukong's LCB). FinalMLP's two-stream
aggregation on flat vectors is ``layers.fusion.BilinearFusion``.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from layers.blocks import MLP
from layers.embeddings import PACKAGE
from layers import validation
from layers.initializers import fresh_initializer


def _field_shape(input_shape, argument: str) -> tuple[int, int]:
    """``(n, d)`` of a ``(B, n, d)`` input shape; raises ValueError naming ``argument`` otherwise."""
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[1] is None or shape[2] is None:
        raise ValueError(f"{argument}: expected a (B, n, d) tensor with known n and d, got shape {shape}")
    return int(shape[1]), int(shape[2])


@keras.saving.register_keras_serializable(package=PACKAGE)
class FM(keras.layers.Layer):
    """Second-order factorization machine in the O(n*d) sum-square form (Rendle 2010; DeepFM's FM part).

    For every embedding coordinate ``f``:

        v_f = 1/2 * [ (sum_i e_{i,f})^2 - sum_i e_{i,f}^2 ] = sum_{i<j} e_{i,f} * e_{j,f}

    * ``reduce_sum=True``: ``y = [b] + [sum_i w_i] + sum_f v_f``, shape ``(B, 1)``; the interaction part
      equals ``sum_{i<j} <e_i, e_j>``. ``w_i`` are the per-field first-order weights passed as
      ``first_order`` (e.g. a width-1 embedding lookup); ``b`` is a learned scalar bias, present only
      with ``use_bias=True``. Either bracketed term is left out when not given.
    * ``reduce_sum=False``: ``y = v``, the bi-interaction vector of shape ``(B, d)`` (NFM style). A
      scalar first-order term or bias has no meaning per coordinate there, so ``use_bias=True`` and
      ``first_order`` are rejected with ``reduce_sum=False``.

    The sums are computed in float32 and cast to the compute dtype, because the difference of squares
    cancels badly in bfloat16.

    Args:
      reduce_sum: sum the interaction over the ``d`` coordinates (``(B, 1)``) or keep them (``(B, d)``).
      use_bias: add a learned scalar bias ``b`` (needs ``reduce_sum=True``).
      bias_initializer: initializer of ``b``.

    Call arguments:
      embeddings: ``(B, n, d)`` field embeddings ``E``.
      first_order: optional ``(B, n)`` or ``(B, n, 1)`` per-field linear weights ``w_i``, summed over the
        fields and added (needs ``reduce_sum=True``).

    Returns:
      ``(B, 1)`` with ``reduce_sum=True``, else ``(B, d)``.

    Example:

    >>> fm = FM(use_bias=True)
    >>> e = np.array([[[1., 2.], [3., 4.], [5., 6.]]], "float32")  # <e1,e2>+<e1,e3>+<e2,e3> = 11+17+39
    >>> keras.ops.convert_to_numpy(fm(e)).tolist(), fm.count_params()
    ([[67.0]], 1)
    >>> keras.ops.convert_to_numpy(fm(e, first_order=np.array([[0.5, 0.25, 0.25]], "float32"))).tolist()
    [[68.0]]
    >>> tuple(FM(reduce_sum=False)(e).shape)
    (1, 2)
    """

    def __init__(self, reduce_sum: bool = True, use_bias: bool = False, bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.reduce_sum = bool(reduce_sum)
        self.use_bias = bool(use_bias)
        if self.use_bias and not self.reduce_sum:
            raise ValueError("use_bias: a scalar bias needs reduce_sum=True")
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        self._n, self._d = _field_shape(input_shape, "embeddings")
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(1,), initializer=self.bias_initializer)

    def call(self, embeddings, first_order=None):
        e = ops.cast(embeddings, "float32")
        square_of_sum = ops.square(ops.sum(e, axis=1))            # (B, d)
        sum_of_square = ops.sum(ops.square(e), axis=1)            # (B, d)
        y = 0.5 * (square_of_sum - sum_of_square)
        if not self.reduce_sum:
            if first_order is not None:
                raise ValueError("first_order: a first-order term needs reduce_sum=True")
            return ops.cast(y, self.compute_dtype)
        y = ops.sum(y, axis=1, keepdims=True)                     # (B, 1)
        if first_order is not None:
            w = ops.cast(first_order, "float32")
            if len(w.shape) == 3 and w.shape[-1] == 1:
                w = ops.squeeze(w, axis=-1)
            if len(w.shape) != 2 or (w.shape[1] is not None and w.shape[1] != self._n):
                raise ValueError(f"first_order: expected shape (B, {self._n}) or (B, {self._n}, 1), "
                                 f"got {tuple(first_order.shape)}")
            y = y + ops.sum(w, axis=1, keepdims=True)
        if self.use_bias:
            y = y + ops.cast(self.bias, "float32")
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, embeddings_shape, first_order_shape=None):
        return (embeddings_shape[0], 1 if self.reduce_sum else embeddings_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({
            "reduce_sum": self.reduce_sum,
            "use_bias": self.use_bias,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config


_ATTENTION_FM_MODES = ("static", "dynamic")
_ATTENTION_FM_NORMALIZE = (None, "softmax")


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionFM(keras.layers.Layer):
    """Attention / compressed factorization machine: ``G = S Y`` with ``S = E E^T`` (C2AL, Wukong FMB).

    Per example, with ``E in R^{n x d}`` and an attention (compression) matrix ``Y in R^{n x k}``:

        G = (E E^T) Y = E (E^T Y)  in R^{n x k}

    computed right to left (``E^T Y`` first), so the cost is O(n k d) and the n x n matrix ``S`` is
    never formed. ``Y`` is:

    * ``mode="static"``: a trainable ``(n, k)`` weight ``W``, ``layer.attention_matrix`` (Wukong's
      "optimized FM"), shared by all examples.
    * ``mode="dynamic"``: ``reshape(MLP_att(flatten(E)), (n, k))`` per example, where ``MLP_att`` is a
      :class:`MLP` of ``hidden_units`` followed by a linear ``Dense(n * k)`` (the "attention MLP").

    With ``normalize="softmax"`` every column of ``Y`` is soft-maxed over the ``n`` fields (in both
    modes), so each of the ``k`` outputs of a field is a convex combination of its ``n`` interactions.
    Since ``G`` is linear in ``Y``, ``dL/dY = sum_b S_b^T dL/dG_b`` (the gradient path C2AL analyses).

    Args:
      k: number of columns of ``Y`` (compressed interactions per field).
      mode: ``"static"`` or ``"dynamic"``.
      normalize: ``None`` or ``"softmax"`` (``"softmax_n"`` is accepted as an alias).
      hidden_units: hidden widths of the attention MLP (dynamic mode; may be empty for a linear map).
      activation: activation of the hidden layers.
      flatten: return ``G`` flattened to ``(B, n * k)`` (default) or as ``(B, n, k)``.
      kernel_initializer: initializer of ``W`` (static) or of the attention MLP kernels (dynamic).
      kernel_regularizer: optional regularizer of the same weights.

    Call arguments:
      embeddings: ``(B, n, d)`` field embeddings ``E``.
      return_attention: also return ``Y``.
      training: forwarded to the attention MLP.

    Returns:
      ``G`` of shape ``(B, n * k)`` (or ``(B, n, k)`` with ``flatten=False``); with
      ``return_attention=True`` the pair ``(G, Y)``, ``Y`` of shape ``(n, k)`` (static) or
      ``(B, n, k)`` (dynamic), after normalization.

    Example:

    >>> static = AttentionFM(k=2)
    >>> g, y = static(np.ones((4, 4, 5), "float32"), return_attention=True)
    >>> tuple(g.shape), tuple(y.shape), static.count_params()
    ((4, 8), (4, 2), 8)
    >>> dyn = AttentionFM(k=2, mode="dynamic", normalize="softmax", hidden_units=[8], flatten=False)
    >>> g, y = dyn(np.ones((4, 4, 5), "float32"), return_attention=True)
    >>> tuple(g.shape), tuple(y.shape), dyn.count_params()  # (20*8 + 8) + (8*8 + 8)
    ((4, 4, 2), (4, 4, 2), 240)
    """

    def __init__(self, k: int, mode: str = "static", normalize: str | None = None,
                 hidden_units: Sequence[int] = (64,), activation="relu", flatten: bool = True,
                 kernel_initializer="glorot_uniform", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.k = validation.integer(k, "k")
        if mode not in _ATTENTION_FM_MODES:
            raise ValueError(f"mode: must be one of {_ATTENTION_FM_MODES}, got {mode!r}")
        if normalize == "softmax_n":
            normalize = "softmax"
        if normalize not in _ATTENTION_FM_NORMALIZE:
            raise ValueError(f"normalize: must be None or 'softmax', got {normalize!r}")
        hidden_units = validation.widths(list(hidden_units or []), "hidden_units")
        self.mode = mode
        self.normalize = normalize
        self.hidden_units = hidden_units
        self.activation = keras.activations.get(activation)
        self.flatten = bool(flatten)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._mlp = None
        if mode == "dynamic" and self.hidden_units:
            self._mlp = MLP(self.hidden_units, activation=self.activation,
                            kernel_initializer=self.kernel_initializer,
                            kernel_regularizer=self.kernel_regularizer,
                            dtype=self.dtype_policy, name="attention_mlp")

    def build(self, input_shape):
        self._n, self._d = _field_shape(input_shape, "embeddings")
        if self.mode == "static":
            self.attention_matrix = self.add_weight(
                name="attention_matrix", shape=(self._n, self.k),
                initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)
            return
        shape = (input_shape[0], self._n * self._d)
        if self._mlp is not None:
            self._mlp.build(shape)
            shape = self._mlp.compute_output_shape(shape)
        self._logits = keras.layers.Dense(
            self._n * self.k, kernel_initializer=fresh_initializer(self.kernel_initializer, 100),
            kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy, name="attention_logits")
        self._logits.build(shape)

    def attention(self, embeddings, training=None):
        """``Y``: ``(n, k)`` (static) or ``(B, n, k)`` (dynamic), normalized as configured."""
        if self.mode == "static":
            y = self.attention_matrix
        else:
            h = ops.reshape(embeddings, (-1, self._n * self._d))
            if self._mlp is not None:
                h = self._mlp(h, training=training)
            y = ops.reshape(self._logits(h), (-1, self._n, self.k))
        if self.normalize == "softmax":
            y = ops.softmax(y, axis=-2)                                   # over the n fields
        return ops.cast(y, self.compute_dtype)

    def call(self, embeddings, return_attention=False, training=None):
        y = self.attention(embeddings, training=training)
        if self.mode == "static":
            ety = ops.einsum("bnd,nk->bdk", embeddings, y)                # E^T Y: (B, d, k)
        else:
            ety = ops.einsum("bnd,bnk->bdk", embeddings, y)
        g = ops.einsum("bnd,bdk->bnk", embeddings, ety)                   # E (E^T Y): (B, n, k)
        if self.flatten:
            g = ops.reshape(g, (-1, self._n * self.k))
        return (g, y) if return_attention else g

    # No compute_output_shape: the output structure depends on `return_attention`, so Keras traces call().

    def get_config(self):
        config = super().get_config()
        config.update({
            "k": self.k,
            "mode": self.mode,
            "normalize": self.normalize,
            "hidden_units": self.hidden_units,
            "activation": keras.activations.serialize(self.activation),
            "flatten": self.flatten,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AFM(keras.layers.Layer):
    """Attentional factorization machine (Xiao et al., IJCAI 2017): attention-pooled pairwise products.

    For the ``P = n(n-1)/2`` pairs ``i < j`` (row-major order):

        p_ij = e_i * e_j                                   (element-wise, in R^d)
        a_ij = softmax_{(i,j)}( h^T ReLU(W^T p_ij + b) )   (W in R^{d x A}, b, h in R^A)
        y    = p^T sum_{i<j} a_ij p_ij                     (p in R^d)

    ``y`` is the interaction logit ``(B, 1)``; with ``reduce_sum=False`` the layer returns the pooled
    vector ``sum_{i<j} a_ij p_ij`` of shape ``(B, d)`` and has no ``p``. The first-order part
    ``w_0 + sum_i w_i x_i`` of the full AFM model is not included (use a linear term or :class:`FM`'s).
    Dropout of rate ``attention_dropout`` is applied to the attention weights ``a``, and of rate
    ``pooled_dropout`` to the pooled vector ``sum_{i<j} a_ij p_ij`` (before ``p``), when training
    (FuxiCTR's AFM has both: its ``attention_dropout: [a, pooled]``).

    Args:
      attention_dim: width ``A`` of the attention network.
      reduce_sum: project the pooled vector to a logit with ``p`` (``(B, 1)``) or return it (``(B, d)``).
      attention_dropout: dropout rate on ``a``, in ``[0, 1)``.
      pooled_dropout: dropout rate on the pooled vector, in ``[0, 1)``.
      kernel_initializer: initializer of ``W``, ``h`` and ``p``.
      kernel_regularizer: optional regularizer of ``W``, ``h`` and ``p``.

    Call arguments:
      embeddings: ``(B, n, d)`` field embeddings, ``n >= 2``.
      return_attention: also return the attention weights ``a`` of shape ``(B, P)`` (before dropout).
      training: enables the attention dropout.

    Returns:
      ``(B, 1)`` (``reduce_sum=True``) or ``(B, d)``; with ``return_attention=True`` the pair ``(y, a)``.

    Example:

    >>> afm = AFM(attention_dim=4)
    >>> y, a = afm(np.ones((4, 4, 5), "float32"), return_attention=True)
    >>> tuple(y.shape), tuple(a.shape), afm.count_params()  # 6 pairs; W 5*4, b 4, h 4, p 5
    ((4, 1), (4, 6), 33)
    """

    def __init__(self, attention_dim: int = 10, reduce_sum: bool = True, attention_dropout: float = 0.0,
                 pooled_dropout: float = 0.0, kernel_initializer="glorot_uniform", kernel_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.attention_dim = validation.integer(attention_dim, "attention_dim")
        self.reduce_sum = bool(reduce_sum)
        self.attention_dropout = validation.rate(attention_dropout, "attention_dropout")
        self.pooled_dropout = validation.rate(pooled_dropout, "pooled_dropout")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._dropout = (keras.layers.Dropout(self.attention_dropout, dtype=self.dtype_policy, name="dropout")
                         if self.attention_dropout else None)
        self._pooled_dropout = (keras.layers.Dropout(self.pooled_dropout, dtype=self.dtype_policy,
                                                     name="pooled_dropout") if self.pooled_dropout else None)

    def build(self, input_shape):
        self._n, self._d = _field_shape(input_shape, "embeddings")
        if self._n < 2:
            raise ValueError(f"embeddings: AFM needs at least 2 fields, got n={self._n}")
        rows, cols = np.triu_indices(self._n, k=1)                 # i < j, row-major
        self._rows, self._cols = rows.astype("int32"), cols.astype("int32")
        def kernel(offset):
            return dict(initializer=fresh_initializer(self.kernel_initializer, offset),
                        regularizer=self.kernel_regularizer)

        self.attention_kernel = self.add_weight(name="attention_kernel", shape=(self._d, self.attention_dim),
                                                **kernel(0))
        self.attention_bias = self.add_weight(name="attention_bias", shape=(self.attention_dim,),
                                              initializer="zeros")
        self.attention_vector = self.add_weight(name="attention_vector", shape=(self.attention_dim,), **kernel(1))
        if self.reduce_sum:
            self.projection = self.add_weight(name="projection", shape=(self._d,), **kernel(2))

    def call(self, embeddings, return_attention=False, training=None):
        pairs = ops.take(embeddings, self._rows, axis=1) * ops.take(embeddings, self._cols, axis=1)  # (B, P, d)
        hidden = ops.relu(ops.einsum("bpd,da->bpa", pairs, self.attention_kernel) + self.attention_bias)
        scores = ops.einsum("bpa,a->bp", hidden, self.attention_vector)
        a = ops.softmax(scores, axis=-1)                                   # over the P pairs
        kept = self._dropout(a, training=training) if self._dropout is not None else a
        pooled = ops.einsum("bp,bpd->bd", kept, pairs)                     # (B, d)
        if self._pooled_dropout is not None:
            pooled = self._pooled_dropout(pooled, training=training)
        y = ops.expand_dims(ops.einsum("bd,d->b", pooled, self.projection), -1) if self.reduce_sum else pooled
        return (y, a) if return_attention else y

    def get_config(self):
        config = super().get_config()
        config.update({
            "attention_dim": self.attention_dim,
            "reduce_sum": self.reduce_sum,
            "attention_dropout": self.attention_dropout,
            "pooled_dropout": self.pooled_dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class LowRankMixtureCross(keras.layers.Layer):
    """One DCN-Mix cross layer: a gated mixture of low-rank cross experts (Wang et al., DCN-V2, 2021).

    With ``x_0, x_l in R^D`` (the layer's input and the previous cross layer's output):

        z_e     = U_e act(C_e act(V_e^T x_l)) + b          (U_e, V_e in R^{D x r}, C_e in R^{r x r}, b in R^D)
        w       = softmax_e( g_e^T x_l )                    (linear gates g_e in R^D, no bias)
        x_{l+1} = sum_e w_e * (x_0 * z_e) + x_l

    (``*`` element-wise). ``b`` is shared by the experts, as in the DCN-Mix formula; because the gates sum
    to 1 it contributes ``x_0 * b``. With ``num_experts=1`` the gate is the constant 1 and has no weights.
    Weights: ``u_kernel`` / ``v_kernel`` ``(E, D, r)``, ``c_kernel`` ``(E, r, r)``, ``gate_kernel``
    ``(D, E)``, ``bias`` ``(D,)``. Stack layers as ``x1 = c1(x0); x2 = c2(x0, x1)``, as with
    ``keras_rs.layers.FeatureCross`` (use that for the plain and the single low-rank cross).

    Args:
      num_experts: number of experts ``E``.
      low_rank: rank ``r`` of each expert.
      activation: ``act`` (default ``"tanh"``).
      use_bias: learn ``b`` (else ``b = 0``).
      kernel_initializer: initializer of ``U``, ``V``, ``C`` and the gates.
      bias_initializer: initializer of ``b``.
      kernel_regularizer: optional regularizer of ``U``, ``V``, ``C`` and the gates.
      bias_regularizer: optional regularizer of ``b``.

    Call arguments:
      x0: ``(B, ..., D)`` input of the cross network.
      x: ``x_l``, same shape as ``x0``; defaults to ``x0`` (the first layer).

    Returns:
      ``x_{l+1}``, the shape of ``x0``.

    Example:

    >>> cross = LowRankMixtureCross(num_experts=2, low_rank=3)
    >>> x0 = np.ones((4, 6), "float32")
    >>> x1 = cross(x0)
    >>> tuple(cross(x0, x1).shape), cross.count_params()  # 2*(6*3 + 6*3 + 3*3) + 6*2 + 6
    ((4, 6), 108)
    """

    def __init__(self, num_experts: int = 4, low_rank: int = 32, activation="tanh", use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = validation.integer(num_experts, "num_experts")
        self.low_rank = validation.integer(low_rank, "low_rank")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"x0: expected a (B, ..., D) tensor with known D, got shape {tuple(input_shape)}")
        dim, e, r = int(input_shape[-1]), self.num_experts, self.low_rank
        def kernel(offset):  # U and V share a shape: each needs its own initializer instance
            return dict(initializer=fresh_initializer(self.kernel_initializer, offset),
                        regularizer=self.kernel_regularizer)

        self.u_kernel = self.add_weight(name="u_kernel", shape=(e, dim, r), **kernel(0))
        self.v_kernel = self.add_weight(name="v_kernel", shape=(e, dim, r), **kernel(1))
        self.c_kernel = self.add_weight(name="c_kernel", shape=(e, r, r), **kernel(2))
        if e > 1:  # a single expert has the constant gate 1
            self.gate_kernel = self.add_weight(name="gate_kernel", shape=(dim, e), **kernel(3))
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(dim,), initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer)

    def call(self, x0, x=None):
        if x is None:
            x = x0
        if tuple(x0.shape) != tuple(x.shape):
            raise ValueError(f"x: must have the shape of x0, got {tuple(x.shape)} and {tuple(x0.shape)}")
        h = self.activation(ops.einsum("...d,edr->...er", x, self.v_kernel))      # V_e^T x_l
        h = self.activation(ops.einsum("...et,est->...es", h, self.c_kernel))     # C_e h
        z = ops.einsum("...er,edr->...ed", h, self.u_kernel)                      # U_e h: (..., E, D)
        if self.use_bias:
            z = z + self.bias
        if self.num_experts == 1:
            mixed = z[..., 0, :]
        else:
            gates = ops.softmax(ops.einsum("...d,de->...e", x, self.gate_kernel), axis=-1)
            mixed = ops.einsum("...e,...ed->...d", gates, z)                      # sum_e w_e z_e
        return x0 * mixed + x

    def compute_output_shape(self, x0_shape, x_shape=None):
        return tuple(x0_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_experts": self.num_experts,
            "low_rank": self.low_rank,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class LinearCompression(keras.layers.Layer):
    """Wukong's linear compression block (LCB): recombines fields linearly, creating no interactions.

        LCB(E) = W_L E,   W_L in R^{n_out x n}:   out[b, o, :] = sum_i W_L[o, i] * e_{b,i}

    Args:
      num_outputs: number of output fields ``n_out``.
      kernel_initializer: initializer of ``W_L`` (``layer.kernel``).
      kernel_regularizer: optional regularizer of ``W_L``.

    Call arguments:
      embeddings: ``(B, n, d)`` field embeddings.

    Returns:
      ``(B, n_out, d)``.

    Example:

    >>> lcb = LinearCompression(num_outputs=2)
    >>> tuple(lcb(np.ones((4, 4, 5), "float32")).shape), lcb.count_params()
    ((4, 2, 5), 8)
    """

    def __init__(self, num_outputs: int, kernel_initializer="glorot_uniform", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_outputs = validation.integer(num_outputs, "num_outputs")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        n, _ = _field_shape(input_shape, "embeddings")
        self.kernel = self.add_weight(name="kernel", shape=(self.num_outputs, n),
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer)

    def call(self, embeddings):
        return ops.einsum("on,bnd->bod", self.kernel, embeddings)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_outputs, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_outputs": self.num_outputs,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
