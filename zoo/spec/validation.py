"""Validation of a dataset spec mapping (the parsed YAML or ``spec.json``) into its parts.

:func:`spec_fields` checks every key of the mapping and returns the keyword arguments of
:class:`zoo.spec.FeatureSpec`; :meth:`zoo.spec.FeatureSpec.from_dict` is the public entry point.
Each problem raises :class:`~zoo.spec.schema.SpecError` naming the feature, axis or key.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Mapping

from zoo.spec.hashing import hash_token
from zoo.spec.schema import (LABEL_COMPARISONS, SPLITS, CohortAxis, Feature, LabelRule, RawFormat, SpecError, Vocabulary,
                             find_axis)

_FEATURE_KINDS = ("categorical", "dense", "sequence")
_TRUNCATION_POLICIES = ("keep_last", "keep_first", "error")
_RAW_TYPES = ("int", "string", "hex")
_UNKNOWN_POLICIES = ("oov", "error")
_SPLIT_BY = ("user_id", "line")
_FORMAT_TYPES = ("delimited", "libfm")
_TOP_LEVEL_KEYS = {
    "name", "description", "adapter", "label", "labels", "user_id", "format", "split", "defaults",
    "features", "cohort_axes", "c2al", "split_by", "aux_labels", "oracle", "adapter_options",
}


def spec_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The validated keyword arguments of ``FeatureSpec`` for a spec mapping; raises ``SpecError``."""
    raw = copy.deepcopy(dict(raw))
    unknown = set(raw) - _TOP_LEVEL_KEYS
    if unknown:
        raise SpecError(f"spec: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_LEVEL_KEYS)}")
    name = _require(raw, "name", "spec", str)
    labels, label_rules = _parse_labels(raw)
    label = labels[0]
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
        if rf["name"] in labels:
            raise SpecError(f"feature '{rf['name']}': has the same name as the label '{rf['name']}' "
                            f"(labels: {list(labels)})")
        seen.add(rf["name"])
    by_name = {f.name: f for f in features}
    for lab in labels[1:]:
        for taken in (f"task_{lab}", f"task_{lab}_logit"):
            if taken in by_name:
                raise SpecError(f"feature '{taken}': clashes with the model output of label '{lab}' "
                                f"(task_{lab}); rename the feature")

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

    oracle = raw.get("oracle")
    if oracle is not None:
        if not isinstance(oracle, str) or oracle not in by_name:
            raise SpecError(f"oracle '{oracle}': must name a declared feature (the carried true click probability)")
        if by_name[oracle].kind != "dense":
            raise SpecError(f"oracle '{oracle}': must be a dense feature, got kind {by_name[oracle].kind}")
        if by_name[oracle].input:
            raise SpecError(f"oracle '{oracle}': must have input: false (a carried column, never a model input)")
        if by_name[oracle].transforms or by_name[oracle].default is not None:
            raise SpecError(f"oracle '{oracle}': takes no transforms or default (it is stored unchanged)")

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
    label_columns = [label_rules[lab].column if lab in label_rules else lab for lab in labels]
    columns = fmt.get("columns") or label_columns + [f.name for f in features]
    split_column = fmt.get("split_column")
    for lab, column in zip(labels, label_columns):
        if column not in columns:
            raise SpecError(f"label '{lab}': column '{column}' is not a column of format.columns {list(columns)}")
        if column in by_name:
            raise SpecError(f"label '{lab}': column '{column}' is also a feature; a label is never a model input")
        if column == split_column:
            raise SpecError(f"label '{lab}': column '{column}' is the split column")
    needed = [f.name for f in features] + ([split_column] if split_column else [])
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
        if len(labels) > 1:
            raise SpecError(f"labels: format.type libfm has one label column, got {list(labels)}")
        if columns[0] != label_columns[0] or split_column or any(by_name.get(c) is None for c in columns[1:]):
            raise SpecError("format.type libfm: columns must be the label, then one feature per token")
        if any(by_name[c].kind == "sequence" for c in columns[1:]):
            raise SpecError("format.type libfm: sequence features cannot be read from libFM tokens")
    delimiter = _unescape(fmt.get("delimiter", ","))
    quote, multiline = _quoting(fmt, fmt_type, delimiter)
    raw_format = RawFormat(
        columns=tuple(columns),
        delimiter=delimiter,
        header=bool(fmt.get("header", True)),
        sequence_delimiter=_unescape(fmt.get("sequence_delimiter", " ")),
        split_column=split_column,
        type=fmt_type,
        quote=quote,
        multiline=multiline,
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

    adapter_options = raw.get("adapter_options")
    if adapter_options is not None:
        if raw.get("adapter") is None:
            raise SpecError("adapter_options: given without an 'adapter' to pass them to")
        if not isinstance(adapter_options, Mapping) or not all(isinstance(k, str) for k in adapter_options):
            raise SpecError(f"adapter_options: must be a mapping of option names to values, got {adapter_options!r}")

    c2al = raw.get("c2al")
    aux_labels = raw.get("aux_labels")
    if aux_labels is not None:
        axis = find_axis(axes, _require(aux_labels, "axis", "aux_labels", str), name)
        axis.index(_require(aux_labels, "head", "aux_labels", str))
        axis.index(_require(aux_labels, "tail", "aux_labels", str))
        if aux_labels.get("dtype", "float32") not in ("float32", "int64"):
            raise SpecError(f"aux_labels: dtype must be float32 or int64, got {aux_labels.get('dtype')!r}")
    if c2al is not None:
        axis = find_axis(axes, _require(c2al, "axis", "c2al", str), name)
        axis.index(_require(c2al, "head", "c2al", str))
        axis.index(_require(c2al, "tail", "c2al", str))
        if c2al["head"] == c2al["tail"]:
            raise SpecError("c2al: head and tail must be different cohorts")
    return dict(
        name=name, label=label, labels=labels, user_id=user_id, features=tuple(features), cohort_axes=axes,
        raw_format=raw_format, split=split, c2al=c2al, description=raw.get("description", ""),
        adapter=raw.get("adapter"), adapter_options=dict(adapter_options or {}), split_by=split_by,
        aux_labels=None if aux_labels is None else dict(aux_labels), oracle=oracle, label_rules=label_rules,
    )


def _parse_labels(raw: Mapping[str, Any]) -> tuple[tuple[str, ...], dict[str, LabelRule]]:
    """The spec's labels and their rules.

    ``label: y`` (one task) or ``labels: [y, y2, ...]`` (multi-task; the first is primary). Each entry
    is a column name holding 0/1, or a rule deriving the label from a raw column:
    ``{name: click, column: rating, positive: ">= 4"}`` or ``{column: answer, map: {"yes": 1, "no": 0}}``
    (``name`` defaults to the column).
    """
    if "label" in raw and "labels" in raw:
        raise SpecError("labels: give either 'label' (one task) or 'labels' (a list, the first is the primary task), "
                        "not both")
    if "labels" in raw:
        labels = raw["labels"]
        if isinstance(labels, (str, Mapping)):
            labels = [labels]
        if not isinstance(labels, list) or not labels:
            raise SpecError(f"labels: must be a non-empty list of column names or label rules, got {labels!r}")
    else:
        if "label" not in raw:
            raise SpecError("spec: missing required key 'label'")
        labels = [raw["label"]]
    names: list[str] = []
    rules: dict[str, LabelRule] = {}
    for entry in labels:
        if isinstance(entry, Mapping):
            name, rule = _parse_label_rule(entry)
            rules[name] = rule
        elif isinstance(entry, str):
            name = entry
        else:
            raise SpecError(f"label {entry!r}: must be a column name or a rule {{column, positive | map}}")
        if not name or not name.replace("_", "a").isalnum():
            raise SpecError(f"label {name!r}: label names must be letters, digits and underscores "
                            "(they name model outputs and serving outputs)")
        if name in names:
            raise SpecError(f"label '{name}': listed twice in labels")
        names.append(name)
    columns = [rules[n].column if n in rules else n for n in names]
    twice = [c for c in columns if columns.count(c) > 1]
    if twice:
        raise SpecError(f"label column '{twice[0]}': read by two labels; derive one label per column")
    return tuple(names), rules


def _parse_label_rule(entry: Mapping[str, Any]) -> tuple[str, LabelRule]:
    unknown = set(entry) - {"name", "column", "positive", "map"}
    column = entry.get("column")
    name = entry.get("name", column)
    where = f"label '{name}'"
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {sorted(unknown)}; a label rule has name, column and "
                        "one of positive or map")
    if not isinstance(column, str) or not column:
        raise SpecError(f"{where}: a label rule needs 'column' (the raw column it reads)")
    if ("positive" in entry) == ("map" in entry):
        raise SpecError(f"{where}: give exactly one of 'positive' (e.g. \">= 4\") or 'map' (e.g. {{\"yes\": 1, \"no\": 0}})")
    if "positive" in entry:
        text = entry["positive"]
        parts = text.split() if isinstance(text, str) else []
        if len(parts) == 1:  # ">=4": split the comparison from the number
            op = next((o for o in sorted(LABEL_COMPARISONS, key=len, reverse=True) if parts[0].startswith(o)), "")
            parts = [op, parts[0][len(op):]] if op else parts
        try:
            threshold = float(parts[1]) if len(parts) == 2 else math.nan
        except ValueError:
            threshold = math.nan
        if len(parts) != 2 or parts[0] not in LABEL_COMPARISONS or not math.isfinite(threshold):
            raise SpecError(f"{where}: positive must be a comparison and a number, e.g. \">= 4\"; got {text!r} "
                            f"(comparisons: {' '.join(LABEL_COMPARISONS)})")
        return name, LabelRule(column=column, comparison=parts[0], threshold=threshold)
    mapping = entry["map"]
    if not isinstance(mapping, Mapping) or not mapping:
        raise SpecError(f"{where}: map must map raw values to 0 or 1, got {mapping!r}")
    parsed: dict[str, float] = {}
    for key, value in mapping.items():
        if isinstance(key, bool) or key is None:
            raise SpecError(f"{where}: map key {key!r} is a YAML {'boolean' if key is not None else 'null'} "
                            "(unquoted yes/no/true/false/null); quote the raw value, e.g. \"yes\": 1")
        if isinstance(value, bool) or value not in (0, 1):
            raise SpecError(f"{where}: map value of {key!r} must be 0 or 1, got {value!r}")
        parsed[str(key)] = float(value)
    if 1.0 not in parsed.values():
        raise SpecError(f"{where}: map has no value mapped to 1 (every row would be negative)")
    return name, LabelRule(column=column, mapping=parsed)


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
    unknown = set(ra) - {"name", "feature", "boundaries", "cohorts", "values", "other", "ids"}
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {sorted(unknown)}")
    feat = by_name.get(ra.get("feature"))
    if feat is None or feat.kind == "sequence":
        raise SpecError(f"{where}: feature {ra.get('feature')!r} is not a declared categorical or dense feature")
    if ("boundaries" in ra) == ("values" in ra):
        raise SpecError(f"{where}: give exactly one of 'boundaries' (ordinal) or 'values' (categorical)")
    mapped = feat.kind == "categorical" and (feat.tokens or feat.vocabulary is not None)
    if "boundaries" in ra:
        if mapped:
            how = "a vocabulary's frequency ranks" if feat.vocabulary is not None else "hash buckets"
            raise SpecError(f"{where}: 'boundaries' needs a dense or raw-integer feature; the ids of '{feat.name}' "
                            f"are {how}, so ranges of them mean nothing (list raw values in 'values')")
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
        raise SpecError(f"{where}: values must map cohort names to lists of {'raw values' if mapped else 'ids'}")
    other = ra.get("other", "other")
    if other in {str(c) for c in values}:
        raise SpecError(f"{where}: '{other}' is reserved for unlisted ids; rename the cohort or set 'other'")
    if not mapped:
        if "ids" in ra:
            raise SpecError(f"{where}: 'ids' belongs to raw values of a mapped feature; '{feat.name}' has raw integer ids")
        parsed = _axis_ids(values, where, lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None,
                           "non-integer id")
        return CohortAxis(name=name, feature=feat.name, cohorts=tuple(parsed) + (other,), values=parsed, other=other)
    # Raw values of a mapped feature: normalized as the row parser does, resolved to their stored ids.
    raw_values: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for cohort, listed in values.items():
        listed = [listed] if isinstance(listed, (str, int)) else list(listed or [])
        tokens = []
        for v in listed:
            token = _axis_token(feat, v, where, cohort)
            if token in seen:
                raise SpecError(f"{where}: value {v!r} is in both '{seen[token]}' and '{cohort}'")
            seen[token] = str(cohort)
            tokens.append(token)
        if not tokens:
            raise SpecError(f"{where}: cohort '{cohort}' lists no value")
        raw_values[str(cohort)] = tuple(tokens)
    cohorts = tuple(raw_values) + (other,)
    if feat.vocabulary is None:  # hashed tokens: the ids are known now
        ids = {c: tuple(hash_token(t) % feat.hash_buckets for t in ts) for c, ts in raw_values.items()}
        _check_buckets(ids, raw_values, where, feat)
        return CohortAxis(name=name, feature=feat.name, cohorts=cohorts, values=ids, other=other, raw_values=raw_values)
    resolved = None
    if "ids" in ra:  # a resolved spec.json
        resolved = _axis_ids(ra["ids"], where, lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None,
                             "non-integer id")
        if {c: len(v) for c, v in resolved.items()} != {c: len(v) for c, v in raw_values.items()}:
            raise SpecError(f"{where}: 'ids' must list one id per raw value of each cohort {list(raw_values)}")
    return CohortAxis(name=name, feature=feat.name, cohorts=cohorts, values=resolved, other=other,
                      raw_values=raw_values)


def _axis_ids(values: Mapping[str, Any], where: str, check, what: str) -> dict[str, tuple[int, ...]]:
    seen: dict[int, str] = {}
    parsed: dict[str, tuple[int, ...]] = {}
    for cohort, ids in values.items():
        ids = [ids] if isinstance(ids, int) else list(ids)
        for v in ids:
            if check(v) is None:
                raise SpecError(f"{where}: cohort '{cohort}' lists {what} {v!r}")
            if v in seen:
                raise SpecError(f"{where}: id {v} is in both '{seen[v]}' and '{cohort}'")
            seen[v] = str(cohort)
        parsed[str(cohort)] = tuple(ids)
    return parsed


def _axis_token(feat: Feature, value: Any, where: str, cohort: str) -> str:
    """A listed raw value as the token the feature's ids are mapped from (hex lower-cased, ints as text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SpecError(f"{where}: cohort '{cohort}' lists {value!r}; raw values are strings (or integers); "
                        "quote yes/no/true/false, which YAML reads as booleans")
    text = str(value).strip()
    if not feat.tokens:  # integer ids mapped through a vocabulary: the token is the id's text
        try:
            return str(int(text))
        except ValueError:
            raise SpecError(f"{where}: cohort '{cohort}' lists {value!r}; '{feat.name}' has integer raw values") from None
    if feat.raw_type == "hex":
        if not text or any(ch not in "0123456789abcdefABCDEF" for ch in text):
            raise SpecError(f"{where}: cohort '{cohort}' lists {value!r}; '{feat.name}' has hexadecimal raw values")
        return text.lower()
    return text


def _check_buckets(ids, raw_values, where: str, feat: Feature) -> None:
    """Two cohorts' values in one hash bucket cannot be told apart: an error naming both."""
    owner: dict[int, tuple[str, str]] = {}
    for cohort, buckets in ids.items():
        for token, bucket in zip(raw_values[cohort], buckets):
            if bucket in owner and owner[bucket][0] != cohort:
                raise SpecError(f"{where}: values {owner[bucket][1]!r} ('{owner[bucket][0]}') and {token!r} "
                                f"('{cohort}') share hash bucket {bucket} of '{feat.name}'; raise its hash_buckets "
                                "or give it a vocabulary")
            owner.setdefault(bucket, (cohort, token))


def _require(raw: Mapping[str, Any], key: str, where: str, typ: type) -> Any:
    if key not in raw:
        raise SpecError(f"{where}: missing required key '{key}'")
    if not isinstance(raw[key], typ):
        raise SpecError(f"{where}: '{key}' must be {typ.__name__}, got {type(raw[key]).__name__}")
    return raw[key]


def _quoting(fmt: Mapping[str, Any], fmt_type: str, delimiter: str) -> tuple[str | None, bool]:
    """``format.quote`` (one character or null; default ``"``) and ``format.multiline`` (a bool that
    needs a quote character); libFM lines take neither."""
    if fmt_type != "delimited":
        given = sorted(k for k in ("quote", "multiline") if k in fmt)
        if given:
            raise SpecError(f"format: {given} apply to delimited files, not format.type {fmt_type}")
        return None, False
    quote = fmt.get("quote", '"')
    if quote is not None and (not isinstance(quote, str) or len(quote) != 1 or quote in (delimiter, "\n", "\r")):
        raise SpecError(f"format.quote: must be one character other than the delimiter and line breaks, "
                        f"or null (no quoting); got {quote!r}")
    multiline = fmt.get("multiline", False)
    if not isinstance(multiline, bool):
        raise SpecError(f"format.multiline: must be true or false, got {multiline!r}")
    if multiline and quote is None:
        raise SpecError("format.multiline: true needs a quote character (format.quote)")
    return quote, multiline


def _unescape(text: str) -> str:
    return {"\\t": "\t", "tab": "\t", "\\n": "\n"}.get(text, text)

