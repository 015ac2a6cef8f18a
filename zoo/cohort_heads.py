"""Served cohort heads: one tower per group of a cohort axis on the shared ``h``, routed per example.

The "why not just give each cohort its own head" baseline of C2AL (docs/methods.md#cohort-heads:
"cohort-specific heads that are used at serving time"), and the serving graph of Gradient
Aggregation (:mod:`zoo.gradient_aggregation`) and D-Train (:mod:`zoo.d_train`). Unlike C2AL's auxiliary heads, these towers ARE the served model:

    g_i = groups[cohort(x_i[axis.feature])]          (CohortBucketizer, in the graph)
    p_i = sigmoid(T_{g_i}(h_i))                       (CohortRouter over the stacked tower logits)

``T_g`` is an optional ``MLP(head_units)`` then ``Dense(1)`` (``cohort_head_<group>_logit``). The
routed probability is the output ``primary``, so ``model.fit`` with the ordinary primary label
trains each tower on its own group's examples while the backbone learns from all of them.

Serving input: the group is computed in the graph from the raw feature the axis is defined on
(``axis.feature``), with the spec's boundaries (ordinal axes) or id lists (categorical axes), exactly
as the Beam job computes ``cohort/<axis>``. If that feature is already a model input (the synthetic
data's ``user_value``) the served signature is the baseline's; if it is a carried feature
(``input: false``) the model gets one more named input, of the feature's spec dtype and shape,
and the export serves it (:func:`zoo.export.served_spec`). Clients send the raw feature, never a
cohort id.

Options (the model YAML's ``cohort_heads:`` block, checked by :func:`cohort_heads_options`):

* ``method``: ``cohort_heads`` (default; trained like the baseline, one phase),
  ``gradient_aggregation`` (the backdoor-adjusted, group-balanced loss) or ``d_train`` (the
  three-phase schedule);
* ``axis``: the cohort axis (default: the spec's ``c2al.axis``);
* ``groups``: ``{group: [cohort, ...]}`` covering every cohort of the axis exactly once (e.g.
  ``{head: [p75_95, p95_100], tail: [p00_05, ...]}``); default one group per cohort;
* ``head_units``: hidden widths of each tower before its ``Dense(1)`` (default ``[]``);
* ``prior``: Gradient Aggregation's ``P(z)``: ``user_share`` (default) or ``uniform``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from layers import MLP, CohortBucketizer, CohortRouter, validation
from zoo.model import PRIMARY, build, shared_representation
from zoo.spec import COHORT_KEY_PREFIX, FeatureSpec

METHODS = ("cohort_heads", "gradient_aggregation", "d_train")
PRIORS = ("user_share", "uniform")
OPTION_KEYS = ("method", "axis", "groups", "head_units", "prior")
DEFAULTS: dict[str, Any] = {"method": "cohort_heads", "axis": None, "groups": None, "head_units": [],
                            "prior": "user_share"}
BUCKETIZER = "cohort_group"
LOGITS = "cohort_logits"
ROUTER = "cohort_router"


def cohort_heads_options(block: Mapping[str, Any] | None, where: str = "cohort_heads") -> dict[str, Any]:
    """The model YAML's ``cohort_heads`` block with :data:`DEFAULTS` filled in and checked.

    The axis and group names are checked against the spec when the model is built
    (:func:`axis_groups`). Raises ValueError naming the key.
    """
    block = dict(block or {})
    unknown = [k for k in block if k not in OPTION_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key '{unknown[0]}'; keys are {list(OPTION_KEYS)}")
    options = {**DEFAULTS, **block}
    validation.choice(options["method"], f"{where}.method", METHODS)
    validation.choice(options["prior"], f"{where}.prior", PRIORS)
    if options["axis"] is not None and (not isinstance(options["axis"], str) or not options["axis"]):
        raise ValueError(f"{where}.axis: must be a cohort axis name, got {options['axis']!r}")
    options["head_units"] = validation.widths(options["head_units"], f"{where}.head_units")
    groups = options["groups"]
    if groups is not None:
        if not isinstance(groups, Mapping) or not groups:
            raise ValueError(f"{where}.groups: must be a non-empty mapping of group name to cohort list, "
                             f"got {groups!r}")
        for name, cohorts in groups.items():
            if isinstance(cohorts, str) or not isinstance(cohorts, Sequence) or not cohorts:
                raise ValueError(f"{where}.groups.{name}: must be a non-empty list of cohort names, got {cohorts!r}")
        options["groups"] = {str(k): [str(c) for c in v] for k, v in groups.items()}
    return options


def axis_name(spec: FeatureSpec, axis: str | None) -> str:
    """``axis``, or the spec's ``c2al.axis`` when None (checked against the spec's axes)."""
    if axis is None:
        axis = (spec.c2al or {}).get("axis")
        if axis is None:
            raise ValueError(f"axis: spec '{spec.name}' has no c2al.axis; name the cohort axis")
    return spec.axis(axis).name


def axis_groups(spec: FeatureSpec, axis: str,
                groups: Mapping[str, Sequence[str]] | None = None) -> tuple[list[str], list[int]]:
    """``(group names, group index of each cohort of the axis)``; default one group per cohort.

    Raises ValueError naming the group when a cohort is unknown, listed twice or left out.
    """
    cohorts = list(spec.axis(axis).cohorts)
    if groups is None:
        return cohorts, list(range(len(cohorts)))
    of: dict[str, int] = {}
    for g, (name, members) in enumerate(groups.items()):
        for cohort in members:
            if cohort not in cohorts:
                raise ValueError(f"groups.{name}: '{cohort}' is not a cohort of axis '{axis}' ({cohorts})")
            if cohort in of:
                raise ValueError(f"groups.{name}: cohort '{cohort}' is already in another group")
            of[cohort] = g
    missing = [c for c in cohorts if c not in of]
    if missing:
        raise ValueError(f"groups: cohort '{missing[0]}' of axis '{axis}' is in no group")
    return list(groups), [of[c] for c in cohorts]


def bucketizer(spec: FeatureSpec, axis: str, group_of: Sequence[int] | None = None,
               name: str = BUCKETIZER) -> CohortBucketizer:
    """The in-graph :class:`layers.CohortBucketizer` of a spec axis (the Beam job's ``cohort/<axis>`` rule)."""
    a = spec.axis(axis)
    groups = None if group_of is None or list(group_of) == list(range(len(a.cohorts))) else list(group_of)
    if a.ordinal:
        return CohortBucketizer(boundaries=list(a.boundaries), groups=groups, name=name)
    return CohortBucketizer(values=[list(a.values[c]) for c in a.cohorts[:-1]], groups=groups, name=name)


def group_ids(spec: FeatureSpec, arrays: Mapping[str, np.ndarray], axis: str,
              group_of: Sequence[int]) -> np.ndarray:
    """The data's group id of each row, int64 ``(N, 1)``, from the stored ``cohort/<axis>`` column."""
    cohort = np.asarray(arrays[COHORT_KEY_PREFIX + spec.axis(axis).name]).reshape(-1)
    return np.asarray(group_of, dtype="int64")[cohort][:, None]


def routing_input(model: keras.Model, spec: FeatureSpec, axis: str):
    """``(inputs, feature tensor)``: the model's inputs plus the axis feature's (reused if already an input)."""
    feature = spec.feature(spec.axis(axis).feature)
    inputs = dict(model.input) if isinstance(model.input, dict) else {t.name: t for t in model.inputs}
    if feature.name not in inputs:
        inputs[feature.name] = keras.Input(shape=spec.input_shape(feature), dtype=spec.input_dtype(feature),
                                           name=feature.name)
    return inputs, inputs[feature.name]


def _layer_name(group: str) -> str:
    return "cohort_head_" + re.sub(r"[^A-Za-z0-9_]", "_", group)


def tower_layers(group: str, head_units: Sequence[int]) -> list[keras.layers.Layer]:
    """A group's tower: ``MLP(head_units)`` (if any) then ``Dense(1)`` logit."""
    name = _layer_name(group)
    out = [MLP(list(head_units), name=f"{name}_mlp")] if head_units else []
    return out + [keras.layers.Dense(1, name=f"{name}_logit")]


def _apply(layers_: Sequence[keras.layers.Layer], x):
    for layer in layers_:
        x = layer(x)
    return x


def CohortHeads(model: keras.Model, spec: FeatureSpec, axis: str | None = None,
                groups: Mapping[str, Sequence[str]] | None = None, head_units: Sequence[int] = ()) -> keras.Model:
    """Replaces a ranking model's primary head by one routed tower per group of a cohort axis.

    Args:
      model: a model from :func:`zoo.model.build` (its backbone is shared; its primary head is not used).
      spec: the feature spec (the axis, its boundaries or ids, the routing feature's dtype).
      axis: the cohort axis; default the spec's ``c2al.axis``.
      groups: ``{group: [cohort, ...]}`` (:func:`axis_groups`); default one group per cohort.
      head_units: hidden widths of each tower before its ``Dense(1)``.

    Returns:
      A model with output ``{"primary": sigmoid(T_g(h))}`` for each example's group ``g``, taking the
      model's inputs plus the axis feature (when it is not one already).
    """
    axis = axis_name(spec, axis)
    names, group_of = axis_groups(spec, axis, groups)
    head_units = validation.widths(list(head_units), "head_units")
    inputs, feature = routing_input(model, spec, axis)
    h = shared_representation(model)
    group = bucketizer(spec, axis, group_of)(feature)
    tower_logits = [_apply(tower_layers(g, head_units), h) for g in names]
    stacked = (tower_logits[0] if len(names) == 1 else
               keras.layers.Concatenate(axis=-1, name=LOGITS)(tower_logits))
    logit = CohortRouter(len(names), name=ROUTER)([stacked, group])
    prob = keras.layers.Activation("sigmoid", dtype="float32", name=PRIMARY)(logit)
    return keras.Model(inputs, {PRIMARY: prob}, name=f"cohort_heads_{model.name}")


def group_names(model: keras.Model) -> list[str]:
    """The groups of a :func:`CohortHeads` model in tower order: the order of the router's logit columns."""
    prefix, suffix = "cohort_head_", "_logit"
    logits = model.get_layer(ROUTER).input[0]
    producer = logits._keras_history.operation  # the Concatenate of the tower logits (one tower: its Dense)
    tensors = producer.input if isinstance(producer, keras.layers.Concatenate) else [logits]
    return [t._keras_history.operation.name[len(prefix):-len(suffix)] for t in tensors]


def tower_model(model: keras.Model, group: str) -> keras.Model:
    """The model's inputs to ``sigmoid(T_group(h))``, the group's tower called directly (no routing)."""
    name = _layer_name(group)
    layers_ = [model.get_layer(f"{name}_mlp")] if any(l.name == f"{name}_mlp" for l in model.layers) else []
    layers_.append(model.get_layer(f"{name}_logit"))
    prob = keras.ops.sigmoid(_apply(layers_, shared_representation(model)))
    return keras.Model(model.inputs, prob, name=f"{model.name}_{name}")


def towers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every tower layer of a :func:`CohortHeads` model (MLPs and logits)."""
    return [layer for layer in model.layers if layer.name.startswith("cohort_head_")]


def build_cohort_heads(name: str, spec: FeatureSpec, options: Mapping[str, Any] | None = None,
                       **hparams: Any) -> keras.Model:
    """The served (and, except for D-Train's phase a, training) model of a ``cohort_heads`` block.

    The backbone and the primary head are built first (:func:`zoo.model.build`), so with the same
    seed the backbone starts from the baseline's initial weights; the towers are created after it.
    """
    options = cohort_heads_options(options)
    base = build(name, spec, **hparams)
    return CohortHeads(base, spec, options["axis"], options["groups"], options["head_units"])
