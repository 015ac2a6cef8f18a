"""Writing a versioned SavedModel: version directories, staged writes, verification, the JAX -> TF subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Mapping

import keras
import numpy as np

from zoo.compat import sublayers
from zoo.export.contract import (EXAMPLES_INPUT, EXAMPLES_SIGNATURE, OUTPUT, SIGNATURE, TOLERANCE,
                                 TOLERANCE_BY_COMPUTE_DTYPE, output_key)
from zoo.export.graph import finite_dense, primary_path, served_spec, serving_model, task_paths
from zoo.export.requests import serialize_examples, warmup_features, write_warmup_requests
from zoo.spec import FeatureSpec


def next_version(model_dir: str) -> int:
    """1 + the largest integer version directory under ``model_dir`` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def version_path(export_root: str, model_name: str, version: int | None, overwrite: bool) -> str:
    """``<export_root>/<model_name>/<version>`` (the next free version by default), refused if it exists."""
    model_dir = os.path.join(export_root, model_name)
    version = next_version(model_dir) if version is None else int(version)
    if version <= 0:
        raise ValueError(f"version: must be a positive integer, got {version}")
    path = os.path.join(model_dir, str(version))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or choose another version")
    return path



def export_saved_model(model: keras.Model, spec: FeatureSpec, export_root: str, model_name: str,
                       version: int | None = None, overwrite: bool = False, *,
                       eval_data: str | None = None, warmup_rows: int = 8, warmup_split: str = "test",
                       verify: bool = True) -> str:
    """Exports the served graph of ``model`` as a versioned SavedModel; returns its directory.

    Args:
      model: a ranking model, a C2AL-wrapped one, or any functional model with a layer named
        ``primary`` (or a single output) taking the spec's inputs by name.
      spec: the feature spec the model was built from (defines both signatures).
      export_root: e.g. ``saved_models``.
      model_name: directory under the root, e.g. ``dcnv2_synthetic``.
      version: integer version; default the next free one.
      overwrite: allow replacing an existing version directory.
      eval_data: a data directory (the Beam job's output) whose ``warmup_split`` supplies the
        warm-up rows; default placeholder rows from the spec.
      warmup_rows: rows per warm-up request.
      warmup_split: split of ``eval_data`` to take warm-up rows from.
      verify: reload the written SavedModel and check both signatures against the Keras model (its
        unfolded primary path) on the warm-up rows (max abs difference <= 1e-5; for a model computing
        in bfloat16 / float16, :mod:`zoo.precision`, 1e-2 / 2e-3: the eager call and the traced graph
        round 16-bit intermediates differently) before the version is moved into place.

    Under a non-TensorFlow backend the model is saved as ``.keras`` and exported by
    ``python -m zoo.export`` in a ``KERAS_BACKEND=tensorflow`` subprocess; every layer class of the
    model must then be importable and registered there (the zoo's layers and backbones are).

    A routed model's cohort feature is served even where the spec carries it (:func:`served_spec`).
    """
    spec = served_spec(model, spec)
    if keras.backend.backend() != "tensorflow":
        return _export_through_tensorflow(model, spec, export_root, model_name, version, overwrite,
                                          eval_data=eval_data, warmup_rows=warmup_rows,
                                          warmup_split=warmup_split, verify=verify)
    import tensorflow as tf

    path = version_path(export_root, model_name, version, overwrite)
    served = serving_model(model, spec)
    features = warmup_features(spec, eval_data, warmup_rows, warmup_split)
    parse_spec = spec.parse_spec("inputs")

    archive = keras.export.ExportArchive()
    archive.track(served)

    def serve(features):
        return signature_outputs(served(finite_dense(features, spec), training=False))

    def serve_examples(examples):
        return signature_outputs(served(finite_dense(tf.io.parse_example(examples, parse_spec), spec), training=False))

    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec.serving_signature()])
    archive.add_endpoint(name=EXAMPLES_SIGNATURE, fn=serve_examples,
                         input_signature=[tf.TensorSpec((None,), tf.string, name=EXAMPLES_INPUT)])

    model_dir = os.path.dirname(path)
    os.makedirs(model_dir, exist_ok=True)
    staging = os.path.join(model_dir, f".tmp-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
    try:
        archive.write_out(staging, verbose=False)
        write_warmup_requests(staging, spec, features, model_name)
        if verify:  # against the unfolded task paths: checks the MLET fold too
            _verify(staging, task_paths(model), spec, features)
        if os.path.exists(path):  # overwrite=True was checked above
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return path


def signature_outputs(result) -> dict:
    """A served model's result as signature outputs: ``{"probability": ..}`` for one output, and for
    a multi-task model one float32 ``(B, 1)`` entry per task (:func:`zoo.export.contract.output_key`)."""
    import tensorflow as tf

    if not isinstance(result, dict):
        return {OUTPUT: tf.cast(result, tf.float32)}
    return {output_key(name): tf.cast(value, tf.float32) for name, value in result.items()}


def _verify(export_dir: str, reference: keras.Model, spec: FeatureSpec, features: Mapping[str, np.ndarray]) -> None:
    import tensorflow as tf

    tolerance = verify_tolerance(reference)
    result = reference({k: tf.constant(v) for k, v in features.items()}, training=False)
    expected = {k: keras.ops.convert_to_numpy(v) for k, v in signature_outputs(result).items()}
    loaded = tf.saved_model.load(export_dir)
    got = {
        SIGNATURE: loaded.signatures[SIGNATURE](**{k: tf.constant(v) for k, v in features.items()}),
        EXAMPLES_SIGNATURE: loaded.signatures[EXAMPLES_SIGNATURE](
            **{EXAMPLES_INPUT: tf.constant(serialize_examples(spec, features))}),
    }
    for name, outputs in got.items():
        if set(outputs) != set(expected):
            raise RuntimeError(f"export: signature '{name}' has outputs {sorted(outputs)}, the Keras model "
                               f"{sorted(expected)}")
        for key, value in expected.items():
            diff = float(np.max(np.abs(outputs[key].numpy() - value)))
            if not diff <= tolerance:
                raise RuntimeError(f"export: signature '{name}' output '{key}' differs from the Keras model by "
                                   f"{diff:.3g} (> {tolerance}) on the warm-up rows")


def verify_tolerance(model: keras.Model) -> float:
    """The export check's max abs difference for ``model``: that of its least precise compute dtype
    (:data:`zoo.export.contract.TOLERANCE_BY_COMPUTE_DTYPE`; float32: 1e-5)."""
    dtypes = {str(layer.compute_dtype) for layer in sublayers(model, include_self=True) if layer.weights}
    return max(TOLERANCE_BY_COMPUTE_DTYPE.get(dtype, TOLERANCE) for dtype in dtypes | {"float32"})


def _project_root() -> str:
    import zoo

    return os.path.dirname(os.path.dirname(os.path.abspath(zoo.__file__)))


def _export_through_tensorflow(model, spec, export_root, model_name, version, overwrite, *, eval_data,
                               warmup_rows, warmup_split, verify) -> str:
    """Saves ``model`` as .keras and exports it from a ``KERAS_BACKEND=tensorflow`` subprocess."""
    path = version_path(export_root, model_name, version, overwrite)
    with tempfile.TemporaryDirectory(prefix="zoo-export-") as tmp:
        keras_path = os.path.join(tmp, "model.keras")
        spec_path = os.path.join(tmp, "spec.json")
        model.save(keras_path)
        with open(spec_path, "w") as fh:
            fh.write(spec.to_json())
        argv = ["--model", keras_path, "--spec", spec_path, "--export-root", export_root,
                "--model-name", model_name, "--version", os.path.basename(path),
                "--warmup-rows", str(warmup_rows), "--warmup-split", warmup_split]
        argv += ["--overwrite"] * bool(overwrite) + ["--no-verify"] * (not verify)
        argv += ["--eval-data", eval_data] if eval_data else []
        proc = subprocess.run([sys.executable, "-m", "zoo.export", *argv], env=tensorflow_env(),
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"export: the TensorFlow export subprocess failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return path


def tensorflow_env() -> dict[str, str]:
    """The environment of a ``KERAS_BACKEND=tensorflow`` subprocess that imports this project."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_project_root(), os.environ.get("PYTHONPATH")) if p)
    return env

