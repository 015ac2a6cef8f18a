"""Beam job: raw CSV/TSV/libFM rows -> GZIP TFRecord shards of ``tf.train.Example`` per split.

Usage::

    python -m beam_jobs.build_tfrecords --spec configs/datasets/synthetic.yaml \\
        --input '/tmp/syn/*.csv' --output /tmp/out [--num_shards 4] \\
        [--chunk_bytes 1048576] [--compression_level 6] [--vocab_shards 8] \\
        [any Beam / Dataflow pipeline option, passed through unchanged]

Every row semantic (columns, delimiter, header, parsing, column types, vocabularies and hashing,
dense transforms, splitting, cohort ids, encoding, padding and truncation, out-of-vocabulary ids)
comes from the dataset spec (:mod:`zoo.spec`); this module wires it into pipelines. Rows move in
chunks (about ``--chunk_bytes`` of whole lines per element), parsed and encoded a chunk at a time
(:mod:`beam_jobs.columnar`, ``FeatureSpec.encode_examples_flat``), which is what makes the job fast
on Beam's Python SDK::

    pass 1 (beam_jobs.vocabulary), only when the spec declares a vocabulary that is not built yet
    (e.g. Criteo's hex columns):
    ReadLineChunks -> CountTokens (tokens of the rows in vocabulary.splits, per chunk and table)
      -> CombinePerKey((table, token shard), merge counts) -> keep count >= min_count
      -> GroupByKey(table) -> sort (count desc, token), cap max_size
      -> <output>/vocab/<table>.txt (one token per line, line number = id), vocab/vocabularies.json
    The driver records vocab_size and vocabulary.file of every table in the resolved spec.

    pass 2:
    ReadLineChunks (header lines skipped per file when format.header)
      -> EncodeChunk: BatchParser (spec.parse_raw_row semantics, vocabularies loaded in setup),
         cohort ids, split, spec.encode_examples_flat, TFRecord framing, gzip members per split
         (one per chunk and split; small inputs: dealt over every shard, see EncodeChunk)
           |-- <split>:     (records, gzip member) keyed by <split>/part-SSSSS-of-NNNNN.tfrecord.gz
           |-- stats:       per-chunk counts, keyed by stats.json
           '-- dead_letter: {"file", "line", "reason", "error"} (+ Metrics counter per reason),
                            as JSON lines keyed by dead_letter/part-00000-of-00001.jsonl
      -> GroupByKey(file) -> WriteOutputs: each file written once (stats summed by DatasetStatsFn);
         each shard described (records, bytes, SHA-256) -> GroupByKey -> manifest.json
    spec.json (the resolved spec) is written by the driver after the pipeline succeeds.

Atomic output: everything is written under ``<output>/.tmp-<run id>/``; only when both passes
succeeded are the previous outputs of ``--output`` (shards, dead letters, ``stats.json``,
``spec.json``, ``manifest.json``, ``vocab/``, ``_SUCCESS``) removed, the new files renamed into place
(shards first, ``stats.json``, ``spec.json`` and ``manifest.json`` last) and ``_SUCCESS`` written. A
failed run leaves the previous outputs as they were (see :mod:`beam_jobs.fileio`). Readers should
require ``_SUCCESS``; they check the shards against ``manifest.json`` (presence, sizes, record totals,
:func:`beam_jobs.manifest.check_shards`), and ``python -m beam_jobs.verify <output>`` checks every
shard's checksum and records (:mod:`beam_jobs.verify`).

Vocabularies of an earlier run are reused by passing its ``spec.json`` as ``--spec`` (e.g. to encode
new days with the training vocabulary): ``vocabulary.file`` paths are relative to the spec file, and
the files are copied into the new output.

The job never fails on a bad row: parse errors are dead-lettered with the spec's
:class:`~zoo.spec.RowError` reason (``wrong_column_count``, ``bad_number``, ``bad_label``,
``missing_value``, ``sequence_too_long``, ``bad_split``, ``unknown_category``; ids outside int64,
floats that overflow float32, a raw ``-1`` inside a sequence, non-hex text in a hex column and a
transform without a finite result are ``bad_number``); one more reason is added here for rows the
spec cannot see: ``bad_encoding`` (a line that is not UTF-8). A file that cannot be read at all (a
corrupt or truncated ``.gz``/``.bz2``/``.xz`` input) fails the job with one line naming it
(:class:`beam_jobs.fileio.InputError`), since its rows cannot be counted. Each reason is counted by the Beam
counter ``build_tfrecords:dead_letter/<reason>``; good rows by ``build_tfrecords:rows``.

A split that gets no rows still gets ``num_shards`` valid, empty GZIP shards, so
:func:`zoo.data.read_split` reads it as an empty dataset.

On Dataflow (the launcher needs ``apache-beam[gcp]``; workers install the project from
``setup.py``)::

    python -m beam_jobs.build_tfrecords --spec configs/datasets/criteo_layout.yaml \
        --input 'gs://BUCKET/criteo/raw/day_*' --output gs://BUCKET/criteo/data --num_shards 256 \
        --runner DataflowRunner --project PROJECT --region REGION \
        --temp_location gs://BUCKET/tmp --staging_location gs://BUCKET/staging --setup_file ./setup.py

A spec with vocabularies to build runs two Dataflow jobs one after the other (counting, then
encoding); the launcher waits for both and then promotes the output, so keep it running (no
``--job_name``: each job gets a generated one).

Runner default
--------------
With no runner option on the command line (``--runner``, ``--direct_running_mode``,
``--direct_num_workers``) the job runs on the DirectRunner with
``--direct_running_mode=multi_processing --direct_num_workers=2`` (``in_memory`` on a one-core
machine). Throughput against a naive per-element pipeline is measured by
``bench/beam_throughput.py`` (``bench/results/beam_throughput.json``). Workers never import
TensorFlow (Examples are encoded from their wire schema), so they start in about a second. Worker
processes import ``beam_jobs`` and ``zoo`` from the working directory: run from the repository
root (or put it on ``PYTHONPATH``); on Dataflow pass ``--setup_file ./setup.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import posixpath
import random
import sys
import zlib
from typing import Any, Callable, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from apache_beam.utils import shared

from beam_jobs import fileio, manifest
from beam_jobs.manifest import MANIFEST_FILE, MANIFEST_TAG, SHARD_SUFFIX, STATS_FILE
from beam_jobs.options import job_main, parse_job_args
from beam_jobs.progress import Progress
from beam_jobs.columnar import BatchParser, StatsLayout
from beam_jobs.tfrecord import RECORD_OVERHEAD, frame_records, unframe
from beam_jobs.vocabulary import (DEFAULT_VOCAB_SHARDS, VOCAB_DIR, VOCAB_SUMMARY, acquire_vocabularies,
                                  build_vocab_pipeline, load_vocabularies, resolve_vocabularies)
from zoo import cli
from zoo.spec import SPLITS, FeatureSpec, SpecError, load_spec, locate_spec_file

NAMESPACE = "build_tfrecords"
DEFAULT_NUM_SHARDS = 4
# Inputs of fewer chunks than this many per shard have every chunk dealt over all shards (see
# EncodeChunk); larger ones send each chunk's records of a split to one shard.
SPREAD_BELOW_CHUNKS_PER_SHARD = 8
DEFAULT_COMPRESSION_LEVEL = 6  # zlib's default, as Beam's GZIP sink uses
DEAD_LETTER_TAG = "dead_letter"
STATS_TAG = "stats"
DEAD_LETTER_FILE = "dead_letter/part-00000-of-00001.jsonl"
# Every file the job owns in --output (relative glob patterns); earlier copies are replaced.
OUTPUTS = ([f"{s}/part-*{SHARD_SUFFIX}" for s in SPLITS]
           + ["dead_letter/part-*.jsonl", f"{VOCAB_DIR}/*", STATS_FILE, "spec.json", MANIFEST_FILE])


# ---------------------------------------------------------------------------------------------------
# Pass 2: parse, encode, write
# ---------------------------------------------------------------------------------------------------
class EncodeChunk(beam.DoFn):
    """``(file, chunk of raw lines)`` -> ``(shard path, (records, gzip member of framed Examples))``.

    Tagged outputs: ``stats``: ``("stats.json", (StatsLayout counts, {reason: dead letters}))`` per
    chunk; ``dead_letter``: ``{"file", "line", "reason", "error"}`` with the raw line text.
    Vocabularies are read in ``setup`` (through FileSystems, so ``gs://`` works) from ``vocab_paths``.

    Shards follow a rotation per split from a random start, like Beam's fixed-shard sinks. By default
    (large inputs) a chunk's records of a split go to the next shard as one gzip member, the fast
    path. With ``spread`` (small inputs, see :func:`spreads_records`) they are dealt over the shards:
    from the rotation's current shard on, each of the ``num_shards`` shards gets ``k // num_shards``
    consecutive records of the chunk's ``k``, the first ``k % num_shards`` one more, and the rotation
    moves on by ``k % num_shards``. So with ``k >= num_shards`` no shard is empty, and the records of
    one encoder instance are balanced across shards within one record (over several instances, within
    their number).
    """

    def __init__(self, spec: FeatureSpec, num_shards: int, vocab_paths: Mapping[str, str] | None = None,
                 compression_level: int = DEFAULT_COMPRESSION_LEVEL, spread: bool = False):
        self.spec = spec
        self.num_shards = num_shards
        self.vocab_paths = dict(vocab_paths or {})
        self.compression_level = compression_level
        self.spread = spread
        self._shared = shared.Shared()  # one copy of the vocabularies per worker process, not per thread

    def setup(self):
        vocabularies = acquire_vocabularies(self._shared, self.vocab_paths)
        self._vocabularies = vocabularies  # keep the shared object alive while this DoFn lives
        self._parser = BatchParser(self.spec, vocabularies.tables)
        self._layout = StatsLayout(self.spec)
        self._rows = Metrics.counter(NAMESPACE, "rows")
        self._counters: dict[str, Any] = {}
        self._next = [random.randrange(self.num_shards) for _ in SPLITS]
        self._progress = Progress(NAMESPACE)

    def teardown(self):
        self._progress.log()

    def _dead(self, filename: str, line: str, reason: str, error: str):
        counter = self._counters.get(reason)
        if counter is None:
            counter = self._counters[reason] = Metrics.counter(NAMESPACE, f"dead_letter/{reason}")
        counter.inc()
        return beam.pvalue.TaggedOutput(
            DEAD_LETTER_TAG, {"file": filename, "line": line, "reason": reason, "error": error})

    def process(self, element):
        filename, chunk = element
        parser = self._parser
        batch, _ = parser.parse_chunk(chunk)
        self._progress.add(batch.n + len(batch.dead), batch.n, len(batch.dead))
        reasons: dict[str, int] = {}
        for text, reason, error in batch.dead:
            reasons[reason] = reasons.get(reason, 0) + 1
            yield self._dead(filename, text, reason, error)
        if not batch.n:
            if reasons:
                yield beam.pvalue.TaggedOutput(STATS_TAG, (STATS_FILE, ([0] * self._layout.size, reasons)))
            return
        self._rows.inc(batch.n)
        cohorts = parser.cohort_ids(batch)
        yield beam.pvalue.TaggedOutput(STATS_TAG, (STATS_FILE, (self._layout.batch_counts(batch, cohorts), reasons)))
        columns = parser.example_columns(batch, cohorts)
        for i, split in enumerate(SPLITS):
            sel = batch.split == i
            k = int(sel.sum())
            if not k:
                continue
            part = columns if k == batch.n else {key: v[sel] for key, v in columns.items()}
            flat, lengths = self.spec.encode_examples_flat(part)
            for shard, records, framed in self._deal(i, frame_records(flat, lengths), lengths):
                yield (shard_path(split, shard, self.num_shards),
                       (records, fileio.gzip_member(framed, self.compression_level)))

    def _deal(self, split_index: int, framed: bytes, lengths):
        """``(shard, records, framed bytes)`` of one chunk's records of a split (see the class docstring)."""
        n, start, k = self.num_shards, self._next[split_index], len(lengths)
        if not self.spread:
            self._next[split_index] = (start + 1) % n
            yield start, k, framed
            return
        q, r = divmod(k, n)
        counts = [q + 1] * r + [q] * (n - r) if q else [1] * k
        ends = np.cumsum(np.asarray(lengths, dtype=np.int64) + RECORD_OVERHEAD).tolist()
        view = memoryview(framed)
        first = pos = 0
        for j, count in enumerate(counts):
            end = ends[first + count - 1]
            yield (start + j) % n, count, view[pos:end]
            first, pos = first + count, end
        self._next[split_index] = (start + r) % n


def shard_path(split: str, shard: int, num_shards: int) -> str:
    """``<split>/part-SSSSS-of-NNNNN.tfrecord.gz``, relative to the output directory."""
    return f"{split}/part-{shard:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


class DatasetStatsFn(beam.CombineFn):
    """Sums per-chunk ``(StatsLayout counts, {reason: dead letters})`` into the stats.json dict."""

    def __init__(self, spec: FeatureSpec, vocabularies: Mapping[str, Any] | None = None):
        self.spec = spec
        self.vocabularies = vocabularies
        self._layout = StatsLayout(spec)

    def create_accumulator(self):
        return [0] * self._layout.size, {}

    def add_input(self, acc, partial):
        counts, reasons = acc
        for i, v in enumerate(partial[0]):
            counts[i] += v
        for k, v in partial[1].items():
            reasons[k] = reasons.get(k, 0) + v
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            self.add_input(out, acc)
        return out

    def extract_output(self, acc) -> dict[str, Any]:
        return _with_dead_letters(self._layout.extract(acc[0]), acc[1], self.vocabularies)


class WriteOutputs(manifest.WriteShardFiles):
    """The grouped writer of the job: shards (described, tag ``manifest``) and dead letters; ``stats.json`` summed.

    Yields the stats dict (tag ``stats``) besides writing it.
    """

    def __init__(self, base: str, spec: FeatureSpec, vocabularies: Mapping[str, Any] | None):
        super().__init__(base)
        self.stats_fn = DatasetStatsFn(spec, vocabularies)

    def process(self, element):
        path, values = element
        if path != STATS_FILE:
            yield from super().process(element)
            return
        fn = self.stats_fn
        acc = fn.create_accumulator()
        for v in values:
            if v is not None:
                fn.add_input(acc, v)
        stats = fn.extract_output(acc)
        fileio.write_bytes(FileSystems.join(self.base, path), (json.dumps(stats, indent=2) + "\n").encode("utf-8"),
                           "application/json")
        yield beam.pvalue.TaggedOutput(STATS_TAG, stats)
        yield path


def _with_dead_letters(stats: dict[str, Any], dead_letter_counts: Mapping[str, int],
                       vocabularies: Mapping[str, Any] | None = None) -> dict[str, Any]:
    by_reason = {k: int(dead_letter_counts[k]) for k in sorted(dead_letter_counts)}
    out = {**stats, "dead_letter": {"total": sum(by_reason.values()), "by_reason": by_reason}}
    if vocabularies:
        out["vocabularies"] = dict(vocabularies)
    return out


def _gunzip_records(blob: bytes) -> list[bytes]:
    return unframe(zlib.decompress(blob, 47))  # 47: a gzip (or zlib) member


def spreads_records(input_pattern: str, num_shards: int, chunk_bytes: int) -> bool:
    """Whether the input is small enough to deal every chunk's records over all shards.

    True when the input files (their sizes as listed; compressed inputs count smaller than they
    read) make fewer than ``SPREAD_BELOW_CHUNKS_PER_SHARD * num_shards`` chunks of ``chunk_bytes``:
    with few chunks per shard, whole chunks per shard would leave shards empty or unbalanced. At most
    ``num_shards`` gzip members per chunk and split then (a few per cent larger shards at hundreds of
    shards); larger inputs keep one member per chunk and split.
    """
    size = sum(fileio.match_sizes([input_pattern]).values())
    return math.ceil(size / max(int(chunk_bytes), 1)) < SPREAD_BELOW_CHUNKS_PER_SHARD * num_shards


class _Outputs(dict):
    """The PCollections of a pipeline; some are only built (added to the pipeline) when asked for."""

    def __init__(self, lazy: Mapping[str, Callable[[], Any]], **ready):
        super().__init__(**ready)
        self._lazy = dict(lazy)

    def __missing__(self, key):
        if key in self._lazy:
            value = self[key] = self._lazy.pop(key)()
            return value
        raise KeyError(key)


def build_pipeline(pipeline: beam.Pipeline, spec: FeatureSpec, input_pattern: str, output_dir: str,
                   num_shards: int = DEFAULT_NUM_SHARDS, *, vocab_paths: Mapping[str, str] | None = None,
                   vocab_summary: Mapping[str, Any] | None = None,
                   chunk_bytes: int = fileio.DEFAULT_CHUNK_BYTES,
                   compression_level: int = DEFAULT_COMPRESSION_LEVEL) -> dict[str, beam.PCollection]:
    """Adds pass 2 of the job to ``pipeline`` (``spec`` with every vocabulary built); returns its PCollections.

    Every output file goes through one ``GroupByKey`` keyed by its path and one writer
    (:class:`WriteOutputs`): a Beam file sink per output would add several stages each, which
    dominate the run time of small inputs on the DirectRunner.

    The writer describes each shard it writes (records, bytes, SHA-256; :mod:`beam_jobs.manifest`);
    one more GroupByKey gathers the descriptions into ``manifest.json``. Small inputs are dealt over
    every shard (:func:`spreads_records`, :class:`EncodeChunk`).

    Returns:
      ``dead_letter``: dead-letter dicts; ``stats``: one stats dict (as in stats.json); ``files``:
      the relative paths written; ``manifest``: ``(shard path, manifest entry)`` per shard. Built
      only when looked up (tests; they cost per-row steps):
      ``examples``: ``(split, serialized Example)``, one per row; ``dead_letter_counts``:
      ``(reason, count)``.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if spec.needs_vocabularies:
        raise SpecError(f"spec '{spec.name}': vocabularies are not built; run build_vocab_pipeline first")
    chunks = pipeline | "ReadChunks" >> fileio.raw_chunks(spec, input_pattern, chunk_bytes)
    spread = spreads_records(input_pattern, num_shards, chunk_bytes)
    encoded = chunks | "Encode" >> beam.ParDo(
        EncodeChunk(spec, num_shards, vocab_paths, compression_level, spread)).with_outputs(
        DEAD_LETTER_TAG, STATS_TAG, main="shards")
    dead = encoded[DEAD_LETTER_TAG]
    dead_lines = dead | "DeadLetterJson" >> beam.Map(lambda d: (DEAD_LETTER_FILE, (json.dumps(d) + "\n").encode("utf-8")))
    every_file = ([shard_path(s, i, num_shards) for s in SPLITS for i in range(num_shards)]
                  + [DEAD_LETTER_FILE, STATS_FILE])
    seeds = pipeline | "EveryFile" >> beam.Create([(path, None) for path in every_file])
    written = ((encoded.shards, encoded[STATS_TAG], dead_lines, seeds)
               | "AllFiles" >> beam.Flatten()
               | "ByFile" >> beam.GroupByKey()
               | "Write" >> beam.ParDo(WriteOutputs(output_dir, spec, vocab_summary)).with_outputs(
                   STATS_TAG, MANIFEST_TAG, main="files"))
    _ = written[MANIFEST_TAG] | "Manifest" >> manifest.WriteManifest(output_dir)

    def examples():
        return (encoded.shards
                | "Records" >> beam.FlatMap(lambda kv: [(kv[0].split("/")[0], r) for r in _gunzip_records(kv[1][1])]))

    def dead_letter_counts():
        return (dead
                | "DeadLetterReason" >> beam.Map(lambda d: (d["reason"], 1))
                | "CountDeadLetters" >> beam.combiners.Count.PerKey())

    return _Outputs({"examples": examples, "dead_letter_counts": dead_letter_counts},
                    dead_letter=dead, stats=written[STATS_TAG], files=written.files, manifest=written[MANIFEST_TAG])


def write_spec(spec: FeatureSpec, output_dir: str) -> str:
    """Writes ``<output_dir>/spec.json`` (local or any Beam filesystem, e.g. GCS); returns its path."""
    return fileio.write_bytes(FileSystems.join(output_dir, "spec.json"), spec.to_json().encode("utf-8"),
                              "application/json")


def summary_line(stats: Mapping[str, Any]) -> str:
    """``rows: train=.. valid=.. test=.. (total .., base rate ..); dead letters: N (reason=n, ...)``."""
    splits = " ".join(f"{s}={stats['splits'][s]['rows']}" for s in SPLITS)
    rate = stats["base_rate"]
    rate = "n/a" if rate is None else f"{rate:.4f}"
    dead = stats["dead_letter"]
    reasons = ", ".join(f"{k}={v}" for k, v in dead["by_reason"].items())
    return (f"rows: {splits} (total {stats['rows']}, base rate {rate}); "
            f"dead letters: {dead['total']}" + (f" ({reasons})" if reasons else ""))


def build_parser() -> argparse.ArgumentParser:
    """The job's own flags (everything else is Beam's)."""
    parser = argparse.ArgumentParser(prog="python -m beam_jobs.build_tfrecords", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--spec", required=True, help="dataset YAML (or a resolved spec.json)")
    parser.add_argument("--input", required=True, help="raw file pattern, e.g. '/data/*.csv' or gs://...")
    parser.add_argument("--output", required=True, help="output directory (local or gs://...)")
    parser.add_argument("--num_shards", type=int, default=DEFAULT_NUM_SHARDS,
                        help=f"shards per split (default {DEFAULT_NUM_SHARDS})")
    parser.add_argument("--chunk_bytes", type=int, default=fileio.DEFAULT_CHUNK_BYTES,
                        help="raw bytes of whole lines per pipeline element (default 1 MiB)")
    parser.add_argument("--compression_level", type=int, default=DEFAULT_COMPRESSION_LEVEL,
                        help="gzip level of the shards, 1 (fastest) .. 9 (default 6)")
    parser.add_argument("--vocab_shards", type=int, default=DEFAULT_VOCAB_SHARDS,
                        help="keys per vocabulary table in the counting pass (default 8)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """``(the job's flags, Beam's pipeline args)``; an argument that is neither is an error naming it."""
    return parse_job_args(build_parser(), argv)


def _run_pipeline(pipeline_args: Sequence[str], build: Callable[[beam.Pipeline], Any]):
    pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
    build(pipeline)
    with fileio.worker_input_errors(), cli.worker_noise_filtered():  # an unreadable file: one line
        result = pipeline.run()
        state = result.wait_until_finish()
    if state not in (None, PipelineState.DONE):
        raise RuntimeError(f"pipeline finished in state {state}")
    return result, state


def _counters(result) -> dict[str, int]:
    counters: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(value or 0)
    return counters


def _copy_vocabularies(spec: FeatureSpec, spec_path: str, out: fileio.OutputDir) -> dict[str, Any]:
    """Copies the built vocabularies of a resolved spec into the staging directory."""
    spec_file = locate_spec_file(spec_path)
    base = posixpath.dirname(spec_file) if "://" in spec_file else os.path.dirname(os.path.abspath(spec_file))
    summary = {}
    for table, owner in spec.vocabulary_tables.items():
        if not owner.vocabulary_built:
            continue
        src = owner.vocabulary.file
        if not (src.startswith("/") or "://" in src):
            src = FileSystems.join(base, src)
        dst = out.path(VOCAB_DIR, f"{table}.txt")
        fileio.write_bytes(dst, fileio.read_bytes(src))
        summary[table] = {"vocab_size": owner.vocab_size, "reused_from": src}
    return summary


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the job; returns ``{"output", "stats", "counters", "state", "spec"}`` and prints a summary."""
    args, pipeline_args = parse_args(argv)
    spec = load_spec(args.spec)
    inputs = fileio.match_sizes([args.input])
    if not inputs:
        raise FileNotFoundError(f"--input {args.input}: no file matches")
    if not any(inputs.values()):
        raise ValueError(f"--input {args.input}: the {len(inputs)} matching file(s) are empty")
    out = fileio.OutputDir(args.output, OUTPUTS)
    stale = out.prepare()
    if stale:
        print(f"build_tfrecords: removed {len(stale)} staging dir(s) of unfinished runs in {out.output}")
    try:
        vocab_summary = None
        if spec.vocabulary_tables:
            vocab_summary = _copy_vocabularies(spec, args.spec, out)  # vocabularies built by an earlier run
            if spec.needs_vocabularies:
                vocab_dir = out.path(VOCAB_DIR)
                _run_pipeline(pipeline_args, lambda p: build_vocab_pipeline(
                    p, spec, args.input, vocab_dir, args.chunk_bytes, args.vocab_shards))
                built = fileio.read_json(out.path(VOCAB_DIR, VOCAB_SUMMARY))
                spec = resolve_vocabularies(spec, built)
                vocab_summary.update(built)
                sizes = ", ".join(f"{t}={built[t]['vocab_size']}" for t in spec.vocabulary_tables if t in built)
                print(f"build_tfrecords: vocabularies built ({sizes})")
        vocab_paths = {t: out.path(VOCAB_DIR, f"{t}.txt") for t in spec.vocabulary_tables}
        if spec.needs_axis_ids:  # cohort axes listing raw values of vocabulary features
            spec = spec.with_axis_ids(load_vocabularies(vocab_paths))
        result, state = _run_pipeline(pipeline_args, lambda p: build_pipeline(
            p, spec, args.input, out.staging, args.num_shards, vocab_paths=vocab_paths,
            vocab_summary=vocab_summary, chunk_bytes=args.chunk_bytes, compression_level=args.compression_level))
        counters = _counters(result)
        write_spec(spec, out.staging)
        stats = fileio.read_json(out.path("stats.json"))
        if stats["rows"] == 0 and stats["dead_letter"]["total"] == 0:
            raise ValueError(f"--input {args.input}: no rows in the {len(inputs)} matching file(s)"
                             + (" (header lines only)" if spec.raw_format.header else ""))
        out.promote()
    except BaseException:
        out.discard()
        raise
    output = out.output
    print(f"build_tfrecords: wrote {posixpath.join(output, '{' + ','.join(SPLITS) + '}', 'part-*' + SHARD_SUFFIX)}, "
          f"{FileSystems.join(output, 'dead_letter', 'part-*.jsonl')}, "
          f"{FileSystems.join(output, 'stats.json')}, {FileSystems.join(output, 'spec.json')}, "
          f"{FileSystems.join(output, MANIFEST_FILE)}"
          + (f", {FileSystems.join(output, VOCAB_DIR, '*.txt')}" if spec.vocabulary_tables else "")
          + f", {FileSystems.join(output, fileio.SUCCESS_MARKER)}")
    print(f"build_tfrecords: {summary_line(stats)}")
    return {"output": output, "stats": stats, "counters": counters, "state": str(state), "spec": spec}


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    # Import through the package so pickled DoFns reference beam_jobs.build_tfrecords, not __main__.
    from beam_jobs.build_tfrecords import run as _run

    sys.exit(job_main("python -m beam_jobs.build_tfrecords", _run))
