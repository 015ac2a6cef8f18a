"""Attention layers.

``FieldSelfAttention`` is AutoInt's interacting layer (multi-head self-attention across the fields
of one example). ``TargetAttention`` pools a padded behaviour sequence with the attention of a
target item (DIN / SIM / TWIN style, with an optional top-k search stage); fed from the two tables
of :class:`layers.embeddings.DualEmbedding` it is DARE's decoupled attention.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
from keras import ops

from layers.blocks import MLP
from layers.embeddings import PACKAGE
from layers import validation
from layers.initializers import fresh_initializer

_SCORES = ("dot", "mlp")


def _masked_softmax(scores, mask):
    """Softmax over the last axis restricted to ``mask``; float32; all-masked rows give zeros.

    Masked entries are excluded exactly (weight 0, as with a score of -inf), but no inf or NaN is
    ever produced, in the forward pass or in the gradient.
    """
    scores = ops.cast(scores, "float32")
    lowest = ops.convert_to_tensor(-3.0e38, "float32")
    row_max = ops.max(ops.where(mask, scores, lowest), axis=-1, keepdims=True)
    row_max = ops.stop_gradient(ops.where(row_max > lowest, row_max, ops.zeros_like(row_max)))
    exp = ops.where(mask, ops.exp(ops.where(mask, scores - row_max, ops.zeros_like(scores))),
                    ops.zeros_like(scores))
    total = ops.sum(exp, axis=-1, keepdims=True)
    return exp / ops.where(total > 0, total, ops.ones_like(total))


@keras.saving.register_keras_serializable(package=PACKAGE)
class FieldSelfAttention(keras.layers.Layer):
    """AutoInt's interacting layer: multi-head self-attention across the fields of one example.

    For field embeddings ``e_1..e_n`` (width ``d``) and each head ``h = 1..H`` (width ``d_h``):

        alpha^h_{m,j} = softmax_j( <W_Q^h e_m, W_K^h e_j> / c ),   c = sqrt(d_h) if use_scale else 1
        o^h_m         = sum_j alpha^h_{m,j} W_V^h e_j
        out_m         = LN?( ReLU( [o^1_m; ...; o^H_m] + res(e_m) ) )

    ``res(e) = e`` when ``use_residual`` and ``d == H * d_h``, ``res(e) = W_res e`` (a projection)
    when ``use_residual`` and the widths differ, and ``0`` without residual. ``W_Q, W_K, W_V, W_res``
    have no bias (as in AutoInt / FuxiCTR); ``LN`` is an optional LayerNormalization. Stack several
    layers and flatten the output for the AutoInt logit.

    Args:
      num_heads: number of heads ``H``.
      attention_dim: width ``d_h`` of each head; the output width is ``H * d_h``.
      use_residual: add the residual connection ``res(e_m)`` before the ReLU.
      use_scale: divide the logits by ``sqrt(d_h)``.
      use_layer_norm: apply LayerNormalization after the ReLU.
      kernel_initializer: initializer of ``W_Q, W_K, W_V, W_res``.
      kernel_regularizer: optional regularizer of those kernels.

    Call arguments:
      inputs: field embeddings of shape ``(B, n, d)``.
      return_attention_scores: also return the attention weights ``alpha``.

    Returns:
      ``(B, n, H * d_h)``; with ``return_attention_scores`` the pair ``(outputs, alpha)`` where
      ``alpha`` has shape ``(B, H, n, n)`` (rows sum to 1).

    Example:

    >>> layer = FieldSelfAttention(num_heads=2, attention_dim=3, use_layer_norm=True)
    >>> out, alpha = layer(np.ones((3, 4, 8), "float32"), return_attention_scores=True)
    >>> tuple(out.shape), tuple(alpha.shape)
    ((3, 4, 6), (3, 2, 4, 4))
    >>> layer.count_params()  # W_Q, W_K, W_V, W_res: 8 x 6 each; LayerNorm: 2 x 6
    204
    """

    def __init__(self, num_heads: int, attention_dim: int, use_residual: bool = True, use_scale: bool = False,
                 use_layer_norm: bool = False, kernel_initializer="glorot_uniform", kernel_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads = validation.integer(num_heads, "num_heads")
        self.attention_dim = validation.integer(attention_dim, "attention_dim")
        self.use_residual = bool(use_residual)
        self.use_scale = bool(use_scale)
        self.use_layer_norm = bool(use_layer_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.output_dim = self.num_heads * self.attention_dim

        self._query, self._key, self._value = (self._projection(n) for n in ("query", "key", "value"))
        self._residual = None  # W_res, created in build() when the input width differs from H * d_h
        self._norm = (keras.layers.LayerNormalization(dtype=self.dtype_policy, name="layer_norm")
                      if self.use_layer_norm else None)

    def _projection(self, name):
        self._num_projections = getattr(self, "_num_projections", 0) + 1
        initializer = fresh_initializer(self.kernel_initializer, self._num_projections)
        return keras.layers.Dense(self.output_dim, use_bias=False, kernel_initializer=initializer,
                                  kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy, name=name)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"inputs: expected shape (B, n, d) with a known d, got {tuple(input_shape)}")
        input_dim = int(input_shape[-1])
        for dense in (self._query, self._key, self._value):
            dense.build(input_shape)
        if self.use_residual and input_dim != self.output_dim:
            self._residual = self._projection("residual")
            self._residual.build(input_shape)
        if self._norm is not None:
            self._norm.build(tuple(input_shape[:-1]) + (self.output_dim,))

    def call(self, inputs, return_attention_scores: bool = False):
        x = ops.cast(inputs, self.compute_dtype)
        shape = ops.shape(x)
        heads = (shape[0], shape[1], self.num_heads, self.attention_dim)
        q = ops.reshape(self._query(x), heads)  # (B, n, H, d_h)
        k = ops.reshape(self._key(x), heads)
        v = ops.reshape(self._value(x), heads)
        logits = ops.einsum("bmhd,bjhd->bhmj", q, k)
        if self.use_scale:
            logits = logits / math.sqrt(self.attention_dim)
        alpha = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), self.compute_dtype)
        out = ops.einsum("bhmj,bjhd->bmhd", alpha, v)
        out = ops.reshape(out, (shape[0], shape[1], self.output_dim))
        if self.use_residual:
            out = out + (self._residual(x) if self._residual is not None else x)
        out = ops.relu(out)
        if self._norm is not None:
            out = self._norm(out)
        if return_attention_scores:
            return out, alpha
        return out

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "attention_dim": self.attention_dim,
            "use_residual": self.use_residual,
            "use_scale": self.use_scale,
            "use_layer_norm": self.use_layer_norm,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class TargetAttention(keras.layers.Layer):
    """Target attention over a padded behaviour sequence, with optional top-k search (DIN / SIM / DARE).

    For a target query ``q`` (width ``d_a``), sequence keys ``k_1..k_L`` (width ``d_a``), values
    ``v_1..v_L`` (width ``d_v``; the keys themselves when no values are given) and a validity mask
    ``M_j`` (True for a real item, False for padding):

        s_j = score(q, k_j) / c                    c = sqrt(d_a) if use_scale else 1
        score(q, k) = <q, k>                       (score="dot")
                    = MLP([q, k, q - k, q * k])    (score="mlp": DIN's activation unit, linear output)
        S   = { j : M_j }, cut to the top_k highest s_j when top_k is set (ties: lower position first)
        w_j = exp(s_j) / sum_{i in S} exp(s_i)  for j in S,   w_j = 0 otherwise (score -inf)
        out = sum_j w_j v_j

    A row with no valid item gets ``w = 0`` and ``out = 0`` (never NaN). The softmax runs in float32.

    **DARE (decoupled attention and representation embeddings).** The query and keys come from the
    attention table ``a(.)`` and the values from the representation table ``r(.)`` of a
    :class:`~layers.embeddings.DualEmbedding` (``query = a(t)``, ``keys = a(x_j)``,
    ``values = r(x_j)``; see the last example):

        s_j = <a(t), a(x_j)> / sqrt(d_att),   w = softmax over the top-k valid j,
        out = sum_j w_j r(x_j)

    so the loss gradient reaches the attention table only through the scores ``s_j`` and the
    representation table only through the pooled values. DARE's target-aware representation
    ``h = sum_j w_j (r(x_j) * r(t)) = out * r(t)``. DARE uses the defaults ``score="dot"`` and
    ``use_scale=True``.

    Args:
      top_k: keep only the ``top_k`` highest-scoring valid positions (the search stage); ``None``
        keeps all valid positions. With a static ``L <= top_k`` it is a no-op; with a dynamic ``L``
        every batch needs ``L >= top_k``.
      use_scale: divide the scores by ``sqrt(d_a)``.
      score: ``"dot"`` (parameter-free, the default) or ``"mlp"``.
      mlp_units: hidden widths of the ``"mlp"`` scorer (followed by a 1-unit linear dense).
      mlp_activation: activation of the ``"mlp"`` scorer's hidden layers.
      kernel_initializer: initializer of the ``"mlp"`` scorer's kernels.
      kernel_regularizer: optional regularizer of those kernels.

    Call arguments:
      inputs: a dict with keys ``"query"`` ``(B, d_a)``, ``"keys"`` ``(B, L, d_a)`` and optionally
        ``"mask"`` ``(B, L)`` (bool, or 0/1; default all valid) and ``"values"`` ``(B, L, d_v)``;
        or the list ``[query, keys]``, ``[query, keys, mask]`` or ``[query, keys, mask, values]``.
      return_attention_scores: also return the weights ``w``.

    Returns:
      ``(B, d_v)`` (``d_v = d_a`` without values); with ``return_attention_scores`` the pair
      ``(outputs, w)`` where ``w`` has shape ``(B, L)``.

    Example:

    >>> att = TargetAttention(top_k=2, use_scale=False)
    >>> query = np.array([[1.0, 0.0], [1.0, 0.0]], "float32")
    >>> keys = np.array([[[3.0, 0.0], [2.0, 0.0], [1.0, 0.0]]] * 2, "float32")
    >>> values = np.array([[[1.0], [10.0], [100.0]]] * 2, "float32")
    >>> mask = np.array([[True, True, True], [False, False, False]])
    >>> out, w = att({"query": query, "keys": keys, "mask": mask, "values": values},
    ...              return_attention_scores=True)
    >>> keras.ops.convert_to_numpy(w).astype("float64").round(4).tolist()  # top_k=2 cuts position 3
    [[0.7311, 0.2689, 0.0], [0.0, 0.0, 0.0]]
    >>> keras.ops.convert_to_numpy(out).astype("float64").round(3).tolist()  # no valid item -> zeros
    [[3.42], [0.0]]

    DARE with a :class:`~layers.embeddings.DualEmbedding` (one table per role, shared by the target
    and the history; exercised by ``tests/test_attention.py``)::

        dual = DualEmbedding(vocab_sizes=[n_items], attention_dim=16, representation_dim=64,
                             input_fields=[0, 0])
        (a_t, a_seq), (r_t, r_seq) = dual([target_ids, seq_ids])   # (B, 1, .), (B, L, .)
        h = TargetAttention(top_k=50)({"query": a_t[:, 0], "keys": a_seq, "values": r_seq,
                                       "mask": keras.ops.greater_equal(seq_ids, 0)})   # (B, 64)
        h = h * r_t[:, 0]                                          # DARE's target-aware form
    """

    def __init__(self, top_k: int | None = None, use_scale: bool = True, score: str = "dot",
                 mlp_units: Sequence[int] = (64, 32), mlp_activation="relu", kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.top_k = None if top_k is None else validation.integer(top_k, "top_k")
        self.use_scale = bool(use_scale)
        if score not in _SCORES:
            raise ValueError(f"score: must be one of {_SCORES}, got {score!r}")
        self.score = score
        self.mlp_units = [int(u) for u in mlp_units]
        if not self.mlp_units or any(u <= 0 for u in self.mlp_units):
            raise ValueError(f"mlp_units: needs one or more positive widths, got {list(mlp_units)}")
        self.mlp_activation = keras.activations.get(mlp_activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._mlp = self._mlp_out = None
        if score == "mlp":
            self._mlp = MLP(self.mlp_units, activation=self.mlp_activation,
                            kernel_initializer=self.kernel_initializer,
                            kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy, name="scorer")
            self._mlp_out = keras.layers.Dense(1, kernel_initializer=fresh_initializer(self.kernel_initializer, 100),
                                               kernel_regularizer=self.kernel_regularizer,
                                               dtype=self.dtype_policy, name="scorer_output")

    @staticmethod
    def _unpack(inputs):
        """``(query, keys, mask, values)`` from the dict or list form (missing entries are None)."""
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"query", "keys", "mask", "values"}
            if unknown or "query" not in inputs or "keys" not in inputs:
                raise ValueError("inputs: a dict needs 'query' and 'keys' and may have 'mask' and 'values', "
                                 f"got keys {sorted(inputs)}")
            return inputs["query"], inputs["keys"], inputs.get("mask"), inputs.get("values")
        if isinstance(inputs, (list, tuple)) and 2 <= len(inputs) <= 4:
            items = list(inputs) + [None] * (4 - len(inputs))
            return tuple(items)
        raise ValueError("inputs: expected a dict or the list [query, keys(, mask(, values))], "
                         f"got {type(inputs).__name__}")

    def build(self, input_shape):
        query, keys, mask, values = self._unpack(input_shape)
        query, keys = tuple(query), tuple(keys)
        if len(query) != 2 or len(keys) != 3:
            raise ValueError(f"inputs: query must be (B, d_a) and keys (B, L, d_a), got {query} and {keys}")
        if query[-1] is None or query[-1] != keys[-1]:
            raise ValueError(f"inputs: query width {query[-1]} must equal the keys width {keys[-1]}")
        if mask is not None and len(tuple(mask)) != 2:
            raise ValueError(f"inputs: mask must be (B, L), got {tuple(mask)}")
        if values is not None and len(tuple(values)) != 3:
            raise ValueError(f"inputs: values must be (B, L, d_v), got {tuple(values)}")
        if self._mlp is not None:
            self._mlp.build((None, keys[1], 4 * keys[-1]))
            self._mlp_out.build((None, keys[1], self.mlp_units[-1]))

    def call(self, inputs, return_attention_scores: bool = False):
        query, keys, mask, values = self._unpack(inputs)
        query = ops.cast(query, self.compute_dtype)
        keys = ops.cast(keys, self.compute_dtype)
        values = keys if values is None else ops.cast(values, self.compute_dtype)
        length = ops.shape(keys)[1]
        if mask is None:
            mask = ops.ones(ops.shape(keys)[:2], "bool")
        else:
            mask = ops.cast(mask, "bool")

        if self.score == "dot":
            scores = ops.einsum("bd,bld->bl", query, keys)
        else:
            q = ops.broadcast_to(ops.expand_dims(query, 1), ops.shape(keys))
            features = ops.concatenate([q, keys, q - keys, q * keys], axis=-1)
            scores = ops.squeeze(self._mlp_out(self._mlp(features)), axis=-1)
        scores = ops.cast(scores, "float32")
        if self.use_scale:
            scores = scores / math.sqrt(int(keys.shape[-1]))

        static_length = keys.shape[1]
        if self.top_k is not None and (static_length is None or self.top_k < static_length):
            # Search stage: the top_k valid positions by score (invalid ones ranked last at -inf).
            ranked = ops.where(mask, ops.stop_gradient(scores), ops.full_like(scores, float("-inf")))
            _, indices = ops.top_k(ranked, self.top_k)  # (B, k)
            positions = ops.arange(length, dtype=indices.dtype)
            selected = ops.any(ops.expand_dims(indices, -1) == positions, axis=1)  # (B, L)
            mask = ops.logical_and(mask, selected)

        weights = ops.cast(_masked_softmax(scores, mask), self.compute_dtype)
        outputs = ops.einsum("bl,bld->bd", weights, values)
        if return_attention_scores:
            return outputs, weights
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "top_k": self.top_k,
            "use_scale": self.use_scale,
            "score": self.score,
            "mlp_units": self.mlp_units,
            "mlp_activation": keras.activations.serialize(self.mlp_activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
