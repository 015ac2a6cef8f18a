"""The study plan: one YAML (``bench/c2al_study.yaml``) says what is trained, on what and how often.

Every key is checked: an unknown key or a bad value is a one-line error naming the key. ``quick: {...}``
holds overrides for a run of a few minutes (``training`` merges key by key, every other key replaces
the plan's). See :class:`Plan` for the keys.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import yaml

from zoo.precision import DTYPE_POLICIES
from zoo.protocol import Protocol
from zoo.registry import backbone_names
from zoo.study.variants import VARIANTS

DATASET_KEYS = ("dataset", "source", "rows", "users", "contrast", "split", "hparams_from")
SELECT_ON = ("overall", "cohorts")
MODEL_CONFIGS = ("full", "tiny")
HEAD_OPTION_KEYS = ("head_units", "tap")


class PlanError(ValueError):
    """A study plan that cannot run; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked study plan.

    Attributes:
      datasets: name -> ``{dataset: YAML path, source: folder under ../shared/data or None, rows,
        users, contrast, split, hparams_from}`` (``rows``/``users``/``contrast``: synthetic generator options;
        ``split``: ``{train, valid, test}`` fractions replacing the dataset YAML's, e.g. a large test
        split, which costs predictions only and removes evaluation noise; ``hparams_from``: a quality
        benchmark YAML such as ``bench/quality_frappe.yaml`` whose model entries give each backbone's
        hyper-parameters and embedding options on this dataset, e.g. the published BARS settings).
      backbones: registered backbone names.
      model_configs: ``full`` (``configs/models/<b>.yaml``) or ``tiny`` (``<b>_test.yaml``).
      seeds: the paired seeds of the final runs.
      sweep_seeds: the seeds of the lambda sweep (a subset of ``seeds``: their chosen-lambda runs
        are reused as final runs).
      lambdas: the grid of ``lambda_head = lambda_tail``.
      select_on: what the sweep minimizes on the validation split: ``overall`` NE, or ``cohorts``
        (the mean of the head and tail cohorts' NE).
      training: batch size, learning rate, ``dtype_policy`` (:data:`zoo.precision.DTYPE_POLICIES`,
        default ``float32``: every run's models are built in it) and the :class:`zoo.protocol.Protocol` keys.
      discovery: ``{metric, bins, min_fraction}`` of cohort discovery on the seed-0 baseline.
      variants: :data:`zoo.study.variants.VARIANTS` names run at the chosen lambda.
      variant_datasets: the datasets the variants run on.
      head_options: C2AL options (``head_units``, ``tap``) tried on the sweep seeds at the chosen
        lambda, validation only; the best one (if better than the plain heads) is the chosen config.
      diagnostics_rows: validation rows of the gradient-alignment probe.
    """

    datasets: dict[str, dict[str, Any]]
    backbones: list[str]
    model_configs: str
    seeds: list[int]
    sweep_seeds: list[int]
    lambdas: list[float]
    select_on: str
    training: dict[str, Any]
    discovery: dict[str, Any]
    variants: list[str]
    variant_datasets: list[str]
    head_options: list[dict[str, Any]]
    diagnostics_rows: int

    @property
    def protocol(self) -> Protocol:
        return Protocol.from_mapping(self.training, "training")

    @property
    def dtype_policy(self) -> str:
        return self.training.get("dtype_policy", "float32")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_plan(path: str, quick: bool = False) -> Plan:
    """Reads and checks a plan YAML; with ``quick`` its ``quick`` overrides are applied."""
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    return plan_from_mapping(raw, quick=quick, where=path)


def plan_from_mapping(raw: Mapping[str, Any], quick: bool = False, where: str = "plan") -> Plan:
    fields = [f.name for f in dataclasses.fields(Plan)]
    raw = dict(raw)
    overrides = raw.pop("quick", None) or {}
    for block, keys in ((raw, fields), (overrides, fields)):
        unknown = [k for k in block if k not in keys]
        if unknown:
            raise PlanError(f"{where}: unknown key '{unknown[0]}'; keys are {fields + ['quick']}")
    if quick:
        raw = {**raw, **{k: v for k, v in overrides.items() if k != "training"},
               "training": {**(raw.get("training") or {}), **(overrides.get("training") or {})}}
    missing = [k for k in fields if k not in raw]
    if missing:
        raise PlanError(f"{where}: missing key '{missing[0]}'")
    plan = Plan(**{k: raw[k] for k in fields})
    _check(plan, where)
    return plan


def _check(plan: Plan, where: str) -> None:
    def fail(key: str, message: str):
        raise PlanError(f"{where}: {key}: {message}")

    if not isinstance(plan.datasets, Mapping) or not plan.datasets:
        fail("datasets", "must be a non-empty mapping of name -> options")
    for name, options in plan.datasets.items():
        unknown = [k for k in options if k not in DATASET_KEYS]
        if unknown:
            fail(f"datasets.{name}", f"unknown key '{unknown[0]}'; keys are {list(DATASET_KEYS)}")
        if "dataset" not in options:
            fail(f"datasets.{name}", "needs 'dataset' (a dataset YAML)")
        for key in ("rows", "users"):
            if key in options and not (isinstance(options[key], int) and options[key] > 0):
                fail(f"datasets.{name}.{key}", f"must be a positive int, got {options[key]!r}")
        tuned = options.get("hparams_from")
        if tuned is not None and not (isinstance(tuned, str) and tuned.endswith((".yaml", ".yml"))):
            fail(f"datasets.{name}.hparams_from", f"must be the path of a quality benchmark YAML, got {tuned!r}")
        split = options.get("split")
        if split is not None and (not isinstance(split, Mapping) or set(split) != {"train", "valid", "test"}
                                  or not all(isinstance(v, (int, float)) and v > 0 for v in split.values())
                                  or abs(sum(split.values()) - 1.0) > 1e-9):
            fail(f"datasets.{name}.split", f"must map train, valid and test to positive fractions summing "
                 f"to 1, got {split!r}")
    registered = backbone_names()
    unknown = [b for b in plan.backbones if b not in registered]
    if not plan.backbones or unknown:
        fail("backbones", f"unknown {unknown}; registered: {registered}")
    if plan.model_configs not in MODEL_CONFIGS:
        fail("model_configs", f"must be one of {MODEL_CONFIGS}, got {plan.model_configs!r}")
    for key in ("seeds", "sweep_seeds"):
        values = getattr(plan, key)
        if not values or not all(isinstance(s, int) and not isinstance(s, bool) for s in values) \
                or len(set(values)) != len(values):
            fail(key, f"must be a non-empty list of distinct ints, got {values!r}")
    if len(plan.seeds) < 2:
        fail("seeds", "a paired test needs at least 2 seeds")
    if not set(plan.sweep_seeds) <= set(plan.seeds):
        fail("sweep_seeds", f"must be a subset of seeds {plan.seeds}, got {plan.sweep_seeds}")
    if not plan.lambdas or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                   and v > 0 for v in plan.lambdas):
        fail("lambdas", f"must be a non-empty list of positive numbers, got {plan.lambdas!r}")
    if plan.select_on not in SELECT_ON:
        fail("select_on", f"must be one of {SELECT_ON}, got {plan.select_on!r}")
    for key in ("batch_size",):
        if not isinstance(plan.training.get(key), int) or plan.training[key] <= 0:
            fail(f"training.{key}", f"must be a positive int, got {plan.training.get(key)!r}")
    allowed = ("batch_size", "learning_rate", "dtype_policy") + Protocol.names()
    unknown = [k for k in plan.training if k not in allowed]
    if unknown:
        fail("training", f"unknown key '{unknown[0]}'; keys are {list(allowed)}")
    if plan.dtype_policy not in DTYPE_POLICIES:
        fail("training.dtype_policy", f"must be one of {list(DTYPE_POLICIES)}, got {plan.dtype_policy!r}")
    try:
        plan.protocol
    except ValueError as err:
        raise PlanError(f"{where}: {err}") from None
    bad = [v for v in plan.variants if v not in VARIANTS]
    if bad:
        fail("variants", f"unknown '{bad[0]}'; variants are {list(VARIANTS)}")
    bad = [d for d in plan.variant_datasets if d not in plan.datasets]
    if bad:
        fail("variant_datasets", f"'{bad[0]}' is not one of the plan's datasets {list(plan.datasets)}")
    for i, option in enumerate(plan.head_options):
        unknown = [k for k in option if k not in HEAD_OPTION_KEYS]
        if unknown or not option:
            fail(f"head_options[{i}]", f"must set some of {list(HEAD_OPTION_KEYS)}, got {option!r}")
    if not isinstance(plan.diagnostics_rows, int) or plan.diagnostics_rows <= 0:
        fail("diagnostics_rows", f"must be a positive int, got {plan.diagnostics_rows!r}")
