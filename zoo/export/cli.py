"""Command line of the export (``python -m zoo.export``): export a saved model, or print the README snippets."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Sequence

import keras

from zoo import cli
from zoo.export.savedmodel import export_saved_model, tensorflow_env, version_path
from zoo.export.serving_config import serving_readme, write_model_config
from zoo.model import load_model
from zoo.spec import load_spec

DESCRIPTION = "SavedModel export for TF Serving, and the serving snippets of the README."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.export", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--model", help="a saved .keras model (baseline, C2AL or MLET)")
    parser.add_argument("--spec", help="dataset YAML, spec.json, or the data directory holding spec.json "
                                       "(default: --eval-data's spec.json)")
    parser.add_argument("--eval-data", help="data directory whose --warmup-split gives the warm-up rows")
    parser.add_argument("--export-root", default="saved_models")
    parser.add_argument("--model-name", help="directory under the root (default <backbone>_<dataset>)")
    parser.add_argument("--version", type=int, default=None, help="default: the next free version")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument("--warmup-rows", type=int, default=8)
    parser.add_argument("--warmup-split", default="test")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip reloading the export and comparing it with the Keras model")
    parser.add_argument("--write-model-config", action="store_true",
                        help="also write <export-root>/models.config for this model")
    parser.add_argument("--serving-readme", action="store_true",
                        help="print the README's generated TF Serving snippets for --spec and exit")
    cli.add_cli_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the export command line; returns the exit status (1 for a refused version or a feature error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    return cli.run_reporting_errors(_parser().prog, lambda: _main(args, argv), args.debug,
                                    cli.data_loss_hint(args.eval_data) if args.eval_data else None)


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    spec_path = args.spec or args.eval_data
    if not spec_path:
        _parser().error("give --spec (or --eval-data with a spec.json)")
    spec = load_spec(spec_path)  # a dataset YAML, a spec.json or a data directory
    if args.serving_readme:
        if not args.model_name:
            _parser().error("--serving-readme needs --model-name")
        print(serving_readme(spec, args.spec, args.model_name, args.export_root))
        return 0
    if not args.model:
        _parser().error("give --model (a .keras file) or --serving-readme")
    if args.model_name:  # refuse before loading anything
        version_path(args.export_root, args.model_name, args.version, args.overwrite)
    if keras.backend.backend() != "tensorflow":  # load and export under TensorFlow only
        return subprocess.call([sys.executable, "-m", "zoo.export", *argv], env=tensorflow_env())
    model = load_model(args.model)
    name = args.model_name
    if not name:
        try:
            name = f"{model.get_layer('backbone').registered_name}_{spec.name}"
        except (ValueError, AttributeError):
            _parser().error("--model-name is needed for a model without a registered backbone")
    path = export_saved_model(model, spec, args.export_root, name, args.version, args.overwrite,
                              eval_data=args.eval_data, warmup_rows=args.warmup_rows,
                              warmup_split=args.warmup_split, verify=args.verify)
    print(f"exported {args.model} -> {os.path.abspath(path)}")
    if args.write_model_config:
        print(f"model config: {os.path.abspath(write_model_config(args.export_root, [name]))}")
    return 0

