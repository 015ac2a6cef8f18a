"""The ranking model: a registered backbone producing ``h`` plus a primary head.

``build(name, spec, **hparams)`` returns a functional ``keras.Model`` with one named input per spec
input feature and one output ``{"primary": P(y=1 | x)}``. Its layer ``"backbone"`` outputs ``h``,
the tap the C2AL wrapper attaches its auxiliary heads to.
"""

from __future__ import annotations

from typing import Any

import keras
import yaml

from zoo.encoder import embedding_options
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


def load_model_config(path: str) -> dict[str, Any]:
    """A model YAML (backbone, embedding, hparams, training, c2al) with defaults filled in and checked."""
    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    unknown = set(cfg) - {"backbone", "embedding", "hparams", "training", "c2al"}
    if unknown or "backbone" not in cfg:
        raise ValueError(f"{path}: needs 'backbone' and only backbone/embedding/hparams/training/c2al keys; "
                         f"got {sorted(cfg)}")
    cfg.setdefault("hparams", {})
    cfg["embedding"] = embedding_options(cfg.get("embedding"))
    cfg["training"] = {"batch_size": 1024, "epochs": 3, "learning_rate": 1e-3,
                       "early_stopping_patience": 1, **(cfg.get("training") or {})}
    cfg["c2al"] = {"head_units": [], **(cfg.get("c2al") or {})}
    return cfg


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
