"""C2AL: cohort-contrastive auxiliary heads on the shared representation (METHODS.md section 1).

Two light heads read the same ``h`` that feeds the primary head and learn

    y_head = y * 1[x in C_head]      y_tail = y * 1[x in C_tail]

with the loss ``BCE(primary) + lambda_head * BCE(aux_head) + lambda_tail * BCE(aux_tail)``; the
auxiliary BCE is averaged over the whole batch. The labels come from the data pipeline
(:func:`zoo.data.model_batches`), never from a model input. Serving drops both heads:
:func:`zoo.model.primary_model` of the wrapped model is the baseline graph with the same weights.
"""

from __future__ import annotations

from typing import Sequence

import keras

from layers import MLP
from zoo.model import PRIMARY, shared_representation

AUX_HEAD, AUX_TAIL = "aux_head", "aux_tail"
TAPS = ("primary_head_input",)


def C2AL(model: keras.Model, head_units: Sequence[int] = (), tap: str = "primary_head_input") -> keras.Model:
    """Wraps a ranking model with the two auxiliary heads.

    Args:
      model: a model from :func:`zoo.model.build`.
      head_units: hidden widths of each auxiliary head before its logit; ``()`` is a single
        ``Dense(1)``, the lightest head.
      tap: where the heads read from; ``"primary_head_input"`` (the backbone output ``h``).

    Returns:
      A model with outputs ``{"primary", "aux_head", "aux_tail"}`` sharing every baseline layer.
      Compile it with :func:`loss_weights`.
    """
    if tap not in TAPS:
        raise ValueError(f"tap: must be one of {TAPS}, got {tap!r}")
    h = shared_representation(model)
    outputs = {PRIMARY: model.get_layer(PRIMARY).output}
    for name in (AUX_HEAD, AUX_TAIL):
        x = h
        if head_units:
            x = MLP(list(head_units), name=f"{name}_mlp")(x)
        logit = keras.layers.Dense(1, name=f"{name}_logit")(x)
        outputs[name] = keras.layers.Activation("sigmoid", dtype="float32", name=name)(logit)
    return keras.Model(model.inputs, outputs, name=f"c2al_{model.name}")


def loss_weights(lambda_head: float, lambda_tail: float) -> dict[str, float]:
    """``loss_weights`` for compiling a :func:`C2AL` model."""
    if lambda_head < 0 or lambda_tail < 0:
        raise ValueError(f"lambda_head/lambda_tail: must be >= 0, got {lambda_head}, {lambda_tail}")
    return {PRIMARY: 1.0, AUX_HEAD: float(lambda_head), AUX_TAIL: float(lambda_tail)}
