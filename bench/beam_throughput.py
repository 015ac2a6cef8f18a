"""Rows/s of the ingest job (beam_jobs.build_tfrecords) against a naive per-element Beam pipeline.

    python bench/beam_throughput.py [--rows 100000 1000000] [--repeats 1] [--workers 2]

Both pipelines read the same synthetic CSV (``zoo.datasets.synthetic.write_raw``), run on the
DirectRunner with ``--direct_running_mode=multi_processing --direct_num_workers=2`` and write GZIP
TFRecord shards per split (4 per split). The naive reference is the straightforward form:
``ReadFromText`` -> per element ``spec.parse_raw_row`` and one Python ``tf.train.Example`` built
from per-key ``tf.train.Feature`` protos -> ``Partition`` by split -> ``WriteToTFRecord``; it keeps no
statistics and no dead letters, so it does less work than the job. Each run is a fresh process
(imports, worker start-up and pipeline construction included): rows/s = rows / wall seconds, what a
user waits for. Runs of the two pipelines are interleaved; the median over repeats is reported.
Both outputs are checked to hold the same examples per split (as multisets of decoded records for
the smallest size, by count for the others).

Prints a table and writes bench/results/beam_throughput.json.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SPEC = os.path.join(ROOT, "configs", "datasets", "synthetic.yaml")
SPLITS = ("train", "valid", "test")


# ---------------------------------------------------------------------------------------------------
# The naive reference pipeline (run in its own process: python bench/beam_throughput.py --naive ...)
# ---------------------------------------------------------------------------------------------------
def naive_to_example(line, spec):
    """One row -> (split, serialized tf.train.Example) the straightforward way; [] for a bad row."""
    import tensorflow as tf

    from zoo.spec import RowError

    try:
        row = spec.parse_raw_row(line.split(spec.raw_format.delimiter))
    except RowError:
        return []
    feature = {}
    for key, values in spec.example_values(row).items():
        if key in spec.float_keys:
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        else:
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return [(spec.split_of(row), example.SerializeToString())]


def run_naive(spec_path: str, input_pattern: str, output: str, beam_args: list[str]) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from zoo.spec import load_spec

    spec = load_spec(spec_path)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        examples = (p
                    | "Read" >> beam.io.ReadFromText(input_pattern, skip_header_lines=1)
                    | "ToExample" >> beam.FlatMap(naive_to_example, spec))
        parts = examples | "BySplit" >> beam.Partition(lambda kv, n: SPLITS.index(kv[0]), len(SPLITS))
        for split, part in zip(SPLITS, parts):
            _ = (part
                 | f"Value_{split}" >> beam.Map(lambda kv: kv[1])
                 | f"Write_{split}" >> beam.io.WriteToTFRecord(
                     os.path.join(output, split, "part"), file_name_suffix=".tfrecord.gz", num_shards=4,
                     compression_type=beam.io.filesystem.CompressionTypes.GZIP))


# ---------------------------------------------------------------------------------------------------
# Benchmark driver
# ---------------------------------------------------------------------------------------------------
def _read_records(output: str, split: str) -> list[bytes]:
    import gzip

    from beam_jobs.tfrecord import unframe

    out = []
    for path in sorted(glob.glob(os.path.join(output, split, "part-*.tfrecord.gz"))):
        with gzip.open(path, "rb") as fh:
            out.extend(unframe(fh.read()))
    return out


def _canonical(record: bytes) -> tuple:
    from zoo.spec import example_class

    example = example_class().FromString(record)
    return tuple(sorted((k, f.WhichOneof("kind"), tuple(getattr(f, f.WhichOneof("kind")).value))
                        for k, f in example.features.feature.items()))


def _same_examples(a: str, b: str, full: bool) -> dict[str, int]:
    counts = {}
    for split in SPLITS:
        ra, rb = _read_records(a, split), _read_records(b, split)
        if len(ra) != len(rb):
            raise AssertionError(f"{split}: {len(ra)} vs {len(rb)} records")
        if full and collections.Counter(map(_canonical, ra)) != collections.Counter(map(_canonical, rb)):
            raise AssertionError(f"{split}: the two pipelines wrote different examples")
        counts[split] = len(ra)
    return counts


def _timed(cmd: list[str]) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def _versions() -> dict[str, str]:
    import apache_beam
    import numpy

    from importlib.metadata import version

    return {"python": platform.python_version(), "apache_beam": apache_beam.__version__,
            "numpy": numpy.__version__, "tensorflow": version("tensorflow"), "protobuf": version("protobuf")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "beam_throughput.json"))
    parser.add_argument("--naive", nargs=3, metavar=("SPEC", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args, beam_args = parser.parse_known_args()
    if args.naive:
        run_naive(*args.naive, beam_args)
        return

    from zoo.datasets.synthetic import write_raw
    from zoo.spec import load_spec

    runner = ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
              f"--direct_num_workers={args.workers}", "--default_sdk_harness_log_level=WARNING"]
    pipelines = {
        "build_tfrecords": lambda inp, out: [sys.executable, "-m", "beam_jobs.build_tfrecords", "--spec", SPEC,
                                             "--input", inp, "--output", out, *runner],
        "naive": lambda inp, out: [sys.executable, os.path.abspath(__file__), "--naive", SPEC, inp, out, *runner],
    }
    work = tempfile.mkdtemp(prefix="beam_throughput_")
    results = []
    load_before = os.getloadavg()
    try:
        for rows in args.rows:
            raw = write_raw(load_spec(SPEC), None, os.path.join(work, f"raw_{rows}"), rows=rows)[0]
            times: dict[str, list[float]] = {name: [] for name in pipelines}
            loads: dict[str, list[float]] = {name: [] for name in pipelines}
            for rep in range(args.repeats):
                for name, cmd in pipelines.items():
                    out = os.path.join(work, f"{name}_{rows}")
                    shutil.rmtree(out, ignore_errors=True)
                    times[name].append(_timed(cmd(raw, out)))
                    loads[name].append(round(os.getloadavg()[0], 2))
                    print(f"{rows:>9,d} rows  run {rep + 1}/{args.repeats}  {name:<16} {times[name][-1]:7.1f} s  "
                          f"{rows / times[name][-1]:>8,.0f} rows/s  (load {os.getloadavg()[0]:.1f})", flush=True)
            counts = _same_examples(os.path.join(work, f"build_tfrecords_{rows}"), os.path.join(work, f"naive_{rows}"),
                                    full=rows == min(args.rows))
            for name, ts in times.items():
                median = statistics.median(ts)
                results.append({"pipeline": name, "rows": rows, "seconds": [round(t, 2) for t in ts],
                                "median_seconds": round(median, 2), "rows_per_second": round(rows / median),
                                "rows_per_split": counts, "load_average_1min_after_each_run": loads[name]})
            shutil.rmtree(os.path.dirname(raw), ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    speedup = {}
    print(f"\n{'rows':>9}  {'pipeline':<16} {'median s':>9} {'rows/s':>9}  runs")
    for r in results:
        print(f"{r['rows']:>9,d}  {r['pipeline']:<16} {r['median_seconds']:>9.1f} {r['rows_per_second']:>9,d}  {r['seconds']}")
    for rows in args.rows:
        by = {r["pipeline"]: r for r in results if r["rows"] == rows}
        speedup[str(rows)] = round(by["build_tfrecords"]["rows_per_second"] / by["naive"]["rows_per_second"], 2)
        print(f"{rows:>9,d} rows: build_tfrecords is {speedup[str(rows)]:.2f}x the naive pipeline")
    result = {
        "benchmark": "beam_throughput", "spec": os.path.relpath(SPEC, ROOT),
        "runner": runner, "num_shards_per_split": 4, "repeats": args.repeats, "results": results,
        "speedup_vs_naive": speedup,
        "environment": {"cpu_count": os.cpu_count(), "machine": platform.machine(), **_versions(),
                        "load_average_before": [round(x, 2) for x in load_before],
                        "load_average_after": [round(x, 2) for x in os.getloadavg()],
                        "date": time.strftime("%Y-%m-%d")},
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"\nrecorded in {args.output}")


if __name__ == "__main__":
    main()
