"""Model YAMLs: loaded once, bases merged, every block checked; the result is reused as is.

A model YAML has the blocks ``backbone`` (a registered name), ``embedding``
(:func:`zoo.encoder.embedding_options`), ``hparams`` (the backbone's hyper-parameters, checked
against its :class:`~zoo.backbone.HyperParameters`), ``training`` (:data:`TRAINING_DEFAULTS`, plus the
optional ``task_weights: {label: weight}`` of multi-task datasets), ``c2al``
(:func:`zoo.c2al.c2al_options`) and ``cohort_heads`` (served cohort towers, Gradient Aggregation,
D-Train: :func:`zoo.cohort_heads.cohort_heads_options`), and optionally ``base``: the path of
another model YAML, relative to this one, whose blocks it starts from. Bases chain; a child overrides its base key by key inside
each block (``training: {max_epochs: 1}`` changes only the epoch cap; ``hparams`` likewise), except that an
``embedding`` block naming a different ``type`` replaces the base's whole block. Files whose name
starts with ``_`` (``configs/models/_base.yaml``) are bases only, not models.

Every error is one line naming the file and the key: an unknown key in any block, a training value
of the wrong type, a missing or circular base.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import yaml

from zoo.c2al import OPTION_KEYS as C2AL_KEYS, c2al_options
from zoo.cohort_heads import OPTION_KEYS as COHORT_HEADS_KEYS, cohort_heads_options
from zoo.encoder import embedding_options
from zoo.losses import loss_options
from zoo.precision import DTYPE_POLICIES
from zoo.protocol import Protocol
from zoo.registry import get_backbone

BLOCKS = ("embedding", "hparams", "training", "c2al", "cohort_heads")
MODEL_KEYS = ("base", "backbone") + BLOCKS
# The training block's defaults, the one place they live: the batch size, the learning rate and
# the converged training protocol (zoo.protocol.Protocol: epoch cap, early stopping, reduce-on-plateau,
# the monitored exact validation metric).
# ``training.reader``: ``memory`` parses the train split once and trains from its columns in memory,
# ``stream`` parses the shards every epoch, ``auto`` is ``memory`` up to zoo.data.MEMORY_READER_LIMIT.
READERS = ("auto", "memory", "stream")
TRAINING_DEFAULTS: dict[str, Any] = {
    "batch_size": 1024,
    "learning_rate": 1e-3,
    "reader": "auto",  # READERS, zoo.data.training_batches: memory when the parsed train split fits
    "loss": {"type": "bce"},  # the primary head's loss, zoo.losses.loss_options: bce or {type: bce_ranking, ...}
    "dtype_policy": "float32",  # DTYPE_POLICIES, zoo.precision: float32, mixed_bfloat16 or mixed_float16
    "checkpoint_every_steps": 0,  # zoo.checkpoint: also checkpoint every N global steps; 0 = at epoch ends only
    **dataclasses.asdict(Protocol()),
}


# Optional training keys (no default filled in): multi-task specs (labels: [..]) take
# ``task_weights: {label: weight >= 0}``, the loss weight per label (unlisted labels 1.0).
TRAINING_OPTIONAL = ("task_weights",)
TRAINING_KEYS = tuple(TRAINING_DEFAULTS) + TRAINING_OPTIONAL


class ConfigError(ValueError):
    """A model YAML that cannot be used; the message names the file and the key."""


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _task_weights(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
        for k, v in value.items())


_TRAINING_CHECKS = {
    "reader": (lambda value: value in READERS, f"one of {list(READERS)}"),
    "dtype_policy": (lambda value: value in DTYPE_POLICIES, f"one of {list(DTYPE_POLICIES)}"),
    "task_weights": (_task_weights, "a mapping {label: number >= 0}"),
    "batch_size": (_positive_int, "a positive int"),
    "checkpoint_every_steps": (lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                               "an int >= 0"),
    "learning_rate": (_positive_number, "a positive number"),
}


def training_options(block: Mapping[str, Any] | None, where: str = "training") -> dict[str, Any]:
    """The ``training`` block with :data:`TRAINING_DEFAULTS` filled in and every value checked.

    Args:
      block: the YAML's ``training`` mapping (None: all defaults).
      where: prefix of error messages, e.g. ``"configs/models/dcnv2.yaml: training"``.

    Raises:
      ConfigError: naming an unknown key or a value of the wrong type.
    """
    block = dict(block or {})
    _check_keys(block, TRAINING_KEYS, where)
    options = {**TRAINING_DEFAULTS, **block}
    for key, (valid, expected) in _TRAINING_CHECKS.items():
        if key in options and not valid(options[key]):
            raise ConfigError(f"{where}.{key}: must be {expected}, got {options[key]!r}")
    options["learning_rate"] = float(options["learning_rate"])
    try:
        options["loss"] = loss_options(options["loss"], f"{where}.loss")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if "task_weights" in options:
        options["task_weights"] = {k: float(v) for k, v in options["task_weights"].items()}
    try:
        Protocol.from_mapping(options, where)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return options


def load_model_config(path: str) -> dict[str, Any]:
    """Loads a model YAML with its bases merged, defaults filled in and every block checked.

    Args:
      path: the model YAML.

    Returns:
      ``{"backbone", "embedding", "hparams", "training", "c2al", "cohort_heads"}``; ``hparams`` as written (checked
      against the backbone's ``Hyperparameters``; defaults are the backbone's), the other blocks
      complete.

    Raises:
      ConfigError: naming the file and the key (unknown key, bad value, missing or circular base).
    """
    cfg = _merged(path, ())
    if "backbone" not in cfg:
        raise ConfigError(f"{path}: 'backbone' is not set (nor in its bases)")
    try:
        embedding = embedding_options(cfg["embedding"])
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    try:
        c2al = c2al_options(cfg["c2al"], where=f"{path}: c2al")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        cohort_heads = cohort_heads_options(cfg["cohort_heads"], where=f"{path}: cohort_heads")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        backbone = get_backbone(cfg["backbone"])
    except KeyError as err:
        raise ConfigError(f"{path}: {err.args[0]}") from None
    try:  # names and values checked here too, so the error names the file before anything is built
        backbone.Hyperparameters.from_kwargs(cfg["hparams"], owner=cfg["backbone"])
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path}: hparams.{err}") from None
    return {"backbone": cfg["backbone"], "embedding": embedding, "hparams": cfg["hparams"],
            "training": training_options(cfg["training"], where=f"{path}: training"), "c2al": c2al,
            "cohort_heads": cohort_heads}


def _check_keys(block: Mapping[str, Any], allowed: Any, where: str) -> None:
    unknown = [key for key in block if key not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}'; keys are {list(allowed)}")


def _read(path: str) -> dict[str, Any]:
    """One YAML file's own mapping, its top-level keys and its training/c2al keys checked."""
    with open(path) as fh:
        cfg = yaml.safe_load(fh)
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{path}: must be a mapping of {list(MODEL_KEYS)}, got {type(cfg).__name__}")
    _check_keys(cfg, MODEL_KEYS, path)
    for block in BLOCKS:
        value = cfg.get(block)
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"{path}: {block}: must be a mapping, got {value!r}")
    # Checked in the file that has the typo (the merged result would lose which file it was).
    _check_keys(cfg.get("training") or {}, TRAINING_KEYS, f"{path}: training")
    _check_keys(cfg.get("c2al") or {}, C2AL_KEYS, f"{path}: c2al")
    _check_keys(cfg.get("cohort_heads") or {}, COHORT_HEADS_KEYS, f"{path}: cohort_heads")
    return dict(cfg)


def _merged(path: str, chain: tuple[str, ...]) -> dict[str, Any]:
    """``path``'s blocks over its bases' (key by key), ``base`` resolved; ``chain``: the files below it."""
    real = os.path.realpath(path)
    if real in chain:
        raise ConfigError(f"{path}: circular base chain {' -> '.join(chain + (real,))}")
    if not os.path.isfile(path):
        where = f"{chain[-1]}: base" if chain else "model config"
        raise ConfigError(f"{where} '{path}' does not exist")
    own = _read(path)
    merged: dict[str, Any] = {block: {} for block in BLOCKS}
    base = own.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: base: must be a file path, got {base!r}")
        merged = _merged(os.path.join(os.path.dirname(path), base), chain + (real,))
    for key, value in own.items():
        if key not in BLOCKS:
            merged[key] = value
        elif key == "embedding" and value and value.get("type", "plain") != merged[key].get("type", "plain"):
            merged[key] = dict(value)  # another embedding type: the base's options do not apply
        else:
            merged[key] = {**merged[key], **(value or {})}
    return merged
