"""Lists the registered backbones: ``python -m zoo.backbones [NAME ...] [--json]``.

Without names: one line per backbone (name, class, its model YAML). With names: every
hyper-parameter of each, with its default. ``--json`` prints the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from zoo import cli
from zoo.registry import backbone_names, get_backbone

MODEL_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "configs", "models")


def describe(name: str) -> dict:
    """``{name, class, model_yaml, tiny_yaml, hyperparameters}`` of a registered backbone (paths or None)."""
    cls = get_backbone(name)
    configs = {kind: os.path.join(MODEL_CONFIGS, f"{name}{suffix}.yaml") for kind, suffix in
               (("model_yaml", ""), ("tiny_yaml", "_test"))}
    return {"name": name, "class": f"{cls.__module__}.{cls.__qualname__}",
            **{kind: (path if os.path.exists(path) else None) for kind, path in configs.items()},
            "hyperparameters": cls.Hyperparameters.defaults()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.backbones", description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("names", nargs="*", help="backbones to describe in full (default: list them all)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    cli.add_cli_flags(parser)
    args = parser.parse_args(argv)
    registered = backbone_names()
    unknown = [n for n in args.names if n not in registered]
    if unknown:
        parser.error(f"unknown backbone {unknown[0]!r}; registered backbones are {registered}")
    rows = [describe(n) for n in (args.names or registered)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not args.names:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            yaml_path = os.path.relpath(r["model_yaml"]) if r["model_yaml"] else "(no model YAML)"
            print(f"{r['name']:<{width}}  {r['class']:<40}  {yaml_path}")
        return 0
    for r in rows:
        print(f"{r['name']} ({r['class']})")
        for key, value in r["hyperparameters"].items():
            print(f"  {key}: {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
