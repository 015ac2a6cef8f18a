"""Column converters of :class:`beam_jobs.columnar.BatchParser`: one raw text column at a time.

Each converter turns the texts of one column (one per row) into an array with one C-level pass and
returns it with a ``bad`` mask: rows the fast path cannot vouch for (unparsable, blank, out of
range, stray whitespace, ...). The parser re-parses bad rows with ``FeatureSpec.parse_raw_row``,
which gives them their exact dead-letter reason, so a converter may flag too much but never
accepts a row the reference parser would reject.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from typing import Sequence

import numpy as np

from zoo.spec import PAD_ID, Feature, LabelRule

_FLOAT32_MAX = 3.4028234663852886e38
_INT64_MAX, _INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
_OTHER_WS = re.compile(r"[^\S\n]")  # whitespace other than the newline that joins tokens
_HEX_BYTES = b"0123456789abcdefABCDEF\n"


def int_column(col: Sequence[str], n: int, joined: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``int(text)`` of every text (bad: not an int, or outside int64)."""
    if n:
        # Fast path for plain decimal ids: numpy's C parser. Only digits, '-' and separators may
        # appear, so a field can neither hide a second number nor vanish without changing the count;
        # values at the int64 limits (where the C parser saturates) take the exact path.
        joined = "\n".join(col) if joined is None else joined
        if not joined.encode("utf-8").translate(None, b"0123456789-\n"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    v = np.fromstring(joined, dtype=np.int64, sep="\n")
            except (ValueError, DeprecationWarning):
                v = None
            if v is not None and v.shape[0] == n and not ((v == _INT64_MAX) | (v == _INT64_MIN)).any():
                return v, np.zeros(n, dtype=bool)
    try:
        return np.fromiter(map(int, col), dtype=np.int64, count=n), np.zeros(n, dtype=bool)
    except (ValueError, OverflowError):
        pass
    out = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    for i, t in enumerate(col):
        try:
            v = int(t)
        except ValueError:
            bad[i] = True
            continue
        if -(2**63) <= v < 2**63:
            out[i] = v
        else:
            bad[i] = True
    return out, bad


def float_column(col: Sequence[str], n: int, default: float | None) -> tuple[np.ndarray, np.ndarray]:
    if default is not None:
        fill = repr(default)
        col = [t if t else fill for t in col]
    try:
        v = np.fromiter(map(float, col), dtype=np.float64, count=n)
        bad = np.zeros(n, dtype=bool)
    except ValueError:
        v = np.zeros(n, dtype=np.float64)
        bad = np.zeros(n, dtype=bool)
        for i, t in enumerate(col):
            try:
                v[i] = float(t)
            except ValueError:
                bad[i] = True
    with np.errstate(invalid="ignore"):
        bad |= ~np.isfinite(v) | (np.abs(v) > _FLOAT32_MAX)
    return v, bad


def label_column(col: Sequence[str], n: int, rule: LabelRule | None) -> tuple[np.ndarray, np.ndarray]:
    """A label column as float64 0/1 and its bad rows (:func:`zoo.spec.rows.parse_label` row by row)."""
    if rule is not None and rule.mapping is not None:
        mapping = rule.mapping
        texts = [t.strip() for t in col]
        bad = np.fromiter((t not in mapping for t in texts), dtype=bool, count=n)
        return np.fromiter((mapping.get(t, 0.0) for t in texts), dtype=np.float64, count=n), bad
    v, bad = float_column(col, n, None)
    if rule is None:
        return v, bad | ~((v == 0.0) | (v == 1.0))
    return np.where(bad, 0.0, rule.positive(v)).astype(np.float64), bad


def transform_column(f: Feature, v: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``zoo.spec.apply_transforms`` on a column (same comparisons, same ``math.log1p``)."""
    new_bad = np.zeros(v.shape, dtype=bool)
    v = np.where(bad, 0.0, v)
    for t in f.transforms:
        if t[0] == "clip":
            if t[1] is not None:
                v = np.where(v < t[1], t[1], v)
            if t[2] is not None:
                v = np.where(v > t[2], t[2], v)
        else:
            out_of_domain = v <= -1.0
            new_bad |= out_of_domain
            v = np.where(out_of_domain, 0.0, v)
            v = np.fromiter(map(math.log1p, v.tolist()), dtype=np.float64, count=v.size)
    return v, new_bad


def token_column(f: Feature, col: Sequence[str], n: int, stripped: bool = False) -> tuple[list[str], np.ndarray]:
    """Normalized string/hex tokens (``zoo.spec.parse_token`` of the stripped text)."""
    bad = np.zeros(n, dtype=bool)
    if not n:
        return [], bad
    joined = "\n".join(col)
    if not stripped and _OTHER_WS.search(joined):
        col = [t.strip() for t in col]
        joined = "\n".join(col)
    if f.raw_type == "hex":
        if joined.encode("utf-8").translate(None, _HEX_BYTES):
            bad = np.array([not _is_hex(t) for t in col], dtype=bool)
        lowered = joined.lower()
        if lowered != joined:
            col = lowered.split("\n")
    return list(col), bad


def _is_hex(token: str) -> bool:
    return not token.encode("utf-8").translate(None, _HEX_BYTES[:-1])


def split_sequence_column(col: Sequence[str], n: int, sd: str, tokens: bool) -> tuple[list[str], np.ndarray]:
    """Item texts of every sequence text, flattened, and the item count per row.

    As ``parse_raw_row``: items are split by ``sd``, empty items dropped (string/hex items are
    stripped first). Without empty items or stray whitespace this is one join and one split.
    """
    joined = "\n".join(col)
    simple = (sd + sd not in joined and "\n" + sd not in joined and sd + "\n" not in joined
              and not joined.startswith(sd) and not joined.endswith(sd)
              and not (tokens and _OTHER_WS.search(joined.replace(sd, ""))))
    if simple:
        lengths = np.fromiter(map(str.count, col, itertools.repeat(sd)), dtype=np.int64, count=n) + 1
        lengths[np.fromiter(map(len, col), dtype=np.int64, count=n) == 0] = 0
        flat = [t for t in joined.replace("\n", sd).split(sd) if t] if n else []
        if len(flat) == int(lengths.sum()):
            return flat, lengths
    if tokens:
        lists = [[t for t in (x.strip() for x in text.split(sd)) if t] if text else [] for text in col]
    else:
        lists = [[t for t in text.split(sd) if t] if text else [] for text in col]
    return list(itertools.chain.from_iterable(lists)), np.fromiter(map(len, lists), dtype=np.int64, count=n)


def pad_sequence_column(flat: np.ndarray, lengths: np.ndarray, max_length: int, truncation: str) -> np.ndarray:
    """Padded ``(N, max_length)`` ids as :meth:`FeatureSpec.pad_sequence` (keep_last / keep_first)."""
    n = lengths.shape[0]
    ends = np.cumsum(lengths)
    starts = ends - lengths
    kept = np.minimum(lengths, max_length)
    base = ends - kept if truncation == "keep_last" else starts
    cols = np.arange(max_length)
    valid = cols < kept[:, None]
    out = np.full((n, max_length), PAD_ID, dtype=np.int64)
    if flat.size:
        idx = np.where(valid, base[:, None] + cols, 0)
        out[valid] = np.asarray(flat, dtype=np.int64)[idx[valid]]
    return out
