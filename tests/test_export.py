"""SavedModel export: a clean process that imports nothing of this project serves the same numbers."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from zoo.c2al import C2AL
from zoo.export import export_saved_model, next_version
from zoo.model import PRIMARY, build
from zoo.spec import load_spec

pytestmark = pytest.mark.tf_only

CLEAN_ROOM = textwrap.dedent("""
    # Runs in a fresh interpreter; must not import anything of the project.
    import json, sys
    import numpy as np
    import tensorflow as tf
    export_dir, inputs_npz, out_json = sys.argv[1:4]
    loaded = tf.saved_model.load(export_dir)
    fn = loaded.signatures["serving_default"]
    feats = dict(np.load(inputs_npz))
    _, kwargs = fn.structured_input_signature
    pred = fn(**{k: tf.constant(v, dtype=kwargs[k].dtype) for k, v in feats.items()})["probability"].numpy()
    banned = [m for m in sys.modules if m.split(".")[0] in ("zoo", "layers", "beam_jobs")]
    json.dump({
        "pred": pred.ravel().tolist(),
        "inputs": {k: [s.dtype.name, list(s.shape)] for k, s in kwargs.items()},
        "outputs": list(fn.structured_outputs),
        "params": int(sum(np.prod(v.shape) for v in loaded.variables)),
        "project_modules": banned,
    }, open(out_json, "w"))
""")


def random_features(spec, n, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for f in spec.inputs:
        if f.kind == "dense":
            out[f.name] = rng.normal(size=(n, 1)).astype("float32")
        else:
            size = f.vocab_size or f.hash_buckets
            # Include out-of-vocabulary and padding ids: serving must map them like training.
            out[f.name] = rng.integers(-1, size + 3, (n,) + spec.input_shape(f)).astype("int64")
    return out


def run_clean_room(tmp_path, export_dir, features):
    script = tmp_path / "clean_room.py"
    script.write_text(CLEAN_ROOM)
    np.savez(tmp_path / "inputs.npz", **features)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    subprocess.run([sys.executable, str(script), export_dir, str(tmp_path / "inputs.npz"), str(tmp_path / "out.json")],
                   check=True, cwd=str(tmp_path), env=env)
    return json.loads((tmp_path / "out.json").read_text())


def test_c2al_export_serves_the_primary_output_in_a_clean_process(tmp_path):
    spec = load_spec("configs/datasets/synthetic.yaml")
    keras.utils.set_random_seed(0)
    base = build("dcnv2", spec, num_cross_layers=2, deep_units=[16, 8])
    model = C2AL(base)
    features = random_features(spec, 1500)
    expected = keras.ops.convert_to_numpy(model.predict(features, batch_size=512, verbose=0)[PRIMARY]).ravel()

    path = export_saved_model(model, spec, str(tmp_path / "saved_models"), "dcnv2_synthetic")
    assert path == str(tmp_path / "saved_models" / "dcnv2_synthetic" / "1")
    result = run_clean_room(tmp_path, path, features)

    assert result["project_modules"] == []
    assert np.max(np.abs(np.array(result["pred"]) - expected)) <= 1e-5
    assert len(result["pred"]) == 1500
    assert result["outputs"] == ["probability"]
    assert result["params"] == base.count_params() < model.count_params()
    for f in spec.inputs:
        dtype = "float32" if f.kind == "dense" else "int64"
        assert result["inputs"][f.name] == [dtype, [None, *spec.input_shape(f)]]


def test_versions_increment_and_existing_versions_are_kept(tmp_path):
    spec = load_spec("configs/datasets/synthetic.yaml")
    model = build("dcnv2", spec, num_cross_layers=1, deep_units=[4])
    root = str(tmp_path / "saved_models")
    assert next_version(os.path.join(root, "m")) == 1
    first = export_saved_model(model, spec, root, "m")
    second = export_saved_model(model, spec, root, "m")
    assert (os.path.basename(first), os.path.basename(second)) == ("1", "2")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        export_saved_model(model, spec, root, "m", version=1)
    assert export_saved_model(model, spec, root, "m", version=1, overwrite=True) == first
