"""SavedModel export for TF Serving, and the serving snippets of the README.

``export_saved_model`` writes ``<export_root>/<model_name>/<version>/`` (integer versions, the next
free one by default; an existing version is replaced only with ``overwrite=True``) holding:

* signature ``serving_default``: one named input per spec input feature (dtype and shape from the
  spec, batch dimension None) -> ``{"probability": float32 (B, 1)}``;
* signature ``predict_examples``: ``examples``, a ``(B,)`` string batch of serialized
  ``tf.train.Example`` records, parsed with ``spec.parse_spec("inputs")`` (the reader's parse spec;
  extra keys such as the label are ignored) -> ``{"probability": float32 (B, 1)}``;
* ``assets.extra/tf_serving_warmup_requests``: TF Serving warm-up records (``PredictionLog`` with a
  ``PredictRequest`` per signature) built from a few evaluation rows.

Only the primary path is served (a C2AL model's auxiliary heads are dropped) and every
:class:`layers.MLETEmbedding` is folded into a plain table first (:func:`fold_mlet`), so the served
graph of a C2AL or MLET model is the baseline graph. The version is written to a temporary sibling
directory (a name TF Serving ignores), checked against the Keras model on the warm-up rows through
both signatures, and renamed into place, so a polling model server never sees a half-written
version. Under the JAX backend the model is saved as ``.keras`` and exported by a TensorFlow
subprocess (``python -m zoo.export``), so served artifacts never depend on the training backend or
device.

Command line::

    python -m zoo.export --model runs/synthetic/train/c2al/model.keras --spec runs/synthetic/data \\
        --eval-data runs/synthetic/data --export-root saved_models --model-name dcnv2_synthetic
    python -m zoo.export --serving-readme --spec configs/datasets/synthetic.yaml --model-name dcnv2_synthetic
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Any, Iterable, Mapping, Sequence

import keras
import numpy as np

from zoo.folding import fold_mlet
from zoo.model import PRIMARY, load_model, primary_model
from zoo.spec import PAD_ID, FeatureSpec, load_spec

SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "predict_examples"
EXAMPLES_INPUT = "examples"
OUTPUT = "probability"
SIGNATURES = (SIGNATURE, EXAMPLES_SIGNATURE)
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
SERVING_IMAGE = "tensorflow/serving:2.21.0"
TOLERANCE = 1e-5  # max abs difference between the SavedModel and the Keras model


class FeatureError(ValueError):
    """Request features do not match the spec; the message names the feature."""


# ---------------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------------
def next_version(model_dir: str) -> int:
    """1 + the largest integer version directory under ``model_dir`` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def _version_path(export_root: str, model_name: str, version: int | None, overwrite: bool) -> str:
    model_dir = os.path.join(export_root, model_name)
    version = next_version(model_dir) if version is None else int(version)
    if version <= 0:
        raise ValueError(f"version: must be a positive integer, got {version}")
    path = os.path.join(model_dir, str(version))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or choose another version")
    return path


# ---------------------------------------------------------------------------------------------------
# The served graph: primary path, MLET folded
# ---------------------------------------------------------------------------------------------------
def primary_path(model: keras.Model) -> keras.Model:
    """The model's inputs to its primary output (a single-output model without a ``primary`` layer as is)."""
    if any(layer.name == PRIMARY for layer in model.layers):
        return primary_model(model)
    if len(model.outputs) == 1:
        return model
    raise ValueError(f"export: model '{model.name}' has no layer '{PRIMARY}' and {len(model.outputs)} "
                     f"outputs; cannot tell which one to serve")


def serving_model(model: keras.Model, spec: FeatureSpec) -> keras.Model:
    """The served graph: primary path only, MLET tables folded, inputs checked against the spec."""
    served = fold_mlet(primary_path(model))
    check_model_inputs(served, spec)
    return served


def check_model_inputs(model: keras.Model, spec: FeatureSpec) -> None:
    """Raises FeatureError naming the first model input that disagrees with the spec."""
    inputs = {t.name: t for t in model.inputs}
    for f in spec.inputs:
        t = inputs.pop(f.name, None)
        if t is None:
            raise FeatureError(f"feature '{f.name}': a spec input the model does not take "
                               f"(model inputs: {sorted(x.name for x in model.inputs)})")
        want = ((None,) + spec.input_shape(f), spec.input_dtype(f))
        if (tuple(t.shape), str(t.dtype)) != want:
            raise FeatureError(f"feature '{f.name}': model input is {str(t.dtype)} {tuple(t.shape)}, "
                               f"the spec says {want[1]} {want[0]}")
    if inputs:
        name = sorted(inputs)[0]
        raise FeatureError(f"feature '{name}': a model input that is not a spec input of '{spec.name}'")


# ---------------------------------------------------------------------------------------------------
# Requests: feature checks, examples, warm-up rows
# ---------------------------------------------------------------------------------------------------
def check_features(spec: FeatureSpec, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validates a batch of request features against the spec; returns arrays in the spec dtypes.

    Every spec input must be present with shape ``(B,) + spec.input_shape(f)``; ids must be
    integers (a float id would be truncated silently by a cast), dense values numbers. Raises
    :class:`FeatureError` naming the feature otherwise.
    """
    names = [f.name for f in spec.inputs]
    missing = [n for n in names if n not in features]
    if missing:
        raise FeatureError(f"feature '{missing[0]}': missing from the request "
                           f"(missing: {missing}; required inputs: {names})")
    unknown = sorted(set(features) - set(names))
    if unknown:
        raise FeatureError(f"feature '{unknown[0]}': not a serving input of spec '{spec.name}' "
                           f"(inputs: {names})")
    out, batch = {}, None
    for f in spec.inputs:
        value = np.asarray(features[f.name])
        want = spec.input_dtype(f)
        kinds = "fiu" if f.kind == "dense" else "iu"
        if value.dtype.kind not in kinds:
            raise FeatureError(f"feature '{f.name}': expected {want} values, got {value.dtype}")
        shape = spec.input_shape(f)
        if value.ndim != 1 + len(shape) or tuple(value.shape[1:]) != shape:
            raise FeatureError(f"feature '{f.name}': expected shape (batch, {', '.join(map(str, shape))}), "
                               f"got {tuple(value.shape)}")
        if batch is None:
            batch = value.shape[0]
        elif value.shape[0] != batch:
            raise FeatureError(f"feature '{f.name}': batch size {value.shape[0]} differs from {batch}")
        out[f.name] = value.astype(want)
    return out


def serialize_examples(spec: FeatureSpec, features: Mapping[str, Any]) -> list[bytes]:
    """One serialized ``tf.train.Example`` per row with the spec's input features (deterministic bytes)."""
    from tensorflow.core.example import example_pb2

    checked = check_features(spec, features)
    rows = len(next(iter(checked.values())))
    out = []
    for i in range(rows):
        example = example_pb2.Example()
        feature = example.features.feature
        for f in spec.inputs:
            values = checked[f.name][i].tolist()
            target = feature[f.name].float_list if f.kind == "dense" else feature[f.name].int64_list
            target.value.extend(values)
        out.append(example.SerializeToString(deterministic=True))
    return out


def example_features(spec: FeatureSpec, rows: int = 2) -> dict[str, np.ndarray]:
    """Deterministic, valid placeholder rows from the spec alone (README request bodies, warm-up fallback)."""
    out = {}
    for f in spec.inputs:
        if f.kind == "dense":
            out[f.name] = np.array([[(0.5, -0.5, 1.0, -1.0)[r % 4]] for r in range(rows)], dtype="float32")
            continue
        owner = spec.feature(f.table)
        size = owner.vocab_size if owner.vocab_size is not None else owner.hash_buckets
        if f.kind == "categorical":
            out[f.name] = np.array([[(r + 1) % size] for r in range(rows)], dtype="int64")
        else:
            used = min(2, f.max_length)
            out[f.name] = np.array([[(r + 1 + j) % size for j in range(used)] + [PAD_ID] * (f.max_length - used)
                                    for r in range(rows)], dtype="int64")
    return out


def warmup_features(spec: FeatureSpec, eval_data: str | None = None, rows: int = 8,
                    split: str = "test") -> dict[str, np.ndarray]:
    """The first ``rows`` rows of an evaluation split (read with :func:`zoo.data.read_split`).

    Without ``eval_data`` the rows come from :func:`example_features` (valid ids and values, not
    real traffic).
    """
    if not eval_data:
        return example_features(spec, rows)
    from zoo import data

    ds = data.read_split(eval_data, split, rows, spec=spec).take(1)
    batch = next(iter(ds.as_numpy_iterator()), None)
    if batch is None:
        raise ValueError(f"warm-up: split '{split}' of {eval_data} has no rows")
    return check_features(spec, {f.name: batch[f.name] for f in spec.inputs})


def predict_request(spec: FeatureSpec, features: Mapping[str, Any], model_name: str,
                    signature: str = SIGNATURE):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for either signature."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if signature == SIGNATURE:
        for name, value in check_features(spec, features).items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    elif signature == EXAMPLES_SIGNATURE:
        examples = np.array(serialize_examples(spec, features), dtype=object)
        request.inputs[EXAMPLES_INPUT].CopyFrom(tf.make_tensor_proto(examples, dtype=tf.string))
    else:
        raise ValueError(f"signature '{signature}': must be one of {SIGNATURES}")
    return request


def write_warmup_requests(export_dir: str, spec: FeatureSpec, features: Mapping[str, Any],
                          model_name: str) -> str:
    """Writes ``assets.extra/tf_serving_warmup_requests``.

    Per signature, one request with every row and one with the first row.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    checked = check_features(spec, features)
    path = os.path.join(export_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature in SIGNATURES:
            for rows in (checked, {k: v[:1] for k, v in checked.items()}):
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(
                        request=predict_request(spec, rows, model_name, signature)))
                writer.write(log.SerializeToString())
    return path


# ---------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------
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
        unfolded primary path) on the warm-up rows (max abs difference <= 1e-5) before the version
        is moved into place.

    Under a non-TensorFlow backend the model is saved as ``.keras`` and exported by
    ``python -m zoo.export`` in a ``KERAS_BACKEND=tensorflow`` subprocess; every layer class of the
    model must then be importable and registered there (the zoo's layers and backbones are).
    """
    if keras.backend.backend() != "tensorflow":
        return _export_through_tensorflow(model, spec, export_root, model_name, version, overwrite,
                                          eval_data=eval_data, warmup_rows=warmup_rows,
                                          warmup_split=warmup_split, verify=verify)
    import tensorflow as tf

    path = _version_path(export_root, model_name, version, overwrite)
    served = serving_model(model, spec)
    features = warmup_features(spec, eval_data, warmup_rows, warmup_split)
    parse_spec = spec.parse_spec("inputs")

    archive = keras.export.ExportArchive()
    archive.track(served)

    def serve(features):
        return {OUTPUT: tf.cast(served(features, training=False), tf.float32)}

    def serve_examples(examples):
        return {OUTPUT: tf.cast(served(tf.io.parse_example(examples, parse_spec), training=False), tf.float32)}

    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec.serving_signature()])
    archive.add_endpoint(name=EXAMPLES_SIGNATURE, fn=serve_examples,
                         input_signature=[tf.TensorSpec((None,), tf.string, name=EXAMPLES_INPUT)])

    model_dir = os.path.dirname(path)
    os.makedirs(model_dir, exist_ok=True)
    staging = os.path.join(model_dir, f".tmp-{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
    try:
        archive.write_out(staging, verbose=False)
        write_warmup_requests(staging, spec, features, model_name)
        if verify:  # against the unfolded primary path: checks the MLET fold too
            _verify(staging, primary_path(model), spec, features)
        if os.path.exists(path):  # overwrite=True was checked above
            shutil.rmtree(path)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return path


def _verify(export_dir: str, reference: keras.Model, spec: FeatureSpec, features: Mapping[str, np.ndarray]) -> None:
    import tensorflow as tf

    expected = keras.ops.convert_to_numpy(reference({k: tf.constant(v) for k, v in features.items()}, training=False))
    loaded = tf.saved_model.load(export_dir)
    got = {
        SIGNATURE: loaded.signatures[SIGNATURE](**{k: tf.constant(v) for k, v in features.items()})[OUTPUT],
        EXAMPLES_SIGNATURE: loaded.signatures[EXAMPLES_SIGNATURE](
            **{EXAMPLES_INPUT: tf.constant(serialize_examples(spec, features))})[OUTPUT],
    }
    for name, value in got.items():
        diff = float(np.max(np.abs(value.numpy() - expected)))
        if not diff <= TOLERANCE:
            raise RuntimeError(f"export: signature '{name}' differs from the Keras model by {diff:.3g} "
                               f"(> {TOLERANCE}) on the warm-up rows")


def _project_root() -> str:
    import zoo

    return os.path.dirname(os.path.dirname(os.path.abspath(zoo.__file__)))


def _export_through_tensorflow(model, spec, export_root, model_name, version, overwrite, *, eval_data,
                               warmup_rows, warmup_split, verify) -> str:
    """Saves ``model`` as .keras and exports it from a ``KERAS_BACKEND=tensorflow`` subprocess."""
    path = _version_path(export_root, model_name, version, overwrite)
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
        proc = subprocess.run([sys.executable, "-m", "zoo.export", *argv], env=_tensorflow_env(),
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"export: the TensorFlow export subprocess failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return path


def _tensorflow_env() -> dict[str, str]:
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_project_root(), os.environ.get("PYTHONPATH")) if p)
    return env


# ---------------------------------------------------------------------------------------------------
# TF Serving snippets (README section "Serving with TF Serving")
# ---------------------------------------------------------------------------------------------------
def model_config_text(model_names: Iterable[str], base_path: str = "/models") -> str:
    """A TF Serving ``--model_config_file`` (``ModelServerConfig`` text proto) serving the latest version."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name in model_names:
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = f"{base_path}/{name}"
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = 1
    return text_format.MessageToString(config)


def docker_command(export_root: str = "saved_models", image: str = SERVING_IMAGE) -> str:
    """The ``docker run`` line serving every model listed in ``<export_root>/models.config``."""
    return "\n".join([
        "docker run --rm -p 8500:8500 -p 8501:8501 \\",
        f'    --mount type=bind,source="$PWD/{export_root}",target=/models,readonly \\',
        f"    {image} \\",
        "    --model_config_file=/models/models.config --enable_model_warmup=true",
    ])


def rest_bodies(spec: FeatureSpec, rows: int = 2) -> dict[str, str]:
    """REST ``:predict`` bodies for :func:`example_features` rows: ``row``, ``columnar`` and ``examples``."""
    features = check_features(spec, example_features(spec, rows))
    names = [f.name for f in spec.inputs]

    def dumps(value):
        return json.dumps(value, separators=(", ", ": "))

    instances = [dumps({n: features[n][r].tolist() for n in names}) for r in range(rows)]
    row = ("{\n" f'  "signature_name": "{SIGNATURE}",\n  "instances": [\n    '
           + ",\n    ".join(instances) + "\n  ]\n}")
    columns = [f'"{n}": {dumps(features[n].tolist())}' for n in names]
    columnar = ("{\n" f'  "signature_name": "{SIGNATURE}",\n  "inputs": {{\n    '
                + ",\n    ".join(columns) + "\n  }\n}")
    encoded = [dumps({EXAMPLES_INPUT: {"b64": base64.b64encode(e).decode("ascii")}})
               for e in serialize_examples(spec, features)]
    examples = ("{\n" f'  "signature_name": "{EXAMPLES_SIGNATURE}",\n  "instances": [\n    '
                + ",\n    ".join(encoded) + "\n  ]\n}")
    return {"row": row, "columnar": columnar, "examples": examples}


README_BEGIN = "<!-- serving snippets: begin (generated by python -m zoo.export --serving-readme"
README_END = "<!-- serving snippets: end -->"


def serving_readme(spec: FeatureSpec, spec_path: str, model_name: str, export_root: str = "saved_models",
                   image: str = SERVING_IMAGE) -> str:
    """The generated part of the README's "Serving with TF Serving" section, markers included."""
    bodies = rest_bodies(spec)
    url = f"localhost:8501/v1/models/{model_name}"
    return "\n".join([
        f"{README_BEGIN} --spec {spec_path} --model-name {model_name}) -->",
        f"`{export_root}/models.config` (`python -m zoo.export ... --write-model-config` writes it):",
        "",
        "```",
        model_config_text([model_name]).rstrip("\n"),
        "```",
        "",
        "```bash",
        docker_command(export_root, image),
        f"curl -s {url}/metadata                          # both signatures, dtypes and shapes",
        f"curl -s -X POST {url}:predict -d @request.json  # request.json: one of the bodies below",
        "```",
        "",
        'Row form (`instances`, one object per row; the response is `{"predictions": [[p], ...]}`):',
        "",
        "```json",
        bodies["row"],
        "```",
        "",
        'Columnar form (`inputs`, one batch per feature; the response is `{"outputs": [[p], ...]}`):',
        "",
        "```json",
        bodies["columnar"],
        "```",
        "",
        f"Serialized `tf.train.Example` rows, base64-encoded, through `{EXAMPLES_SIGNATURE}`:",
        "",
        "```json",
        bodies["examples"],
        "```",
        README_END,
    ])


def write_model_config(export_root: str, model_names: Sequence[str]) -> str:
    """Writes ``<export_root>/models.config`` for ``model_names``; returns its path."""
    os.makedirs(export_root, exist_ok=True)
    path = os.path.join(export_root, "models.config")
    with open(path, "w") as fh:
        fh.write(model_config_text(model_names))
    return path


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
def resolve_spec(path: str) -> FeatureSpec:
    """A spec from a dataset YAML, a resolved ``spec.json``, or a data directory holding ``spec.json``."""
    if os.path.isdir(path):
        path = os.path.join(path, "spec.json")
    return load_spec(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.export", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    spec_path = args.spec or args.eval_data
    if not spec_path:
        _parser().error("give --spec (or --eval-data with a spec.json)")
    spec = resolve_spec(spec_path)
    if args.serving_readme:
        if not args.model_name:
            _parser().error("--serving-readme needs --model-name")
        print(serving_readme(spec, args.spec, args.model_name, args.export_root))
        return 0
    if not args.model:
        _parser().error("give --model (a .keras file) or --serving-readme")
    try:
        if args.model_name:  # refuse before loading anything
            _version_path(args.export_root, args.model_name, args.version, args.overwrite)
        if keras.backend.backend() != "tensorflow":  # load and export under TensorFlow only
            return subprocess.call([sys.executable, "-m", "zoo.export", *argv], env=_tensorflow_env())
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
    except (FileExistsError, FeatureError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"exported {args.model} -> {os.path.abspath(path)}")
    if args.write_model_config:
        print(f"model config: {os.path.abspath(write_model_config(args.export_root, [name]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
