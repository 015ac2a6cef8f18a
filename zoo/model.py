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
    """The primary path of ``model`` with every MLET table folded into a plain ``d``-wide table.

    MLET trains each table as ``A (rows x k) @ B (k x d)``; serving needs only ``T = A B``. The
    returned model is rebuilt with plain embeddings, takes ``T`` from :meth:`MLETEmbedding.fold`
    and copies every other weight by path, so its outputs equal the MLET model's primary output.
    A model without MLET tables is returned as its primary path unchanged.
    """
    from layers import MLETEmbedding

    serving = primary_model(model)
    backbone = model.get_layer(BACKBONE_LAYER)
    if backbone.encoder.embedding["type"] != "mlet":
        return serving
    folded = build(backbone.registered_name, backbone.encoder.spec, embedding={"type": "plain"}, **backbone.hparams())
    mlet_embedders = backbone.encoder.embedders
    plain_embedders = folded.get_layer(BACKBONE_LAYER).encoder.embedders
    # Every other weight exists in both models in the same order (paths may differ: sublayers of
    # third-party layers are auto-named), so copy positionally and check each shape.
    skip_source = {id(v) for e in mlet_embedders for v in e.weights}
    skip_target = {id(e.embeddings) for e in plain_embedders}
    source = [w for w in serving.weights if id(w) not in skip_source]
    target = [w for w in primary_model(folded).weights if id(w) not in skip_target]
    if len(source) != len(target):
        raise ValueError(f"fold_embeddings: {len(source)} weights to copy but {len(target)} in the folded model")
    for src, dst in zip(source, target):
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"fold_embeddings: shape mismatch {src.path} {src.shape} -> {dst.path} {dst.shape}")
        dst.assign(src)
    for mlet, plain in zip(mlet_embedders, plain_embedders):
        if not isinstance(mlet, MLETEmbedding):
            raise ValueError(f"fold_embeddings: expected MLETEmbedding, found {type(mlet).__name__}")
        plain.embeddings.assign(mlet.fold().embeddings)
    return primary_model(folded)
