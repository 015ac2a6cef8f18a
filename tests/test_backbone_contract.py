"""The backbone contract, checked for every registered backbone with its tiny config
(``configs/models/<name>_test.yaml``): shapes, hyper-parameters declared once, ``.keras`` round
trip, every embedding option, C2AL's served graph equal to the baseline, a falling training loss and
a SavedModel serving the Keras numbers. A new backbone module is picked up here through the
registry. Run under TF and JAX (export: TF only)."""

import dataclasses
import inspect
import os

import keras
import numpy as np
import pytest

from layers import DistributedMultiFieldEmbedding, MLETEmbedding, MultiEmbedding, MultiFieldEmbedding
from zoo.backbone import LAYER_ARGUMENTS, HyperParameters
from zoo.c2al import AUX_HEAD, AUX_TAIL, C2AL, compile_model
from zoo.model import PRIMARY, build, fold_embeddings, primary_model, shared_representation
from zoo.registry import backbone_names, get_backbone

from helpers import UNIFORM, batch, spec_with, tiny_config_path, tiny_hparams  # noqa: E402  (tests/ is on sys.path)

pytestmark = pytest.mark.multi_backend

# UNIFORM: every id input at width 4 (user, item, wide, hist) plus one dense feature (price), so
# every backbone builds on it, the field-stacking ones included.
NAMES = backbone_names()
OPTIONS = [{"type": "mlet", "inner_dim": 6}, {"type": "multi", "num_sets": 2},
           {"type": "distributed"}]  # plain: every other test


def npy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def bce(y, p):
    p = np.clip(npy(p).astype("float64"), 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def make(name, spec=UNIFORM, embedding=None, **overrides):
    return build(name, spec, embedding=embedding, **{**tiny_hparams(name), **overrides})


@pytest.mark.parametrize("name", NAMES)
def test_has_a_tiny_config(name):
    assert os.path.exists(tiny_config_path(name)), f"{name}: add {tiny_config_path(name)}"
    assert tiny_hparams(name), f"{name}: its tiny config sets no hyper-parameter"


def test_a_missing_tiny_config_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match=r"^backbone 'nope' has no tiny config configs/models/nope_test.yaml"):
        tiny_hparams("nope")


@pytest.mark.parametrize("name", NAMES)
def test_hyper_parameters_are_declared_once(name):
    cls = get_backbone(name)
    params = cls.Hyperparameters
    assert dataclasses.is_dataclass(params) and issubclass(params, HyperParameters)
    # The constructor takes no hyper-parameter of its own: the dataclass is the only declaration.
    assert list(inspect.signature(cls.__init__).parameters) == ["self", "spec", "embedding", "kwargs"]
    backbone = make(name).get_layer("backbone")
    config = backbone.get_config()
    hparams = {k: v for k, v in config.items() if k not in (*LAYER_ARGUMENTS, "spec", "embedding")}
    assert list(hparams) == params.names()
    assert hparams == params(**tiny_hparams(name)).to_config()  # the tiny values, defaults for the rest
    for key, value in hparams.items():
        assert getattr(backbone, key) == value  # the attribute the backbone reads is the checked value
    assert backbone.__class__.from_config(config).get_config() == config


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_hyper_parameter_is_named(name):
    with pytest.raises(ValueError, match=rf"^colour: not a hyper-parameter of {name}; its hyper-parameters are \["):
        make(name, colour=3)


@pytest.mark.parametrize("name", NAMES)
def test_every_hyper_parameter_is_checked(name):
    """A value of no valid kind for any hyper-parameter is a ValueError that starts with its name."""
    cls = get_backbone(name)
    for key in cls.Hyperparameters.names():
        with pytest.raises(ValueError, match=rf"^{key}: "):
            cls(UNIFORM.to_dict(), **{**tiny_hparams(name), key: object()})


@pytest.mark.parametrize("name", NAMES)
def test_shapes_round_trip_and_c2al_serves_the_baseline(name, tmp_path):
    keras.utils.set_random_seed(1)
    model = make(name)
    x, _ = batch(16)
    out = npy(model(x)[PRIMARY])
    assert out.shape == (16, 1) and np.all((out > 0) & (out < 1))
    assert all(type(e) is MultiFieldEmbedding for e in model.get_layer("backbone").encoder.embedders)  # plain
    h = shared_representation(model)
    assert len(h.shape) == 2 and h.shape[0] is None and h.shape[1] >= 1
    h_width = int(h.shape[1])

    # .keras round trip: same config, same outputs.
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(npy(loaded(x)[PRIMARY]), out, atol=1e-6)
    assert loaded.get_layer("backbone").get_config() == model.get_layer("backbone").get_config()

    # C2AL: two Dense(1) heads on h; the serving graph is the baseline, weights and outputs.
    wrapped = C2AL(model)
    wrapped_out = wrapped(x)
    assert sorted(wrapped_out) == [AUX_HEAD, AUX_TAIL, PRIMARY]
    assert wrapped.count_params() == model.count_params() + 2 * (h_width + 1)
    served = primary_model(wrapped)
    assert served.count_params() == model.count_params()
    assert [w.path for w in served.weights] == [w.path for w in model.weights]
    np.testing.assert_array_equal(npy(served(x)), npy(wrapped_out[PRIMARY]))
    np.testing.assert_array_equal(npy(served(x)), out)


@pytest.mark.parametrize("name", NAMES)
def test_training_steps_lower_the_loss(name):
    keras.utils.set_random_seed(0)
    model = make(name)
    backbone = model.get_layer("backbone")
    # The attention matrices (or their MLPs) of backbones that expose them are trained too.
    attention = [w for fm in getattr(backbone, "attention_fms", []) for w in fm.weights]
    attention_before = [npy(w).copy() for w in attention]
    compile_model(model, 0.01, None)
    x, y = batch(512, seed=1)
    before = bce(y, model(x)[PRIMARY])  # eager calls: no evaluate() trace to compile
    model.fit(x, {PRIMARY: y}, epochs=4, batch_size=64, verbose=0)
    assert bce(y, model(x)[PRIMARY]) < before - 0.05
    assert all(not np.allclose(a, npy(w)) for a, w in zip(attention_before, attention))


@pytest.mark.parametrize("embedding", OPTIONS, ids=lambda o: o["type"])
@pytest.mark.parametrize("name", NAMES)
def test_every_embedding_option(name, embedding):
    keras.utils.set_random_seed(2)
    model = make(name, embedding=embedding)
    backbone = model.get_layer("backbone")
    layer_type = {"mlet": MLETEmbedding, "multi": MultiEmbedding,
                  "distributed": DistributedMultiFieldEmbedding}[embedding["type"]]
    assert backbone.encoder.embedders and all(type(e) is layer_type for e in backbone.encoder.embedders)
    x, _ = batch(16)
    out = npy(model(x)[PRIMARY])
    assert out.shape == (16, 1) and np.all(np.isfinite(out))
    assert len(backbone.interactions) == backbone.num_sets == embedding.get("num_sets", 1)
    if embedding["type"] == "multi":  # one projection per set, averaged before the over-arch
        assert len(backbone.set_projections) == 2
    if embedding["type"] in ("mlet", "distributed"):  # the tables fold into plain ones with equal outputs
        folded = fold_embeddings(model)
        assert all(type(e) is MultiFieldEmbedding for e in folded.get_layer("backbone").encoder.embedders)
        assert folded.count_params() == make(name).count_params()
        np.testing.assert_allclose(npy(folded(x)), out, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_spec_without_dense_features(name):
    model = make(name, spec=spec_with(dense=False))
    x, _ = batch(8)
    x.pop("price")
    out = npy(model(x)[PRIMARY])
    assert out.shape == (8, 1) and np.all(np.isfinite(out))


@pytest.mark.tf_only
@pytest.mark.parametrize("name", NAMES)
def test_export_serves_the_keras_numbers(name, tmp_path):
    """A C2AL-wrapped MLET model: the export folds MLET and drops the aux heads; same numbers."""
    import tensorflow as tf

    from zoo.export import OUTPUT, SIGNATURE, export_saved_model

    keras.utils.set_random_seed(4)
    model = C2AL(make(name, embedding={"type": "mlet", "inner_dim": 6}))
    path = export_saved_model(model, UNIFORM, str(tmp_path), f"{name}_tiny", verify=False)  # compared below
    x, _ = batch(64, seed=5)
    inputs = {f.name: tf.constant(x[f.name], dtype=UNIFORM.input_dtype(f)) for f in UNIFORM.inputs}
    served = tf.saved_model.load(path).signatures[SIGNATURE](**inputs)[OUTPUT].numpy()
    assert served.shape == (64, 1)
    assert float(np.max(np.abs(served - npy(model(x)[PRIMARY])))) <= 1e-5
