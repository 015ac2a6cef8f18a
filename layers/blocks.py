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
      kernel_initializer: dense kernel initializer.
      kernel_regularizer: optional dense kernel regularizer.

    Example:

    >>> import numpy as np
    >>> mlp = MLP([8, 4], activation="relu", norm="layer")
    >>> tuple(mlp(np.ones((2, 3), "float32")).shape)
    (2, 4)
    """

    def __init__(self, units: Sequence[int], activation="relu", dropout: float = 0.0, norm: str | None = None,
                 norm_momentum: float = 0.9, kernel_initializer="glorot_uniform", kernel_regularizer=None, **kwargs):
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
                    momentum=self.norm_momentum, dtype=self.dtype_policy, name=f"norm_{i}"))
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
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
