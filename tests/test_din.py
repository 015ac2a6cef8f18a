"""DIN / DARE: the backbone's interaction output z against a NumPy forward pass (target attention over
the sequence rows, DARE's decoupled attention table, top-k, the target product), the pooling options,
the decoupling itself (the attention table learns only through the scores), parameter counts and the
spec checks of the sequence/target pairs. Run under TF and JAX."""

import math
import os
import re
import sys

import keras
import numpy as np
import pytest

from zoo.model import PRIMARY, build, interaction_output
from zoo.spec import PAD_ID, FeatureSpec

sys.path.insert(0, os.path.dirname(__file__))
from helpers import batch, mlp_params, spec_with  # noqa: E402

pytestmark = pytest.mark.multi_backend

USPEC = spec_with()  # user, item, wide, hist at width 4 (hist shares item's 5 hashed rows) and the dense price
EMBEDDINGS = (7 + 5 + 4) * 4
HP = dict(units=[6], score="dot")


def npy(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def make(**overrides):
    keras.utils.set_random_seed(3)
    return build("din", USPEC, **{**HP, **overrides})


def randomize(layer, seed):
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if w.trainable:
            w.assign((0.7 * rng.normal(size=tuple(w.shape))).astype("float32"))


def attention_np(query, keys, values, mask, top_k=None):
    """out_b = sum_j w_bj v_bj, w = softmax over the (top_k best) valid j of <q_b, k_bj> / sqrt(d); loops."""
    out = np.zeros((keys.shape[0], values.shape[-1]))
    for b in range(keys.shape[0]):
        scores = {j: float(query[b] @ keys[b, j]) / math.sqrt(keys.shape[-1])
                  for j in range(keys.shape[1]) if mask[b, j]}
        if top_k is not None:
            scores = dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k])
        if not scores:
            continue
        top = max(scores.values())
        total = sum(math.exp(s - top) for s in scores.values())
        for j, s in scores.items():
            out[b] += math.exp(s - top) / total * values[b, j]
    return out


@pytest.mark.parametrize("overrides", [
    dict(attention_tables="shared"),
    dict(attention_tables="decoupled", top_k=2, target_product=True),
    dict(attention_tables="decoupled", attention_dim=3),
], ids=["shared", "dare_top2_product", "dare_width3"])
def test_z_matches_a_numpy_forward_pass(overrides):
    model = make(**overrides)
    backbone = model.get_layer("backbone")
    randomize(backbone, 5)
    x, _ = batch(16, seed=2)
    x["hist"][0] = PAD_ID  # a row without history: its interest is zero
    (tokens,), dense, (rows,) = backbone.encoder(x, return_sequence_rows=True)
    user, item, wide = (npy(t) for t in tokens[:3])
    values = npy(rows["hist"])
    mask = x["hist"] != PAD_ID
    fused = backbone.encoder.embedders[0]  # width 4: user, item (hist's table), wide
    np.testing.assert_array_equal(values, npy(fused.embeddings)[npy(fused.rows(1, x["hist"])).astype(int)])
    table = backbone.interactions[0]["tables"][0]
    if table is None:
        query, keys = item, values
    else:
        weights = npy(table.embeddings)
        assert weights.shape == (5, overrides.get("attention_dim", 4))  # item's 5 hashed rows
        query = weights[npy(table.rows(0, x["item"][:, 0])).astype(int)]
        keys = weights[npy(table.rows(0, x["hist"])).astype(int)]
    interest = attention_np(query, keys, values, mask, overrides.get("top_k"))
    assert np.all(interest[0] == 0.0)
    parts = [user, item, wide, interest] + ([interest * item] if overrides.get("target_product") else []) + [npy(dense)]
    expected_z = np.concatenate(parts, axis=1)
    z_model = keras.Model(model.inputs, interaction_output(model))
    np.testing.assert_allclose(npy(z_model(x)), expected_z, atol=1e-5)
    h = expected_z
    for layer in backbone.mlp._dense:
        h = np.maximum(h @ npy(layer.kernel) + npy(layer.bias), 0.0)
    np.testing.assert_allclose(npy(backbone(x)), h, atol=1e-5)


def test_pooling_none_drops_the_sequence_and_mean_keeps_the_encoders_mean():
    x, _ = batch(8, seed=4)
    other = {**x, "hist": np.where(x["hist"] == PAD_ID, 1, PAD_ID)}  # every history changed
    none = make(sequence_pooling="none")
    np.testing.assert_array_equal(npy(none(x)[PRIMARY]), npy(none(other)[PRIMARY]))
    assert none.count_params() == EMBEDDINGS + mlp_params(4 * 3 + 1, [6]) + 7  # user, item, wide, price
    mean = make(sequence_pooling="mean")
    backbone = mean.get_layer("backbone")
    (tokens,), dense = backbone.encoder(x)
    expected = np.concatenate([npy(t) for t in tokens] + [npy(dense)], axis=1)  # hist's mean-pooled token in place
    np.testing.assert_allclose(npy(keras.Model(mean.inputs, interaction_output(mean))(x)), expected, atol=1e-6)
    assert not np.allclose(npy(mean(x)[PRIMARY]), npy(mean(other)[PRIMARY]))


def test_the_decoupled_attention_table_learns_through_the_scores_only():
    """With one valid item per history the softmax weight is 1 whatever the score, so the attention table
    gets no gradient (bit-identical after SGD steps) while the embeddings do; with two valid items it learns."""
    x, y = batch(64, seed=6)
    single = {**x, "hist": np.where(np.arange(3) == 1, np.abs(x["hist"][:, :1]) % 9, PAD_ID)}
    for history, learns in ((single, False), (x, True)):
        model = make(attention_tables="decoupled")
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss={PRIMARY: "binary_crossentropy"})
        backbone = model.get_layer("backbone")
        attention = backbone.interactions[0]["tables"][0].embeddings
        embeddings = backbone.encoder.embedders[0].embeddings
        before, before_embeddings = npy(attention), npy(embeddings)
        for _ in range(3):
            model.train_on_batch(history, {PRIMARY: y})
        assert np.array_equal(npy(attention), before) is not learns
        assert not np.array_equal(npy(embeddings), before_embeddings)


def test_parameter_counts_and_default_pairs():
    shared = make()
    backbone = shared.get_layer("backbone")
    assert backbone.pairs == [("hist", "item")]  # item owns the table hist shares
    z_width = 3 * 4 + 4 + 1
    assert shared.count_params() == EMBEDDINGS + mlp_params(z_width, [6]) + 7
    dare = make(attention_tables="decoupled", attention_dim=3, target_product=True)
    assert dare.count_params() == EMBEDDINGS + 5 * 3 + mlp_params(z_width + 4, [6]) + 7
    scored = make(score="mlp", attention_units=[5])
    assert scored.count_params() == shared.count_params() + mlp_params(4 * 4, [5, 1])


def no_sequence_spec():
    config = USPEC.to_dict()
    config["features"] = [f for f in config["features"] if f["kind"] != "sequence"]
    config["format"] = {**config["format"], "columns": [c for c in config["format"]["columns"] if c != "hist"]}
    return FeatureSpec.from_dict(config)


def names(argument):
    return rf"(?:^|\n|\x1b\[\d+m){re.escape(argument)}: "


@pytest.mark.parametrize("overrides, message", [
    (dict(sequence_features=["item"]), r"^sequence_features: 'item' is not a sequence input of the spec"),
    (dict(sequence_features=["hist"], target_features=["user"]), r"^target_features: 'user' must share the "
                                                                 r"embedding table of the sequence 'hist'"),
    (dict(sequence_features=["hist"], target_features=["price"]), r"^target_features: 'price' is not a categorical"),
    (dict(sequence_features=["hist"], target_features=["item", "user"]), r"^target_features: one target per sequence"),
    (dict(attention_dim=3), r"^attention_dim: sets the width of the decoupled attention table"),
    (dict(sequence_pooling="mean", top_k=2), r"^top_k: applies to sequence_pooling 'attention' only"),
    (dict(sequence_pooling="none", target_product=True), r"^target_product: applies to sequence_pooling"),
    (dict(sequence_pooling="max"), r"^sequence_pooling: "),
    (dict(top_k=0), r"^top_k: "),
])
def test_bad_hyper_parameters_name_the_argument(overrides, message):
    with pytest.raises(ValueError, match=message):
        make(**overrides)


def test_a_spec_without_a_sequence_is_refused():
    with pytest.raises(ValueError, match=r"^sequence_features: the spec has no sequence input"):
        build("din", no_sequence_spec(), **HP)
