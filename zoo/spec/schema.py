"""The parts of a dataset spec: features, cohort axes and the raw format, and the spec's constants.

These frozen dataclasses are what a validated spec is made of (:mod:`zoo.spec.validation` builds
them from a YAML mapping; :class:`zoo.spec.FeatureSpec` holds them). Each knows its own
``to_dict``, the declaration that parses back to it. The spec format itself is described in
:mod:`zoo.spec`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol, Sequence

PAD_ID = -1
COHORT_KEY_PREFIX = "cohort/"
SPLITS = ("train", "valid", "test")

AUX_KEY_PREFIX = "aux/"
# A multi-task spec's label <l> other than the primary is the model output / target "task_<l>"
# (zoo.model.task_output) and the served output "probability_<l>" (zoo.export).
TASK_PREFIX = "task_"


class SpecError(ValueError):
    """A dataset spec is malformed; the message names the feature and problem."""


# A threshold label rule's comparisons, as written in the YAML: ``positive: ">= 4"``.
LABEL_COMPARISONS = {
    ">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t, "==": lambda v, t: v == t, "!=": lambda v, t: v != t,
}


@dataclasses.dataclass(frozen=True)
class LabelRule:
    """How a label is derived from a raw column that is not already 0/1.

    Exactly one of:
      comparison, threshold: ``positive: ">= 4"``: the column is a number; the label is 1 where
        ``value <comparison> threshold`` holds, else 0.
      mapping: ``map: {"yes": 1, "no": 0}``: the column's stripped text is looked up; a value
        outside the map is a dead letter (``unmapped_label``).

    ``column`` is the raw column read (``format.columns``); the label keeps its own name.
    """

    column: str
    comparison: str | None = None
    threshold: float | None = None
    mapping: Mapping[str, float] | None = None

    def positive(self, value):
        """The threshold rule on a number or a NumPy array (bool, or a bool array)."""
        return LABEL_COMPARISONS[self.comparison](value, self.threshold)

    def to_dict(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "column": self.column}
        if self.mapping is not None:
            out["map"] = {k: int(v) for k, v in self.mapping.items()}
        else:
            out["positive"] = f"{self.comparison} {self.threshold!r}"
        return out


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
    """A named partition of rows into cohorts by one feature.

    ``boundaries`` (ordinal, a dense or raw-integer feature) or ``values`` (cohort -> stored ids). For
    a feature whose ids are mapped from raw values (a string/hex token, or an id with a vocabulary),
    ``raw_values`` holds the declared raw values (normalized tokens) and ``values`` their resolved ids:
    hash buckets at once, vocabulary ids once the vocabulary is built (None until then;
    :meth:`zoo.spec.FeatureSpec.with_axis_ids`).
    """

    name: str
    feature: str
    cohorts: tuple[str, ...]
    boundaries: tuple[float, ...] | None = None
    values: Mapping[str, tuple[int, ...]] | None = None
    other: str | None = None
    raw_values: Mapping[str, tuple[str, ...]] | None = None

    @property
    def resolved(self) -> bool:
        """False while the stored ids of raw ``values`` wait for the feature's vocabulary."""
        return self.boundaries is not None or self.values is not None

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
        if self.values is None:
            raise SpecError(f"cohort axis '{self.name}': its values are raw values of '{self.feature}', whose ids "
                            "are known once the feature's vocabulary is built (the Beam job resolves them)")
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
        elif self.raw_values is not None:
            out["values"] = {k: list(v) for k, v in self.raw_values.items()}
            out["other"] = self.other
            if self.values is not None:
                out["ids"] = {k: list(v) for k, v in self.values.items()}
        else:
            out["values"] = {k: list(v) for k, v in self.values.items()}
            out["other"] = self.other
        return out


def find_axis(axes: Sequence[CohortAxis], name: str, spec_name: str) -> CohortAxis:
    """The axis called ``name``; raises :class:`SpecError` naming the spec and its axes."""
    for a in axes:
        if a.name == name:
            return a
    raise SpecError(
        f"cohort axis '{name}': not declared in spec '{spec_name}' "
        f"(axes: {[a.name for a in axes]})"
    )


# Keys a feature sharing another's table takes from the owner (and may not repeat).
_SHARED_KEYS = frozenset({"vocab_size", "hash_buckets", "embedding_dim", "raw_type", "vocabulary", "unknown"})


def _transform_to_yaml(t: tuple) -> Any:
    return t[0] if len(t) == 1 else {t[0]: list(t[1:])}


@dataclasses.dataclass(frozen=True)
class RawFormat:
    """How the Beam writer reads raw text rows (the ``format`` block; see :mod:`zoo.spec`)."""

    columns: tuple[str, ...]
    delimiter: str = ","
    header: bool = True
    sequence_delimiter: str = " "
    split_column: str | None = None  # a column holding train/valid/test
    type: str = "delimited"  # or "libfm"
    quote: str | None = '"'  # RFC 4180 quoting of delimited fields; None: no quoting
    multiline: bool = False  # quoted fields may hold line breaks (files are then read whole)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self) | {"columns": list(self.columns)}
        if self.type == "delimited":
            del out["type"]
        else:  # libFM lines have no quoting
            del out["quote"], out["multiline"]
        return out




class SpecView(Protocol):
    """What the row parser (:mod:`zoo.spec.rows`) and the Example codec (:mod:`zoo.spec.example_codec`)
    read of a spec. :class:`zoo.spec.FeatureSpec` is the one implementation; naming this protocol
    instead of the class keeps those modules free of an import of ``feature_spec`` (which imports
    them to delegate its methods), so the three have no import cycle.
    """

    name: str
    label: str
    labels: tuple[str, ...]
    label_rules: Mapping[str, LabelRule]
    features: tuple[Feature, ...]
    cohort_axes: tuple[CohortAxis, ...]
    raw_format: RawFormat

    @property
    def feature_kinds(self) -> dict[str, str]: ...

    @property
    def float_keys(self) -> frozenset[str]: ...

    @property
    def example_layout(self) -> tuple[tuple[str, bool, int], ...]: ...

    def cohort_ids(self, row: Mapping[str, Any]) -> dict[str, int]: ...
