"""The ranking model: a registered backbone producing ``h`` plus a primary head.

``build(name, spec, **hparams)`` returns a functional ``keras.Model`` with one named input per spec
input feature and one output ``{"primary": P(y=1 | x)}``. Its layer ``"backbone"`` outputs ``h``,
the tap the C2AL wrapper attaches its auxiliary heads to.
"""

from __future__ import annotations

from typing import Any

import keras

from zoo.registry import get_backbone
from zoo.spec import FeatureSpec

BACKBONE_LAYER = "backbone"
PRIMARY = "primary"


def build(name: str, spec: FeatureSpec, **hparams: Any) -> keras.Model:
    """Builds the ranking model (backbone + primary head) for a registered backbone.

    Args:
      name: registered backbone name, e.g. ``"dcnv2"``.
      spec: the dataset's feature spec.
      **hparams: backbone hyper-parameters (the model YAML's ``hparams``).
    """
    inputs = spec.keras_inputs()
    backbone = get_backbone(name)(spec.to_dict(), name=BACKBONE_LAYER, **hparams)
    h = backbone(inputs)
    logit = keras.layers.Dense(1, name="primary_logit")(h)
    prob = keras.layers.Activation("sigmoid", dtype="float32", name=PRIMARY)(logit)
    return keras.Model(inputs, {PRIMARY: prob}, name=f"{name}_ranking_model")


def shared_representation(model: keras.Model):
    """The symbolic ``h`` (the backbone output) of a model built by :func:`build`."""
    return model.get_layer(BACKBONE_LAYER).output


def primary_model(model: keras.Model) -> keras.Model:
    """The serving graph: the model's inputs to its primary output, nothing else."""
    return keras.Model(model.inputs, model.get_layer(PRIMARY).output, name=model.name.replace("c2al_", ""))



def fold_embeddings(model: keras.Model) -> keras.Model:
    """The serving graph of ``model`` with every MLET table folded into a plain one (equal outputs).

    A convenience over :func:`zoo.export.fold_mlet` (the one implementation) for ranking models.
    """
    from zoo.export import fold_mlet

    return fold_mlet(primary_model(model))
