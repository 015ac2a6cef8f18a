"""Dataset adapters: turn a source (a generator or a path to a public dataset) into raw CSV rows.

Every adapter writes rows in the raw layout its dataset YAML declares (``format.columns``), so the one
Beam job (:mod:`beam_jobs.build_tfrecords`) ingests all of them. Adapters are registered by the name a
dataset YAML gives in ``adapter:``.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable, Iterable

from zoo.spec import FeatureSpec

ADAPTERS: dict[str, str] = {
    "synthetic": "zoo.datasets.synthetic",
    "movielens100k": "zoo.datasets.movielens",
    "frappe_x1": "zoo.datasets.frappe",
    "amazon_reviews": "zoo.datasets.amazon",
}


def get_adapter(name: str) -> Callable[..., list[str]]:
    """The ``write_raw(spec, source, out_dir, **options) -> [csv paths]`` function of an adapter."""
    if name not in ADAPTERS:
        raise KeyError(f"adapter '{name}': unknown; registered adapters are {sorted(ADAPTERS)}")
    return importlib.import_module(ADAPTERS[name]).write_raw


def write_raw(spec: FeatureSpec, source: str | None, out_dir: str, **options) -> list[str]:
    """Runs the spec's adapter; returns the raw CSV paths it wrote.

    ``options`` are the run's generic options (``zoo.pipeline`` passes ``rows``, ``seed`` and
    ``malformed_rows``; an adapter uses the ones that apply to it). The adapter reads the YAML's
    ``adapter_options`` from ``spec.adapter_options`` itself and rejects unknown ones.
    """
    if spec.adapter is None:
        raise ValueError(f"spec '{spec.name}': has no 'adapter'; give raw CSV files to the Beam job directly")
    return get_adapter(spec.adapter)(spec, source, out_dir, **options)


def write_lines(spec: FeatureSpec, out_dir: str, filename: str, lines: Iterable[str]) -> str:
    """Writes delimited rows (with the header line when the format has one) to ``out_dir/filename``."""
    fmt = spec.raw_format
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, filename)
    with open(path, "w") as fh:
        if fmt.header:
            fh.write(fmt.delimiter.join(fmt.columns) + "\n")
        fh.write("\n".join(lines) + "\n")
    return path
