"""``FeatureSpec``: a validated dataset spec and every view derived from it.

The spec is built from a mapping by :meth:`FeatureSpec.from_dict` (:mod:`zoo.spec.validation`), or
from a file by :func:`zoo.spec.load_spec`. Its methods are the views the rest of the project uses:
lookups and serialization here, raw-row parsing (:mod:`zoo.spec.rows`), splits
(:mod:`zoo.spec.hashing`), stored records (:mod:`zoo.spec.example_codec`), and the TensorFlow and
Keras views (``parse_spec``, ``keras_inputs``, ``serving_signature``), which import TensorFlow or
Keras only when called so that Beam workers use the spec without them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

from zoo.spec import example_codec, hashing
from zoo.spec import rows as raw_rows
from zoo.spec.schema import (AUX_KEY_PREFIX, COHORT_KEY_PREFIX, CohortAxis, Feature, LabelRule, RawFormat, SpecError,
                             find_axis)
from zoo.spec.validation import spec_fields


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
    # The adapter's options from the YAML (e.g. how a task is built from the source); checked by the adapter.
    adapter_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    split_by: str = "user_id"  # or "line": a stable hash of the raw line
    aux_labels: Mapping[str, Any] | None = None  # set by beam_jobs.add_aux_labels
    oracle: str | None = None  # a carried dense feature holding the true P(y=1|x) (synthetic data)
    labels: tuple[str, ...] = ()  # every task's label, the primary (``label``) first; () = (label,)
    label_rules: Mapping[str, LabelRule] = dataclasses.field(default_factory=dict)  # label -> its raw-column rule

    def __post_init__(self):
        if not self.labels:
            object.__setattr__(self, "labels", (self.label,))
        elif self.labels[0] != self.label:
            raise SpecError(f"labels: the first label {self.labels[0]!r} must be the primary label {self.label!r}")

    @property
    def multi_task(self) -> bool:
        """True when the spec declares several labels (one task each)."""
        return len(self.labels) > 1

    # ----- lookups -------------------------------------------------------------------
    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise SpecError(f"feature '{name}': not declared in spec '{self.name}'")

    def axis(self, name: str) -> CohortAxis:
        return find_axis(self.cohort_axes, name, self.name)

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
            **({"labels": [self._label_entry(n) for n in self.labels]} if len(self.labels) > 1
               else {"label": self._label_entry(self.label)}),
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
        if self.adapter_options:
            out["adapter_options"] = dict(self.adapter_options)
        if self.split_by != "user_id":
            out["split_by"] = self.split_by
        if self.aux_labels is not None:
            out["aux_labels"] = dict(self.aux_labels)
        if self.oracle is not None:
            out["oracle"] = self.oracle
        return out

    def _label_entry(self, name: str) -> str | dict[str, Any]:
        rule = self.label_rules.get(name)
        return name if rule is None else rule.to_dict(name)

    def label_column(self, name: str) -> str:
        """The raw column a label is read from: its rule's ``column``, else its own name."""
        rule = self.label_rules.get(name)
        return name if rule is None else rule.column

    # ----- vocabularies -------------------------------------------------------------
    @property
    def vocabulary_tables(self) -> dict[str, Feature]:
        """Tables (by name, their owner feature) whose ids come from a vocabulary (built or not)."""
        return {name: f for name, f in self.tables.items() if f.vocabulary is not None}

    @property
    def needs_vocabularies(self) -> bool:
        """True while some declared vocabulary still has to be built from the data."""
        return any(not f.vocabulary_built for f in self.tables.values())

    def table_features(self, table: str) -> tuple[Feature, ...]:
        """The features looking up ``table`` (its owner first, then the features sharing it)."""
        return tuple(f for f in self.features if f.kind != "dense" and f.table == table)

    def with_vocabularies(self, built: Mapping[str, tuple[int, str]]) -> "FeatureSpec":
        """The spec with vocabularies resolved: ``{table: (vocab_size, file)}``."""
        raw = self.to_dict()
        for rf in raw["features"]:
            if rf["name"] in built:
                size, path = built[rf["name"]]
                rf["vocab_size"] = int(size)
                rf["vocabulary"] = {**rf["vocabulary"], "file": path}
        return FeatureSpec.from_dict(raw)

    @property
    def needs_axis_ids(self) -> bool:
        """True while a cohort axis lists raw values whose vocabulary ids are not resolved yet."""
        return any(not a.resolved for a in self.cohort_axes)

    def with_axis_ids(self, vocabularies: Mapping[str, Mapping[str, int]]) -> "FeatureSpec":
        """The spec with every cohort axis's raw values resolved to vocabulary ids (``{table: {token:
        id}}``, the built vocabularies). A listed value outside its vocabulary is a :class:`SpecError`
        naming the axis, the cohort and the value: its rows would be out-of-vocabulary ids, shared
        with every other unknown value."""
        raw = self.to_dict()
        for axis, ra in zip(self.cohort_axes, raw["cohort_axes"]):
            if axis.resolved:
                continue
            table = self.feature(axis.feature).table
            vocab = vocabularies.get(table)
            if vocab is None:
                raise SpecError(f"cohort axis '{axis.name}': the vocabulary of table '{table}' is not loaded")
            ids = {}
            for cohort, tokens in axis.raw_values.items():
                missing = [t for t in tokens if t not in vocab]
                if missing:
                    raise SpecError(f"cohort axis '{axis.name}': value {missing[0]!r} of cohort '{cohort}' is not in "
                                    f"the vocabulary of '{table}' ({len(vocab)} tokens: rarer than its min_count, "
                                    "outside max_size, or absent from the data)")
                ids[cohort] = [vocab[t] for t in tokens]
            ra["ids"] = ids
        return FeatureSpec.from_dict(raw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FeatureSpec":
        """The validated spec of a mapping (a parsed YAML or ``spec.json``); raises :class:`SpecError`."""
        return cls(**spec_fields(raw))

    # ----- Beam writer view ----------------------------------------------------------
    def split_line(self, line: str) -> list[str]:
        """One raw line as column texts (:func:`zoo.spec.rows.split_line`)."""
        return raw_rows.split_line(self, line)

    @property
    def feature_kinds(self) -> dict[str, str]:
        """Feature name -> kind, for every declared feature."""
        kinds = self.__dict__.get("_kinds_cache")
        if kinds is None:
            kinds = {f.name: f.kind for f in self.features}
            object.__setattr__(self, "_kinds_cache", kinds)
        return kinds

    def parse_raw_row(self, fields: Sequence[str],
                      vocabularies: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
        """One split raw row as typed values (:func:`zoo.spec.rows.parse_raw_row`); raises ``RowError``."""
        return raw_rows.parse_raw_row(self, fields, vocabularies)

    def to_id(self, f: Feature, value: int | str,
              vocabularies: Mapping[str, Mapping[str, int]] | None = None) -> int | str:
        """The stored id of a parsed raw value of feature ``f`` (:func:`zoo.spec.rows.to_id`)."""
        return raw_rows.to_id(f, value, vocabularies)

    def cohort_ids(self, row: Mapping[str, Any]) -> dict[str, int]:
        """Cohort index on every axis for a parsed row."""
        return {a.name: a.cohort_id(row[a.feature]) for a in self.cohort_axes}

    def split_of(self, row: Mapping[str, Any]) -> str:
        """Deterministic split: the given split column, else a stable hash of the user id.

        With ``split_by: line`` the split depends on the raw line: use :meth:`split_of_line`.
        """
        if "__split__" in row:
            return row["__split__"]
        if self.split_by == "line":
            raise SpecError(f"spec '{self.name}': split_by is 'line'; use split_of_line(raw line bytes)")
        return self.split_from_hash(hashing.stable_hash(int(row[self.user_id])))

    def split_of_line(self, line: bytes) -> str:
        """Split of a raw line (``split_by: line``): ``stable_hash(crc32(line bytes))``.

        ``line`` is the line as read, without its line terminator.
        """
        return self.split_from_hash(hashing.line_hash(line))

    def split_from_hash(self, hashed: int) -> str:
        """The split a stable hash falls in (:func:`zoo.spec.hashing.split_from_hash`)."""
        return hashing.split_from_hash(self.split, hashed)

    @property
    def split_edges(self) -> tuple[float, ...]:
        """Cumulative split fractions as :meth:`split_from_hash` compares them."""
        return hashing.split_edges(self.split)

    # ----- stored records (zoo.spec.example_codec) -------------------------------------
    def pad_sequence(self, feature: Feature, ids: Sequence[int]) -> tuple[list[int], bool]:
        """Pads/truncates to ``max_length``; returns (ids, was_truncated)."""
        return example_codec.pad_sequence(feature, ids)

    def example_values(self, row: Mapping[str, Any]) -> dict[str, list]:
        """Feature key -> value list as stored in a ``tf.train.Example``."""
        return example_codec.example_values(self, row)

    def encode_example(self, row: Mapping[str, Any]) -> bytes:
        """Serialized ``tf.train.Example`` of a parsed row (deterministic bytes)."""
        return example_codec.encode_example(self, row)

    @property
    def example_layout(self) -> tuple[tuple[str, bool, int], ...]:
        """``(key, is_float, values per row)`` of every stored key, in serialized (sorted) order."""
        layout = self.__dict__.get("_layout_cache")
        if layout is None:
            layout = example_codec.example_layout(self)
            object.__setattr__(self, "_layout_cache", layout)
        return layout

    @property
    def float_keys(self) -> frozenset[str]:
        """Stored keys holding floats: the labels and the dense features."""
        keys = self.__dict__.get("_float_keys_cache")
        if keys is None:
            keys = frozenset(list(self.labels) + [f.name for f in self.features if f.kind == "dense"])
            object.__setattr__(self, "_float_keys_cache", keys)
        return keys

    def example_columns(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Parsed rows as columns: key -> ``(N, values per row)`` array (float32 or int64)."""
        return example_codec.example_columns(self, rows)

    def encode_examples(self, columns: Mapping[str, Any]) -> list[bytes]:
        """Serialized Examples of a batch given as columns; byte-identical to :meth:`encode_example`."""
        return example_codec.encode_examples(self, columns)

    def encode_examples_flat(self, columns: Mapping[str, Any]):
        """:meth:`encode_examples` as one ``uint8`` buffer of all records back to back and their lengths."""
        return example_codec.encode_examples_flat(self, columns)

    # ----- reader view -------------------------------------------------------------
    def parse_spec(self, include: str = "all") -> dict[str, Any]:
        """``tf.io.parse_example`` features.

        Args:
          include: ``"all"`` (every label, all features and cohort ids, for training and
            evaluation) or ``"inputs"`` (model inputs only, for serving).
        """
        import tensorflow as tf

        out: dict[str, Any] = {}
        feats = self.features if include == "all" else self.inputs
        if include == "all":
            for label in self.labels:
                out[label] = tf.io.FixedLenFeature([1], tf.float32)
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
            if self.aux_labels is not None:
                dtype = tf.int64 if self.aux_labels.get("dtype") == "int64" else tf.float32
                for role in ("head", "tail"):
                    out[AUX_KEY_PREFIX + role] = tf.io.FixedLenFeature([1], dtype)
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
