"""SavedModel export: a fresh process that imports nothing of this project serves the Keras model's
numbers through both signatures; MLET folding; the JAX -> TensorFlow round trip; feature errors.

The session fixtures (``eval_data``, ``exported``, ``jax_run``) live in tests/conftest.py and are shared
with tests/test_serving.py.
"""

import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import EXPORT_HP as HP
from helpers import MIN_EVAL_ROWS, keras_primary
from helpers import SYNTHETIC_SPEC_PATH as SPEC_PATH

from layers import MLETEmbedding, MultiFieldEmbedding
from zoo import compat, export
from zoo.c2al import C2AL
from zoo.model import PRIMARY, build
from zoo.spec import FeatureSpec, load_spec

pytestmark = pytest.mark.tf_only


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

    folded = export.fold_tables(model)
    kinds = [type(x) for x in compat.sublayers(folded)]
    assert MLETEmbedding not in kinds and MultiFieldEmbedding in kinds
    assert any(isinstance(x, MLETEmbedding) for x in compat.sublayers(model))  # the input is untouched
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
    # The model really trains factorized tables (an ignored embedding option would make the checks
    # below hold trivially), and it is larger than the plain model the export must serve.
    model = C2AL(build("dcnv2", spec, embedding={"type": "mlet", "inner_dim": 24}, **HP))
    plain = build("dcnv2", spec, **HP)
    assert any(isinstance(x, MLETEmbedding) for x in compat.sublayers(model))
    assert not any(isinstance(x, MLETEmbedding) for x in compat.sublayers(plain))
    assert model.get_layer("backbone").count_params() != plain.get_layer("backbone").count_params()
    path = export.export_saved_model(model, spec, str(tmp_path), "mlet_zoo")
    loaded = tf.saved_model.load(path)
    assert sum(int(np.prod(v.shape)) for v in loaded.variables) == plain.count_params()
    features = {k: v[:300] for k, v in exported["features"].items()}
    got = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in features.items()})["probability"]
    assert np.max(np.abs(got.numpy().ravel() - keras_primary(model, features))) <= 1e-5


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
