"""Initializer helper shared by layers that create several weights from one initializer argument."""

from __future__ import annotations

import keras


def fresh_initializer(initializer, offset: int):
    """A new instance of ``initializer`` for the ``offset``-th weight or sublayer that uses it.

    A Keras 3 initializer instance returns the same values on every call of the same shape, so
    weights sharing one instance would start identical (e.g. an attention layer's W_Q and W_K, or
    two same-width layers of an MLP). Each use gets its own instance: an unseeded one draws a new
    seed; an integer seed ``s`` becomes ``s + offset``, so seeded layers stay reproducible yet
    their weights differ. Plain functions (stateless) are returned as they are.
    """
    initializer = keras.initializers.get(initializer)
    if not isinstance(initializer, keras.initializers.Initializer):
        return initializer
    config = initializer.get_config()  # get_config/from_config: no TensorFlow import under JAX
    if isinstance(config.get("seed"), int) and not isinstance(config["seed"], bool):
        config = dict(config, seed=config["seed"] + offset)
    return initializer.__class__.from_config(config)
