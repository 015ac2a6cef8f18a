"""SavedModel export: a fresh process that imports nothing of this project serves the Keras model's
numbers through both signatures; MLET folding; the JAX -> TensorFlow round trip; feature errors.

The session fixtures here (``eval_data``, ``exported``) are shared with tests/test_serving.py.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(__file__))
from helpers import synthetic_rows, write_data_dir  # noqa: E402

from layers import MLETEmbedding, MultiFieldEmbedding  # noqa: E402
from zoo import data, export  # noqa: E402
from zoo.c2al import C2AL  # noqa: E402
from zoo.model import PRIMARY, build  # noqa: E402
from zoo.spec import FeatureSpec, load_spec  # noqa: E402

pytestmark = pytest.mark.tf_only

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC_PATH = os.path.join(ROOT, "configs", "datasets", "synthetic.yaml")
HP = dict(num_cross_layers=2, dnn_units=[16, 8])
MIN_EVAL_ROWS = 1000


def clean_env(**extra):
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
    batches = list(data.read_split(data_dir, split, 4096, spec=spec).as_numpy_iterator())
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def raw_records(data_dir, split="test"):
    files = sorted(tf.io.gfile.glob(data.shard_pattern(data_dir, split)))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def keras_primary(model, features):
    out = model.predict(features, batch_size=1024, verbose=0)
    return np.asarray(out[PRIMARY] if isinstance(out, dict) else out).ravel()


def inputs_of(spec, batch):
    return {f.name: batch[f.name] for f in spec.inputs}


# tests/test_serving.py imports these session fixtures; pytest then holds one fixture definition per
# module, so each builds its value once through this cache and the export runs once per session.
_SESSION: dict = {}


def once(fixture):
    def wrapper(request, tmp_path_factory):
        if fixture.__name__ not in _SESSION:
            args = [request.getfixturevalue(n) for n in fixture.__code__.co_varnames[:fixture.__code__.co_argcount]
                    if n not in ("request", "tmp_path_factory")]
            _SESSION[fixture.__name__] = fixture(request, tmp_path_factory, *args)
        return _SESSION[fixture.__name__]

    wrapper.__name__ = fixture.__name__
    wrapper.__doc__ = fixture.__doc__
    return pytest.fixture(scope="session")(wrapper)


@once
def eval_data(request, tmp_path_factory):
    """Synthetic rows written as the Beam job lays them out; the test split has >= 1000 rows."""
    spec = load_spec(SPEC_PATH)
    data_dir = str(tmp_path_factory.mktemp("export_data"))
    counts = write_data_dir(spec, synthetic_rows(11_000, seed=3), data_dir)
    assert counts["test"] >= MIN_EVAL_ROWS
    return data_dir


@once
def exported(request, tmp_path_factory, eval_data):
    """A C2AL model saved as .keras and exported by the CLI (spec.json + eval rows for warm-up).

    Starts the clean-room process and ``saved_model_cli show --all`` on the export in the background.
    """
    spec = data.load_data_spec(eval_data)
    keras.utils.set_random_seed(0)
    base = build("dcnv2", spec, **HP)
    model = C2AL(base)
    work = tmp_path_factory.mktemp("exported")
    keras_path = str(work / "model.keras")
    model.save(keras_path)
    root = str(work / "saved_models")
    assert export.main(["--model", keras_path, "--spec", eval_data, "--eval-data", eval_data,
                        "--export-root", root, "--model-name", "dcnv2_synthetic", "--warmup-rows", "5",
                        "--write-model-config"]) == 0
    path = os.path.join(root, "dcnv2_synthetic", "1")
    script = work / "clean_room.py"
    script.write_text(CLEAN_ROOM)
    clean_room = Background("clean_room", [sys.executable, str(script), path, eval_data, str(work / "clean_room.json")],
                            cwd=str(work), env=clean_env())
    saved_model_cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    cli = Background("saved_model_cli", [saved_model_cli, "show", "--dir", path, "--all"],
                     cwd=str(work), env=clean_env())
    batch = eval_batch(spec, eval_data)
    features = inputs_of(spec, batch)
    request.addfinalizer(clean_room.stop)
    request.addfinalizer(cli.stop)
    return {"spec": spec, "model": model, "base": base, "root": root, "name": "dcnv2_synthetic", "path": path,
            "features": features, "expected": keras_primary(model, features), "records": raw_records(eval_data),
            "clean_room": clean_room, "clean_room_json": work / "clean_room.json", "saved_model_cli": cli}


CLEAN_ROOM = textwrap.dedent("""
    # Runs in a fresh interpreter; must not import anything of the project.
    import glob, json, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    export_dir, data_dir, out_json = sys.argv[1:4]
    loaded = tf.saved_model.load(export_dir)
    default = loaded.signatures["serving_default"]
    on_examples = loaded.signatures["predict_examples"]
    _, inputs = default.structured_input_signature
    _, example_inputs = on_examples.structured_input_signature

    # The evaluation rows as stored (label and cohort ids included), parsed with nothing but the
    # serving signature: one fixed-length feature per named input.
    files = sorted(glob.glob(data_dir + "/test/*.tfrecord.gz"))
    records = tf.constant([r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")])
    feats = tf.io.parse_example(records, {k: tf.io.FixedLenFeature(s.shape[1:], s.dtype) for k, s in inputs.items()})
    pred = default(**feats)["probability"].numpy()
    pred_examples = on_examples(examples=records)["probability"].numpy()

    # Replay the warm-up file the way TF Serving does when it loads the model.
    warmup = []
    for raw in tf.data.TFRecordDataset(export_dir + "/assets.extra/tf_serving_warmup_requests"):
        log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        request = log.predict_log.request
        arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        out = loaded.signatures[request.model_spec.signature_name](**{k: tf.constant(v) for k, v in arrays.items()})
        warmup.append({"log_type": log.WhichOneof("log_type"), "model": request.model_spec.name,
                       "signature": request.model_spec.signature_name,
                       "inputs": {k: [tf.as_dtype(v.dtype).name, list(v.shape)] for k, v in arrays.items()},
                       "rows": int(out["probability"].shape[0])})

    # Bad requests: the error must name the feature.
    numpy_feats = {k: v.numpy() for k, v in feats.items()}
    def error_of(call):
        try:
            call()
        except Exception as e:
            return type(e).__name__ + ": " + str(e)
    first = records.numpy()[0]
    example = tf.train.Example.FromString(first)
    del example.features.feature["price"]
    wrong = tf.train.Example.FromString(first)
    wrong.features.feature["item_id"].Clear()
    wrong.features.feature["item_id"].float_list.value.append(3.0)
    errors = {
        "missing": error_of(lambda: default(**{k: v for k, v in feats.items() if k != "price"})),
        "mistyped": error_of(lambda: default(**{**numpy_feats,
                                                "item_id": tf.constant(numpy_feats["item_id"], tf.float32)})),
        "wrong_shape": error_of(lambda: default(**{**numpy_feats,
                                                   "recent_categories": numpy_feats["recent_categories"][:, :3]})),
        "example_missing": error_of(lambda: on_examples(examples=tf.constant([first, example.SerializeToString()]))),
        "example_mistyped": error_of(lambda: on_examples(examples=tf.constant([wrong.SerializeToString()]))),
    }
    banned = [m for m in sys.modules if m.split(".")[0] in ("zoo", "layers", "beam_jobs", "helpers")]
    json.dump({
        "signatures": sorted(loaded.signatures),
        "pred": pred.ravel().tolist(),
        "pred_examples": pred_examples.ravel().tolist(),
        "inputs": {k: [s.dtype.name, list(s.shape)] for k, s in inputs.items()},
        "example_inputs": {k: [s.dtype.name, list(s.shape)] for k, s in example_inputs.items()},
        "outputs": {name: {k: [s.dtype.name, list(s.shape)] for k, s in fn.structured_outputs.items()}
                    for name, fn in loaded.signatures.items()},
        "params": int(sum(np.prod(v.shape) for v in loaded.variables)),
        "warmup": warmup,
        "errors": errors,
        "project_modules": banned,
    }, open(out_json, "w"))
""")


# ---------------------------------------------------------------------------------------------------
# MLET folding
# ---------------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="test_export")
class Tower(keras.layers.Layer):
    """A container that keeps its MLET table in a list, as an encoder would."""

    def __init__(self, vocab_sizes, dim, inner_dim, **kwargs):
        super().__init__(**kwargs)
        self.vocab_sizes, self.dim, self.inner_dim = list(vocab_sizes), dim, inner_dim
        self.tables = [MLETEmbedding(vocab_sizes=self.vocab_sizes, output_dim=dim, inner_dim=inner_dim, name="mlet")]
        self.dense = keras.layers.Dense(dim, name="dense")

    def build(self, input_shape):
        self.tables[0].build(list(input_shape))
        self.dense.build((None, self.dim * len(input_shape)))

    def call(self, inputs):
        looked_up = self.tables[0](inputs)
        return self.dense(keras.ops.concatenate([e[:, 0, :] for e in looked_up], axis=-1))

    def get_config(self):
        return {**super().get_config(), "vocab_sizes": self.vocab_sizes, "dim": self.dim, "inner_dim": self.inner_dim}


def mlet_model(spec, nested):
    """A functional model over the spec's inputs with an MLET table (top level or inside a layer)."""
    inputs = spec.keras_inputs()
    ids = [f for f in spec.inputs if f.kind == "categorical"]
    sizes = [f.vocab_size + 1 for f in ids]  # the OOV row becomes an ordinary id of a vocab_size+1 field
    id_inputs = [inputs[f.name] for f in ids]
    if nested:
        h = Tower(sizes, 4, 24, name="tower")(id_inputs)
    else:
        looked_up = MLETEmbedding(vocab_sizes=sizes, output_dim=4, inner_dim=24, name="mlet")(id_inputs)
        h = keras.layers.Concatenate()([keras.layers.Flatten()(e) for e in looked_up])
    dense = keras.layers.Concatenate()([inputs[f.name] for f in spec.dense])
    seq = keras.layers.Lambda(lambda s: keras.ops.cast(keras.ops.sum(keras.ops.cast(s >= 0, "int32"), axis=1,
                                                                      keepdims=True), "float32"))(
        inputs[spec.sequence[0].name])
    h = keras.layers.Concatenate()([h, dense, seq])
    logit = keras.layers.Dense(1, name="logit")(keras.layers.Dense(8, activation="relu")(h))
    prob = keras.layers.Activation("sigmoid", name=PRIMARY)(logit)
    return keras.Model(inputs, prob, name="mlet_model")


@pytest.mark.parametrize("nested", [False, True], ids=["top_level", "nested"])
def test_mlet_folded_export_equals_the_unfolded_model(tmp_path, eval_data, jax_run, exported, nested):
    # The first test of the file: requesting jax_run before exported starts the JAX process first.
    spec = exported["spec"]
    keras.utils.set_random_seed(1)
    model = mlet_model(spec, nested)
    features = exported["features"]
    expected = keras_primary(model, features)

    folded = export.fold_mlet(model)
    kinds = [type(x) for x in folded._flatten_layers()]
    assert MLETEmbedding not in kinds and MultiFieldEmbedding in kinds
    assert any(isinstance(x, MLETEmbedding) for x in model._flatten_layers())  # the input is untouched
    assert folded.count_params() < model.count_params()
    np.testing.assert_allclose(keras_primary(folded, features), expected, atol=1e-6)

    path = export.export_saved_model(model, spec, str(tmp_path), "mlet", eval_data=eval_data)
    loaded = tf.saved_model.load(path)
    assert sum(int(np.prod(v.shape)) for v in loaded.variables) == folded.count_params()
    got = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in features.items()})["probability"]
    got_examples = loaded.signatures["predict_examples"](examples=tf.constant(exported["records"]))["probability"]
    assert np.max(np.abs(got.numpy().ravel() - expected)) <= 1e-5
    assert np.max(np.abs(got_examples.numpy().ravel() - expected)) <= 1e-5


def test_zoo_mlet_model_is_served_with_plain_tables(tmp_path, exported):
    spec = exported["spec"]
    keras.utils.set_random_seed(2)
    try:
        model = C2AL(build("dcnv2", spec, embedding={"type": "mlet", "inner_dim": 24}, **HP))
    except TypeError:
        pytest.skip("zoo.model.build has no embedding option in this tree")
    plain = build("dcnv2", spec, **HP)
    path = export.export_saved_model(model, spec, str(tmp_path), "mlet_zoo")
    loaded = tf.saved_model.load(path)
    assert sum(int(np.prod(v.shape)) for v in loaded.variables) == plain.count_params()
    features = {k: v[:300] for k, v in exported["features"].items()}
    got = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in features.items()})["probability"]
    assert np.max(np.abs(got.numpy().ravel() - keras_primary(model, features))) <= 1e-5


# ---------------------------------------------------------------------------------------------------
# JAX-trained -> TensorFlow-exported
# ---------------------------------------------------------------------------------------------------
JAX_TRAIN = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    from zoo.c2al import C2AL
    from zoo.export import export_saved_model
    from zoo.model import PRIMARY, build
    from zoo.spec import load_spec

    spec_path, inputs_npz, data_dir, export_root, out_json = sys.argv[1:6]
    spec = load_spec(spec_path)
    arrays = dict(np.load(inputs_npz))
    x = {f.name: arrays[f.name] for f in spec.inputs}
    y = arrays["__label__"]
    keras.utils.set_random_seed(0)
    model = C2AL(build("dcnv2", spec, num_cross_layers=1, dnn_units=[8]))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    n = len(y) // 512 * 512  # whole batches: one compiled train step
    history = model.fit({k: v[:n] for k, v in x.items()}, {PRIMARY: y[:n], "aux_head": y[:n] * 0, "aux_tail": y[:n]},
                        epochs=1, batch_size=512, verbose=0)
    pred = np.asarray(model.predict(x, batch_size=len(y), verbose=0)[PRIMARY]).ravel()
    path = export_saved_model(model, spec, export_root, "jax_trained", eval_data=data_dir)
    json.dump({"backend": keras.backend.backend(), "path": path, "pred": pred.tolist(),
               "loss": history.history["loss"]},
              open(out_json, "w"))
""")


@once
def jax_run(request, tmp_path_factory, eval_data):
    """Starts the JAX training + export process in the background (collected by the JAX test)."""
    spec = data.load_data_spec(eval_data)
    work = tmp_path_factory.mktemp("jax")
    batch = eval_batch(spec, eval_data)
    np.savez(work / "inputs.npz", __label__=batch[spec.label], **inputs_of(spec, batch))
    (work / "jax_train.py").write_text(JAX_TRAIN)
    run = Background("jax_train", [sys.executable, str(work / "jax_train.py"), os.path.join(eval_data, "spec.json"),
                      str(work / "inputs.npz"), eval_data, str(work / "saved_models"), str(work / "out.json")],
                     cwd=str(work), env=clean_env(KERAS_BACKEND="jax", PYTHONPATH=ROOT))
    run.work = work
    request.addfinalizer(run.stop)
    return run


# ---------------------------------------------------------------------------------------------------
# Missing or mistyped features
# ---------------------------------------------------------------------------------------------------
def test_missing_or_mistyped_features_are_named(exported):
    spec, model = exported["spec"], exported["model"]
    good = {k: v[:4] for k, v in exported["features"].items()}
    cases = [
        ({k: v for k, v in good.items() if k != "price"}, r"feature 'price': missing from the request"),
        ({**good, "colour": good["price"]}, r"feature 'colour': not a serving input"),
        ({**good, "item_id": good["item_id"] + 0.5}, r"feature 'item_id': expected int64 values, got float64"),
        ({**good, "price": good["price"].astype(str)}, r"feature 'price': expected float32 values"),
        ({**good, "recent_categories": good["recent_categories"][:, :3]},
         r"feature 'recent_categories': expected shape \(batch, 8\), got \(4, 3\)"),
        ({**good, "hour": good["hour"][:2]}, r"feature 'hour': batch size 2 differs from 4"),
    ]
    for features, message in cases:
        with pytest.raises(export.FeatureError, match=message):
            export.check_features(spec, features)
        with pytest.raises(export.FeatureError, match=message):
            export.predict_request(spec, features, "m")
        with pytest.raises(export.FeatureError, match=message):
            export.serialize_examples(spec, features)
    # Keras names a missing input itself.
    with pytest.raises(ValueError, match='Missing data for input "price"'):
        model({k: tf.constant(v) for k, v in good.items() if k != "price"})

    # The served signature, called in Python: TF's binding error names the feature.
    loaded = tf.saved_model.load(exported["path"])
    fn = loaded.signatures["serving_default"]
    with pytest.raises(TypeError, match="missing a required argument: 'price'"):
        fn(**{k: tf.constant(v) for k, v in good.items() if k != "price"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        fn(**{k: tf.constant(v) for k, v in good.items()}, colour=tf.constant(good["price"]))
    with pytest.raises(TypeError, match="name='item_id'"):
        fn(**{**good, "item_id": tf.constant(good["item_id"], tf.float32)})


def test_export_refuses_a_model_that_disagrees_with_the_spec(tmp_path, exported):
    spec = exported["spec"]
    other = spec.to_dict()
    for f in other["features"]:
        if f["name"] == "recent_categories":
            f["max_length"] = 4
    with pytest.raises(export.FeatureError, match=r"feature 'recent_categories': model input is int64 \(None, 8\), "
                                                  r"the spec says int64 \(None, 4\)"):
        export.export_saved_model(exported["base"], FeatureSpec.from_dict(other), str(tmp_path), "m")
    assert not os.path.exists(tmp_path / "m" / "1")


def test_versions_increment_and_existing_versions_are_kept(tmp_path, capsys):
    spec = load_spec(SPEC_PATH)
    model = build("dcnv2", spec, num_cross_layers=1, dnn_units=[4])
    root = str(tmp_path / "saved_models")
    assert export.next_version(os.path.join(root, "m")) == 1
    first = export.export_saved_model(model, spec, root, "m", verify=False)
    os.makedirs(os.path.join(root, "m", ".tmp-7-abc"))  # staging names never count as versions
    second = export.export_saved_model(model, spec, root, "m", verify=False)
    assert (os.path.basename(first), os.path.basename(second)) == ("1", "2")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        export.export_saved_model(model, spec, root, "m", version=1)
    # The CLI refuses before it loads the model.
    assert export.main(["--model", "unused.keras", "--spec", SPEC_PATH, "--export-root", root,
                        "--model-name", "m", "--version", "2"]) == 1
    assert "m/2 exists; pass overwrite=True" in capsys.readouterr().err
    assert export.export_saved_model(model, spec, root, "m", version=1, overwrite=True, verify=False) == first
    assert sorted(os.listdir(os.path.join(root, "m"))) == [".tmp-7-abc", "1", "2"]


# ---------------------------------------------------------------------------------------------------
# Last: collect the background processes the fixtures started
# ---------------------------------------------------------------------------------------------------
def clean_room_result(exported):
    code, _, err = exported["clean_room"].result()
    assert code == 0, err[-3000:]
    return json.loads(exported["clean_room_json"].read_text())


def test_cli_export_serves_both_signatures_in_a_clean_process(exported):
    spec, path = exported["spec"], exported["path"]
    assert sorted(os.listdir(os.path.dirname(path))) == ["1"]  # no staging directory left behind
    result = clean_room_result(exported)

    assert result["project_modules"] == []
    assert result["signatures"] == sorted(export.SIGNATURES) == ["predict_examples", "serving_default"]
    expected = exported["expected"]
    assert len(expected) == len(result["pred"]) == len(result["pred_examples"]) >= MIN_EVAL_ROWS
    assert np.max(np.abs(np.array(result["pred"]) - expected)) <= 1e-5
    assert np.max(np.abs(np.array(result["pred_examples"]) - expected)) <= 1e-5
    assert result["inputs"] == {f.name: [spec.input_dtype(f), [None, *spec.input_shape(f)]] for f in spec.inputs}
    assert result["example_inputs"] == {"examples": ["string", [None]]}
    assert result["outputs"] == {name: {"probability": ["float32", [None, 1]]} for name in export.SIGNATURES}
    # The served graph is the baseline graph: the auxiliary heads are not in it.
    assert result["params"] == exported["base"].count_params() < exported["model"].count_params()

    # Warm-up: a batch and a single row per signature, with the signature's inputs.
    n = 5
    per_signature = {
        "serving_default": {f.name: [spec.input_dtype(f), list(spec.input_shape(f))] for f in spec.inputs},
        "predict_examples": {"examples": ["string", []]},
    }
    assert [(w["signature"], w["rows"]) for w in result["warmup"]] == [
        ("serving_default", n), ("serving_default", 1), ("predict_examples", n), ("predict_examples", 1)]
    for w in result["warmup"]:
        assert w["log_type"] == "predict_log" and w["model"] == "dcnv2_synthetic"
        expected_inputs = per_signature[w["signature"]]
        assert w["inputs"] == {k: [dtype, [w["rows"], *shape]] for k, (dtype, shape) in expected_inputs.items()}

    # TF's own binding errors name the feature (the part before TF's dump of every argument).
    errors = {k: v.split("Received args")[0] for k, v in result["errors"].items()}
    assert errors["missing"].startswith("TypeError") and "missing a required argument: 'price'" in errors["missing"]
    assert re.search(r"Can not cast TensorSpec\(shape=\(\d+, 1\), dtype=tf.float32, name='item_id'\)",
                     errors["mistyped"])
    assert re.search(r"Can not cast TensorSpec\(shape=\(\d+, 3\), dtype=tf.int64, name='recent_categories'\)",
                     errors["wrong_shape"])
    assert "Feature: price (data type: float) is required" in errors["example_missing"]
    assert "Key: item_id" in errors["example_mistyped"]


def test_jax_trained_model_is_exported_through_tensorflow(jax_run, exported):
    features = exported["features"]
    code, _, err = jax_run.result()
    assert code == 0, err[-3000:]
    result = json.loads((jax_run.work / "out.json").read_text())
    assert result["backend"] == "jax"
    assert result["path"] == str(jax_run.work / "saved_models" / "jax_trained" / "1")
    assert os.path.isfile(os.path.join(result["path"], export.WARMUP_FILE))

    loaded = tf.saved_model.load(result["path"])
    jax_pred = np.array(result["pred"])
    assert len(jax_pred) == len(exported["records"]) >= MIN_EVAL_ROWS
    got = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in features.items()})["probability"]
    got_examples = loaded.signatures["predict_examples"](examples=tf.constant(exported["records"]))["probability"]
    assert np.max(np.abs(got.numpy().ravel() - jax_pred)) <= 1e-5
    assert np.max(np.abs(got_examples.numpy().ravel() - jax_pred)) <= 1e-5
