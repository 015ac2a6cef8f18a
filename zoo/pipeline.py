"""The main job, end to end: raw data -> Beam -> TFRecords -> baseline + C2AL -> per-cohort NE -> SavedModel.

    python -m zoo.pipeline                                   # embedded synthetic data, 200K rows
    python -m zoo.pipeline --dataset configs/datasets/movielens100k.yaml --source ../shared/data/ml-100k

Steps:
  1. the dataset's adapter writes raw CSV rows (``<output>/raw``);
  2. ``beam_jobs.build_tfrecords`` parses them, counts dead letters, computes cohort ids and the
     user-hash split, and writes GZIP TFRecord shards, ``spec.json``, ``stats.json`` and ``manifest.json`` (``<output>/data``);
  3. ``zoo.train`` trains the baseline; cohort discovery (``zoo.cohorts``) streams the validation
     split through it and picks the most contrasting (head, tail) pair of the spec's C2AL axis
     (``<output>/train/discovery/cohort_divergence.{json,png}``; ``--no-discover`` keeps the spec's
     pair); the C2AL variant trains on that pair; both are evaluated (AUC, log loss, NE overall and
     per cohort: ``<output>/train/metrics.json``, TensorBoard logs);
  4. the served model (C2AL's primary path) is exported to ``<export_root>/<model_name>/<version>``.

Apache Beam pipeline options (any flag of Beam's ``PipelineOptions``, e.g. ``--runner``,
``--direct_running_mode=in_memory``, ``--temp_location``) and the Beam job's own options
(``--num_shards``, ``--chunk_bytes``, ...) are passed to ``beam_jobs.build_tfrecords`` unchanged; any
other flag is an error naming it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from typing import Sequence

from zoo import cli, datasets, evaluation, train
from zoo.config import load_model_config
from zoo.spec import load_spec


def beam_job_args(spec_path: str, raw_pattern: str, data_dir: str, extra: Sequence[str],
                  prog: str = "zoo.pipeline") -> list[str]:
    """The argv of ``beam_jobs.build_tfrecords``; ``extra`` (this command's unknown flags) checked first.

    Args:
      spec_path: the dataset YAML.
      raw_pattern: the raw files' glob.
      data_dir: the job's output directory.
      extra: the flags ``zoo.pipeline`` does not know: the Beam job's own options and Beam pipeline
        options, passed through unchanged.
      prog: the command named in the error.

    Raises:
      SystemExit: (status 2, one line on stderr) naming the first flag neither accepts.
    """
    from beam_jobs import build_tfrecords
    from beam_jobs.options import first_flag, unknown_pipeline_flags

    argv = ["--spec", spec_path, "--input", raw_pattern, "--output", data_dir, *extra]
    _, unknown = build_tfrecords.build_parser().parse_known_args(argv)  # the job's flags, the rest for Beam
    unknown = unknown_pipeline_flags(unknown)
    if unknown:
        sys.stderr.write(f"{prog}: error: unknown flag '{first_flag(unknown)}': not an option of {prog}, "
                         "beam_jobs.build_tfrecords nor Apache Beam (see --help)\n")
        raise SystemExit(2)
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.pipeline", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--dataset", default="configs/datasets/synthetic.yaml", help="dataset YAML")
    parser.add_argument("--source", default=None, help="path of the raw dataset (real-data adapters)")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic rows")
    parser.add_argument("--malformed-rows", type=int, default=40,
                        help="corrupted synthetic lines appended to exercise the dead-letter output")
    parser.add_argument("--model", default="configs/models/dcnv2_c2al.yaml",
                        help="model YAML (default: DCNv2 with the C2AL heads the study chose)")
    parser.add_argument("--variants", default="baseline,c2al")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None, help="override the model YAML's training.max_epochs")
    parser.add_argument("--output", default=None,
                        help="directory of the raw rows, TFRecords and training run (default runs/<dataset name>)")
    parser.add_argument("--export-root", default="saved_models")
    train.add_discovery_arguments(parser, default=True)
    cli.add_cli_flags(parser)
    args, beam_args = parser.parse_known_args(argv)  # the Beam job's and Beam's options, checked below
    return cli.run_reporting_errors(parser.prog, lambda: _main(args, beam_args), args.debug)


def _main(args: argparse.Namespace, beam_args: list[str]) -> int:
    from beam_jobs import build_tfrecords

    start = time.time()
    spec = load_spec(args.dataset)
    model_cfg = load_model_config(args.model)  # checked before the Beam job, then reused
    output = args.output or os.path.join("runs", spec.name)
    raw_dir, data_dir, train_dir = (os.path.join(output, d) for d in ("raw", "data", "train"))
    beam_argv = beam_job_args(args.dataset, os.path.join(raw_dir, "*.csv"), data_dir, beam_args)
    for stale in glob.glob(os.path.join(raw_dir, "*.csv")):
        os.remove(stale)

    print(f"[1/4] raw rows from adapter '{spec.adapter}' -> {raw_dir}", flush=True)
    raw = datasets.write_raw(spec, args.source, raw_dir, rows=args.rows, seed=args.seed,
                             malformed_rows=args.malformed_rows)
    print(f"[2/4] Beam: {', '.join(raw)} -> {data_dir}", flush=True)
    build_tfrecords.run(beam_argv)
    print(f"[3/4] training {args.variants} with {args.model}", flush=True)
    summary = train.run(data_dir, model_cfg, train_dir, [v.strip() for v in args.variants.split(",")],
                        seed=args.seed, export_root=args.export_root, max_epochs=args.max_epochs,
                        discover=train.discovery_options(args) if args.variants.replace(" ", "") == "baseline,c2al"
                        else None)
    with open(os.path.join(data_dir, "stats.json")) as fh:
        stats = json.load(fh)

    print("\n[4/4] results (test split)\n" + evaluation.format_report(summary))
    print(f"\ndead-letter rows: {stats['dead_letter']['total']} {stats['dead_letter']['by_reason']}")
    oov = {name: f["out_of_vocab"] for name, f in stats["features"].items() if f["out_of_vocab"]}
    print(f"out-of-vocabulary ids (mapped to each feature's OOV row): {oov or 'none'}")
    print("\noutputs:")
    print(f"  TFRecords, spec.json, stats.json, manifest.json: {os.path.abspath(data_dir)}")
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
