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

Raw column types, vocabularies and transforms
---------------------------------------------
The model only ever sees int64 ids and float32 dense values; these keys say how
a raw text column becomes one (all optional, applied by the Beam writer):

``raw_type`` (categorical and sequence features)
    ``int`` (default: the text is the id), ``string`` (any text token) or
    ``hex`` (a hexadecimal token, e.g. Criteo's ``68fd1e64``; validated and
    lower-cased). String and hex tokens are stripped; a blank token is the
    token ``""`` (its own category). They need ``hash_buckets: H`` (the id is
    :func:`hash_token` ``(token) mod H``) or ``vocabulary``.
``vocabulary: {min_count: 1, max_size: null, splits: [train]}``
    The vocabulary is built from the data by the Beam job's first pass (tokens
    of the rows in ``splits`` seen at least ``min_count`` times, at most
    ``max_size`` of them, most frequent first, ties by token) and written to
    ``<output>/vocab/<table>.txt`` (one token per line, line number = id). The
    resolved ``spec.json`` records ``vocab_size`` (ids ``0..V-1``; every other
    token gets the OOV id ``V``) and ``vocabulary.file`` (relative to the data
    directory). A table shared through ``share_embedding`` has one vocabulary
    counted over all its features. ``int`` ids may have a vocabulary too (it
    maps sparse raw ids to dense ones).
``unknown``
    ``oov`` (default: tokens outside the vocabulary get the OOV id, int ids
    outside ``vocab_size`` are stored as given; both are counted in
    ``stats.json``) or ``error`` (such a row is dead-lettered with reason
    ``unknown_category``).
``transforms`` (dense features)
    An ordered list applied after the ``default`` fill: ``log1p`` and
    ``{clip: [lo, hi]}`` (``null`` = unbounded). The stored value (the one the
    model, the cohort axes and the statistics see) is the transformed one; a
    non-finite result is a ``bad_number`` dead letter.

Top level: ``split_by: line`` splits rows by a stable hash of the raw line
(datasets without a user id, e.g. Criteo) instead of the user id;
``format.type: libfm`` reads libFM/libSVM lines (``label idx:val ...``, one
token per feature in column order: categorical features take ``idx``, dense
features ``val``; label ``-1`` means 0); ``aux_labels: {axis, head, tail,
dtype}`` is recorded by :mod:`beam_jobs.add_aux_labels` for shards that carry
``aux/head`` and ``aux/tail``.

Errors in a spec raise :class:`SpecError` naming the feature (or axis) and
the problem.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import zlib
from typing import Any, Mapping, Sequence

import yaml

PAD_ID = -1
COHORT_KEY_PREFIX = "cohort/"
SPLITS = ("train", "valid", "test")

AUX_KEY_PREFIX = "aux/"

_FEATURE_KINDS = ("categorical", "dense", "sequence")
_TRUNCATION_POLICIES = ("keep_last", "keep_first", "error")
_RAW_TYPES = ("int", "string", "hex")
_UNKNOWN_POLICIES = ("oov", "error")
_SPLIT_BY = ("user_id", "line")
_FORMAT_TYPES = ("delimited", "libfm")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_TOP_LEVEL_KEYS = {
    "name", "description", "adapter", "label", "user_id", "format", "split", "defaults",
    "features", "cohort_axes", "c2al", "split_by", "aux_labels",
}


class SpecError(ValueError):
    """A dataset spec is malformed; the message names the feature and problem."""


class RowError(ValueError):
    """A raw row cannot be parsed. ``reason`` is a short stable counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """How a vocabulary is built from the data (``file`` is set once it is built)."""

    min_count: int = 1
    max_size: int | None = None
    splits: tuple[str, ...] = ("train",)
    file: str | None = None  # relative to the data directory, e.g. "vocab/C1.txt"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min_count": self.min_count}
        if self.max_size is not None:
            out["max_size"] = self.max_size
        out["splits"] = list(self.splits)
        if self.file is not None:
            out["file"] = self.file
        return out


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
    raw_type: str | None = None  # categorical/sequence: None (= "int"), "string" or "hex"
    vocabulary: Vocabulary | None = None
    unknown: str | None = None  # None (= "oov") or "error"
    transforms: tuple[tuple, ...] | None = None  # dense: (("clip", lo, hi), ("log1p",), ...)

    @property
    def table(self) -> str:
        """Name of the embedding table this feature looks up (itself or shared)."""
        return self.share_embedding or self.name

    @property
    def tokens(self) -> bool:
        """True when raw values are text tokens (``string``/``hex``) rather than int ids."""
        return self.raw_type in ("string", "hex")

    @property
    def vocabulary_built(self) -> bool:
        """False while a declared vocabulary still has to be built from the data."""
        return self.vocabulary is None or self.vocab_size is not None

    @property
    def num_rows(self) -> int:
        """Rows of this feature's own table: ``V + 1`` (OOV row) or ``H``."""
        if self.vocab_size is not None:
            return self.vocab_size + 1
        if self.hash_buckets is None:
            raise SpecError(f"feature '{self.name}': its vocabulary is not built yet "
                            "(run beam_jobs.build_tfrecords and use the spec.json it writes)")
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
        if self.share_embedding:  # size, width and id mapping come from the owner of the table
            skip |= _SHARED_KEYS
        for field in dataclasses.fields(self)[2:]:
            value = getattr(self, field.name)
            if value is not None and field.name not in skip:
                if field.name == "vocabulary":
                    value = value.to_dict()
                elif field.name == "transforms":
                    value = [_transform_to_yaml(t) for t in value]
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


# Keys a feature sharing another's table takes from the owner (and may not repeat).
_SHARED_KEYS = frozenset({"vocab_size", "hash_buckets", "embedding_dim", "raw_type", "vocabulary", "unknown"})


def _transform_to_yaml(t: tuple) -> Any:
    return t[0] if len(t) == 1 else {t[0]: list(t[1:])}


@dataclasses.dataclass(frozen=True)
class RawFormat:
    """How the Beam writer reads raw text rows."""

    columns: tuple[str, ...]
    delimiter: str = ","
    header: bool = True
    sequence_delimiter: str = " "
    split_column: str | None = None  # a column holding train/valid/test
    type: str = "delimited"  # or "libfm"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self) | {"columns": list(self.columns)}
        if self.type == "delimited":
            del out["type"]
        return out


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
    split_by: str = "user_id"  # or "line": a stable hash of the raw line
    aux_labels: Mapping[str, Any] | None = None  # set by beam_jobs.add_aux_labels

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
        if self.split_by != "user_id":
            out["split_by"] = self.split_by
        if self.aux_labels is not None:
            out["aux_labels"] = dict(self.aux_labels)
        return out

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
        return _parse_spec(raw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FeatureSpec":
        return _parse_spec(raw)

    # ----- Beam writer view ----------------------------------------------------------
    def split_line(self, line: str) -> list[str]:
        """One raw line as column texts: split by ``format.delimiter``, or libFM tokens.

        For ``format.type: libfm`` the texts are the label (``-1`` becomes ``0``,
        ``+1`` ``1``) and, per feature column, ``idx`` (categorical) or ``val``
        (dense) of its ``idx:val`` token; raises :class:`RowError` for a token
        without ``:``.
        """
        fmt = self.raw_format
        if fmt.type == "delimited":
            return line.split(fmt.delimiter)
        tokens = line.split()
        if len(tokens) != len(fmt.columns):
            return tokens  # parse_raw_row reports wrong_column_count
        out = [_LIBFM_LABELS.get(tokens[0], tokens[0])]
        for name, token in zip(fmt.columns[1:], tokens[1:]):
            idx, sep, val = token.partition(":")
            if not sep:
                raise RowError("bad_number", f"column '{name}': libFM token {token!r} is not idx:val")
            out.append(val if self._kinds[name] == "dense" else idx)
        return out

    @property
    def _kinds(self) -> dict[str, str]:
        kinds = self.__dict__.get("_kinds_cache")
        if kinds is None:
            kinds = {f.name: f.kind for f in self.features}
            object.__setattr__(self, "_kinds_cache", kinds)
        return kinds

    def parse_raw_row(self, fields: Sequence[str],
                      vocabularies: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
        """Parses one split raw row into typed values; raises :class:`RowError`.

        Returns a dict with the label (float), every feature (int, float or
        list of ints, before OOV mapping) and ``"__split__"`` when the format
        has a split column. Dense values are filled (``default``) and
        transformed (``transforms``); string and hex tokens are hashed
        (``hash_buckets``) or looked up in ``vocabularies`` (``{table: {token:
        id}}``; tokens outside it get the OOV id ``vocab_size``). Without
        ``vocabularies``, features with a vocabulary keep their normalized
        tokens (``str``; ``str(id)`` for int ids), as the vocabulary pass counts
        them.
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
                value = _parse_float(f, text)
                row[f.name] = apply_transforms(f, value) if f.transforms else value
            elif f.kind == "categorical":
                row[f.name] = self.to_id(f, parse_token(f, text), vocabularies)
            else:
                if f.tokens:
                    items = [t.strip() for t in text.split(self.raw_format.sequence_delimiter)] if text else []
                    items = [t for t in items if t]
                else:
                    items = [t for t in text.split(self.raw_format.sequence_delimiter) if t] if text else []
                row[f.name] = [self.to_id(f, parse_token(f, t), vocabularies) for t in items]
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

    def to_id(self, f: Feature, value: int | str,
              vocabularies: Mapping[str, Mapping[str, int]] | None = None) -> int | str:
        """The stored id of a parsed raw value (:func:`parse_token`) of feature ``f``.

        Raises :class:`RowError` ``unknown_category`` for a value outside the
        vocabulary when ``f.unknown == "error"``.
        """
        if f.vocabulary is not None:
            token = value if f.tokens else str(value)
            if vocabularies is None:
                return token
            try:
                vocab = vocabularies[f.table]
            except KeyError:
                raise SpecError(f"feature '{f.name}': vocabulary of table '{f.table}' is not loaded") from None
            got = vocab.get(token)
            if got is None:
                if f.unknown == "error":
                    raise RowError("unknown_category",
                                   f"feature '{f.name}': {token!r} is not in the vocabulary "
                                   f"of table '{f.table}' ({f.vocab_size} tokens)")
                return f.vocab_size
            return got
        if f.tokens:
            return hash_token(value) % f.hash_buckets
        if f.unknown == "error" and f.is_out_of_vocab(value):
            raise RowError("unknown_category",
                           f"feature '{f.name}': id {value} is outside vocab_size {f.vocab_size}")
        return value

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
        return self.split_from_hash(stable_hash(int(row[self.user_id])))

    def split_of_line(self, line: bytes) -> str:
        """Split of a raw line (``split_by: line``): ``stable_hash(crc32(line bytes))``.

        ``line`` is the line as read, without its line terminator.
        """
        return self.split_from_hash(stable_hash(zlib.crc32(line)))

    def split_from_hash(self, hashed: int) -> str:
        bucket = hashed % 10_000 / 10_000.0
        edge = 0.0
        for name in SPLITS:
            edge += self.split[name]
            if bucket < edge:
                return name
        return SPLITS[-1]

    @property
    def split_edges(self) -> tuple[float, ...]:
        """Cumulative split fractions as :meth:`split_from_hash` compares them."""
        edges, edge = [], 0.0
        for name in SPLITS:
            edge += self.split[name]
            edges.append(edge)
        return tuple(edges)

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
        """Serialized ``tf.train.Example`` of a parsed row (filled in place: no per-key protos).

        Serialization is deterministic (map keys sorted), so the same row gives the same bytes in
        every process; :meth:`encode_examples` is the batched form and gives identical bytes.
        Uses the ``tf.train.Example`` wire schema without importing TensorFlow.
        """
        example = example_class()()
        feature = example.features.feature
        float_keys = self._float_keys
        for key, vals in self.example_values(row).items():
            if key in float_keys:
                feature[key].float_list.value.extend(vals)
            else:
                feature[key].int64_list.value.extend(vals)
        return example.SerializeToString(deterministic=True)

    @property
    def example_layout(self) -> tuple[tuple[str, bool, int], ...]:
        """``(key, is_float, values per row)`` of every stored key, in serialized (sorted) order."""
        layout = self.__dict__.get("_layout_cache")
        if layout is None:
            keys = [(self.label, True, 1)]
            for f in self.features:
                keys.append((f.name, f.kind == "dense", f.max_length if f.kind == "sequence" else 1))
            keys += [(COHORT_KEY_PREFIX + a.name, False, 1) for a in self.cohort_axes]
            layout = tuple(sorted(keys, key=lambda k: k[0].encode("utf-8")))
            object.__setattr__(self, "_layout_cache", layout)
        return layout

    def example_columns(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Parsed rows as columns: key -> ``(N, values per row)`` array (float32 or int64).

        The values are :meth:`example_values` of each row; the input of :meth:`encode_examples`.
        """
        import numpy as np

        values = [self.example_values(r) for r in rows]
        out = {}
        for key, is_float, width in self.example_layout:
            dtype = np.float32 if is_float else np.int64
            out[key] = np.array([v[key] for v in values], dtype=dtype).reshape(len(rows), width)
        return out

    def encode_examples(self, columns: Mapping[str, Any]) -> list[bytes]:
        """Serialized Examples of a batch of rows given as columns (see :meth:`example_columns`).

        Byte-identical to ``[encode_example(row) for row in rows]``; built with array operations
        per key instead of per row (every record has the same keys and value counts).
        """
        flat, lengths = self.encode_examples_flat(columns)
        data = flat.tobytes()
        out, pos = [], 0
        for n in lengths.tolist():
            out.append(data[pos:pos + n])
            pos += n
        return out

    def encode_examples_flat(self, columns: Mapping[str, Any]):
        """:meth:`encode_examples` as one ``uint8`` buffer of all records back to back and their lengths."""
        import numpy as np

        n = int(np.shape(columns[self.label])[0])
        if n == 0:
            return np.zeros(0, np.uint8), np.zeros(0, np.int64)
        segments: list = []  # bytes (same for every row) or (matrix uint8 (N, w), mask bool (N, w) | None)
        features_len = 0
        for key, is_float, width in self.example_layout:
            col = np.asarray(columns[key]).reshape(n, width)
            keyb = key.encode("utf-8")
            head = b"\n" + _varint(len(keyb)) + keyb + b"\x12"  # entry: key (1), value (2)
            if is_float:
                payload_len = 4 * width
                list_len = 1 + len(_varint(payload_len)) + payload_len
                feature_len = 1 + len(_varint(list_len)) + list_len
                entry_len = len(head) + len(_varint(feature_len)) + feature_len
                segments.append(b"\n" + _varint(entry_len) + head + _varint(feature_len) + b"\x12"
                                + _varint(list_len) + b"\n" + _varint(payload_len))
                segments.append((col.astype("<f4").view(np.uint8).reshape(n, payload_len), None))
                features_len = features_len + 1 + len(_varint(entry_len)) + entry_len
            else:
                payload, payload_mask, payload_len = _varint_columns(col.astype(np.int64))
                list_len = 1 + _varint_size(payload_len) + payload_len
                feature_len = 1 + _varint_size(list_len) + list_len
                entry_len = len(head) + _varint_size(feature_len) + feature_len
                segments.append(b"\n")
                segments.append(_varint_segment(entry_len))
                segments.append(head)
                segments.append(_varint_segment(feature_len))
                segments.append(b"\x1a")
                segments.append(_varint_segment(list_len))
                segments.append(b"\n")
                segments.append(_varint_segment(payload_len))
                segments.append((payload, payload_mask))
                features_len = features_len + 1 + _varint_size(entry_len) + entry_len
        features_len = np.broadcast_to(np.asarray(features_len, dtype=np.int64), (n,))
        segments = [b"\n", _varint_segment(features_len)] + segments
        return _assemble(segments, n)

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
                embedding_dim=owner.embedding_dim, raw_type=owner.raw_type, vocabulary=owner.vocabulary,
                unknown=owner.unknown,
            )
        resolved.append(f)
    features = resolved
    by_name = {f.name: f for f in features}
    if not any(f.input for f in features):
        raise SpecError("spec: no feature has input: true")

    user_id = raw.get("user_id")
    if user_id is not None and (user_id not in by_name or by_name[user_id].kind != "categorical"):
        raise SpecError(f"user_id '{user_id}': must name a declared categorical feature")
    if user_id is not None and by_name[user_id].vocabulary is not None:
        raise SpecError(f"user_id '{user_id}': the split hashes the raw id, so it cannot have a vocabulary "
                        "(use hash_buckets, or split_by: line)")
    split_by = raw.get("split_by", "user_id")
    if split_by not in _SPLIT_BY:
        raise SpecError(f"split_by: must be one of {_SPLIT_BY}, got {split_by!r}")

    fmt = raw.get("format") or {}
    columns = fmt.get("columns") or [label] + [f.name for f in features]
    split_column = fmt.get("split_column")
    needed = [label] + [f.name for f in features] + ([split_column] if split_column else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        raise SpecError(f"format.columns: missing column(s) {missing} for declared features/label")
    if len(set(columns)) != len(columns):
        raise SpecError(f"format.columns: duplicate column names in {columns}")
    unknown_fmt = set(fmt) - {f.name for f in dataclasses.fields(RawFormat)}
    if unknown_fmt:
        raise SpecError(f"format: unknown key(s) {sorted(unknown_fmt)}")
    fmt_type = fmt.get("type", "delimited")
    if fmt_type not in _FORMAT_TYPES:
        raise SpecError(f"format.type: must be one of {_FORMAT_TYPES}, got {fmt_type!r}")
    if fmt_type == "libfm":
        if columns[0] != label or split_column or any(by_name.get(c) is None for c in columns[1:]):
            raise SpecError("format.type libfm: columns must be the label, then one feature per token")
        if any(by_name[c].kind == "sequence" for c in columns[1:]):
            raise SpecError("format.type libfm: sequence features cannot be read from libFM tokens")
    raw_format = RawFormat(
        columns=tuple(columns),
        delimiter=_unescape(fmt.get("delimiter", ",")),
        header=bool(fmt.get("header", True)),
        sequence_delimiter=_unescape(fmt.get("sequence_delimiter", " ")),
        split_column=split_column,
        type=fmt_type,
    )

    split = raw.get("split") or {"train": 0.8, "valid": 0.1, "test": 0.1}
    if split_column is None:
        if user_id is None and split_by == "user_id":
            raise SpecError("spec: 'user_id' is required to split by a stable hash of the user id "
                            "(or set split_by: line)")
        if set(split) != set(SPLITS) or any(not 0 <= float(v) <= 1 for v in split.values()):
            raise SpecError(f"split: needs fractions for exactly {SPLITS}, got {dict(split)}")
        if not math.isclose(sum(float(v) for v in split.values()), 1.0, abs_tol=1e-6):
            raise SpecError(f"split: fractions must sum to 1, got {sum(split.values())}")
    split = {k: float(v) for k, v in split.items()}

    axes = tuple(_parse_axis(a, by_name) for a in raw.get("cohort_axes", []) or [])
    if len({a.name for a in axes}) != len(axes):
        raise SpecError("cohort_axes: axis names must be unique")

    c2al = raw.get("c2al")
    aux_labels = raw.get("aux_labels")
    spec = FeatureSpec(
        name=name, label=label, user_id=user_id, features=tuple(features), cohort_axes=axes,
        raw_format=raw_format, split=split, c2al=c2al, description=raw.get("description", ""),
        adapter=raw.get("adapter"), split_by=split_by,
        aux_labels=None if aux_labels is None else dict(aux_labels),
    )
    if aux_labels is not None:
        axis = spec.axis(_require(aux_labels, "axis", "aux_labels", str))
        axis.index(_require(aux_labels, "head", "aux_labels", str))
        axis.index(_require(aux_labels, "tail", "aux_labels", str))
        if aux_labels.get("dtype", "float32") not in ("float32", "int64"):
            raise SpecError(f"aux_labels: dtype must be float32 or int64, got {aux_labels.get('dtype')!r}")
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
        for key in ("vocab_size", "hash_buckets", "embedding_dim", "share_embedding", "max_length",
                    "raw_type", "vocabulary", "unknown"):
            if rf.get(key) is not None:
                raise SpecError(f"{where}: '{key}' does not apply to a dense feature")
        default = rf.get("default")
        if default is not None and (not isinstance(default, (int, float)) or isinstance(default, bool)):
            raise SpecError(f"{where}: default must be a number, got {default!r}")
        return Feature(name=name, kind=kind, default=None if default is None else float(default),
                       input=bool(rf.get("input", True)), transforms=_parse_transforms(rf.get("transforms"), where))
    if rf.get("default") is not None:
        raise SpecError(f"{where}: 'default' applies only to dense features")
    if rf.get("transforms") is not None:
        raise SpecError(f"{where}: 'transforms' apply only to dense features")
    raw_type = rf.get("raw_type")
    if raw_type is not None and raw_type not in _RAW_TYPES:
        raise SpecError(f"{where}: raw_type must be one of {_RAW_TYPES}, got {raw_type!r}")
    raw_type = None if raw_type == "int" else raw_type
    vocabulary = _parse_vocabulary(rf.get("vocabulary"), where)
    unknown = rf.get("unknown")
    if unknown is not None and unknown not in _UNKNOWN_POLICIES:
        raise SpecError(f"{where}: unknown must be one of {_UNKNOWN_POLICIES}, got {unknown!r}")
    unknown = None if unknown == "oov" else unknown
    if share is None:
        if vocabulary is not None:
            if buckets is not None:
                raise SpecError(f"{where}: a vocabulary feature has no hash_buckets")
            if (vocab is None) != (vocabulary.file is None):
                raise SpecError(f"{where}: vocab_size of a vocabulary feature is set by building it "
                                "(it comes with vocabulary.file)")
            if vocab is not None and (not isinstance(vocab, int) or isinstance(vocab, bool) or vocab <= 0):
                raise SpecError(f"{where}: vocab_size must be a positive integer, got {vocab!r}")
        else:
            if (vocab is None) == (buckets is None):
                raise SpecError(f"{where}: give exactly one of vocab_size or hash_buckets")
            size = vocab if vocab is not None else buckets
            if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
                raise SpecError(f"{where}: vocab_size/hash_buckets must be a positive integer, got {size!r}")
            if raw_type is not None and vocab is not None:
                raise SpecError(f"{where}: {raw_type} tokens need hash_buckets or a vocabulary, not a fixed vocab_size")
        if unknown is not None and vocab is None and vocabulary is None:
            raise SpecError(f"{where}: 'unknown' applies to vocabulary features, not hashed ones")
        if not isinstance(dim, int) or dim <= 0:
            raise SpecError(f"{where}: embedding_dim must be a positive integer (or set defaults.embedding_dim), got {dim!r}")
    elif vocab is not None or buckets is not None or rf.get("embedding_dim") is not None:
        raise SpecError(f"{where}: share_embedding takes size and dim from '{share}'; do not repeat them")
    elif any(rf.get(k) is not None for k in ("raw_type", "vocabulary", "unknown")):
        raise SpecError(f"{where}: share_embedding takes raw_type, vocabulary and unknown from '{share}'; "
                        "do not repeat them")
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
        raw_type=raw_type, vocabulary=vocabulary, unknown=unknown,
    )


def _parse_vocabulary(rv: Any, where: str) -> Vocabulary | None:
    if rv is None:
        return None
    if rv is True:
        rv = {}
    if not isinstance(rv, Mapping):
        raise SpecError(f"{where}: vocabulary must be a mapping (min_count, max_size, splits), got {rv!r}")
    unknown = set(rv) - {"min_count", "max_size", "splits", "file"}
    if unknown:
        raise SpecError(f"{where}: vocabulary has unknown key(s) {sorted(unknown)}")
    min_count, max_size = rv.get("min_count", 1), rv.get("max_size")
    if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
        raise SpecError(f"{where}: vocabulary.min_count must be an integer >= 1, got {min_count!r}")
    if max_size is not None and (not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1):
        raise SpecError(f"{where}: vocabulary.max_size must be a positive integer, got {max_size!r}")
    splits = rv.get("splits", ["train"])
    splits = [splits] if isinstance(splits, str) else list(splits)
    if not splits or any(s not in SPLITS for s in splits):
        raise SpecError(f"{where}: vocabulary.splits must be a non-empty subset of {SPLITS}, got {splits}")
    return Vocabulary(min_count=min_count, max_size=max_size, splits=tuple(s for s in SPLITS if s in splits),
                      file=rv.get("file"))


def _parse_transforms(raw: Any, where: str) -> tuple[tuple, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{where}: transforms must be a non-empty list, e.g. [{{clip: [0, null]}}, log1p]")
    out = []
    for t in raw:
        if t == "log1p":
            out.append(("log1p",))
        elif isinstance(t, Mapping) and list(t) == ["clip"]:
            bounds = t["clip"]
            if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
                    or any(b is not None and (not isinstance(b, (int, float)) or isinstance(b, bool)
                                              or not math.isfinite(b)) for b in bounds)):
                raise SpecError(f"{where}: clip takes [lo, hi] (numbers or null), got {bounds!r}")
            lo, hi = (None if b is None else float(b) for b in bounds)
            if lo is not None and hi is not None and lo > hi:
                raise SpecError(f"{where}: clip bounds must have lo <= hi, got {bounds!r}")
            out.append(("clip", lo, hi))
        else:
            raise SpecError(f"{where}: unknown transform {t!r}; known: log1p, {{clip: [lo, hi]}}")
    return tuple(out)


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
    if feat.tokens or feat.vocabulary is not None:
        raise SpecError(f"{where}: 'values' needs raw integer ids; '{feat.name}' is mapped from "
                        f"{feat.raw_type or 'int'} tokens")
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


_LIBFM_LABELS = {"-1": "0", "+1": "1"}


def parse_token(f: Feature, text: str) -> int | str:
    """A stripped raw text of an id feature as its raw value: an int id, or a normalized token.

    ``hex`` tokens must be hexadecimal digits (or blank) and are lower-cased; raises :class:`RowError`.
    """
    if f.raw_type == "string":
        return text
    if f.raw_type == "hex":
        if not _HEX_DIGITS.issuperset(text):
            raise RowError("bad_number", f"feature '{f.name}': {text!r} is not hexadecimal")
        return text.lower()
    return _parse_int(f, text)


def apply_transforms(f: Feature, value: float) -> float:
    """A dense feature's ``transforms`` applied in order; raises :class:`RowError` on a non-finite result."""
    for t in f.transforms:
        if t[0] == "clip":
            lo, hi = t[1], t[2]
            if lo is not None and value < lo:
                value = lo
            if hi is not None and value > hi:
                value = hi
        else:  # log1p
            if value <= -1.0:
                raise RowError("bad_number", f"feature '{f.name}': log1p({value!r}) is not finite")
            value = math.log1p(value)
    return float(value)


def hash_token(token: str) -> int:
    """Stable 64-bit hash of a string token (UTF-8 bytes, SplitMix64 over 8-byte little-endian words).

    ``hash_token(t) % hash_buckets`` is the stored id of a hashed ``string``/``hex`` token; the
    same on every machine, runner and Python version.
    """
    data = token.encode("utf-8")
    h = stable_hash(len(data))
    for i in range(0, len(data), 8):
        h = stable_hash(h ^ int.from_bytes(data[i:i + 8], "little"))
    return h


def stable_hash_array(values):
    """:func:`stable_hash` of every element of a ``uint64`` array."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_tokens(tokens: Sequence[str]):
    """:func:`hash_token` of every token, as a ``uint64`` array (vectorized)."""
    import numpy as np

    if not tokens:
        return np.zeros(0, np.uint64)
    encoded = "\x00".join(tokens).encode("utf-8").split(b"\x00") if not any("\x00" in t for t in tokens) \
        else [t.encode("utf-8") for t in tokens]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    width = max(8, -(-int(lengths.max()) // 8) * 8)
    words = np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(len(encoded), width)
    words = words.view("<u8")
    h = stable_hash_array(lengths.astype(np.uint64))
    for k in range(words.shape[1]):
        active = lengths > 8 * k
        if not active.any():
            break
        h = np.where(active, stable_hash_array(h ^ words[:, k]), h)
    return h


_EXAMPLE_CLASS = None


def example_class():
    """The ``tf.train.Example`` message class, built from its schema without importing TensorFlow.

    Beam workers encode and decode Examples with it; the wire format is TensorFlow's
    (``tensorflow/core/example/{example,feature}.proto``), in a private descriptor pool so it never
    clashes with TensorFlow's own registration.
    """
    global _EXAMPLE_CLASS
    if _EXAMPLE_CLASS is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        fdp = descriptor_pb2.FileDescriptorProto(name="zoo_spec/tf_example.proto", package="tensorflow",
                                                 syntax="proto3")
        F = descriptor_pb2.FieldDescriptorProto
        for name, ftype in (("BytesList", F.TYPE_BYTES), ("FloatList", F.TYPE_FLOAT), ("Int64List", F.TYPE_INT64)):
            m = fdp.message_type.add(name=name)
            m.field.add(name="value", number=1, type=ftype, label=F.LABEL_REPEATED)
        feature = fdp.message_type.add(name="Feature")
        feature.oneof_decl.add(name="kind")
        for number, (fname, tname) in enumerate(
                (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), 1):
            feature.field.add(name=fname, number=number, type=F.TYPE_MESSAGE, type_name=f".tensorflow.{tname}",
                              label=F.LABEL_OPTIONAL, oneof_index=0)
        features = fdp.message_type.add(name="Features")
        entry = features.nested_type.add(name="FeatureEntry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, type_name=".tensorflow.Feature",
                        label=F.LABEL_OPTIONAL)
        features.field.add(name="feature", number=1, type=F.TYPE_MESSAGE,
                           type_name=".tensorflow.Features.FeatureEntry", label=F.LABEL_REPEATED)
        example = fdp.message_type.add(name="Example")
        example.field.add(name="features", number=1, type=F.TYPE_MESSAGE, type_name=".tensorflow.Features",
                          label=F.LABEL_OPTIONAL)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        _EXAMPLE_CLASS = message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))
    return _EXAMPLE_CLASS


# ----- batched wire-format encoding (FeatureSpec.encode_examples) -----------------------------------
def _varint(value: int) -> bytes:
    """Protobuf varint of a non-negative int."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_size(values):
    """Bytes of the varint of each non-negative length (array in, array out)."""
    import numpy as np

    size = np.ones(np.shape(values), dtype=np.int64)
    for k in range(1, 5):
        size += np.asarray(values) >= (1 << (7 * k))
    return size


def _varint_columns(col):
    """Varints of an ``(N, k)`` int64 array: ``(bytes (N, k*w) uint8, mask (N, k*w) | None, bytes per row)``.

    Negative values are 10-byte two's-complement varints, as protobuf writes int64.
    """
    import numpy as np

    n, k = col.shape
    u = np.ascontiguousarray(col, dtype=np.int64).view(np.uint64)
    sizes = np.ones(u.shape, dtype=np.int64)
    for j in range(1, 10):
        more = (u >> np.uint64(7 * j)) != 0
        if not more.any():
            break
        sizes += more
    w = int(sizes.max()) if sizes.size else 1
    groups = ((u[..., None] >> (np.arange(w, dtype=np.uint64) * np.uint64(7))) & np.uint64(0x7F)).astype(np.uint8)
    idx = np.arange(w)
    groups |= (idx < (sizes - 1)[..., None]).astype(np.uint8) << np.uint8(7)
    mask = None
    if int(sizes.min()) != w:
        mask = (idx < sizes[..., None]).reshape(n, k * w)
    return groups.reshape(n, k * w), mask, sizes.sum(axis=1)


def _varint_segment(values):
    """A per-row length as an assembly segment: constant bytes, or a varint matrix and mask."""
    import numpy as np

    values = np.asarray(values, dtype=np.int64)
    if values.ndim == 0:
        return _varint(int(values))
    if values.size and int(values.min()) == int(values.max()):
        return _varint(int(values[0]))
    mat, mask, _ = _varint_columns(values.reshape(-1, 1))
    return mat, mask


def _assemble(segments, n: int):
    """Concatenates per-row segments into one buffer: ``(flat uint8, lengths)``."""
    import numpy as np

    mats, masks, const = [], [], b""
    for seg in segments + [None]:
        if isinstance(seg, bytes):
            const += seg
            continue
        if const:
            mats.append(np.broadcast_to(np.frombuffer(const, dtype=np.uint8), (n, len(const))))
            masks.append(None)
            const = b""
        if seg is not None:
            mats.append(seg[0])
            masks.append(seg[1])
    matrix = np.concatenate(mats, axis=1)
    if all(m is None for m in masks):
        return matrix.reshape(-1), np.full(n, matrix.shape[1], dtype=np.int64)
    mask = np.concatenate([m if m is not None else np.ones(a.shape, dtype=bool) for a, m in zip(mats, masks)],
                          axis=1)
    return matrix[mask], mask.sum(axis=1)


def stable_hash(value: int) -> int:
    """SplitMix64 of an integer: identical on every machine, runner and Python version."""
    z = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)
