"""The feature spec: one dataset YAML from which every other view is derived.

A spec declares each feature once. From it, with no second copy anywhere:

* the Beam writer's raw-row parsing and ``tf.train.Example`` encoding
  (:meth:`FeatureSpec.parse_raw_row`, :meth:`FeatureSpec.encode_example`),
* the reader's ``tf.io.parse_example`` spec (:meth:`FeatureSpec.parse_spec`),
* the model's named ``keras.Input``s and embedding tables
  (:meth:`FeatureSpec.keras_inputs`, :attr:`FeatureSpec.categorical`),
* the serving signature (:meth:`FeatureSpec.serving_signature`).

Feature kinds
-------------
``categorical``
    One int64 id per row. Either ``vocab_size: V`` (ids ``0..V-1`` are valid;
    any other id is out of vocabulary and maps to the explicit OOV row ``V``,
    so the table has ``V + 1`` rows) or ``hash_buckets: H`` (the row is
    ``id mod H``; the table has ``H`` rows and nothing is out of range).
``dense``
    One float32 per row. ``default`` fills a blank raw value; without a
    default a blank is a malformed row.
``sequence``
    Up to ``max_length`` int64 ids, padded with ``PAD_ID`` (-1) to exactly
    ``max_length``. Ids come from ``vocab_size`` / ``hash_buckets`` of their
    own or from the table named by ``share_embedding``. Longer raw sequences
    are handled by ``truncation``: ``keep_last`` (default) or ``keep_first``
    (both counted by the Beam job), or ``error`` (the row is dead-lettered).

Every feature has ``input: true`` by default; ``input: false`` carries a
column in the records (for cohort axes, say) without making it a model or
serving input.

Cohort axes
-----------
An axis maps one feature to a small set of named cohorts:

* ordinal: ``boundaries: [b0, b1, ...]`` (strictly increasing) and
  ``cohorts`` with ``len(boundaries) + 1`` names; a value ``v`` falls in
  cohort ``i`` where ``b_{i-1} <= v < b_i``.
* categorical: ``values: {cohort_name: [id, ...], ...}``; ids not listed fall
  in the cohort named by ``other`` (default ``"other"``), which is reported
  like any other cohort.

Errors in a spec raise :class:`SpecError` naming the feature (or axis) and
the problem.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

import yaml

PAD_ID = -1
COHORT_KEY_PREFIX = "cohort/"
SPLITS = ("train", "valid", "test")

_FEATURE_KINDS = ("categorical", "dense", "sequence")
_TRUNCATION_POLICIES = ("keep_last", "keep_first", "error")
_TOP_LEVEL_KEYS = {
    "name", "description", "adapter", "label", "user_id", "format", "split", "defaults",
    "features", "cohort_axes", "c2al",
}


class SpecError(ValueError):
    """A dataset spec is malformed; the message names the feature and problem."""


class RowError(ValueError):
    """A raw row cannot be parsed. ``reason`` is a short stable counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Feature:
    """One declared feature. Build through :func:`FeatureSpec.from_dict`."""

    name: str
    kind: str
    vocab_size: int | None = None
    hash_buckets: int | None = None
    embedding_dim: int | None = None
    share_embedding: str | None = None
    max_length: int | None = None
    truncation: str = "keep_last"
    default: float | None = None
    input: bool = True

    @property
    def table(self) -> str:
        """Name of the embedding table this feature looks up (itself or shared)."""
        return self.share_embedding or self.name

    @property
    def num_rows(self) -> int:
        """Rows of this feature's own table: ``V + 1`` (OOV row) or ``H``."""
        if self.vocab_size is not None:
            return self.vocab_size + 1
        return int(self.hash_buckets)

    @property
    def oov_row(self) -> int | None:
        return self.vocab_size if self.vocab_size is not None else None

    def is_out_of_vocab(self, value: int) -> bool:
        """True for an id that maps to the OOV row (never for hashed features)."""
        if self.vocab_size is None:
            return False
        return value < 0 or value >= self.vocab_size

    def to_dict(self) -> dict[str, Any]:
        """The declaration that :func:`FeatureSpec.from_dict` parses back to this feature."""
        out = {"name": self.name, "kind": self.kind}
        skip = {"truncation"} if self.kind != "sequence" else set()
        if self.share_embedding:  # size and width come from the owner of the table
            skip |= {"vocab_size", "hash_buckets", "embedding_dim"}
        for field in dataclasses.fields(self)[2:]:
            value = getattr(self, field.name)
            if value is not None and field.name not in skip:
                out[field.name] = value
        return out


@dataclasses.dataclass(frozen=True)
class CohortAxis:
    """A named partition of rows into cohorts by one feature."""

    name: str
    feature: str
    cohorts: tuple[str, ...]
    boundaries: tuple[float, ...] | None = None
    values: Mapping[str, tuple[int, ...]] | None = None
    other: str | None = None

    @property
    def ordinal(self) -> bool:
        return self.boundaries is not None

    def cohort_id(self, value: float | int) -> int:
        """Index into ``cohorts`` of the cohort a raw value falls in."""
        if self.boundaries is not None:
            lo, hi = 0, len(self.boundaries)
            while lo < hi:  # bisect_right
                mid = (lo + hi) // 2
                if value < self.boundaries[mid]:
                    hi = mid
                else:
                    lo = mid + 1
            return lo
        return self._value_to_id.get(int(value), len(self.cohorts) - 1)

    @property
    def _value_to_id(self) -> dict[int, int]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {
                v: i for i, name in enumerate(self.cohorts[:-1])
                for v in self.values[name]
            }
            object.__setattr__(self, "_cache", cache)
        return cache

    def index(self, cohort: str) -> int:
        try:
            return self.cohorts.index(cohort)
        except ValueError:
            raise SpecError(
                f"cohort axis '{self.name}': no cohort named '{cohort}'; "
                f"known cohorts are {list(self.cohorts)}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "feature": self.feature}
        if self.boundaries is not None:
            out["boundaries"] = list(self.boundaries)
            out["cohorts"] = list(self.cohorts)
        else:
            out["values"] = {k: list(v) for k, v in self.values.items()}
            out["other"] = self.other
        return out


@dataclasses.dataclass(frozen=True)
class RawFormat:
    """How the Beam writer reads raw text rows."""

    columns: tuple[str, ...]
    delimiter: str = ","
    header: bool = True
    sequence_delimiter: str = " "
    split_column: str | None = None  # a column holding train/valid/test

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"columns": list(self.columns)}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """A validated dataset spec. Construct with :func:`load_spec`."""

    name: str
    label: str
    user_id: str
    features: tuple[Feature, ...]
    cohort_axes: tuple[CohortAxis, ...]
    raw_format: RawFormat
    split: Mapping[str, float]
    c2al: Mapping[str, Any] | None = None
    description: str = ""
    adapter: str | None = None  # zoo.datasets adapter that turns the source into raw rows

    # ----- lookups -------------------------------------------------------------------
    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise SpecError(f"feature '{name}': not declared in spec '{self.name}'")

    def axis(self, name: str) -> CohortAxis:
        for a in self.cohort_axes:
            if a.name == name:
                return a
        raise SpecError(
            f"cohort axis '{name}': not declared in spec '{self.name}' "
            f"(axes: {[a.name for a in self.cohort_axes]})"
        )

    @property
    def inputs(self) -> tuple[Feature, ...]:
        """Features that are model and serving inputs, in declaration order."""
        return tuple(f for f in self.features if f.input)

    @property
    def categorical(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.inputs if f.kind == "categorical")

    @property
    def dense(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.inputs if f.kind == "dense")

    @property
    def sequence(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.inputs if f.kind == "sequence")

    @property
    def tables(self) -> dict[str, Feature]:
        """Embedding tables by name: one per categorical/sequence feature that owns one."""
        return {f.name: f for f in self.features if f.kind != "dense" and not f.share_embedding}

    # ----- serialization -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The resolved spec (defaults filled in); ``from_dict`` round-trips it."""
        out = {
            "name": self.name,
            "description": self.description,
            "label": self.label,
            "user_id": self.user_id,
            "format": self.raw_format.to_dict(),
            "split": dict(self.split),
            "features": [f.to_dict() for f in self.features],
            "cohort_axes": [a.to_dict() for a in self.cohort_axes],
        }
        if self.c2al is not None:
            out["c2al"] = dict(self.c2al)
        if self.adapter is not None:
            out["adapter"] = self.adapter
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FeatureSpec":
        return _parse_spec(raw)

    # ----- Beam writer view ----------------------------------------------------------
    def parse_raw_row(self, fields: Sequence[str]) -> dict[str, Any]:
        """Parses one split raw row into typed values; raises :class:`RowError`.

        Returns a dict with the label (float), every feature (int, float or
        list of ints, before OOV mapping) and ``"__split__"`` when the format
        has a split column.
        """
        cols = self.raw_format.columns
        if len(fields) != len(cols):
            raise RowError(
                "wrong_column_count",
                f"expected {len(cols)} columns ({', '.join(cols)}), got {len(fields)}",
            )
        raw = dict(zip(cols, fields))
        row: dict[str, Any] = {}
        label_text = raw[self.label].strip()
        try:
            label = float(label_text)
        except ValueError:
            raise RowError("bad_label", f"label '{self.label}': cannot parse {label_text!r}") from None
        if label not in (0.0, 1.0):
            raise RowError("bad_label", f"label '{self.label}': {label_text!r} is not 0 or 1")
        row[self.label] = label
        for f in self.features:
            text = raw[f.name].strip()
            if f.kind == "dense":
                row[f.name] = _parse_float(f, text)
            elif f.kind == "categorical":
                row[f.name] = _parse_int(f, text)
            else:
                items = [t for t in text.split(self.raw_format.sequence_delimiter) if t] if text else []
                row[f.name] = [_parse_int(f, t) for t in items]
                if len(items) > f.max_length and f.truncation == "error":
                    raise RowError(
                        "sequence_too_long",
                        f"feature '{f.name}': {len(items)} ids exceed max_length {f.max_length}",
                    )
        if self.raw_format.split_column:
            split = raw[self.raw_format.split_column].strip()
            if split not in SPLITS:
                raise RowError("bad_split", f"column '{self.raw_format.split_column}': {split!r} is not one of {SPLITS}")
            row["__split__"] = split
        return row

    def cohort_ids(self, row: Mapping[str, Any]) -> dict[str, int]:
        """Cohort index on every axis for a parsed row."""
        return {a.name: a.cohort_id(row[a.feature]) for a in self.cohort_axes}

    def split_of(self, row: Mapping[str, Any]) -> str:
        """Deterministic split: the given split column, else a stable hash of the user id."""
        if "__split__" in row:
            return row["__split__"]
        bucket = stable_hash(int(row[self.user_id])) % 10_000 / 10_000.0
        edge = 0.0
        for name in SPLITS:
            edge += self.split[name]
            if bucket < edge:
                return name
        return SPLITS[-1]

    def pad_sequence(self, feature: Feature, ids: Sequence[int]) -> tuple[list[int], bool]:
        """Pads/truncates to ``max_length``; returns (ids, was_truncated)."""
        n = feature.max_length
        truncated = len(ids) > n
        if truncated:
            ids = ids[-n:] if feature.truncation == "keep_last" else ids[:n]
        return list(ids) + [PAD_ID] * (n - len(ids)), truncated

    def example_values(self, row: Mapping[str, Any]) -> dict[str, list]:
        """Feature key -> value list as stored in a ``tf.train.Example``.

        Stores label, every feature (ids as given: OOV mapping is the model's
        job, so the record keeps the truth and the OOV count stays auditable),
        padded sequences and the cohort id of every axis.
        """
        values: dict[str, list] = {self.label: [float(row[self.label])]}
        for f in self.features:
            v = row[f.name]
            if f.kind == "sequence":
                values[f.name] = self.pad_sequence(f, v)[0]
            else:
                values[f.name] = [v]
        for axis, cid in self.cohort_ids(row).items():
            values[COHORT_KEY_PREFIX + axis] = [cid]
        return values

    def encode_example(self, row: Mapping[str, Any]) -> bytes:
        """Serialized ``tf.train.Example`` of a parsed row (filled in place: no per-key protos)."""
        from tensorflow.core.example import example_pb2

        example = example_pb2.Example()
        feature = example.features.feature
        float_keys = self._float_keys
        for key, vals in self.example_values(row).items():
            if key in float_keys:
                feature[key].float_list.value.extend(vals)
            else:
                feature[key].int64_list.value.extend(vals)
        return example.SerializeToString()

    @property
    def _float_keys(self) -> frozenset[str]:
        keys = self.__dict__.get("_float_keys_cache")
        if keys is None:
            keys = frozenset([self.label] + [f.name for f in self.features if f.kind == "dense"])
            object.__setattr__(self, "_float_keys_cache", keys)
        return keys

    # ----- reader view -------------------------------------------------------------
    def parse_spec(self, include: str = "all") -> dict[str, Any]:
        """``tf.io.parse_example`` features.

        Args:
          include: ``"all"`` (label, all features and cohort ids, for training and
            evaluation) or ``"inputs"`` (model inputs only, for serving).
        """
        import tensorflow as tf

        out: dict[str, Any] = {}
        feats = self.features if include == "all" else self.inputs
        if include == "all":
            out[self.label] = tf.io.FixedLenFeature([1], tf.float32)
        for f in feats:
            if f.kind == "dense":
                out[f.name] = tf.io.FixedLenFeature([1], tf.float32)
            elif f.kind == "categorical":
                out[f.name] = tf.io.FixedLenFeature([1], tf.int64)
            else:
                out[f.name] = tf.io.FixedLenFeature([f.max_length], tf.int64)
        if include == "all":
            for a in self.cohort_axes:
                out[COHORT_KEY_PREFIX + a.name] = tf.io.FixedLenFeature([1], tf.int64)
        return out

    # ----- model and serving view ------------------------------------------------------
    def input_shape(self, feature: Feature) -> tuple[int]:
        return (feature.max_length,) if feature.kind == "sequence" else (1,)

    def input_dtype(self, feature: Feature) -> str:
        return "float32" if feature.kind == "dense" else "int64"

    def keras_inputs(self) -> dict[str, Any]:
        """One named ``keras.Input`` per input feature (batch dimension None)."""
        import keras

        return {
            f.name: keras.Input(shape=self.input_shape(f), dtype=self.input_dtype(f), name=f.name)
            for f in self.inputs
        }

    def serving_signature(self) -> dict[str, Any]:
        """``tf.TensorSpec`` per input feature, named like the feature."""
        import tensorflow as tf

        return {
            f.name: tf.TensorSpec(shape=(None,) + self.input_shape(f), dtype=self.input_dtype(f), name=f.name)
            for f in self.inputs
        }


# ---------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------
def load_spec(path: str | os.PathLike) -> FeatureSpec:
    """Loads and validates a dataset YAML (or a resolved ``spec.json``)."""
    with open(path) as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return _parse_spec(raw)
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None


def _parse_spec(raw: Mapping[str, Any]) -> FeatureSpec:
    raw = copy.deepcopy(dict(raw))
    unknown = set(raw) - _TOP_LEVEL_KEYS
    if unknown:
        raise SpecError(f"spec: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_LEVEL_KEYS)}")
    name = _require(raw, "name", "spec", str)
    label = _require(raw, "label", "spec", str)
    defaults = raw.get("defaults", {}) or {}
    default_dim = defaults.get("embedding_dim")

    raw_features = _require(raw, "features", "spec", list)
    if not raw_features:
        raise SpecError("spec: 'features' is empty")
    features: list[Feature] = []
    seen: set[str] = set()
    for i, rf in enumerate(raw_features):
        if not isinstance(rf, Mapping) or "name" not in rf:
            raise SpecError(f"features[{i}]: each feature needs a 'name'")
        features.append(_parse_feature(rf, default_dim))
        if rf["name"] in seen:
            raise SpecError(f"feature '{rf['name']}': declared twice")
        if rf["name"] == label:
            raise SpecError(f"feature '{rf['name']}': has the same name as the label")
        seen.add(rf["name"])
    by_name = {f.name: f for f in features}

    # Shared tables must exist, own a table, and be id features.
    resolved = []
    for f in features:
        if f.share_embedding:
            owner = by_name.get(f.share_embedding)
            if owner is None or owner.kind == "dense":
                raise SpecError(
                    f"feature '{f.name}': share_embedding '{f.share_embedding}' is not a "
                    "declared categorical or sequence feature"
                )
            if owner.share_embedding:
                raise SpecError(
                    f"feature '{f.name}': share_embedding '{f.share_embedding}' itself shares "
                    f"'{owner.share_embedding}'; point at the owner of the table"
                )
            f = dataclasses.replace(
                f, vocab_size=owner.vocab_size, hash_buckets=owner.hash_buckets,
                embedding_dim=owner.embedding_dim,
            )
        resolved.append(f)
    features = resolved
    by_name = {f.name: f for f in features}
    if not any(f.input for f in features):
        raise SpecError("spec: no feature has input: true")

    user_id = raw.get("user_id")
    if user_id is not None and (user_id not in by_name or by_name[user_id].kind != "categorical"):
        raise SpecError(f"user_id '{user_id}': must name a declared categorical feature")

    fmt = raw.get("format") or {}
    columns = fmt.get("columns") or [label] + [f.name for f in features]
    split_column = fmt.get("split_column")
    needed = [label] + [f.name for f in features] + ([split_column] if split_column else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        raise SpecError(f"format.columns: missing column(s) {missing} for declared features/label")
    if len(set(columns)) != len(columns):
        raise SpecError(f"format.columns: duplicate column names in {columns}")
    raw_format = RawFormat(
        columns=tuple(columns),
        delimiter=_unescape(fmt.get("delimiter", ",")),
        header=bool(fmt.get("header", True)),
        sequence_delimiter=_unescape(fmt.get("sequence_delimiter", " ")),
        split_column=split_column,
    )

    split = raw.get("split") or {"train": 0.8, "valid": 0.1, "test": 0.1}
    if split_column is None:
        if user_id is None:
            raise SpecError("spec: 'user_id' is required to split by a stable hash of the user id")
        if set(split) != set(SPLITS) or any(not 0 <= float(v) <= 1 for v in split.values()):
            raise SpecError(f"split: needs fractions for exactly {SPLITS}, got {dict(split)}")
        if not math.isclose(sum(float(v) for v in split.values()), 1.0, abs_tol=1e-6):
            raise SpecError(f"split: fractions must sum to 1, got {sum(split.values())}")
    split = {k: float(v) for k, v in split.items()}

    axes = tuple(_parse_axis(a, by_name) for a in raw.get("cohort_axes", []) or [])
    if len({a.name for a in axes}) != len(axes):
        raise SpecError("cohort_axes: axis names must be unique")

    c2al = raw.get("c2al")
    spec = FeatureSpec(
        name=name, label=label, user_id=user_id, features=tuple(features), cohort_axes=axes,
        raw_format=raw_format, split=split, c2al=c2al, description=raw.get("description", ""),
        adapter=raw.get("adapter"),
    )
    if c2al is not None:
        axis = spec.axis(_require(c2al, "axis", "c2al", str))
        axis.index(_require(c2al, "head", "c2al", str))
        axis.index(_require(c2al, "tail", "c2al", str))
        if c2al["head"] == c2al["tail"]:
            raise SpecError("c2al: head and tail must be different cohorts")
    return spec


def _parse_feature(rf: Mapping[str, Any], default_dim: int | None) -> Feature:
    name = rf["name"]
    where = f"feature '{name}'"
    if not isinstance(name, str) or not name.replace("_", "a").isalnum():
        raise SpecError(f"{where}: names must be letters, digits and underscores")
    known = {f.name for f in dataclasses.fields(Feature)}
    unknown = set(rf) - known
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
    kind = rf.get("kind")
    if kind not in _FEATURE_KINDS:
        raise SpecError(f"{where}: kind must be one of {_FEATURE_KINDS}, got {kind!r}")
    vocab, buckets, share = rf.get("vocab_size"), rf.get("hash_buckets"), rf.get("share_embedding")
    dim = rf.get("embedding_dim", default_dim)
    if kind == "dense":
        for key in ("vocab_size", "hash_buckets", "embedding_dim", "share_embedding", "max_length"):
            if rf.get(key) is not None:
                raise SpecError(f"{where}: '{key}' does not apply to a dense feature")
        default = rf.get("default")
        if default is not None and not isinstance(default, (int, float)):
            raise SpecError(f"{where}: default must be a number, got {default!r}")
        return Feature(name=name, kind=kind, default=None if default is None else float(default),
                       input=bool(rf.get("input", True)))
    if rf.get("default") is not None:
        raise SpecError(f"{where}: 'default' applies only to dense features")
    if share is None:
        if (vocab is None) == (buckets is None):
            raise SpecError(f"{where}: give exactly one of vocab_size or hash_buckets")
        size = vocab if vocab is not None else buckets
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise SpecError(f"{where}: vocab_size/hash_buckets must be a positive integer, got {size!r}")
        if not isinstance(dim, int) or dim <= 0:
            raise SpecError(f"{where}: embedding_dim must be a positive integer (or set defaults.embedding_dim), got {dim!r}")
    elif vocab is not None or buckets is not None or rf.get("embedding_dim") is not None:
        raise SpecError(f"{where}: share_embedding takes size and dim from '{share}'; do not repeat them")
    max_length = rf.get("max_length")
    truncation = rf.get("truncation", "keep_last")
    if kind == "sequence":
        if not isinstance(max_length, int) or max_length <= 0:
            raise SpecError(f"{where}: sequence features need a positive integer max_length, got {max_length!r}")
        if truncation not in _TRUNCATION_POLICIES:
            raise SpecError(f"{where}: truncation must be one of {_TRUNCATION_POLICIES}, got {truncation!r}")
    elif max_length is not None or "truncation" in rf:
        raise SpecError(f"{where}: max_length/truncation apply only to sequence features")
    return Feature(
        name=name, kind=kind, vocab_size=vocab, hash_buckets=buckets,
        embedding_dim=None if share else dim, share_embedding=share,
        max_length=max_length, truncation=truncation, input=bool(rf.get("input", True)),
    )


def _parse_axis(ra: Mapping[str, Any], by_name: Mapping[str, Feature]) -> CohortAxis:
    name = ra.get("name")
    where = f"cohort axis '{name}'"
    if not isinstance(name, str):
        raise SpecError("cohort_axes: each axis needs a 'name'")
    feat = by_name.get(ra.get("feature"))
    if feat is None or feat.kind == "sequence":
        raise SpecError(f"{where}: feature {ra.get('feature')!r} is not a declared categorical or dense feature")
    if ("boundaries" in ra) == ("values" in ra):
        raise SpecError(f"{where}: give exactly one of 'boundaries' (ordinal) or 'values' (categorical)")
    if "boundaries" in ra:
        bounds = [float(b) for b in ra["boundaries"]]
        if not bounds or any(b >= c for b, c in zip(bounds, bounds[1:])):
            raise SpecError(f"{where}: boundaries must be non-empty and strictly increasing, got {bounds}")
        cohorts = ra.get("cohorts") or [f"bucket_{i}" for i in range(len(bounds) + 1)]
        if len(cohorts) != len(bounds) + 1 or len(set(cohorts)) != len(cohorts):
            raise SpecError(f"{where}: needs {len(bounds) + 1} distinct cohort names for {len(bounds)} boundaries, got {cohorts}")
        return CohortAxis(name=name, feature=feat.name, cohorts=tuple(cohorts), boundaries=tuple(bounds))
    if feat.kind != "categorical":
        raise SpecError(f"{where}: 'values' needs a categorical feature; '{feat.name}' is {feat.kind}")
    values = ra["values"]
    if not isinstance(values, Mapping) or not values:
        raise SpecError(f"{where}: values must map cohort names to lists of ids")
    other = ra.get("other", "other")
    seen: dict[int, str] = {}
    parsed: dict[str, tuple[int, ...]] = {}
    for cohort, ids in values.items():
        ids = [ids] if isinstance(ids, int) else list(ids)
        for v in ids:
            if not isinstance(v, int):
                raise SpecError(f"{where}: cohort '{cohort}' lists non-integer id {v!r}")
            if v in seen:
                raise SpecError(f"{where}: id {v} is in both '{seen[v]}' and '{cohort}'")
            seen[v] = str(cohort)
        parsed[str(cohort)] = tuple(ids)
    if other in parsed:
        raise SpecError(f"{where}: '{other}' is reserved for unlisted ids; rename the cohort or set 'other'")
    return CohortAxis(name=name, feature=feat.name, cohorts=tuple(parsed) + (other,), values=parsed, other=other)


def _require(raw: Mapping[str, Any], key: str, where: str, typ: type) -> Any:
    if key not in raw:
        raise SpecError(f"{where}: missing required key '{key}'")
    if not isinstance(raw[key], typ):
        raise SpecError(f"{where}: '{key}' must be {typ.__name__}, got {type(raw[key]).__name__}")
    return raw[key]


def _unescape(text: str) -> str:
    return {"\\t": "\t", "tab": "\t", "\\n": "\n"}.get(text, text)


_FLOAT32_MAX = 3.4028234663852886e38
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _parse_float(f: Feature, text: str) -> float:
    if text == "":
        if f.default is None:
            raise RowError("missing_value", f"feature '{f.name}': blank value and no default")
        return f.default
    try:
        value = float(text)
    except ValueError:
        raise RowError("bad_number", f"feature '{f.name}': cannot parse {text!r} as a float") from None
    if not math.isfinite(value):
        raise RowError("bad_number", f"feature '{f.name}': {text!r} is not finite")
    if abs(value) > _FLOAT32_MAX:
        raise RowError("bad_number", f"feature '{f.name}': {text!r} overflows float32")
    return value


def _parse_int(f: Feature, text: str) -> int:
    if text == "":
        raise RowError("missing_value", f"feature '{f.name}': blank id")
    try:
        value = int(text)
    except ValueError:
        raise RowError("bad_number", f"feature '{f.name}': cannot parse {text!r} as an integer id") from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise RowError("bad_number", f"feature '{f.name}': id {text} is outside int64")
    if value == PAD_ID and f.kind == "sequence":
        raise RowError("bad_number", f"feature '{f.name}': id {PAD_ID} is reserved for sequence padding")
    return value


def stable_hash(value: int) -> int:
    """SplitMix64 of an integer: identical on every machine, runner and Python version."""
    z = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)
