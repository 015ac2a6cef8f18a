"""Raw rows: one CSV/TSV/libFM line of a dataset as the typed values a spec declares.

:func:`split_line` cuts a line into column texts, :func:`parse_raw_row` turns them into the label,
every feature's value and the split column, and :func:`to_id` maps a raw value to its stored id
(hash bucket or vocabulary id). A row that cannot be parsed raises :class:`RowError` whose
``reason`` is a short stable counter key (the Beam job's dead-letter reason).
:meth:`zoo.spec.FeatureSpec.parse_raw_row` and friends delegate here.
"""

from __future__ import annotations

import csv
import math
from typing import Any, Mapping, Sequence

from zoo.spec.hashing import hash_token
from zoo.spec.schema import PAD_ID, SPLITS, Feature, LabelRule, RawFormat, SpecError, SpecView

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_FLOAT32_MAX = 3.4028234663852886e38
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_LIBFM_LABELS = {"-1": "0", "+1": "1"}


class RowError(ValueError):
    """A raw row cannot be parsed. ``reason`` is a short stable counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def split_line(spec: SpecView, line: str) -> list[str]:
    """One raw record as column texts: delimited fields (RFC 4180 quoting), or libFM tokens.

    A delimited record without the ``format.quote`` character is split at every
    ``format.delimiter``; one with it is read by :func:`split_quoted`. For
    ``format.type: libfm`` the texts are the label (``-1`` becomes ``0``,
    ``+1`` ``1``) and, per feature column, ``idx`` (categorical) or ``val``
    (dense) of its ``idx:val`` token; raises :class:`RowError` for a token
    without ``:``.
    """
    fmt = spec.raw_format
    if fmt.type == "delimited":
        if fmt.quote is None or fmt.quote not in line:
            return line.split(fmt.delimiter)
        return split_quoted(line, fmt)
    tokens = line.split()
    if len(tokens) != len(fmt.columns):
        return tokens  # parse_raw_row reports wrong_column_count
    out = [_LIBFM_LABELS.get(tokens[0], tokens[0])]
    for name, token in zip(fmt.columns[1:], tokens[1:]):
        idx, sep, val = token.partition(":")
        if not sep:
            raise RowError("bad_number", f"column '{name}': libFM token {token!r} is not idx:val")
        out.append(val if spec.feature_kinds[name] == "dense" else idx)
    return out


def split_quoted(line: str, fmt: RawFormat) -> list[str]:
    """The fields of one delimited record that holds the quote character, per RFC 4180.

    A field that starts with ``fmt.quote`` is quoted: it ends at the next lone
    quote, may hold the delimiter (and, with ``fmt.multiline``, line breaks),
    and ``""`` inside it is one quote; a quote inside an unquoted field is a
    plain character. Parsed by the standard :mod:`csv` module in strict mode:
    text after a closing quote other than the delimiter, or a quote left open
    at the end of the record, raises :class:`RowError` ``bad_quoting``.

    >>> fmt = RawFormat(columns=("a", "b", "c"))
    >>> split_quoted('1,"Shawshank Redemption, The (1994)","a ""b"" c"', fmt)
    ['1', 'Shawshank Redemption, The (1994)', 'a "b" c']
    """
    try:
        return next(csv.reader((line,), delimiter=fmt.delimiter, quotechar=fmt.quote, doublequote=True,
                               strict=True))
    except csv.Error as err:
        hint = ""
        if "unexpected end of data" in str(err) and not fmt.multiline:
            hint = " (a quoted field is not closed in this line; set format.multiline: true if quoted fields span lines)"
        raise RowError("bad_quoting", f"CSV quoting: {err}{hint}") from None


def parse_raw_row(spec: SpecView, fields: Sequence[str],
                  vocabularies: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
    """Parses one split raw row into typed values; raises :class:`RowError`.

    Returns a dict with every label (float), every feature (int, float or
    list of ints, before OOV mapping) and ``"__split__"`` when the format
    has a split column. Dense values are filled (``default``) and
    transformed (``transforms``); string and hex tokens are hashed
    (``hash_buckets``) or looked up in ``vocabularies`` (``{table: {token:
    id}}``; tokens outside it get the OOV id ``vocab_size``). Without
    ``vocabularies``, features with a vocabulary keep their normalized
    tokens (``str``; ``str(id)`` for int ids), as the vocabulary pass counts
    them.
    """
    cols = spec.raw_format.columns
    if len(fields) != len(cols):
        raise RowError(
            "wrong_column_count",
            f"expected {len(cols)} columns ({', '.join(cols)}), got {len(fields)}",
        )
    raw = dict(zip(cols, fields))
    row: dict[str, Any] = {}
    for name in spec.labels:
        rule = spec.label_rules.get(name)
        row[name] = parse_label(name, raw[rule.column if rule else name].strip(), rule)
    for f in spec.features:
        text = raw[f.name].strip()
        if f.kind == "dense":
            value = parse_float(f, text)
            row[f.name] = apply_transforms(f, value) if f.transforms else value
        elif f.kind == "categorical":
            row[f.name] = to_id(f, parse_token(f, text), vocabularies)
        else:
            if f.tokens:
                items = [t.strip() for t in text.split(spec.raw_format.sequence_delimiter)] if text else []
                items = [t for t in items if t]
            else:
                items = [t for t in text.split(spec.raw_format.sequence_delimiter) if t] if text else []
            row[f.name] = [to_id(f, parse_token(f, t), vocabularies) for t in items]
            if len(items) > f.max_length and f.truncation == "error":
                raise RowError(
                    "sequence_too_long",
                    f"feature '{f.name}': {len(items)} ids exceed max_length {f.max_length}",
                )
    if spec.raw_format.split_column:
        split = raw[spec.raw_format.split_column].strip()
        if split not in SPLITS:
            raise RowError("bad_split", f"column '{spec.raw_format.split_column}': {split!r} is not one of {SPLITS}")
        row["__split__"] = split
    return row


def parse_label(name: str, text: str, rule: LabelRule | None = None) -> float:
    """A label's value 0.0 or 1.0 from its raw text: the text itself (must be 0 or 1), or the spec's
    rule (``positive: ">= 4"`` on a number; ``map`` on the text). Raises :class:`RowError`:
    ``bad_label`` (not a number, or not 0/1), ``unmapped_label`` (a text outside the map)."""
    if rule is not None and rule.mapping is not None:
        if text not in rule.mapping:
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise RowError("unmapped_label", f"label '{name}': column '{rule.column}' value {shown!r} is not in "
                           f"its map {sorted(rule.mapping)}")
        return rule.mapping[text]
    try:
        value = float(text)
    except ValueError:
        raise RowError("bad_label", f"label '{name}': cannot parse {text[:40]!r}") from None
    if rule is not None:
        if not math.isfinite(value):
            raise RowError("bad_label", f"label '{name}': column '{rule.column}' value {text!r} is not finite")
        return 1.0 if rule.positive(value) else 0.0
    if value not in (0.0, 1.0):
        raise RowError("bad_label", f"label '{name}': {text!r} is not 0 or 1")
    return value


def to_id(f: Feature, value: int | str,
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
    return parse_int(f, text)


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


def parse_float(f: Feature, text: str) -> float:
    """A stripped dense text as a finite float32-range value (blank: the default); raises :class:`RowError`."""
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


def parse_int(f: Feature, text: str) -> int:
    """A stripped int id text as an int64 (``PAD_ID`` is not allowed in a sequence); raises :class:`RowError`."""
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
