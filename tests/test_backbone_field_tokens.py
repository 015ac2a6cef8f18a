"""Known answers of the field-token backbones DLRM, DeepFM, AFM and AutoInt+: widths of ``h`` and
parameter counts (single and multi embedding sets), mixed widths refused, DLRM's cat interaction
against NumPy, the free first-order table of DeepFM and AFM against NumPy. The contract every backbone meets is tests/test_backbone_contract.py. Run under TF
and JAX."""

import keras
import numpy as np
import pytest

from layers import MultiEmbedding
from zoo.c2al import C2AL
from zoo.model import PRIMARY, build, shared_representation

from zoo.spec import PAD_ID

from helpers import SPEC, batch, mlp_params, spec_with  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.multi_backend


# helpers.SPEC with every id width 4 (these backbones need one width): fields user, item, wide,
# hist (width 4) and the dense feature price (one d-wide token, or DLRM's bottom MLP input).
USPEC = spec_with()
D, N_IDS, N_DENSE = 4, 4, 1
N_FIELDS = N_IDS + N_DENSE
EMBEDDINGS = (7 + 5 + 4) * 4  # user (6 + OOV), item (5 hashed), wide (3 + OOV) rows, width 4; hist shares item

HP = {
    "dlrm": dict(bottom_units=[8], top_units=[8, 4]),
    "deepfm": dict(dnn_units=[8, 4], dropout=0.0, first_order="tied"),
    "afm": dict(attention_dim=4, first_order="tied"),
    "autoint": dict(num_attention_layers=2, num_heads=2, attention_dim=3, dnn_units=[8, 4]),
}
BACKBONES = sorted(HP)


# (h width, backbone parameters without the embedding tables, parameters of the shared over-arch)
n_vectors = N_IDS + 1  # DLRM: z and the id embeddings
DLRM_INTERACTION = D + n_vectors * (n_vectors - 1) // 2
FIRST_ORDER = N_FIELDS * D
DENSE_TOKENS = N_DENSE * D
HEADS = 2 * 3
EXPECTED = {
    "dlrm": (4, mlp_params(1, [8, D]) + mlp_params(DLRM_INTERACTION, [8, 4]), mlp_params(DLRM_INTERACTION, [8, 4])),
    "deepfm": (1 + 4, DENSE_TOKENS + FIRST_ORDER + mlp_params(N_FIELDS * D, [8, 4]), 0),
    "afm": (D + 1, DENSE_TOKENS + (D * 4 + 4 + 4) + FIRST_ORDER, 0),
    "autoint": (N_FIELDS * HEADS + 4,
                DENSE_TOKENS + (3 * D * HEADS + D * HEADS) + 3 * HEADS * HEADS + mlp_params(N_FIELDS * D, [8, 4]), 0),
}


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("name", BACKBONES)
def test_h_width_and_parameter_count(name):
    keras.utils.set_random_seed(1)
    model = build(name, USPEC, **HP[name])
    x, _ = batch(16)
    assert _np(model(x)[PRIMARY]).shape == (16, 1)
    h_width, backbone_params, _ = EXPECTED[name]
    assert shared_representation(model).shape == (None, h_width)
    assert model.count_params() == EMBEDDINGS + backbone_params + h_width + 1
    wrapped = C2AL(model)  # two Dense(1) heads on h
    assert wrapped.count_params() == model.count_params() + 2 * (h_width + 1)


@pytest.mark.parametrize("name", BACKBONES)
def test_multi_embedding_parameter_count(name):
    keras.utils.set_random_seed(2)
    model = build(name, USPEC, embedding={"type": "multi", "num_sets": 3}, **HP[name])
    backbone = model.get_layer("backbone")
    assert all(type(e) is MultiEmbedding for e in backbone.encoder.embedders)
    h_width, backbone_params, over_arch = EXPECTED[name]
    assert shared_representation(model).shape == (None, h_width)
    # One interaction module (and projection) per set; only the over-arch and head are shared.
    assert len(backbone.interactions) == 3 and len(backbone.set_projections) == 3
    interaction = backbone_params - over_arch
    width = backbone.set_projections[0].units
    assert model.count_params() == 3 * (EMBEDDINGS + interaction + width * width + width) + over_arch + h_width + 1


@pytest.mark.parametrize("name", BACKBONES)
def test_mixed_embedding_widths_are_rejected(name):
    with pytest.raises(ValueError, match=r"^embedding_dim: .*'wide': 2"):
        build(name, SPEC, **HP[name])  # test_model's SPEC: 'wide' has width 2, the others 4


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
    assert model.count_params() == EMBEDDINGS + mlp_params(1, [8, D]) + mlp_params((N_IDS + 1) * D, [6]) + 6 + 1


# ---------------------------------------------------------------------------------------------------
# The free first-order table (first_order: table) of DeepFM and AFM
# ---------------------------------------------------------------------------------------------------
FIRST_ORDER_ROWS = 7 + 5 + 4  # one weight per embedding row (user 6 + OOV, item 5 hashed, wide 3 + OOV)


def numpy_first_order(x, table, dense_weight):
    """``sum_f w[row_f(x_f)] + w_price * price`` with the fused rows user [0, 7), item [7, 12), wide
    [12, 16); hist looks up item's rows and mean-pools over its non-padding ids (0 if none)."""
    user = np.where((x["user"] >= 0) & (x["user"] < 6), x["user"], 6)[:, 0]
    item = 7 + np.mod(x["item"], 5)[:, 0]
    wide = 12 + np.where((x["wide"] >= 0) & (x["wide"] < 3), x["wide"], 3)[:, 0]
    hist_rows = 7 + np.mod(x["hist"], 5)
    mask = (x["hist"] != PAD_ID).astype("float64")
    hist = (table[hist_rows] * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
    return table[user] + table[item] + table[wide] + hist + dense_weight * x["price"][:, 0]


@pytest.mark.parametrize("name", ["deepfm", "afm"])
def test_first_order_table_matches_numpy_and_is_the_last_column_of_h(name):
    keras.utils.set_random_seed(3)
    hp = {**HP[name], "first_order": "table"}
    model = build(name, USPEC, **hp)
    backbone = model.get_layer("backbone")
    encoder = backbone.encoder
    table = np.linspace(-0.8, 0.7, FIRST_ORDER_ROWS).astype("float32")
    encoder.first_order_table.set_weights([table[:, None]])
    encoder.first_order_dense.set_weights([np.array([[0.35]], "float32")])
    x, _ = batch(32, seed=4)
    expected = numpy_first_order(x, table.astype("float64"), 0.35)
    np.testing.assert_allclose(_np(encoder.first_order_logit(x))[:, 0], expected, rtol=1e-5, atol=1e-6)
    h = _np(backbone(x))
    np.testing.assert_allclose(h[:, -1], expected, rtol=1e-5, atol=1e-6)
    # One free weight per embedding row and per dense feature replaces the tied weights (one
    # d-vector per field), and h gains the first-order column (AFM: in place of the tied one).
    tied = build(name, USPEC, **HP[name])
    h_tied = EXPECTED[name][0]
    h_table = h_tied + (1 if name == "deepfm" else 0)
    assert shared_representation(model).shape == (None, h_table)
    assert model.count_params() == tied.count_params() - FIRST_ORDER + FIRST_ORDER_ROWS + N_DENSE + (h_table - h_tied)


@pytest.mark.parametrize("name", ["deepfm", "afm"])
def test_first_order_none_drops_the_term(name):
    model = build(name, USPEC, **{**HP[name], "first_order": "none"})
    backbone = model.get_layer("backbone")
    assert not backbone.encoder.first_order and backbone.encoder.first_order_table is None
    h_tied = EXPECTED[name][0]
    assert shared_representation(model).shape == (None, h_tied - (1 if name == "afm" else 0))
    assert model.count_params() == build(name, USPEC, **HP[name]).count_params() - FIRST_ORDER - (name == "afm")


def test_first_order_table_is_one_table_beside_multi_embedding_sets():
    model = build("afm", USPEC, embedding={"type": "multi", "num_sets": 2}, **{**HP["afm"], "first_order": "table"})
    backbone = model.get_layer("backbone")
    assert backbone.encoder.first_order_table.embeddings.shape == (FIRST_ORDER_ROWS, 1)
    assert shared_representation(model).shape == (None, D + 1)


@pytest.mark.parametrize("name", ["deepfm", "afm"])
def test_use_first_order_is_renamed(name):
    with pytest.raises(ValueError, match="use_first_order: .* calls this hyper-parameter 'first_order' now"):
        build(name, USPEC, use_first_order=True)


def test_first_order_table_takes_the_embedding_initializer_and_l2():
    embedding = {"type": "plain", "l2": 0.5, "initializer": {"class_name": "Constant", "config": {"value": 0.25}}}
    model = build("deepfm", USPEC, embedding=embedding, **{**HP["deepfm"], "first_order": "table"})
    table = model.get_layer("backbone").encoder.first_order_table
    np.testing.assert_array_equal(_np(table.embeddings), np.full((FIRST_ORDER_ROWS, 1), 0.25, "float32"))
    # l2 * sum(w ** 2) of the first-order table, as for the embedding tables.
    assert float(_np(table.embeddings_regularizer(table.embeddings))) == pytest.approx(0.5 * FIRST_ORDER_ROWS * 0.0625)
