"""Backbones DLRM, DeepFM, AFM and AutoInt+: shapes, training, round trip, embedding options, C2AL,
export, argument checks. Run under TF and JAX (export under TF only)."""

import os

import keras
import numpy as np
import pytest

from layers import MLETEmbedding, MultiEmbedding, MultiFieldEmbedding
from zoo.c2al import AUX_HEAD, AUX_TAIL, C2AL
from zoo.model import PRIMARY, build, fold_embeddings, primary_model, shared_representation
from zoo.registry import backbone_names
from zoo.spec import FeatureSpec
from zoo.c2al import compile_model

from helpers import SPEC, batch, spec_with  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.multi_backend


# test_model's SPEC with every id width 4 (these backbones need one width): fields user, item, wide,
# hist (width 4) and the dense feature price (one d-wide token, or DLRM's bottom MLP input).
USPEC = spec_with()
D, N_IDS, N_DENSE = 4, 4, 1
N_FIELDS = N_IDS + N_DENSE
EMBEDDINGS = (7 + 5 + 4) * 4  # user (6 + OOV), item (5 hashed), wide (3 + OOV) rows, width 4; hist shares item

HP = {
    "dlrm": dict(bottom_units=[8], top_units=[8, 4]),
    "deepfm": dict(dnn_units=[8, 4], dropout=0.0),
    "afm": dict(attention_dim=4),
    "autoint": dict(num_attention_layers=2, num_heads=2, attention_dim=3, dnn_units=[8, 4]),
}
BACKBONES = sorted(HP)


def _mlp(widths, fan_in):
    total = 0
    for w in widths:
        total += fan_in * w + w
        fan_in = w
    return total


# (h width, backbone parameters without the embedding tables, parameters of the shared over-arch)
n_vectors = N_IDS + 1  # DLRM: z and the id embeddings
DLRM_INTERACTION = D + n_vectors * (n_vectors - 1) // 2
FIRST_ORDER = N_FIELDS * D
DENSE_TOKENS = N_DENSE * D
HEADS = 2 * 3
EXPECTED = {
    "dlrm": (4, _mlp([8, D], 1) + _mlp([8, 4], DLRM_INTERACTION), _mlp([8, 4], DLRM_INTERACTION)),
    "deepfm": (1 + 4, DENSE_TOKENS + FIRST_ORDER + _mlp([8, 4], N_FIELDS * D), 0),
    "afm": (D + 1, DENSE_TOKENS + (D * 4 + 4 + 4) + FIRST_ORDER, 0),
    "autoint": (N_FIELDS * HEADS + 4,
                DENSE_TOKENS + (3 * D * HEADS + D * HEADS) + 3 * HEADS * HEADS + _mlp([8, 4], N_FIELDS * D), 0),
}


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _bce(y, p):
    p = np.clip(_np(p).astype("float64"), 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def test_registered():
    assert set(BACKBONES) <= set(backbone_names())


@pytest.mark.parametrize("name", BACKBONES)
def test_shapes_round_trip_and_c2al(name, tmp_path):
    keras.utils.set_random_seed(1)
    model = build(name, USPEC, **HP[name])
    x, _ = batch(16)
    out = _np(model(x)[PRIMARY])
    assert out.shape == (16, 1)
    h_width, backbone_params, _ = EXPECTED[name]
    assert shared_representation(model).shape == (None, h_width)
    assert model.count_params() == EMBEDDINGS + backbone_params + h_width + 1

    # .keras round trip: same config, same outputs.
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(loaded(x)[PRIMARY]), out, atol=1e-6)
    assert loaded.get_layer("backbone").get_config() == model.get_layer("backbone").get_config()

    # C2AL: two Dense(1) heads on h; the serving graph is the baseline, weights and outputs.
    wrapped = C2AL(model)
    wrapped_out = wrapped(x)
    assert sorted(wrapped_out) == [AUX_HEAD, AUX_TAIL, PRIMARY]
    assert wrapped.count_params() == model.count_params() + 2 * (h_width + 1)
    served = primary_model(wrapped)
    assert served.count_params() == model.count_params()
    assert [w.path for w in served.weights] == [w.path for w in model.weights]
    np.testing.assert_array_equal(_np(served(x)), _np(wrapped_out[PRIMARY]))
    np.testing.assert_array_equal(_np(served(x)), out)


@pytest.mark.parametrize("name", BACKBONES)
def test_training_steps_lower_the_loss(name):
    keras.utils.set_random_seed(0)
    model = build(name, USPEC, **HP[name])
    compile_model(model, 0.01, None)
    x, y = batch(512, seed=1)
    before = _bce(y, model(x)[PRIMARY])  # eager calls: no evaluate() trace to compile
    model.fit(x, {PRIMARY: y}, epochs=3, batch_size=128, verbose=0)
    after = _bce(y, model(x)[PRIMARY])
    assert after < before - 0.05


# plain is the default every other test builds.
OPTIONS = [{"type": "mlet", "inner_dim": 6}, {"type": "multi", "num_sets": 3}]


@pytest.mark.parametrize("embedding", OPTIONS, ids=lambda o: o["type"])
@pytest.mark.parametrize("name", BACKBONES)
def test_every_embedding_option(name, embedding):
    keras.utils.set_random_seed(2)
    model = build(name, USPEC, embedding=embedding, **HP[name])
    backbone = model.get_layer("backbone")
    layer_type = {"mlet": MLETEmbedding, "multi": MultiEmbedding}[embedding["type"]]
    assert all(type(e) is layer_type for e in backbone.encoder.embedders)
    x, _ = batch(16)
    out = _np(model(x)[PRIMARY])
    assert out.shape == (16, 1) and np.all(np.isfinite(out))
    h_width, backbone_params, over_arch = EXPECTED[name]
    assert shared_representation(model).shape == (None, h_width)
    if embedding["type"] == "multi":
        # One interaction module (and projection) per set; only the over-arch and head are shared.
        assert len(backbone.interactions) == 3 and len(backbone.set_projections) == 3
        interaction = backbone_params - over_arch
        width = backbone.set_projections[0].units
        assert model.count_params() == 3 * (EMBEDDINGS + interaction + width * width + width) + over_arch + h_width + 1
    if embedding["type"] == "mlet":
        folded = fold_embeddings(model)
        assert all(type(e) is MultiFieldEmbedding for e in folded.get_layer("backbone").encoder.embedders)
        assert folded.count_params() == build(name, USPEC, **HP[name]).count_params()
        np.testing.assert_allclose(_np(folded(x)), out, atol=1e-6)


@pytest.mark.tf_only
@pytest.mark.parametrize("name", BACKBONES)
def test_export_serves_the_keras_numbers(name, tmp_path):
    """A C2AL-wrapped MLET model: the export folds MLET and drops the aux heads; same numbers."""
    import tensorflow as tf

    from zoo.export import OUTPUT, SIGNATURE, export_saved_model

    keras.utils.set_random_seed(4)
    model = C2AL(build(name, USPEC, embedding={"type": "mlet", "inner_dim": 6}, **HP[name]))
    path = export_saved_model(model, USPEC, str(tmp_path), f"{name}_tiny", verify=False)  # compared below
    x, _ = batch(16, seed=5)
    inputs = {f.name: tf.constant(x[f.name], dtype=USPEC.input_dtype(f)) for f in USPEC.inputs}
    served = tf.saved_model.load(path).signatures[SIGNATURE](**inputs)[OUTPUT].numpy()
    expected = _np(model(x)[PRIMARY])
    assert served.shape == (16, 1)
    assert float(np.max(np.abs(served - expected))) <= 1e-5


@pytest.mark.parametrize("name", BACKBONES)
def test_spec_without_dense_features(name):
    spec = spec_with(dense=False)
    model = build(name, spec, **HP[name])
    x, _ = batch(8)
    x.pop("price")
    out = _np(model(x)[PRIMARY])
    assert out.shape == (8, 1) and np.all(np.isfinite(out))


@pytest.mark.parametrize("name", BACKBONES)
def test_mixed_embedding_widths_are_rejected(name):
    with pytest.raises(ValueError, match=r"^embedding_dim: .*'wide': 2"):
        build(name, SPEC, **HP[name])  # test_model's SPEC: 'wide' has width 2, the others 4


BAD = [
    ("dlrm", dict(bottom_units=[8, 0]), "bottom_units"),
    ("dlrm", dict(top_units="wide"), "top_units"),
    ("dlrm", dict(dropout=1.0), "dropout"),
    ("dlrm", dict(norm="group"), "norm"),
    ("dlrm", dict(interaction="sum"), "interaction"),
    ("dlrm", dict(interaction="cat", self_interaction=True), "self_interaction"),
    ("deepfm", dict(dnn_units=[-4]), "dnn_units"),
    ("deepfm", dict(dropout=-0.1), "dropout"),
    ("deepfm", dict(norm="instance"), "norm"),
    ("afm", dict(attention_dim=0), "attention_dim"),
    ("afm", dict(attention_dropout=1.5), "attention_dropout"),
    ("autoint", dict(num_attention_layers=0), "num_attention_layers"),
    ("autoint", dict(num_heads=1.5), "num_heads"),
    ("autoint", dict(attention_dim=-1), "attention_dim"),
    ("autoint", dict(dnn_units=[8, None]), "dnn_units"),
    ("autoint", dict(dropout=2), "dropout"),
]


@pytest.mark.parametrize("name, override, argument", BAD, ids=[f"{n}-{a}" for n, _, a in BAD])
def test_bad_hyper_parameters_name_the_argument(name, override, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        build(name, USPEC, **{**HP[name], **override})


def test_dlrm_cat_interaction_is_the_top_mlp_on_concatenated_vectors():
    """interaction='cat': h = TopMLP(concat(z, e_1..e_m)), checked against NumPy with the model's weights."""
    keras.utils.set_random_seed(4)
    model = build("dlrm", USPEC, bottom_units=[8], top_units=[6], interaction="cat")
    x, _ = batch(8)
    h = _np(keras.Model(model.inputs, shared_representation(model))(x))
    backbone = model.get_layer("backbone")
    tokens, dense = backbone.encoder(x)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    z = _np(dense)
    for layer in backbone.interactions[0]["bottom"]._dense:
        z = relu(z @ _np(layer.kernel) + _np(layer.bias))
    top = backbone.top._dense[0]
    expected = relu(np.concatenate([z] + [_np(t) for t in tokens[0]], axis=-1) @ _np(top.kernel) + _np(top.bias))
    np.testing.assert_allclose(h, expected, rtol=1e-5, atol=1e-6)
    # Parameters: bottom MLP [8, d], top MLP on (1 + m) * d inputs; no dot interaction layer.
    assert backbone.interactions[0]["dot"] is None
    assert model.count_params() == EMBEDDINGS + _mlp([8, D], 1) + _mlp([6], (N_IDS + 1) * D) + 6 + 1
