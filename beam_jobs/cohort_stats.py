"""Beam job: cohort statistics of a data directory written by ``beam_jobs.build_tfrecords``.

Usage::

    python -m beam_jobs.cohort_stats --data runs/synthetic/data --output runs/synthetic/cohort_stats.json \\
        [--splits train,valid,test] [--top_k 10] [--q 0.05 0.1 0.25] [--numeric_features price,discount] \\
        [--num_quantiles 1001] [--value_shards 8] [any Beam / Dataflow pipeline option]

On Dataflow::

    python -m beam_jobs.cohort_stats --data gs://BUCKET/criteo/data --output gs://BUCKET/criteo/cohort_stats.json \
        --runner DataflowRunner --project PROJECT --region REGION --temp_location gs://BUCKET/tmp \
        --setup_file ./setup.py

Reads the TFRecord shards of the chosen splits (``spec.json`` of the directory says how to decode
them; the shards are checked against ``manifest.json`` first, :func:`beam_jobs.manifest.check_shards`)
and writes one JSON file::

    {"dataset", "data_dir", "splits", "rows", "positives", "base_rate",
     "axes": {axis: {"feature", "kind": "ordinal" | "categorical",
                     "cohorts": {cohort: {"rows", "positives", "base_rate",
                                          "features": {id feature: {"distinct", "ids", "top_values":
                                                           [{"value", "rows", "share", "positives", "base_rate"}]},
                                                       dense feature: {"rows", "mean", "std", "min", "max"}}}}}},
     "quantile_cohorts": {numeric feature: {"quantiles": [q_0 .. q_N], "num_quantiles",
                          "by_q": {"0.05": {"boundaries": [lo, hi],
                                            "cohorts": {"bottom_q0.05": {rows, positives, base_rate},
                                                        "middle": ..., "top_q0.05": ...},
                                            "axis": {a cohort_axes entry for the dataset YAML}}}}}}

* Cohorts are the ``cohort/<axis>`` ids stored in the records (every axis of the spec).
* Marginals: for categorical and sequence features the ``top_k`` most frequent ids per cohort (for
  sequences every kept id counts, padding excluded; ``share`` is of the cohort's ids), with their
  rows, positives and base rate, and the number of distinct ids; for dense features count, mean,
  standard deviation, min and max. Exact: counts are keyed by (axis, cohort, feature, id shard) and
  merged per key, then the top ids of each shard are merged.
* Numeric axes: for the feature of every ordinal axis (and ``--numeric_features``) approximate
  quantiles (``beam.ApproximateQuantiles``, ``--num_quantiles`` evenly spaced, min and max
  included); for each ``q`` the bottom-q / top-q cohorts are ``v < quantile(q)`` and
  ``v >= quantile(1 - q)`` (the ordinal-axis convention, so the ``axis`` entry, pasted into the
  dataset YAML, reproduces exactly these counts), counted in a second pass with the quantiles as a
  side input.

Records are read a file at a time in batches (``tfrecord.ReadTFRecordBatches``) and every count is
pre-aggregated per batch with array operations. The JSON is written with Beam's file sink
(temporary file, renamed when complete).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from typing import Any, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from beam_jobs import fileio
from beam_jobs.build_tfrecords import _run_pipeline
from beam_jobs.manifest import SHARD_SUFFIX, open_data_dir
from beam_jobs.options import job_main, parse_job_args
from beam_jobs.tfrecord import ReadTFRecordBatches
from zoo.spec import COHORT_KEY_PREFIX, PAD_ID, SPLITS, FeatureSpec, decode_examples

DEFAULT_QS = (0.05, 0.1, 0.25)


def numeric_features(spec: FeatureSpec, extra: Sequence[str] = ()) -> list[str]:
    """Features of the ordinal axes, then ``extra`` (each once, dense or categorical)."""
    names = [a.feature for a in spec.cohort_axes if a.ordinal] + list(extra)
    out = []
    for name in names:
        f = spec.feature(name)
        if f.kind == "sequence":
            raise ValueError(f"feature '{name}': quantile cohorts need a dense or categorical feature")
        if name not in out:
            out.append(name)
    return out


class BatchPartials(beam.DoFn):
    """``(file, [records])`` -> per-batch partial counts, keyed for the combiners.

    Main output: ``(("cohort", axis, cohort id), [rows, positives])`` and ``(("total",), [rows, positives])``.
    Tags: ``values``: ``((axis, cohort id, feature, shard), (ids, rows, positives))``; ``dense``:
    ``((axis, cohort id, feature), [n, sum, sum of squares, min, max])``; ``numeric``:
    ``(feature, [values])`` for the quantiles; ``columns``: ``{key: array}`` of the numeric features,
    the label (for the second pass).
    """

    def __init__(self, spec: FeatureSpec, numeric: Sequence[str], value_shards: int):
        self.spec = spec
        self.numeric = list(numeric)
        self.value_shards = max(int(value_shards), 1)

    def process(self, element):
        _, records = element
        if not records:
            return
        spec = self.spec
        cols = decode_examples(spec, records)
        y = cols[spec.label][:, 0]
        pos = (y == 1.0).astype(np.int64)
        n = len(records)
        yield ("total",), [n, int(pos.sum())]
        for axis in spec.cohort_axes:
            cid = cols[COHORT_KEY_PREFIX + axis.name][:, 0]
            k = len(axis.cohorts)
            rows = np.bincount(cid, minlength=k)
            ps = np.bincount(cid, weights=pos, minlength=k).astype(np.int64)
            for c in np.flatnonzero(rows).tolist():
                yield ("cohort", axis.name, c), [int(rows[c]), int(ps[c])]
            for f in spec.features:
                v = cols[f.name]
                if f.kind == "dense":
                    x = v[:, 0].astype(np.float64)
                    for c in np.flatnonzero(rows).tolist():
                        xc = x[cid == c]
                        yield beam.pvalue.TaggedOutput("dense", (
                            (axis.name, c, f.name),
                            [int(xc.size), float(xc.sum()), float((xc * xc).sum()), float(xc.min()), float(xc.max())]))
                    continue
                if f.kind == "sequence":
                    keep = v != PAD_ID
                    ids = v[keep]
                    owner = np.repeat(np.arange(n), keep.sum(axis=1))
                else:
                    ids = v[:, 0]
                    owner = np.arange(n)
                if not ids.size:
                    continue
                pairs = np.stack([cid[owner], ids], axis=1)
                uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
                inverse = inverse.reshape(-1)
                counts = np.bincount(inverse, minlength=len(uniq))
                positives = np.bincount(inverse, weights=pos[owner], minlength=len(uniq)).astype(np.int64)
                shard = (uniq[:, 1].astype(np.uint64) % np.uint64(self.value_shards)).astype(np.int64)
                group = uniq[:, 0] * self.value_shards + shard
                order = np.argsort(group, kind="stable")
                cuts = np.flatnonzero(np.diff(group[order])) + 1
                for sel in np.split(order, cuts):
                    c, s = divmod(int(group[sel[0]]), self.value_shards)
                    yield beam.pvalue.TaggedOutput("values", (
                        (axis.name, c, f.name, s),
                        (uniq[sel, 1].tolist(), counts[sel].tolist(), positives[sel].tolist())))
        for name in self.numeric:
            yield beam.pvalue.TaggedOutput("numeric", (name, cols[name][:, 0].astype(np.float64).tolist()))
        yield beam.pvalue.TaggedOutput("columns", {k: cols[k][:, 0] for k in [spec.label] + self.numeric})


class SumLists(beam.CombineFn):
    """Element-wise sums of equal-length lists."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, x):
        return list(x) if acc is None else [a + b for a, b in zip(acc, x)]

    def merge_accumulators(self, accs):
        out = None
        for a in accs:
            if a is not None:
                out = self.add_input(out, a)
        return out

    def extract_output(self, acc):
        return acc


class DenseMoments(beam.CombineFn):
    """``[n, sum, sumsq, min, max]`` partials -> the same, merged."""

    def create_accumulator(self):
        return [0, 0.0, 0.0, math.inf, -math.inf]

    def add_input(self, acc, x):
        return [acc[0] + x[0], acc[1] + x[1], acc[2] + x[2], min(acc[3], x[3]), max(acc[4], x[4])]

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            out = self.add_input(out, a)
        return out

    def extract_output(self, acc):
        return acc


class ValueCounts(beam.CombineFn):
    """``(ids, rows, positives)`` partials -> ``{id: [rows, positives]}``."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, x):
        for v, c, p in zip(*x):
            got = acc.get(v)
            if got is None:
                acc[v] = [c, p]
            else:
                got[0] += c
                got[1] += p
        return acc

    def merge_accumulators(self, accs):
        accs = iter(accs)
        out = next(accs, None) or {}
        for a in accs:
            for v, (c, p) in a.items():
                got = out.get(v)
                if got is None:
                    out[v] = [c, p]
                else:
                    got[0] += c
                    got[1] += p
        return out

    def extract_output(self, acc):
        return acc


def _shard_top(element, top_k: int):
    """``((axis, cohort, feature, shard), {id: [rows, pos]})`` -> ``((axis, cohort, feature), summary)``."""
    (axis, cohort, feature, _), counts = element
    top = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top_k]
    return (axis, cohort, feature), (len(counts), sum(c for c, _ in counts.values()), top)


def _merge_shards(element, top_k: int):
    key, parts = element
    distinct = total = 0
    top = []
    for d, t, shard_top in parts:
        distinct += d
        total += t
        top.extend(shard_top)
    top.sort(key=lambda kv: (-kv[1][0], kv[0]))
    return key, {"distinct": distinct, "ids": total, "top": top[:top_k]}


class QuantileCohortCounts(beam.DoFn):
    """Second pass: rows and positives of the bottom / middle / top cohorts of every (feature, q)."""

    def __init__(self, label: str, qs: Sequence[float], num_quantiles: int):
        self.label = label
        self.qs = list(qs)
        self.num_quantiles = num_quantiles

    def process(self, columns, quantiles):
        pos = (columns[self.label] == 1.0).astype(np.int64)
        for name, qv in quantiles.items():
            x = columns[name].astype(np.float64)
            for q in self.qs:
                lo, hi = quantile_boundaries(qv, q, self.num_quantiles)
                ids = np.searchsorted(np.array([lo, hi]), x, side="right")  # ordinal-axis rule
                rows = np.bincount(ids, minlength=3)
                ps = np.bincount(ids, weights=pos, minlength=3).astype(np.int64)
                yield (name, q), [int(v) for v in rows] + [int(v) for v in ps]


def quantile_boundaries(quantiles: Sequence[float], q: float, num_quantiles: int) -> tuple[float, float]:
    """``(quantile(q), quantile(1 - q))`` from ``num_quantiles`` evenly spaced quantiles (0 .. 1)."""
    steps = num_quantiles - 1
    lo_i, hi_i = int(round(q * steps)), int(round((1 - q) * steps))
    return float(quantiles[lo_i]), float(quantiles[hi_i])


def _counts(rows: int, positives: int) -> dict[str, Any]:
    return {"rows": rows, "positives": positives, "base_rate": positives / rows if rows else None}


def _assemble(total, cohorts, values, dense, quantiles, qcounts, *, spec: FeatureSpec, data_dir: str,
              splits: Sequence[str], qs: Sequence[float], num_quantiles: int) -> dict[str, Any]:
    total = total or [0, 0]
    cohort_counts = {k[1:]: v for k, v in cohorts}
    values = dict(values)
    dense = dict(dense)
    out: dict[str, Any] = {"dataset": spec.name, "data_dir": data_dir, "splits": list(splits),
                           **_counts(total[0], total[1]), "axes": {}}
    for axis in spec.cohort_axes:
        entry = {"feature": axis.feature, "kind": "ordinal" if axis.ordinal else "categorical",
                 "cohorts": {}}
        if axis.ordinal:
            entry["boundaries"] = list(axis.boundaries)
        for c, name in enumerate(axis.cohorts):
            rows, positives = cohort_counts.get((axis.name, c), [0, 0])
            feats = {}
            for f in spec.features:
                if f.kind == "dense":
                    m = dense.get((axis.name, c, f.name))
                    if m is None or not m[0]:
                        feats[f.name] = {"rows": 0, "mean": None, "std": None, "min": None, "max": None}
                    else:
                        mean = m[1] / m[0]
                        var = max(m[2] / m[0] - mean * mean, 0.0)
                        feats[f.name] = {"rows": m[0], "mean": mean, "std": math.sqrt(var), "min": m[3], "max": m[4]}
                else:
                    v = values.get((axis.name, c, f.name), {"distinct": 0, "ids": 0, "top": []})
                    feats[f.name] = {"distinct": v["distinct"], "ids": v["ids"], "top_values": [
                        {"value": int(val), "rows": int(cnt), "share": cnt / v["ids"], "positives": int(p),
                         "base_rate": p / cnt} for val, (cnt, p) in v["top"]]}
            entry["cohorts"][name] = {**_counts(rows, positives), "features": feats}
        out["axes"][axis.name] = entry
    qc = dict(qcounts)
    out["quantile_cohorts"] = {}
    for name, qv in sorted(quantiles.items(), key=lambda kv: numeric_order(spec, kv[0])):
        by_q = {}
        for q in qs:
            lo, hi = quantile_boundaries(qv, q, num_quantiles)
            c = qc.get((name, q), [0] * 6)
            tag = f"q{q:g}"
            cohort_names = [f"bottom_{tag}", "middle", f"top_{tag}"]
            by_q[f"{q:g}"] = {
                "boundaries": [lo, hi],
                "cohorts": {n: _counts(c[i], c[3 + i]) for i, n in enumerate(cohort_names)},
                "axis": {"name": f"{name}_{tag}", "feature": name, "boundaries": [lo, hi], "cohorts": cohort_names}
                if lo < hi else None,
            }
        out["quantile_cohorts"][name] = {"num_quantiles": num_quantiles, "quantiles": [float(x) for x in qv],
                                         "by_q": by_q}
    return out


def numeric_order(spec: FeatureSpec, name: str) -> int:
    return [f.name for f in spec.features].index(name)


def build_pipeline(pipeline: beam.Pipeline, spec: FeatureSpec, data_dir: str, output: str,
                   splits: Sequence[str] = SPLITS, top_k: int = 10, qs: Sequence[float] = DEFAULT_QS,
                   numeric: Sequence[str] | None = None, num_quantiles: int = 1001,
                   value_shards: int = 8) -> beam.PCollection:
    """Adds the job to ``pipeline``; returns the PCollection of the one result dict (also written to ``output``)."""
    numeric = numeric_features(spec) if numeric is None else list(numeric)
    for q in qs:
        if not 0 < q < 0.5:
            raise ValueError(f"q must be in (0, 0.5), got {q}")
    reads = [pipeline | f"Read_{s}" >> ReadTFRecordBatches(FileSystems.join(data_dir, s, f"part-*{SHARD_SUFFIX}"))
             for s in splits]
    batches = reads | "Batches" >> beam.Flatten()
    parts = batches | "Partials" >> beam.ParDo(BatchPartials(spec, numeric, value_shards)).with_outputs(
        "values", "dense", "numeric", "columns", main="counts")
    counts = parts.counts | "SumCounts" >> beam.CombinePerKey(SumLists())
    total = (counts | "Total" >> beam.Filter(lambda kv: kv[0] == ("total",))
             | "TotalValue" >> beam.Map(lambda kv: kv[1]))
    cohorts = counts | "Cohorts" >> beam.Filter(lambda kv: kv[0][0] == "cohort")
    values = (parts["values"]
              | "MergeValues" >> beam.CombinePerKey(ValueCounts())
              | "ShardTop" >> beam.Map(_shard_top, top_k)
              | "ByFeature" >> beam.GroupByKey()
              | "Top" >> beam.Map(_merge_shards, top_k))
    dense = parts["dense"] | "Dense" >> beam.CombinePerKey(DenseMoments())
    quantiles = (parts["numeric"]
                 | "Quantiles" >> beam.ApproximateQuantiles.PerKey(num_quantiles, input_batched=True))
    qcounts = (parts["columns"]
               | "QuantileCohorts" >> beam.ParDo(QuantileCohortCounts(spec.label, qs, num_quantiles),
                                                 beam.pvalue.AsDict(quantiles))
               | "SumQuantileCohorts" >> beam.CombinePerKey(SumLists()))
    seed = pipeline | "One" >> beam.Create([None])
    result = seed | "Assemble" >> beam.Map(
        lambda _, total, cohorts, values, dense, quantiles, qcounts: _assemble(
            total[0] if total else None, cohorts, values, dense, quantiles, qcounts, spec=spec, data_dir=data_dir,
            splits=splits, qs=qs, num_quantiles=num_quantiles),
        beam.pvalue.AsList(total), beam.pvalue.AsList(cohorts), beam.pvalue.AsList(values),
        beam.pvalue.AsList(dense), beam.pvalue.AsDict(quantiles), beam.pvalue.AsList(qcounts))
    _ = (result
         | "Json" >> beam.Map(lambda r: (json.dumps(r, indent=2) + "\n").encode("utf-8"))
         | "Write" >> fileio.WriteBlobs(output, "", single_file=True))
    return result


def parse_args(argv: Sequence[str] | None = None):
    parser = argparse.ArgumentParser(prog="python -m beam_jobs.cohort_stats", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--data", required=True, help="data directory of beam_jobs.build_tfrecords (local or gs://)")
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--splits", default=",".join(SPLITS), help="splits to read (default all)")
    parser.add_argument("--top_k", type=int, default=10, help="top ids per cohort and feature")
    parser.add_argument("--q", type=float, nargs="+", default=list(DEFAULT_QS), help="bottom/top fractions")
    parser.add_argument("--numeric_features", default="",
                        help="comma-separated features for quantile cohorts besides the ordinal axes' features")
    parser.add_argument("--num_quantiles", type=int, default=1001, help="evenly spaced quantiles (min, max included)")
    parser.add_argument("--value_shards", type=int, default=8, help="keys per (axis, cohort, feature) id count")
    return parse_job_args(parser, argv)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the job; returns the statistics and prints a per-cohort summary."""
    args, pipeline_args = parse_args(argv)
    data_dir, spec = open_data_dir(args.data)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    extra = [s.strip() for s in args.numeric_features.split(",") if s.strip()]
    _run_pipeline(pipeline_args, lambda p: build_pipeline(  # a corrupt shard: one line naming it
        p, spec, data_dir, args.output, splits, args.top_k, args.q, numeric_features(spec, extra),
        args.num_quantiles, args.value_shards))
    stats = fileio.read_json(args.output)
    print(f"cohort_stats: {stats['rows']} rows of {spec.name} ({','.join(splits)}) -> {args.output}")
    for axis, entry in stats["axes"].items():
        for name, c in entry["cohorts"].items():
            rate = "n/a" if c["base_rate"] is None else f"{c['base_rate']:.4f}"
            print(f"  {axis:<16} {name:<16} rows {c['rows']:>9d}  base rate {rate}")
    return stats


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    # Import through the package so pickled DoFns reference beam_jobs.cohort_stats, not __main__.
    from beam_jobs.cohort_stats import run as _run

    sys.exit(job_main("python -m beam_jobs.cohort_stats", _run))
