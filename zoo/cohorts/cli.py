"""Command line of cohort discovery (``python -m zoo.cohorts``): writes cohort_divergence.{json,png}."""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from zoo import cli
from zoo.cohorts.divergence import DIVERGENCES
from zoo.cohorts.stream import MODES, discover

DESCRIPTION = "Cohort discovery for C2AL: which two cohorts does the baseline model see most differently?"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs cohort discovery from the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m zoo.cohorts", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--data", required=True, help="output directory of beam_jobs.build_tfrecords")
    parser.add_argument("--model", required=True, help="the baseline model (.keras)")
    parser.add_argument("--axis", required=True, help="cohort axis of the data's spec")
    parser.add_argument("--output", required=True, help="directory for cohort_divergence.{json,png}")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--metric", default="js", choices=DIVERGENCES)
    parser.add_argument("--bins", type=int, default=50)
    parser.add_argument("--min-fraction", type=float, default=0.01)
    parser.add_argument("--mode", default="exhaustive", choices=MODES)
    parser.add_argument("--quantile", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--max-batches", type=int, default=None)
    cli.add_cli_flags(parser)
    args = parser.parse_args(argv)
    return cli.run_reporting_errors(parser.prog, lambda: _main(args), args.debug, cli.data_loss_hint(args.data))


def _main(args: argparse.Namespace) -> int:
    from zoo.model import load_model  # the CLI alone needs Keras; discovery's maths does not

    model = load_model(args.model)
    result = discover(model, args.data, args.axis, split=args.split, bins=args.bins, metric=args.metric,
                      min_fraction=args.min_fraction, mode=args.mode, quantile=args.quantile,
                      batch_size=args.batch_size, max_batches=args.max_batches)
    json_path, png_path = result.save(args.output)
    print(result.format_table())
    print(f"\nwrote {os.path.abspath(json_path)}\n      {os.path.abspath(png_path)}")
    return 0
