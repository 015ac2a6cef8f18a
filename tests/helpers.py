"""Shared test helpers: the tiny model spec and batch every model test uses, small TFRecord data
directories written straight from the spec (no Beam), and the export tests' helpers. Test modules import from here, never from
each other."""

from __future__ import annotations

import copy
import functools
import os
import subprocess

import numpy as np

from zoo.datasets.synthetic import generate
from zoo.spec import PAD_ID, SPLITS, FeatureSpec

# ---------------------------------------------------------------------------------------------------
# The tiny model spec: two widths (user/item/hist 4, wide 2), OOV ids, a hashed feature, a sequence
# sharing item's table, one dense feature and a non-input cohort feature.
# ---------------------------------------------------------------------------------------------------
SPEC = FeatureSpec.from_dict({
    "name": "tiny", "label": "y", "user_id": "user",
    "defaults": {"embedding_dim": 4},
    "features": [
        {"name": "user", "kind": "categorical", "vocab_size": 6},
        {"name": "item", "kind": "categorical", "hash_buckets": 5},
        {"name": "wide", "kind": "categorical", "vocab_size": 3, "embedding_dim": 2},
        {"name": "price", "kind": "dense"},
        {"name": "hist", "kind": "sequence", "max_length": 3, "share_embedding": "item"},
        {"name": "segment", "kind": "categorical", "vocab_size": 3, "input": False},
    ],
    "cohort_axes": [{"name": "seg", "feature": "segment", "values": {"a": [0], "b": [1]}}],
})
HP = dict(num_cross_layers=2, dnn_units=[8, 4])  # tiny DCNv2


def spec_with(width_of_wide: int = 4, dense: bool = True) -> FeatureSpec:
    """:data:`SPEC` with feature ``wide`` at another width and, with ``dense=False``, no dense feature."""
    config = SPEC.to_dict()
    features = []
    for f in config["features"]:
        if f["name"] == "wide":
            f = {**f, "embedding_dim": width_of_wide}
        if f["kind"] == "dense" and not dense:
            continue
        features.append(f)
    config["features"] = features
    config["format"] = {**config["format"], "columns": [c for c in config["format"]["columns"]
                                                        if dense or c != "price"]}
    return FeatureSpec.from_dict(config)


# SPEC with every id input at width 4 (backbones that stack the fields into one (n, d) matrix need
# one width): tokens user, item, wide, hist + the dense feature price; embedding rows user 6 + OOV,
# item 5 hashed (shared by hist), wide 3 + OOV = 16.
UNIFORM = spec_with()
DHEN_HP = dict(num_layers=2, fm_rank=3, attention_units=[6], cross_rank=3, head_units=[8, 4])
WUKONG_HP = dict(num_layers=2, num_fmb_tokens=2, num_lcb_tokens=2, fm_rank=3, fmb_units=[6], head_units=[8, 4])


def mlp_params(fan_in: int, units) -> int:
    """Parameters of a stack of Dense layers (kernel + bias) of widths ``units`` on ``fan_in`` inputs."""
    total = 0
    for width in units:
        total += fan_in * width + width
        fan_in = width
    return total


def batch(n: int = 64, seed: int = 0) -> tuple[dict, np.ndarray]:
    """A seeded batch for :data:`SPEC` (and :data:`UNIFORM`) with OOV and negative ids and padding."""
    rng = np.random.default_rng(seed)
    x = {
        "user": rng.integers(0, 8, (n, 1)),  # 6 and 7 are out of vocabulary
        "item": rng.integers(-3, 20, (n, 1)),
        "wide": rng.integers(0, 3, (n, 1)),
        "price": rng.normal(size=(n, 1)).astype("float32"),
        "hist": np.where(rng.random((n, 3)) < 0.3, PAD_ID, rng.integers(0, 9, (n, 3))),
    }
    y = (x["price"][:, 0] + 0.5 * (x["user"][:, 0] % 2) > 0.3).astype("float32")[:, None]
    return x, y


# ---------------------------------------------------------------------------------------------------
# Tiny backbone configurations
# ---------------------------------------------------------------------------------------------------
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_CONFIGS = os.path.join(ROOT, "configs", "models")


def tiny_config_path(name: str) -> str:
    """``configs/models/<name>_test.yaml``: every registered backbone ships one for the contract suite."""
    return os.path.join(MODEL_CONFIGS, f"{name}_test.yaml")


def tiny_hparams(name: str) -> dict:
    """The backbone's tiny test hyper-parameters (its ``configs/models/<name>_test.yaml``; a fresh copy).

    Raises FileNotFoundError naming the file and what to do when a registered backbone has none.
    """
    path = tiny_config_path(name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"backbone '{name}' has no tiny config {os.path.relpath(path, ROOT)}: every "
                                "registered backbone needs one (README, 'Adding a backbone')")
    return copy.deepcopy(_load_hparams(path))


@functools.lru_cache(maxsize=None)
def _load_hparams(path: str) -> dict:
    from zoo.config import load_model_config

    return load_model_config(path)["hparams"]


# ---------------------------------------------------------------------------------------------------
# TFRecord data directories
# ---------------------------------------------------------------------------------------------------


def synthetic_rows(rows: int, seed: int = 0, contrast: bool = True) -> list[dict]:
    """Parsed rows of the synthetic generator, as ``FeatureSpec.parse_raw_row`` would return them."""
    table = generate(rows=rows, seed=seed, contrast=contrast)
    recent = [[x for x in ids if x != PAD_ID] for ids in table.pop("recent_categories").tolist()]
    return [{"recent_categories": recent[i], **{k: v[i].item() for k, v in table.items()}}
            for i in range(rows)]


def write_data_dir(spec: FeatureSpec, rows: list[dict], data_dir: str) -> dict[str, int]:
    """Writes rows as the Beam job lays them out (spec.json + one GZIP shard per split)."""
    import tensorflow as tf  # the model tests above run under JAX too

    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "spec.json"), "w") as fh:
        fh.write(spec.to_json())
    counts = {}
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for split in SPLITS:
        os.makedirs(os.path.join(data_dir, split), exist_ok=True)
        path = os.path.join(data_dir, split, "part-00000-of-00001.tfrecord.gz")
        selected = [r for r in rows if spec.split_of(r) == split]
        with tf.io.TFRecordWriter(path, options) as writer:
            for r in selected:
                writer.write(spec.encode_example(r))
        counts[split] = len(selected)
    return counts


def synthetic_data_dir(tmp_path_factory, name: str, rows: int = 3000, seed: int = 1) -> str:
    """A fresh data directory (:func:`write_data_dir`) of ``rows`` synthetic rows of ``seed``."""
    from zoo.spec import load_spec

    path = str(tmp_path_factory.mktemp(name))
    write_data_dir(load_spec(os.path.join(ROOT, "configs", "datasets", "synthetic.yaml")),
                   synthetic_rows(rows, seed=seed), path)
    return path


# ---------------------------------------------------------------------------------------------------
# SavedModel export (tests/test_export.py, tests/test_serving.py; the session fixtures that use these
# live in tests/conftest.py)
# ---------------------------------------------------------------------------------------------------
def model_weights(run_dir: str) -> dict[str, np.ndarray]:
    """Every array of ``<run_dir>/model.keras`` by its HDF5 path."""
    import zipfile

    import h5py

    found = {}
    with zipfile.ZipFile(os.path.join(run_dir, "model.keras")) as archive:
        with archive.open("model.weights.h5") as raw, h5py.File(raw, "r") as h5:
            h5.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return found


SYNTHETIC_SPEC_PATH = os.path.join(ROOT, "configs", "datasets", "synthetic.yaml")
EXPORT_HP = dict(num_cross_layers=2, dnn_units=[16, 8])  # the exported DCNv2
MIN_EVAL_ROWS = 1000


# The start of every clean-room script (a fresh interpreter that imports nothing of the project, run
# as ``script EXPORT_DIR DATA_DIR OUT_JSON``): the SavedModel's two signatures and the stored test
# rows, as serialized records and as features parsed with nothing but the serving signature.
CLEAN_ROOM_PREAMBLE = """\
import glob, json, sys
import numpy as np
import tensorflow as tf

export_dir, data_dir, out_json = sys.argv[1:4]
loaded = tf.saved_model.load(export_dir)
default = loaded.signatures["serving_default"]
on_examples = loaded.signatures["predict_examples"]
_, inputs = default.structured_input_signature
files = sorted(glob.glob(data_dir + "/test/*.tfrecord.gz"))
records = tf.constant([r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")])
feats = tf.io.parse_example(records, {k: tf.io.FixedLenFeature(s.shape[1:], s.dtype) for k, s in inputs.items()})
"""


def clean_env(**extra):
    """``os.environ`` without PYTHONPATH (a process that must not see the project), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


class Background:
    """A subprocess started by a fixture and collected by a later test: the suite runs on few cores,
    and the TensorFlow imports of the clean-room, saved_model_cli and JAX processes overlap the
    in-process tests instead of adding to them. Output goes to files (a full pipe would stall it)."""

    def __init__(self, name, args, cwd, **kwargs):
        self.out_path, self.err_path = (os.path.join(cwd, f"{name}.{s}.txt") for s in ("stdout", "stderr"))
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, cwd=cwd, text=True, **kwargs)

    def result(self, timeout=300):
        """(returncode, stdout, stderr), waiting for the process to end."""
        self.proc.wait(timeout=timeout)
        with open(self.out_path) as out, open(self.err_path) as err:
            return self.proc.returncode, out.read(), err.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def eval_batch(spec, data_dir, split="test"):
    """Every row of a split as numpy, in file order (one shard)."""
    from zoo import data

    batches = list(data.read_split(data_dir, split, 4096, spec=spec).as_numpy_iterator())
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def raw_records(data_dir, split="test"):
    """The serialized records of a split, in file order."""
    import tensorflow as tf

    from zoo import data

    files = sorted(tf.io.gfile.glob(data.shard_pattern(data_dir, split)))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def keras_primary(model, features):
    """The model's primary probability as a flat array."""
    from zoo.model import PRIMARY

    out = model.predict(features, batch_size=1024, verbose=0)
    return np.asarray(out[PRIMARY] if isinstance(out, dict) else out).ravel()


def inputs_of(spec, batch):
    """The spec's input features of a batch."""
    return {f.name: batch[f.name] for f in spec.inputs}
