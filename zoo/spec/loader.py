"""The one spec loader: a dataset YAML, a resolved ``spec.json``, or a data directory holding one.

Local paths are read with ``open``; a path with a scheme (``gs://``, ``mem://``, ...) is read
through Beam's ``FileSystems``, imported only then, so loading a local spec needs neither Beam nor
TensorFlow.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import yaml

from zoo.spec.feature_spec import FeatureSpec
from zoo.spec.schema import SpecError

SPEC_JSON = "spec.json"


def load_spec(path: str | os.PathLike) -> FeatureSpec:
    """Loads and validates a spec from a file or a data directory, local or remote.

    Args:
      path: a dataset YAML (``configs/datasets/*.yaml``), a resolved ``spec.json``, or a data
        directory written by :mod:`beam_jobs.build_tfrecords` (its ``spec.json`` is read). A path
        with a scheme such as ``gs://`` is read through ``apache_beam.io.filesystems.FileSystems``.

    Returns:
      The validated :class:`FeatureSpec`.

    Raises:
      FileNotFoundError: ``path`` does not exist, or is a directory without ``spec.json``.
      SpecError: the file is not a valid spec; the message starts with its path.
    """
    path = os.fspath(path)
    spec_file = locate_spec_file(path)
    try:
        text = _read_text(spec_file)
    except UnicodeDecodeError as err:
        raise SpecError(f"{spec_file}: not a text file ({err.reason} at byte {err.start}: not UTF-8)") from None
    try:
        raw = json.loads(text) if spec_file.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise SpecError(f"{spec_file}: not valid {'JSON' if spec_file.endswith('.json') else 'YAML'} "
                        f"({' '.join(str(err).split())})") from None
    if not isinstance(raw, Mapping):
        raise SpecError(f"{spec_file}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return FeatureSpec.from_dict(raw)
    except SpecError as err:
        raise SpecError(f"{spec_file}: {err}") from None


def _is_remote(path: str) -> bool:
    return "://" in path


def locate_spec_file(path: str | os.PathLike) -> str:
    """The spec file :func:`load_spec` reads for ``path``: the file itself, or a data directory's ``spec.json``.

    Raises:
      FileNotFoundError: ``path`` does not exist, or is a directory without ``spec.json``.
    """
    path = os.fspath(path)
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        if FileSystems.exists(path) and not path.endswith("/"):
            return path
        candidate = FileSystems.join(path, SPEC_JSON)
        if FileSystems.exists(candidate):
            return candidate
        raise FileNotFoundError(f"{path}: no spec file there, and no {SPEC_JSON} in it as a data directory")
    if os.path.isdir(path):
        candidate = os.path.join(path, SPEC_JSON)
        if not os.path.isfile(candidate):
            raise FileNotFoundError(f"{path}: data directory has no {SPEC_JSON} "
                                    "(write one with beam_jobs.build_tfrecords)")
        return candidate
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such spec file or data directory")
    return path


def _read_text(path: str) -> str:
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as fh:
            return fh.read().decode("utf-8")
    with open(path, encoding="utf-8") as fh:
        return fh.read()
