"""Batched raw-row parsing: many lines at once, column by column, exactly as the spec parses one row.

:meth:`zoo.spec.FeatureSpec.parse_raw_row` is the single definition of how a raw row is read. This
module is its batched form for the Beam jobs: a chunk of lines is split into columns and every
column is converted (:mod:`beam_jobs.column_converters`) with one C-level pass (``map(int, ...)``, ``map(float, ...)``, a vocabulary
``dict.get``, :func:`zoo.spec.hash_tokens`) and checked with array operations. Rows that any check
flags (wrong column count, unparsable or blank values, out-of-range ids, non-UTF-8 bytes, ...) are
handed to ``parse_raw_row`` one by one, which either dead-letters them with its exact reason and
message or accepts them (the fast checks are conservative); so the result equals running
``parse_raw_row`` on every line, which ``tests/test_beam_columnar.py`` checks on fuzzed rows.

From the parsed columns the same module computes what the jobs need per batch, with array
operations: cohort ids (:meth:`CohortAxis.cohort_id`), splits (:meth:`FeatureSpec.split_of`), the
``tf.train.Example`` columns (:meth:`FeatureSpec.example_columns`) and dataset statistics.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from beam_jobs.column_converters import (float_column, int_column, label_column, pad_sequence_column,
                                        split_sequence_column, token_column, transform_column)
from beam_jobs.fileio import chunk_records
from zoo.spec import (COHORT_KEY_PREFIX, PAD_ID, SPLITS, Feature, FeatureSpec, RowError, SpecError,
                      hash_tokens, stable_hash_array)
from zoo.spec.rows import split_quoted

_SPLIT_INDEX = {s: i for i, s in enumerate(SPLITS)}


@dataclasses.dataclass
class Batch:
    """The parsed good rows of a chunk (in column form) and its dead letters.

    ``values``: feature name (and the label) -> array: float64 ``(N,)`` for the label and dense
    features, int64 ``(N,)`` for categorical ids, int64 ``(N, max_length)`` padded sequences
    (``PAD_ID``), or for vocabulary features in token mode a list of tokens (sequences: lists).
    ``seq_lengths``: sequence feature -> raw id count ``(N,)`` before truncation.
    ``split``: int8 ``(N,)`` index into ``SPLITS``. ``dead``: ``(line text, reason, error)``.
    """

    n: int
    values: dict[str, Any]
    seq_lengths: dict[str, np.ndarray]
    split: np.ndarray
    dead: list[tuple[str, str, str]]

    def select(self, mask: np.ndarray) -> "Batch":
        take = np.flatnonzero(mask)
        values = {k: (v[take] if isinstance(v, np.ndarray) else [v[i] for i in take]) for k, v in self.values.items()}
        return Batch(int(take.size), values, {k: v[take] for k, v in self.seq_lengths.items()},
                     self.split[take], [])


class BatchParser:
    """Parses chunks of raw lines for one spec.

    Args:
      spec: the dataset spec.
      vocabularies: ``{table: {token: id}}`` for the spec's vocabulary tables; None in token mode
        (the vocabulary pass), where vocabulary features keep their tokens.
    """

    def __init__(self, spec: FeatureSpec, vocabularies: Mapping[str, Mapping[str, int]] | None = None):
        self.spec = spec
        self.vocabularies = vocabularies
        self.token_mode = vocabularies is None
        fmt = spec.raw_format
        self.ncols = len(fmt.columns)
        self.col_index = {c: i for i, c in enumerate(fmt.columns)}
        if not self.token_mode:
            missing = [t for t in spec.vocabulary_tables if t not in vocabularies]
            if missing:
                raise SpecError(f"vocabularies of table(s) {missing} are not loaded")

    # ----- entry points -------------------------------------------------------------------------
    def parse_chunk(self, chunk: bytes) -> tuple[Batch, list[bytes]]:
        """Parses a chunk of whole records (``\\n`` or ``\\r\\n`` terminated; the last may be unterminated).

        Returns the batch and the raw records (without terminators): the lines, as Beam's text source
        reads them, or with ``format.multiline`` the records of :func:`beam_jobs.fileio.chunk_records`.
        """
        fmt = self.spec.raw_format
        lines = chunk_records(chunk, fmt.quote.encode("utf-8") if fmt.multiline else None)
        return self.parse_lines(lines), lines

    def parse_lines(self, raw_lines: Sequence[bytes]) -> Batch:
        """Parses raw lines (bytes, without line terminators)."""
        spec = self.spec
        fmt = spec.raw_format
        dead: list[tuple[str, str, str]] = []
        joined = b"\n".join(raw_lines)
        quoted = fmt.quote is not None and fmt.quote.encode("utf-8") in joined  # one C-level scan
        try:
            if fmt.multiline and quoted:  # records may hold line breaks
                texts = [raw.decode("utf-8") for raw in raw_lines]
            else:
                texts = joined.decode("utf-8").split("\n") if raw_lines else []
            good_raw = list(raw_lines)
        except UnicodeDecodeError:
            texts, good_raw = [], []
            for raw in raw_lines:
                try:
                    texts.append(raw.decode("utf-8"))
                    good_raw.append(raw)
                except UnicodeDecodeError as err:
                    dead.append((raw.decode("utf-8", errors="replace"), "bad_encoding", str(err)))
        # Split into fields; rows with the wrong field count go to the reference parser.
        slow: list[int] = []  # positions in texts
        fast: list[int] = []
        if fmt.type == "delimited" and quoted:
            columns = self._split_quoted(texts, fast, slow)
        elif fmt.type == "delimited":
            delim = fmt.delimiter
            want = self.ncols - 1
            counts = [t.count(delim) for t in texts]
            if counts.count(want) == len(counts):
                fast = list(range(len(texts)))
                sub = texts
            else:
                for i, c in enumerate(counts):
                    (fast if c == want else slow).append(i)
                sub = [texts[i] for i in fast]
            # Every row has ncols - 1 delimiters, so joining rows with the delimiter keeps them apart.
            flat = delim.join(sub).split(delim) if sub else []
            columns = [flat[j::self.ncols] for j in range(self.ncols)]
        else:  # libfm: tokens per line
            rows = []
            for i, t in enumerate(texts):
                try:
                    f = spec.split_line(t)
                except RowError:
                    slow.append(i)
                    continue
                if len(f) != self.ncols:
                    slow.append(i)
                    continue
                fast.append(i)
                rows.append(f)
            columns = [list(c) for c in zip(*rows)] if rows else [[] for _ in range(self.ncols)]
        n = len(fast)
        values, seq_lengths, bad = self._convert(columns, n)
        line_bytes = [good_raw[i] for i in fast] if spec.split_by == "line" else None
        split = self._split(values, line_bytes, n)
        if bad.any():
            keep = ~bad
            slow.extend(fast[i] for i in np.flatnonzero(bad))
            values = {k: (v[keep] if isinstance(v, np.ndarray) else list(itertools.compress(v, keep)))
                      for k, v in values.items()}
            seq_lengths = {k: v[keep] for k, v in seq_lengths.items()}
            split = split[keep]
        batch = Batch(len(split), values, seq_lengths, split, [])
        if slow:
            batch = self._merge(batch, self._parse_slow(sorted(slow), texts, good_raw, dead))
        batch.dead = dead
        return batch

    def _split_quoted(self, texts: list[str], fast: list[int], slow: list[int]) -> list[list[str]]:
        """Columns of a chunk in which some records hold the quote character: those are read with
        :func:`zoo.spec.rows.split_quoted`, the others split at the delimiter; records with a
        quoting error or the wrong field count go to ``slow`` (the reference parser's reasons)."""
        fmt = self.spec.raw_format
        quote, delim = fmt.quote, fmt.delimiter
        rows: list[list[str]] = []
        for i, text in enumerate(texts):
            if quote in text:
                try:
                    fields = split_quoted(text, fmt)
                except RowError:
                    slow.append(i)
                    continue
            else:
                fields = text.split(delim)
            if len(fields) != self.ncols:
                slow.append(i)
                continue
            fast.append(i)
            rows.append(fields)
        return [list(c) for c in zip(*rows)] if rows else [[] for _ in range(self.ncols)]

    # ----- fast path: columns -------------------------------------------------------------------
    def _convert(self, columns: list[list[str]], n: int):
        spec = self.spec
        bad = np.zeros(n, dtype=bool)
        values: dict[str, Any] = {}
        seq_lengths: dict[str, np.ndarray] = {}
        for name in spec.labels:
            rule = spec.label_rules.get(name)
            col = columns[self.col_index[spec.label_column(name)]]
            label, lbad = label_column(col, n, rule)
            bad |= lbad  # the per-row parser dead-letters them with the reason
            values[name] = label
        for f in spec.features:
            col = columns[self.col_index[f.name]]
            if f.kind == "dense":
                v, b = float_column(col, n, f.default)
                bad |= b
                if f.transforms:
                    v, b = transform_column(f, v, bad)
                    bad |= b
                values[f.name] = v
            elif f.kind == "categorical":
                v, b = self._ids(f, col, n)
                bad |= b
                values[f.name] = v
            else:
                v, lengths, b = self._sequences(f, col, n)
                bad |= b
                values[f.name] = v
                seq_lengths[f.name] = lengths
        if spec.raw_format.split_column:
            col = columns[self.col_index[spec.raw_format.split_column]]
            idx = [_SPLIT_INDEX.get(t, -1) for t in col]
            given = np.array(idx, dtype=np.int8).reshape(n)
            bad |= given < 0
            values["__split__"] = given
        return values, seq_lengths, bad

    def _ids(self, f: Feature, col: list[str], n: int):
        """Stored ids of a categorical column (or tokens in token mode)."""
        if f.tokens:
            tokens, bad = token_column(f, col, n)
            return self._map_tokens(f, tokens, bad), bad
        ids, bad = int_column(col, n)
        if f.vocabulary is not None:
            tokens = list(map(str, ids.tolist()))
            return self._map_tokens(f, tokens, bad), bad
        if f.unknown == "error":
            bad |= (ids < 0) | (ids >= f.vocab_size)
        return ids, bad

    def _map_tokens(self, f: Feature, tokens: list[str], bad: np.ndarray):
        if f.vocabulary is None:  # hashed
            return (hash_tokens(tokens) % np.uint64(f.hash_buckets)).astype(np.int64)
        if self.token_mode:
            return tokens
        vocab = self.vocabularies[f.table]
        oov = f.vocab_size
        ids = np.fromiter(map(vocab.get, tokens, itertools.repeat(oov)), dtype=np.int64, count=len(tokens))
        if f.unknown == "error":
            bad |= ids == oov
        return ids

    def _sequences(self, f: Feature, col: list[str], n: int):
        sd = self.spec.raw_format.sequence_delimiter
        flat, lengths = split_sequence_column(col, n, sd, f.tokens)
        row_of = np.repeat(np.arange(n), lengths)
        bad = np.zeros(n, dtype=bool)
        if f.tokens:
            tokens, tbad = token_column(f, flat, len(flat), stripped=True)
            ids = self._map_tokens(f, tokens, tbad)
        else:
            ids, tbad = int_column(flat, len(flat))
            tbad |= ids == PAD_ID
            if f.vocabulary is not None:
                ids = self._map_tokens(f, list(map(str, ids.tolist())), tbad)
            elif f.unknown == "error":
                tbad |= (ids < 0) | (ids >= f.vocab_size)
        if tbad.any():
            bad[row_of[tbad]] = True
        if f.truncation == "error":
            bad |= lengths > f.max_length
        if self.token_mode and f.vocabulary is not None:
            ends = np.cumsum(lengths)
            return [ids[e - k: e] for e, k in zip(ends.tolist(), lengths.tolist())], lengths, bad
        return pad_sequence_column(ids, lengths, f.max_length, f.truncation), lengths, bad

    def _split(self, values: dict[str, Any], line_bytes: list[bytes] | None, n: int) -> np.ndarray:
        spec = self.spec
        if "__split__" in values:
            return values.pop("__split__")
        if spec.split_by == "line":
            hashed = np.fromiter(map(zlib.crc32, line_bytes), dtype=np.uint64, count=n)
        else:
            hashed = values[spec.user_id].view(np.uint64)
        bucket = (stable_hash_array(hashed) % np.uint64(10_000)).astype(np.float64) / 10_000.0
        idx = np.searchsorted(np.array(spec.split_edges), bucket, side="right")
        return np.minimum(idx, len(SPLITS) - 1).astype(np.int8)

    # ----- slow path: the reference parser, row by row ------------------------------------------
    def _parse_slow(self, positions: list[int], texts: list[str], raw_lines: list[bytes],
                    dead: list[tuple[str, str, str]]) -> Batch:
        spec = self.spec
        rows, splits = [], []
        for i in positions:
            text = texts[i]
            try:
                row = spec.parse_raw_row(spec.split_line(text), self.vocabularies)
            except RowError as err:
                dead.append((text, err.reason, str(err)))
                continue
            rows.append(row)
            if "__split__" in row:
                splits.append(_SPLIT_INDEX[row["__split__"]])
            elif spec.split_by == "line":
                splits.append(_SPLIT_INDEX[spec.split_of_line(raw_lines[i])])
            else:
                splits.append(_SPLIT_INDEX[spec.split_of(row)])
        return self.rows_to_batch(rows, splits)

    def rows_to_batch(self, rows: list[dict], splits: list[int]) -> Batch:
        """Parsed rows (``parse_raw_row`` dicts) in batch form."""
        spec = self.spec
        n = len(rows)
        values: dict[str, Any] = {name: np.array([r[name] for r in rows], dtype=np.float64) for name in spec.labels}
        seq_lengths = {}
        for f in spec.features:
            col = [r[f.name] for r in rows]
            if f.kind == "dense":
                values[f.name] = np.array(col, dtype=np.float64).reshape(n)
            elif f.kind == "categorical":
                values[f.name] = col if (self.token_mode and f.vocabulary is not None) else \
                    np.array(col, dtype=np.int64).reshape(n)
            else:
                lengths = np.fromiter(map(len, col), dtype=np.int64, count=n)
                seq_lengths[f.name] = lengths
                if self.token_mode and f.vocabulary is not None:
                    values[f.name] = col
                else:
                    flat = np.fromiter(itertools.chain.from_iterable(col), dtype=np.int64, count=int(lengths.sum()))
                    values[f.name] = pad_sequence_column(flat, lengths, f.max_length, f.truncation)
        return Batch(n, values, seq_lengths, np.array(splits, dtype=np.int8).reshape(n), [])

    def _merge(self, a: Batch, b: Batch) -> Batch:
        if b.n == 0:
            return a
        if a.n == 0:
            return b
        values = {}
        for k, v in a.values.items():
            w = b.values[k]
            values[k] = np.concatenate([v, w]) if isinstance(v, np.ndarray) else list(v) + list(w)
        return Batch(a.n + b.n, values, {k: np.concatenate([v, b.seq_lengths[k]]) for k, v in a.seq_lengths.items()},
                     np.concatenate([a.split, b.split]), [])

    # ----- derived columns ----------------------------------------------------------------------
    def cohort_ids(self, batch: Batch) -> dict[str, np.ndarray]:
        """Cohort index per axis, as :meth:`CohortAxis.cohort_id` of each row's value."""
        out = {}
        for axis in self.spec.cohort_axes:
            v = batch.values[axis.feature]
            if axis.ordinal:
                if v.dtype == np.int64 and v.size and int(np.abs(v).max()) >= 2**53:
                    ids = np.array([axis.cohort_id(x) for x in v.tolist()], dtype=np.int64)
                else:
                    ids = np.searchsorted(np.array(axis.boundaries), v.astype(np.float64), side="right")
            else:
                lookup = axis._value_to_id
                other = len(axis.cohorts) - 1
                ids = np.fromiter(map(lookup.get, v.tolist(), itertools.repeat(other)), dtype=np.int64,
                                  count=batch.n)
            out[axis.name] = ids.astype(np.int64)
        return out

    def example_columns(self, batch: Batch, cohorts: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The ``tf.train.Example`` columns of the batch (as :meth:`FeatureSpec.example_columns`)."""
        spec = self.spec
        cohorts = self.cohort_ids(batch) if cohorts is None else cohorts
        n = batch.n
        out = {name: batch.values[name].astype(np.float32).reshape(n, 1) for name in spec.labels}
        for f in spec.features:
            v = batch.values[f.name]
            if f.kind == "dense":
                out[f.name] = v.astype(np.float32).reshape(n, 1)
            elif f.kind == "categorical":
                out[f.name] = v.reshape(n, 1)
            else:
                out[f.name] = v
        for axis in spec.cohort_axes:
            out[COHORT_KEY_PREFIX + axis.name] = cohorts[axis.name].reshape(n, 1)
        return out


# ---------------------------------------------------------------------------------------------------
# Statistics of a batch, in DatasetStatsFn's accumulator layout
# ---------------------------------------------------------------------------------------------------
class StatsLayout:
    """The flat int accumulator of dataset statistics (merging is an element-wise sum).

    Layout: rows, positives; per split (rows, positives); per axis, per cohort (rows, positives);
    per id feature the OOV id count; per sequence feature the truncated-row count; per label after
    the primary (multi-task specs), positives overall and per split.
    """

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.id_features = [f for f in spec.features if f.kind != "dense"]
        self.seq_features = [f for f in spec.features if f.kind == "sequence"]
        offset = 2 + 2 * len(SPLITS)
        self.axis_offsets = []
        for axis in spec.cohort_axes:
            self.axis_offsets.append(offset)
            offset += 2 * len(axis.cohorts)
        self.oov_offset = offset
        self.trunc_offset = offset + len(self.id_features)
        self.label_offset = self.trunc_offset + len(self.seq_features)
        self.size = self.label_offset + (1 + len(SPLITS)) * (len(spec.labels) - 1)

    def batch_counts(self, batch: Batch, cohorts: Mapping[str, np.ndarray]) -> list[int]:
        spec = self.spec
        acc = np.zeros(self.size, dtype=np.int64)
        pos = (batch.values[spec.label] == 1.0).astype(np.int64)
        acc[0], acc[1] = batch.n, int(pos.sum())
        split = batch.split.astype(np.int64)
        acc[2:2 + 2 * len(SPLITS):2] = np.bincount(split, minlength=len(SPLITS))
        acc[3:3 + 2 * len(SPLITS):2] = np.bincount(split, weights=pos, minlength=len(SPLITS))
        for axis, offset in zip(spec.cohort_axes, self.axis_offsets):
            k = len(axis.cohorts)
            ids = cohorts[axis.name]
            acc[offset:offset + 2 * k:2] = np.bincount(ids, minlength=k)
            acc[offset + 1:offset + 2 * k:2] = np.bincount(ids, weights=pos, minlength=k)
        for k, f in enumerate(self.id_features):
            v = batch.values[f.name]
            if f.vocab_size is None:
                continue
            if f.kind == "categorical":
                acc[self.oov_offset + k] = int(((v < 0) | (v >= f.vocab_size)).sum())
            else:
                kept = np.arange(f.max_length) < np.minimum(batch.seq_lengths[f.name], f.max_length)[:, None]
                acc[self.oov_offset + k] = int((kept & ((v < 0) | (v >= f.vocab_size))).sum())
        for k, f in enumerate(self.seq_features):
            acc[self.trunc_offset + k] = int((batch.seq_lengths[f.name] > f.max_length).sum())
        for k, name in enumerate(spec.labels[1:]):
            offset = self.label_offset + (1 + len(SPLITS)) * k
            task_pos = (batch.values[name] == 1.0).astype(np.int64)
            acc[offset] = int(task_pos.sum())
            acc[offset + 1:offset + 1 + len(SPLITS)] = np.bincount(split, weights=task_pos, minlength=len(SPLITS))
        return acc.tolist()

    def extract(self, acc: Sequence[int]) -> dict[str, Any]:
        spec = self.spec

        def counts(rows: int, positives: int) -> dict[str, Any]:
            return {"rows": rows, "positives": positives, "base_rate": positives / rows if rows else None}

        out: dict[str, Any] = {"dataset": spec.name, **counts(acc[0], acc[1])}
        out["splits"] = {name: counts(acc[2 + 2 * i], acc[3 + 2 * i]) for i, name in enumerate(SPLITS)}
        out["cohorts"] = {
            axis.name: {name: counts(acc[offset + 2 * i], acc[offset + 2 * i + 1])
                        for i, name in enumerate(axis.cohorts)}
            for axis, offset in zip(spec.cohort_axes, self.axis_offsets)
        }
        features: dict[str, Any] = {}
        for k, f in enumerate(self.id_features):
            features[f.name] = {"kind": f.kind, "out_of_vocab": acc[self.oov_offset + k]}
        for k, f in enumerate(self.seq_features):
            features[f.name]["truncated"] = acc[self.trunc_offset + k]
        out["features"] = features
        if len(spec.labels) > 1:  # positives per label (the primary's are the top-level counts)
            per_label = {spec.label: (acc[1], [acc[3 + 2 * i] for i in range(len(SPLITS))])}
            for k, name in enumerate(spec.labels[1:]):
                offset = self.label_offset + (1 + len(SPLITS)) * k
                per_label[name] = (acc[offset], list(acc[offset + 1:offset + 1 + len(SPLITS)]))
            out["labels"] = {name: counts(acc[0], total) for name, (total, _) in per_label.items()}
            for i, split in enumerate(SPLITS):
                out["splits"][split]["labels"] = {name: counts(acc[2 + 2 * i], by_split[i])
                                                  for name, (_, by_split) in per_label.items()}
        return out
