"""Fusion of two feature streams: ``BilinearFusion``, FinalMLP's multi-head bilinear aggregation
(arXiv 2304.00902) of two flat vectors."""

from __future__ import annotations

import keras
from keras import ops

from layers import validation
from layers.embeddings import PACKAGE
from layers.initializers import fresh_initializer


@keras.saving.register_keras_serializable(package=PACKAGE)
class BilinearFusion(keras.layers.Layer):
    """Multi-head bilinear fusion of two streams (FinalMLP's interaction aggregation, arXiv 2304.00902).

    ``x in R^{D_x}`` and ``y in R^{D_y}`` are split into ``k = num_heads`` equal chunks
    ``x_j in R^{D_x/k}``, ``y_j in R^{D_y/k}``; each head has its own bilinear form per output
    ``W_{j,o} in R^{D_x/k x D_y/k}``:

        s_{j,o} = x_j^T W_{j,o} y_j
        out_o   = b_o + w_{x,o}^T x + w_{y,o}^T y + sum_j s_{j,o}         (use_linear, reduce_heads)

    * ``reduce_heads=True``: ``(B, output_dim)``; with ``use_linear=False`` the linear terms and the
      bias are left out (``out_o = sum_j s_{j,o}``).
    * ``reduce_heads=False``: the per-head terms ``s`` as ``(B, num_heads * output_dim)`` (head-major),
      e.g. to hand them to a learned head beside the streams themselves; the linear terms need the
      sum over heads, so ``use_linear`` must be False.

    Weights: ``kernel`` ``(k, D_x/k, D_y/k, output_dim)``; with ``use_linear`` a ``Dense(output_dim)``
    on ``x`` (with the bias) and one without bias on ``y``.

    Args:
      num_heads: number of heads ``k``; must divide both ``D_x`` and ``D_y``.
      output_dim: outputs per head.
      use_linear: add ``b + w_x^T x + w_y^T y`` (needs ``reduce_heads=True``).
      reduce_heads: sum the heads' terms (else return them per head).
      kernel_initializer: initializer of ``W`` (default Glorot normal, as FuxiCTR's Xavier normal)
        and of the linear terms.
      kernel_regularizer: optional regularizer of ``W`` and the linear terms.

    Call arguments:
      inputs: the pair ``[x, y]``: the first stream ``(B, D_x)`` and the second ``(B, D_y)``.

    Returns:
      ``(B, output_dim)`` with ``reduce_heads=True``, else ``(B, num_heads * output_dim)``.

    Example:

    >>> fusion = BilinearFusion(num_heads=2, use_linear=False, reduce_heads=False, kernel_initializer="ones")
    >>> x = np.array([[1., 2., 3., 4.]], "float32")        # heads (1, 2) and (3, 4)
    >>> y = np.array([[1., 1.]], "float32")                # heads (1,) and (1,)
    >>> keras.ops.convert_to_numpy(fusion([x, y])).tolist()  # W = 1: s_j = sum(x_j) * sum(y_j)
    [[3.0, 7.0]]
    >>> summed = BilinearFusion(num_heads=2)
    >>> tuple(summed([x, y]).shape), summed.count_params()   # W 2*2*1 + w_x 4 + b 1 + w_y 2
    ((1, 1), 11)
    """

    def __init__(self, num_heads: int = 1, output_dim: int = 1, use_linear: bool = True, reduce_heads: bool = True,
                 kernel_initializer="glorot_normal", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = validation.integer(num_heads, "num_heads")
        self.output_dim = validation.integer(output_dim, "output_dim")
        self.use_linear = validation.flag(use_linear, "use_linear")
        self.reduce_heads = validation.flag(reduce_heads, "reduce_heads")
        if self.use_linear and not self.reduce_heads:
            raise ValueError("use_linear: the linear terms are added to the sum over heads; they need reduce_heads=True")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._linear_x = self._linear_y = None

    @staticmethod
    def _pair(inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2 or any(isinstance(v, int) for v in inputs):
            raise ValueError("inputs: BilinearFusion takes the pair [x, y]")  # (ints: one tensor's shape)
        return inputs

    def build(self, input_shape):
        x_shape, y_shape = self._pair(input_shape)
        dims = {}
        for argument, shape in (("x", x_shape), ("y", y_shape)):
            shape = tuple(shape)
            if len(shape) != 2 or shape[-1] is None:
                raise ValueError(f"{argument}: expected a (B, D) tensor with known D, got shape {shape}")
            if shape[-1] % self.num_heads:
                raise ValueError(f"num_heads: {self.num_heads} heads must divide the width of {argument}, "
                                 f"got {shape[-1]}")
            dims[argument] = int(shape[-1])
        k = self.num_heads
        self._head_x, self._head_y = dims["x"] // k, dims["y"] // k
        self.kernel = self.add_weight(name="kernel", shape=(k, self._head_x, self._head_y, self.output_dim),
                                      initializer=fresh_initializer(self.kernel_initializer, 0),
                                      regularizer=self.kernel_regularizer)
        if self.use_linear:
            self._linear_x = keras.layers.Dense(self.output_dim, kernel_initializer=fresh_initializer(
                self.kernel_initializer, 1), kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy,
                name="linear_x")
            self._linear_y = keras.layers.Dense(self.output_dim, use_bias=False, kernel_initializer=fresh_initializer(
                self.kernel_initializer, 2), kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy,
                name="linear_y")
            self._linear_x.build((None, dims["x"]))
            self._linear_y.build((None, dims["y"]))

    def call(self, inputs):
        x, y = self._pair(inputs)
        k = self.num_heads
        xh = ops.reshape(x, (-1, k, self._head_x))
        yh = ops.reshape(y, (-1, k, self._head_y))
        kernel = ops.cast(self.kernel, self.compute_dtype)
        xw = ops.einsum("bjp,jpqo->bjqo", ops.cast(xh, self.compute_dtype), kernel)     # x_j^T W_{j,o}
        s = ops.einsum("bjqo,bjq->bjo", xw, ops.cast(yh, self.compute_dtype))          # (B, k, O)
        if not self.reduce_heads:
            return ops.reshape(s, (-1, k * self.output_dim))
        out = ops.sum(s, axis=1)
        if self.use_linear:
            out = out + self._linear_x(x) + self._linear_y(y)
        return out

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.output_dim if self.reduce_heads else self.num_heads * self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "output_dim": self.output_dim,
            "use_linear": self.use_linear,
            "reduce_heads": self.reduce_heads,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
