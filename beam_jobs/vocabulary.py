"""Pass 1 of :mod:`beam_jobs.build_tfrecords`: vocabularies built from the data, and loaded by workers.

Runs only when the spec declares a vocabulary that is not built yet (e.g. Criteo's hex columns)::

    ReadLineChunks -> CountTokens (tokens of the rows in vocabulary.splits, per chunk and table)
      -> CombinePerKey((table, token shard), merge counts) -> keep count >= min_count
      -> GroupByKey(table) -> sort (count desc, token), cap max_size
      -> <output>/vocab/<table>.txt (one token per line, line number = id), vocab/vocabularies.json

:func:`resolve_vocabularies` records ``vocab_size`` and ``vocabulary.file`` of every built table in
the spec; pass 2 loads the files on each worker with :func:`acquire_vocabularies`.
"""

from __future__ import annotations

import collections
import itertools
import json
import zlib
from typing import Any, Iterable, Mapping

import apache_beam as beam
import numpy as np
from apache_beam.utils import shared

from beam_jobs import fileio
from beam_jobs.columnar import BatchParser
from zoo.spec import SPLITS, FeatureSpec, SpecError

DEFAULT_VOCAB_SHARDS = 8
VOCAB_DIR = "vocab"
VOCAB_SUMMARY = "vocabularies.json"


def load_vocabularies(paths: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """``{table: {token: id}}`` from vocabulary files (one token per line, line number = id)."""
    out = {}
    for table, path in paths.items():
        tokens = fileio.read_bytes(path).decode("utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        out[table] = {t: i for i, t in enumerate(tokens)}
    return out


class LoadedVocabularies:
    """Loaded vocabularies, held through ``apache_beam.utils.shared`` (needs a weak-referenceable object)."""

    def __init__(self, tables: dict[str, dict[str, int]]):
        self.tables = tables


def acquire_vocabularies(handle: shared.Shared, paths: Mapping[str, str]) -> LoadedVocabularies:
    """The vocabularies of ``paths``, loaded once per worker process and shared by its threads.

    Keep the returned object referenced while it is in use: ``shared`` frees it once nothing does.
    """
    return handle.acquire(lambda: LoadedVocabularies(load_vocabularies(paths)),
                          tag=json.dumps(sorted(paths.items())))


class CountTokens(beam.DoFn):
    """``(file, chunk)`` -> ``((table, shard), {token: count})`` for every table still to be built.

    Counts the tokens of good rows in the table's ``vocabulary.splits``, over every feature using the
    table; ``shard`` (a stable hash of the token) spreads a table's counts over several keys.
    """

    def __init__(self, spec: FeatureSpec, shards: int):
        self.spec = spec
        self.shards = max(int(shards), 1)

    def setup(self):
        self._parser = BatchParser(self.spec, None)
        self._tables = []
        for table, owner in self.spec.vocabulary_tables.items():
            if owner.vocabulary_built:
                continue
            splits = np.array([SPLITS.index(s) for s in owner.vocabulary.splits], dtype=np.int8)
            self._tables.append((table, self.spec.table_features(table), splits))

    def process(self, element):
        _, chunk = element
        batch, _ = self._parser.parse_chunk(chunk)
        if not batch.n:
            return
        for table, features, splits in self._tables:
            sel = np.isin(batch.split, splits).tolist()
            counts: collections.Counter = collections.Counter()
            for f in features:
                values = batch.values[f.name]
                if f.kind == "categorical":
                    counts.update(itertools.compress(values, sel))
                else:
                    for items in itertools.compress(values, sel):
                        counts.update(items)
            if self.shards == 1:
                yield (table, 0), dict(counts)
                continue
            by_shard: dict[int, dict[str, int]] = collections.defaultdict(dict)
            for token, c in counts.items():
                by_shard[zlib.crc32(token.encode("utf-8")) % self.shards][token] = c
            for shard, part in by_shard.items():
                yield (table, shard), part


class MergeCounts(beam.CombineFn):
    """Sums ``{token: count}`` dicts."""

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, acc: dict[str, int], counts: Mapping[str, int]) -> dict[str, int]:
        get = acc.get
        for token, c in counts.items():
            acc[token] = get(token, 0) + c
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict[str, int]]) -> dict[str, int]:
        accumulators = iter(accumulators)
        out = next(accumulators, None) or {}
        for acc in accumulators:
            self.add_input(out, acc)
        return out

    def extract_output(self, acc: dict[str, int]) -> dict[str, int]:
        return acc


def _keep_frequent(element, min_counts: Mapping[str, int]):
    (table, _), counts = element
    m = min_counts[table]
    kept = [(t, c) for t, c in counts.items() if c >= m]
    yield table, (len(counts), sum(counts.values()), kept)


def _finalize_vocabulary(element, vocabularies: Mapping[str, Any]):
    """``(table, [(distinct, occurrences, kept), ...])`` -> ``(table, tokens, summary)``."""
    table, parts = element
    vocab = vocabularies[table]
    distinct = occurrences = 0
    kept: list[tuple[str, int]] = []
    for d, o, k in parts:
        distinct += d
        occurrences += o
        kept.extend(k)
    kept.sort(key=lambda tc: (-tc[1], tc[0]))
    if vocab.max_size is not None:
        kept = kept[: vocab.max_size]
    summary = {"vocab_size": len(kept), "min_count": vocab.min_count, "max_size": vocab.max_size,
               "splits": list(vocab.splits), "distinct_tokens": distinct, "occurrences": occurrences,
               "covered_occurrences": sum(c for _, c in kept)}
    return table, [t for t, _ in kept], summary


def build_vocab_pipeline(pipeline: beam.Pipeline, spec: FeatureSpec, input_pattern: str, vocab_dir: str,
                         chunk_bytes: int = fileio.DEFAULT_CHUNK_BYTES,
                         shards: int = DEFAULT_VOCAB_SHARDS) -> dict[str, beam.PCollection]:
    """Pass 1: builds every vocabulary the spec declares but has not built.

    Writes ``<vocab_dir>/<table>.txt`` and ``<vocab_dir>/vocabularies.json`` (``{table: summary}``).
    Returns ``vocabularies``: ``(table, [tokens by id])``, and ``summary``: one ``{table: summary}``.
    """
    tables = {t: f.vocabulary for t, f in spec.vocabulary_tables.items() if not f.vocabulary_built}
    if not tables:
        raise ValueError(f"spec '{spec.name}': no vocabulary to build")
    chunks = pipeline | "ReadChunks" >> fileio.raw_chunks(spec, input_pattern, chunk_bytes)
    built = (chunks
             | "CountTokens" >> beam.ParDo(CountTokens(spec, shards))
             | "MergeCounts" >> beam.CombinePerKey(MergeCounts())
             | "KeepFrequent" >> beam.FlatMap(_keep_frequent, {t: v.min_count for t, v in tables.items()})
             | "ByTable" >> beam.GroupByKey()
             | "Finalize" >> beam.Map(_finalize_vocabulary, tables))
    files = built | "VocabText" >> beam.Map(
        lambda e: (f"{e[0]}.txt", ["".join(t + "\n" for t in e[1]).encode("utf-8")]))
    summary = (built
               | "Summary" >> beam.Map(lambda e: (e[0], e[2]))
               | "SummaryDict" >> beam.combiners.ToDict())
    summary_file = summary | "SummaryJson" >> beam.Map(
        lambda s: (VOCAB_SUMMARY, [json.dumps(dict(sorted(s.items())), indent=2).encode("utf-8")]))
    _ = ((files, summary_file)
         | "VocabFiles" >> beam.Flatten()
         | "WriteVocab" >> beam.ParDo(fileio.WriteGroupedFiles(vocab_dir)))
    return {"vocabularies": built | "Tokens" >> beam.Map(lambda e: (e[0], e[1])), "summary": summary}


def resolve_vocabularies(spec: FeatureSpec, summary: Mapping[str, Mapping[str, Any]]) -> FeatureSpec:
    """The spec with ``vocab_size`` and ``vocabulary.file`` (``vocab/<table>.txt``) of every built table."""
    built = {}
    for table, owner in spec.vocabulary_tables.items():
        if owner.vocabulary_built:
            continue
        size = (summary.get(table) or {}).get("vocab_size", 0)
        if size < 1:
            raise SpecError(f"feature '{table}': no token reaches vocabulary.min_count "
                            f"{owner.vocabulary.min_count} in splits {list(owner.vocabulary.splits)}; "
                            "lower min_count or check the column")
        built[table] = (size, f"{VOCAB_DIR}/{table}.txt")
    return spec.with_vocabularies(built)
