"""Generic building blocks."""

from __future__ import annotations

from typing import Sequence

import keras

from layers.embeddings import PACKAGE
from layers.initializers import fresh_initializer

_NORMS = (None, "batch", "layer")


@keras.saving.register_keras_serializable(package=PACKAGE)
class MLP(keras.layers.Layer):
    """A stack of dense layers: ``x <- dropout(act(norm(W_i x + b_i)))`` for each width in ``units``.

    Args:
      units: widths of the dense layers, e.g. ``[256, 128]``.
      activation: activation after each layer (also the last one).
      dropout: dropout rate after each layer, in ``[0, 1)``.
      norm: ``None``, ``"batch"`` or ``"layer"`` normalization before the activation.
      norm_momentum: momentum of the batch-norm moving statistics (``"batch"`` only). The default 0.9
        (PyTorch's update rate 0.1) tracks the batch statistics within a few dozen steps; Keras'
        own 0.99 needs hundreds, so with short CTR epochs (e.g. 50 steps on Frappe_x1) the
        inference-time statistics would still be mostly their initial values when validation runs.
      norm_epsilon: the batch norm's variance epsilon (``"batch"`` only). The default 1e-5 is
        PyTorch's (Keras' own is 1e-3): CTR embeddings start near zero (e.g. N(0, 1e-4)), so early
        pre-activation variances can be far below 1e-3, where Keras' epsilon would swamp them (our
        reading, not measured separately from Adam's epsilon); on
        Frappe_x1 the PyTorch epsilons lowered FinalMLP's test logloss by about 0.01
        (bench/results/quality_frappe_epsilons.md).
      kernel_initializer: dense kernel initializer.
      kernel_regularizer: optional dense kernel regularizer.

    Example:

    >>> import numpy as np
    >>> mlp = MLP([8, 4], activation="relu", norm="layer")
    >>> tuple(mlp(np.ones((2, 3), "float32")).shape)
    (2, 4)
    """

    def __init__(self, units: Sequence[int], activation="relu", dropout: float = 0.0, norm: str | None = None,
                 norm_momentum: float = 0.9, norm_epsilon: float = 1e-5, kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = [int(u) for u in units]
        if not self.units or any(u <= 0 for u in self.units):
            raise ValueError(f"units: needs one or more positive widths, got {list(units)}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        if norm not in _NORMS:
            raise ValueError(f"norm: must be one of {_NORMS}, got {norm!r}")
        if not 0.0 <= float(norm_momentum) < 1.0:
            raise ValueError(f"norm_momentum: must be in [0, 1), got {norm_momentum}")
        self.norm_momentum = float(norm_momentum)
        if isinstance(norm_epsilon, bool) or not isinstance(norm_epsilon, (int, float)) or not norm_epsilon > 0:
            raise ValueError(f"norm_epsilon: must be a positive number, got {norm_epsilon!r}")
        self.norm_epsilon = float(norm_epsilon)
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.norm = norm
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._dense, self._norms, self._drops = [], [], []
        for i, width in enumerate(self.units):
            self._dense.append(keras.layers.Dense(
                width, kernel_initializer=fresh_initializer(self.kernel_initializer, i),
                kernel_regularizer=self.kernel_regularizer,
                use_bias=norm != "batch", dtype=self.dtype_policy, name=f"dense_{i}"))
            if norm == "batch":
                self._norms.append(keras.layers.BatchNormalization(
                    momentum=self.norm_momentum, epsilon=self.norm_epsilon, dtype=self.dtype_policy,
                    name=f"norm_{i}"))
            elif norm == "layer":
                self._norms.append(keras.layers.LayerNormalization(dtype=self.dtype_policy, name=f"norm_{i}"))
            if self.dropout:
                self._drops.append(keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=f"dropout_{i}"))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for i, dense in enumerate(self._dense):
            dense.build(shape)
            shape = shape[:-1] + (dense.units,)
            if self._norms:
                self._norms[i].build(shape)

    def call(self, x, training=None):
        for i, dense in enumerate(self._dense):
            x = dense(x)
            if self._norms:
                x = self._norms[i](x, training=training)
            x = self.activation(x)
            if self._drops:
                x = self._drops[i](x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units[-1],)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "dropout": self.dropout,
            "norm": self.norm,
            "norm_momentum": self.norm_momentum,
            "norm_epsilon": self.norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureGate(keras.layers.Layer):
    """Context-conditioned feature selection: ``y = 2 * sigmoid(MLP(c)) * x`` (FinalMLP, arXiv 2304.00902).

        g = 2 * sigmoid(W_out a + b_out),   a = ReLU-MLP_units(c)   (a = c when ``units`` is empty)
        y = g * x                                                 (element-wise; g in (0, 2)^D)

    ``c`` is the context passed to the call (e.g. the embedding of a user or item id, so the gate
    weighs the features per user or per item), or, when none is passed, a learned vector of width
    ``context_dim`` (initialized to zeros), i.e. one global gate for every example. With zero-initialized
    biases and a zero context the gate starts at exactly 1 (the identity).

    Args:
      units: hidden widths of the gate's ReLU MLP (``[]``: one linear layer).
      context_dim: width of the learned context used when the call passes no ``context``.
      kernel_initializer: initializer of the gate's kernels.
      kernel_regularizer: optional regularizer of the gate's kernels.

    Call arguments:
      inputs: ``x`` of shape ``(B, D)`` (the features to gate, with the learned context) or the pair
        ``[x, c]`` with the context ``c`` of shape ``(B, C)``.

    Returns:
      ``(B, D)``, the gated features.

    Example:

    >>> gate = FeatureGate(units=[4], context_dim=3)
    >>> x = np.array([[1., -2., 3.]], "float32")
    >>> keras.ops.convert_to_numpy(gate(x)).tolist()  # zero context, zero biases: g = 2 * sigmoid(0) = 1
    [[1.0, -2.0, 3.0]]
    >>> gate.count_params()  # context 3 + (3*4 + 4) + (4*3 + 3)
    34
    >>> tuple(FeatureGate(units=[])([x, np.ones((1, 5), "float32")]).shape)
    (1, 3)
    """

    def __init__(self, units: Sequence[int] = (), context_dim: int | None = None, kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = [int(u) for u in units]
        if any(u <= 0 for u in self.units):
            raise ValueError(f"units: the gate's hidden widths must be positive, got {list(units)}")
        if context_dim is not None and (isinstance(context_dim, bool) or not isinstance(context_dim, int)
                                        or context_dim < 1):
            raise ValueError(f"context_dim: must be a positive integer or None, got {context_dim!r}")
        self.context_dim = context_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._hidden = (MLP(self.units, activation="relu", kernel_initializer=self.kernel_initializer,
                            kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy, name="hidden")
                        if self.units else None)
        self._output = None

    @staticmethod
    def _split(inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"inputs: expected x or [x, context], got {len(inputs)} tensors")
            return inputs[0], inputs[1]
        return inputs, None

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            x_shape, context_shape = self._split(input_shape)
        else:
            x_shape, context_shape = input_shape, None
        x_shape = tuple(x_shape)
        if len(x_shape) != 2 or x_shape[-1] is None:
            raise ValueError(f"x: expected a (B, D) tensor with known D, got shape {x_shape}")
        if context_shape is None:
            if self.context_dim is None:
                raise ValueError("context_dim: needed when the gate is called without a context")
            self.context_bias = self.add_weight(name="context", shape=(self.context_dim,), initializer="zeros")
            context_shape = (None, self.context_dim)
        context_shape = tuple(context_shape)
        if len(context_shape) != 2 or context_shape[-1] is None:
            raise ValueError(f"context: expected a (B, C) tensor with known C, got shape {context_shape}")
        if self._hidden is not None:
            self._hidden.build(context_shape)
            context_shape = (context_shape[0], self.units[-1])
        self._output = keras.layers.Dense(
            int(x_shape[-1]), activation="sigmoid", kernel_initializer=fresh_initializer(self.kernel_initializer,
                                                                                         len(self.units)),
            bias_initializer="zeros", kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy,
            name="gate")
        self._output.build(context_shape)

    def call(self, inputs):
        x, context = self._split(inputs)
        if context is None:
            context = keras.ops.broadcast_to(keras.ops.cast(self.context_bias, self.compute_dtype)[None, :],
                                             (keras.ops.shape(x)[0], self.context_dim))
        if self._hidden is not None:
            context = self._hidden(context)
        return 2.0 * self._output(context) * keras.ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            return tuple(input_shape[0])
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "context_dim": self.context_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
