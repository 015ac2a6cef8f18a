"""D-Train: tri-phase decoupled training of per-domain heads over any backbone (seed "002").

The domains are the groups of a cohort axis (:func:`zoo.cohort_heads.axis_groups`); the served
model is :func:`zoo.cohort_heads.CohortHeads` (one routed tower per domain). Only the abstract is
public (docs/methods.md#d-train); the schedule below is our reading of it:

a. **pre-train** the root model on all data with one shared head (:attr:`DTrainModels.shared`,
   the baseline graph when ``head_units`` is empty: the primary head of :func:`zoo.model.build`);
b. **post-train**: every domain tower starts as a copy of the shared head (:func:`split_heads`), and
   the routed model trains with the backbone still trainable;
c. **fine-tune** the towers with the backbone frozen (:func:`freeze_backbone`; its weights are bit
   for bit those at the end of phase b).

Each phase is one ``fit`` (under :mod:`zoo.protocol` in the study: converged, best epoch restored);
:func:`train` runs the three in order with the caller's compile and fit functions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import keras

from zoo.cohort_heads import CohortHeads, _apply, cohort_heads_options, group_names, tower_layers, towers
from zoo.model import PRIMARY, PRIMARY_LOGIT, build, shared_representation

PHASES = ("pretrain", "posttrain", "finetune")


@dataclasses.dataclass
class DTrainModels:
    """The two graphs of D-Train; they share the backbone's layers.

    ``shared``: inputs -> ``{"primary": sigmoid(shared head(h))}`` (phase a). ``routed``: the served
    :func:`~zoo.cohort_heads.CohortHeads` model (phases b and c). ``shared_head``: the shared head's
    layers, copied into every tower by :func:`split_heads`.
    """

    shared: keras.Model
    routed: keras.Model
    shared_head: list


def build_d_train(name: str, spec, options: Mapping[str, Any] | None = None, **hparams: Any) -> DTrainModels:
    """Builds both D-Train graphs for backbone ``name`` (backbone and primary head first, as the baseline)."""
    options = cohort_heads_options({**(options or {}), "method": "d_train"})
    base = build(name, spec, **hparams)
    if options["head_units"]:
        head = tower_layers("shared", options["head_units"])
        prob = keras.layers.Activation("sigmoid", dtype="float32", name=PRIMARY)(
            _apply(head, shared_representation(base)))
        shared = keras.Model(base.inputs, {PRIMARY: prob}, name=f"d_train_shared_{base.name}")
    else:
        shared, head = base, [base.get_layer(PRIMARY_LOGIT)]
    routed = CohortHeads(base, spec, options["axis"], options["groups"], options["head_units"])
    return DTrainModels(shared=shared, routed=routed, shared_head=head)


def split_heads(models: DTrainModels) -> None:
    """Phase b's start: every domain tower gets a copy of the shared head's weights."""
    for group in group_names(models.routed):
        names = [f"cohort_head_{group}_mlp"] * (len(models.shared_head) > 1) + [f"cohort_head_{group}_logit"]
        own = [models.routed.get_layer(n) for n in names]
        for src, dst in zip(models.shared_head, own, strict=True):
            dst.set_weights(src.get_weights())


def freeze_backbone(model: keras.Model, frozen: bool = True) -> None:
    """Phase c: every layer but the towers (and the weightless routing layers) stops training.

    Recompile the model afterwards (Keras collects the trainable weights at compile time).
    """
    tower_ids = {id(layer) for layer in towers(model)}
    for layer in model.layers:
        if id(layer) not in tower_ids and layer.weights:
            layer.trainable = not frozen


def backbone_weights(model: keras.Model) -> list:
    """The non-tower weights of a routed model (phase c must leave them unchanged)."""
    tower_ids = {id(w) for layer in towers(model) for w in layer.weights}
    return [w for w in model.weights if id(w) not in tower_ids]


def train(models: DTrainModels, compile_fn: Callable[[keras.Model, str], None],
          fit_fn: Callable[[keras.Model, str], Any]) -> dict[str, Any]:
    """Runs the three phases; returns ``{phase: fit_fn's result}``.

    Args:
      models: from :func:`build_d_train`.
      compile_fn: ``(model, phase)`` compiles the model for a phase (e.g. Adam + BCE on ``primary``).
      fit_fn: ``(model, phase)`` trains it (``model.fit`` or :func:`zoo.protocol.fit`); the shared
        model takes the baseline's inputs, the routed one also the axis feature when it is not one.
    """
    out = {}
    compile_fn(models.shared, PHASES[0])
    out[PHASES[0]] = fit_fn(models.shared, PHASES[0])
    split_heads(models)
    freeze_backbone(models.routed, frozen=False)
    compile_fn(models.routed, PHASES[1])
    out[PHASES[1]] = fit_fn(models.routed, PHASES[1])
    freeze_backbone(models.routed)
    compile_fn(models.routed, PHASES[2])
    out[PHASES[2]] = fit_fn(models.routed, PHASES[2])
    freeze_backbone(models.routed, frozen=False)  # trainable again for a later fit; weights unchanged
    return out
