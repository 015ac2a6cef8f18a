"""The main job, end to end: raw data -> Beam -> TFRecords -> baseline + C2AL -> per-cohort NE -> SavedModel.

    python -m zoo.pipeline                                   # embedded synthetic data, 200K rows
    python -m zoo.pipeline --dataset configs/datasets/movielens100k.yaml --source ../shared/data/ml-100k

Steps:
  1. the dataset's adapter writes raw CSV rows (``<work>/raw``);
  2. ``beam_jobs.build_tfrecords`` parses them, counts dead letters, computes cohort ids and the
     user-hash split, and writes GZIP TFRecord shards, ``spec.json`` and ``stats.json`` (``<work>/data``);
  3. ``zoo.train`` trains the baseline; cohort discovery (``zoo.cohorts``) streams the validation
     split through it and picks the most contrasting (head, tail) pair of the spec's C2AL axis
     (``<work>/train/discovery/cohort_divergence.{json,png}``; ``--no-discover`` keeps the spec's
     pair); the C2AL variant trains on that pair; both are evaluated (AUC, log loss, NE overall and
     per cohort: ``<work>/train/metrics.json``, TensorBoard logs);
  4. the served model (C2AL's primary path) is exported to ``<export_root>/<model_name>/<version>``.

Flags this command does not know are passed to the Beam job unchanged (e.g.
``--direct_running_mode=in_memory``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from typing import Sequence

from zoo import datasets, train
from zoo.spec import load_spec


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="configs/datasets/synthetic.yaml", help="dataset YAML")
    parser.add_argument("--source", default=None, help="path of the raw dataset (real-data adapters)")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic rows")
    parser.add_argument("--malformed-rows", type=int, default=40,
                        help="corrupted synthetic lines appended to exercise the dead-letter output")
    parser.add_argument("--model", default="configs/models/dcnv2.yaml", help="model YAML")
    parser.add_argument("--variants", default="baseline,c2al")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the model YAML's epochs")
    parser.add_argument("--work", default=None, help="work directory (default runs/<dataset name>)")
    parser.add_argument("--export-root", default="saved_models")
    train.add_discovery_arguments(parser, default=True)
    args, beam_args = parser.parse_known_args(argv)  # anything else is a Beam pipeline option

    from beam_jobs import build_tfrecords

    start = time.time()
    spec = load_spec(args.dataset)
    work = args.work or os.path.join("runs", spec.name)
    raw_dir, data_dir, train_dir = (os.path.join(work, d) for d in ("raw", "data", "train"))
    for stale in glob.glob(os.path.join(raw_dir, "*.csv")):
        os.remove(stale)

    print(f"[1/4] raw rows from adapter '{spec.adapter}' -> {raw_dir}", flush=True)
    raw = datasets.write_raw(spec, args.source, raw_dir, rows=args.rows, seed=args.seed,
                             malformed_rows=args.malformed_rows)
    print(f"[2/4] Beam: {', '.join(raw)} -> {data_dir}", flush=True)
    build_tfrecords.run(["--spec", args.dataset, "--input", os.path.join(raw_dir, "*.csv"),
                         "--output", data_dir, *beam_args])
    print(f"[3/4] training {args.variants} with {args.model}", flush=True)
    summary = train.run(data_dir, args.model, train_dir, [v.strip() for v in args.variants.split(",")],
                        seed=args.seed, export_root=args.export_root, epochs=args.epochs,
                        discover=train.discovery_options(args) if args.variants.replace(" ", "") == "baseline,c2al"
                        else None)
    with open(os.path.join(data_dir, "stats.json")) as fh:
        stats = json.load(fh)

    print("\n[4/4] results (test split)\n" + train.format_report(summary))
    print(f"\ndead-letter rows: {stats['dead_letter']['total']} {stats['dead_letter']['by_reason']}")
    oov = {name: f["out_of_vocab"] for name, f in stats["features"].items() if f["out_of_vocab"]}
    print(f"out-of-vocabulary ids (mapped to each feature's OOV row): {oov or 'none'}")
    print("\noutputs:")
    print(f"  TFRecords, spec.json, stats.json: {os.path.abspath(data_dir)}")
    print(f"  metrics.json:                     {os.path.abspath(os.path.join(train_dir, 'metrics.json'))}")
    if "discovery" in summary:
        d = summary["discovery"]
        print(f"  cohort discovery ({d['head']} / {d['tail']}, {d['metric']} {d['divergence']:.3f}): "
              f"{os.path.abspath(d['json'])}, .png")
    print(f"  TensorBoard logs:                 {os.path.abspath(train_dir)}/<variant>/tensorboard")
    print(f"  Keras models:                     {os.path.abspath(train_dir)}/<variant>/model.keras")
    if "export" in summary:
        print(f"  SavedModel ({summary['export']['variant']}, primary only): {os.path.abspath(summary['export']['path'])}")
    print(f"finished in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
