"""Checks every public layer must pass (serialization, export, mixed precision, docstring example).

Each takes a factory that builds a fresh layer, and example inputs (a tensor, a list or a dict of
NumPy arrays). The checks wrap the layer in a functional model so that ``.keras`` and SavedModel
round trips go through the same path users take, with no ``custom_objects``.
"""

from __future__ import annotations

import doctest
import os
from typing import Any, Callable

import keras
import numpy as np


def to_numpy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_numpy(v) for v in x]
    return keras.ops.convert_to_numpy(x)


def _symbolic(inputs: Any, name: str | None = None) -> Any:
    if isinstance(inputs, dict):  # named like their keys, as Keras expects for dict inputs
        return {k: _symbolic(v, name=k) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return [_symbolic(v) for v in inputs]
    return keras.Input(shape=inputs.shape[1:], dtype=str(inputs.dtype), name=name)


def _flat(outputs: Any) -> list:
    return keras.tree.flatten(outputs)


def wrap(layer: keras.layers.Layer, inputs: Any, **call_kwargs) -> keras.Model:
    """A functional model whose only layer is ``layer`` (outputs flattened to a list)."""
    symbolic = _symbolic(inputs)
    return keras.Model(symbolic, _flat(layer(symbolic, **call_kwargs)))


def assert_outputs_close(a: Any, b: Any, atol: float = 1e-6) -> None:
    for x, y in zip(_flat(to_numpy(a)), _flat(to_numpy(b)), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


def check_config_round_trip(make_layer: Callable[[], keras.layers.Layer]) -> None:
    layer = make_layer()
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def check_keras_round_trip(make_layer: Callable[[], keras.layers.Layer], inputs: Any, tmp_path, **call_kwargs) -> None:
    """Saves a model holding the layer as ``.keras`` and reloads it without custom_objects."""
    model = wrap(make_layer(), inputs, **call_kwargs)
    expected = model(inputs)
    path = os.path.join(str(tmp_path), "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_outputs_close(loaded(inputs), expected)


def check_saved_model_round_trip(make_layer: Callable[[], keras.layers.Layer], inputs: Any, tmp_path,
                                 **call_kwargs) -> None:
    """Exports a model holding the layer as a TF SavedModel and compares the served outputs (TF only)."""
    import tensorflow as tf

    model = wrap(make_layer(), inputs, **call_kwargs)
    expected = model(inputs)
    path = os.path.join(str(tmp_path), "saved_model")
    model.export(path, format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(path)
    args = keras.tree.map_structure(tf.convert_to_tensor, inputs)
    assert_outputs_close(served.serve(args), expected, atol=1e-5)


def check_mixed_bfloat16(make_layer: Callable[[], keras.layers.Layer], inputs: Any, **call_kwargs) -> keras.layers.Layer:
    """Runs a forward pass under ``mixed_bfloat16``: outputs bfloat16, variables float32."""
    from zoo.precision import dtype_policy_scope

    with dtype_policy_scope("mixed_bfloat16"):
        layer = make_layer()
        outputs = _flat(layer(inputs, **call_kwargs))
    for out in outputs:
        if "float" in keras.backend.standardize_dtype(out.dtype):
            assert keras.backend.standardize_dtype(out.dtype) == "bfloat16", out.dtype
    for w in layer.weights:
        assert keras.backend.standardize_dtype(w.dtype) == "float32", w.path
    return layer


def check_docstring_examples(module) -> None:
    """Executes the module's docstring examples; at least one must exist and all must pass."""
    result = doctest.testmod(module, extraglobs={"np": np, "keras": keras}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module.__name__} has no docstring example"
    assert result.failed == 0, f"{module.__name__}: {result.failed} docstring example(s) failed"
