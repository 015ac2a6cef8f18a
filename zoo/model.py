"""The ranking model: a registered backbone producing ``h`` plus a primary head.

``build(name, spec, **hparams)`` returns a functional ``keras.Model`` with one named input per spec
input feature and one output ``{"primary": P(y=1 | x)}``. Its layer ``"backbone"`` is called with
``return_interaction=True`` and outputs the pair ``(h, z)``: ``h`` feeds the primary head
(:func:`shared_representation`, C2AL's default tap) and ``z`` is the backbone's interaction output
before the over-arch (:func:`interaction_output`, the ``interaction_output`` tap). ``z`` is an
intermediate of ``h`` in every backbone, so exposing it adds no layer, weight or computation, and
the serving graph (:func:`primary_model`) is the same function with the same parameters.
"""

from __future__ import annotations

from typing import Any

import keras

import layers  # noqa: F401  (registers the shipped layers for deserialization)
from zoo.folding import fold_mlet
from zoo.registry import backbone_names, get_backbone
from zoo.spec import FeatureSpec

BACKBONE_LAYER = "backbone"
PRIMARY = "primary"
PRIMARY_LOGIT = "primary_logit"


def build(name: str, spec: FeatureSpec, **hparams: Any) -> keras.Model:
    """Builds the ranking model (backbone + primary head) for a registered backbone.

    Args:
      name: registered backbone name, e.g. ``"dcnv2"``.
      spec: the dataset's feature spec.
      **hparams: backbone hyper-parameters (the model YAML's ``hparams``).
    """
    inputs = spec.keras_inputs()
    backbone = get_backbone(name)(spec.to_dict(), name=BACKBONE_LAYER, **hparams)
    # (h, z) on the first call: Keras checks a graph's connectivity with a layer's first output structure.
    h, _ = backbone(inputs, return_interaction=True)
    return keras.Model(inputs, {PRIMARY: primary_head(h)}, name=f"{name}_ranking_model")


def primary_head(h):
    """The primary head on ``h``: ``sigmoid(Dense(1))`` (layers ``primary_logit`` and ``primary``)."""
    logit = keras.layers.Dense(1, name=PRIMARY_LOGIT)(h)
    return keras.layers.Activation("sigmoid", dtype="float32", name=PRIMARY)(logit)


def _backbone_node_output(model: keras.Model):
    return model.get_layer(BACKBONE_LAYER).output


def shared_representation(model: keras.Model):
    """The symbolic ``h`` (the input of the primary head) of a model built by :func:`build`.

    Also reads models whose backbone returns ``h`` alone (saved before ``z`` was exposed) and the
    multi-task models of :func:`zoo.c2al.ple_towers` (``h`` is task 0's output).
    """
    out = _backbone_node_output(model)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, (tuple, list)):  # all_tasks=True: [u^1, .., u^T]
        out = out[0]
    return out


def interaction_output(model: keras.Model):
    """The symbolic ``z`` (the backbone's interaction output, before its over-arch) of a built model."""
    out = _backbone_node_output(model)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError(f"model '{model.name}': its backbone does not expose the interaction output; "
                         "rebuild it with zoo.model.build")
    return out[1]


def primary_model(model: keras.Model) -> keras.Model:
    """The serving graph: the model's inputs to its primary output, nothing else.

    Auxiliary heads are dropped. A multi-task backbone (PLE/MMoE with ``num_tasks > 1``, e.g. C2AL's
    ``ple_towers`` ablation) is replaced by its single-task :meth:`~zoo.backbone.Backbone.serving_copy`
    when that computes the same ``h``: the served graph is then the single-task baseline's, layer for
    layer, with the trained primary-path weights.
    """
    name = model.name.replace("c2al_", "")
    backbone = next((layer for layer in model.layers if layer.name == BACKBONE_LAYER), None)
    copy = None
    if backbone is not None and hasattr(backbone, "serving_copy") and isinstance(model.input, dict):
        copy = backbone.serving_copy({k: tuple(t.shape) for k, t in model.input.items()})
    if copy is None:
        return keras.Model(model.inputs, model.get_layer(PRIMARY).output, name=name)
    h, _ = copy(model.input, return_interaction=True)
    prob = model.get_layer(PRIMARY)(model.get_layer(PRIMARY_LOGIT)(h))  # the trained head, shared
    return keras.Model(model.inputs, prob, name=name)


def fold_embeddings(model: keras.Model) -> keras.Model:
    """The serving graph of ``model`` with every MLET table folded into a plain one (equal outputs).

    A convenience over :func:`zoo.folding.fold_mlet` (the one implementation) for ranking models.
    """
    return fold_mlet(primary_model(model))


def load_model(path: str, compile: bool = False) -> keras.Model:
    """Loads a saved ``.keras`` model of the zoo: the one model loader of the project.

    Every shipped layer and registered backbone is registered for deserialization first, so no
    ``custom_objects`` are needed. ``compile=False`` (default) skips the saved optimizer and losses:
    the model is for prediction, evaluation or export; pass ``compile=True`` to resume training.
    """
    backbone_names()  # imports every backbone module, which registers it
    return keras.saving.load_model(path, compile=compile)
