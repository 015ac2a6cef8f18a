"""The few private Keras APIs the zoo relies on, each behind one function here.

Keras 3 has no public way to walk every nested sub-layer of a layer, to swap a tracked sub-layer
of a built layer, or to trace a callable on symbolic tensors outside a functional model. Each
function below wraps the one private API that does it, so a Keras upgrade that moves one breaks
this module only; ``tests/test_compat.py`` pins the behaviour the zoo depends on.

Keras layers also have no forward hooks: :func:`recording_calls` is the one place the zoo observes
an intermediate of a layer's own forward pass (the C2AL diagnostics read the over-arch's ReLU
outputs with it).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import keras


def sublayers(layer: keras.layers.Layer, include_self: bool = False, recursive: bool = True) -> list:
    """Every layer nested in ``layer``, depth first (``Layer._flatten_layers``).

    Args:
      layer: any Keras layer or model.
      include_self: put ``layer`` itself first.
      recursive: descend into the sub-layers' own sub-layers (else direct children only).
    """
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def direct_sublayers(layer: keras.layers.Layer) -> list:
    """The sub-layers ``layer`` tracks directly (``Layer._layers``)."""
    return list(layer._layers)


def replace_tracked_layer(parent: keras.layers.Layer, old: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """Makes ``parent``'s layer tracker hold ``new`` where it held ``old`` (weights follow the tracker).

    Attributes of ``parent`` that still point at ``old`` are the caller's to re-point.
    """
    parent._tracker.replace_tracked_value("layers", old, new)


def compute_output_spec(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Traces ``fn`` on symbolic ``keras.KerasTensor`` arguments and returns its symbolic outputs.

    Builds every layer ``fn`` calls, on either backend, without running it on data
    (``keras.src.backend.compute_output_spec``).
    """
    return keras.src.backend.compute_output_spec(fn, *args, **kwargs)


@contextlib.contextmanager
def recording_calls(obj: Any, attribute: str, record: Callable[[Any], None]) -> Iterator[None]:
    """Within the block, every call of the callable attribute ``obj.<attribute>`` also hands its result to ``record``.

    The attribute is shadowed on the instance by a wrapper that calls the original and returns its
    result unchanged; on exit (also after an error) the instance gets back exactly what it had: its
    own value, or none (so a class attribute shows through again). E.g.
    ``recording_calls(mlp, "activation", outputs.append)`` records each post-activation output of a
    :class:`layers.MLP` call, eagerly, as the layer computes it.

    Args:
      obj: any object, e.g. a Keras layer.
      attribute: the name of a callable attribute or method of ``obj``.
      record: called with each result.
    """
    had_own = attribute in vars(obj)
    own = vars(obj).get(attribute)
    original = getattr(obj, attribute)
    if not callable(original):
        raise TypeError(f"recording_calls: '{attribute}' of {type(obj).__name__} is not callable")

    def recorded(*args, **kwargs):
        out = original(*args, **kwargs)
        record(out)
        return out

    object.__setattr__(obj, attribute, recorded)  # past Keras' attribute tracking: restored below
    try:
        yield
    finally:
        if had_own:
            object.__setattr__(obj, attribute, own)
        else:
            object.__delattr__(obj, attribute)
