"""Every embedding option (plain, MLET, multi-embedding) through a backbone, C2AL and folding. TF and JAX."""

import os

import keras
import numpy as np
import pytest

from layers import MLETEmbedding, MultiEmbedding, MultiFieldEmbedding
from zoo.c2al import C2AL
from zoo.encoder import embedding_options
from zoo.model import PRIMARY, build, fold_embeddings
from zoo.c2al import compile_model

from helpers import HP, SPEC, batch  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.multi_backend

OPTIONS = [{"type": "plain"}, {"type": "mlet", "inner_dim": 6}, {"type": "multi", "num_sets": 3}]


@pytest.mark.parametrize("embedding", OPTIONS, ids=lambda o: o["type"])
def test_option_builds_trains_and_round_trips(embedding, tmp_path):
    keras.utils.set_random_seed(0)
    model = build("dcnv2", SPEC, embedding=embedding, **HP)
    layer_type = {"plain": MultiFieldEmbedding, "mlet": MLETEmbedding, "multi": MultiEmbedding}[embedding["type"]]
    assert all(type(e) is layer_type for e in model.get_layer("backbone").encoder.embedders)
    compile_model(model, 0.01, None)
    x, y = batch(512, seed=1)
    before = model.evaluate(x, {PRIMARY: y}, verbose=0, return_dict=True)["loss"]
    model.fit(x, {PRIMARY: y}, epochs=4, batch_size=64, verbose=0)
    assert model.evaluate(x, {PRIMARY: y}, verbose=0, return_dict=True)["loss"] < before - 0.05
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)[PRIMARY]),
                               keras.ops.convert_to_numpy(model(x)[PRIMARY]), atol=1e-6)
    wrapped = C2AL(model)  # the wrapper only needs h: works for every option
    assert sorted(wrapped(x)) == ["aux_head", "aux_tail", PRIMARY]


def test_multi_embedding_has_one_interaction_and_projection_per_set():
    plain = build("dcnv2", SPEC, **HP)
    multi = build("dcnv2", SPEC, embedding={"type": "multi", "num_sets": 3}, **HP)
    backbone = multi.get_layer("backbone")
    assert len(backbone.interactions) == 3 and len(backbone.set_projections) == 3
    d0, h_in = 4 * 3 + 2 + 1, 4 * 3 + 2 + 1  # cross width; projections map the cross output to itself
    embeddings = 12 * 4 + 4 * 2
    cross = 2 * (d0 * d0 + d0)
    projection = h_in * h_in + h_in
    rest = plain.count_params() - embeddings - cross  # deep over-arch + head, shared by all sets
    assert multi.count_params() == 3 * embeddings + 3 * cross + 3 * projection + rest
    # The sets start different (independent initialization), so the per-set paths differ.
    x, _ = batch(8)
    token_sets, _ = backbone.encoder(x)
    assert not np.allclose(keras.ops.convert_to_numpy(token_sets[0][0]), keras.ops.convert_to_numpy(token_sets[1][0]))


def test_mlet_folds_to_plain_tables_with_equal_outputs():
    keras.utils.set_random_seed(1)
    model = C2AL(build("dcnv2", SPEC, embedding={"type": "mlet", "inner_dim": 6}, **HP))
    compile_model(model, 0.01, {"lambda_head": 0.1, "lambda_tail": 0.1})
    x, y = batch(256, seed=3)
    model.fit(x, {PRIMARY: y, "aux_head": y, "aux_tail": y * 0}, epochs=1, batch_size=64, verbose=0)
    folded = fold_embeddings(model)
    assert all(type(e) is MultiFieldEmbedding for e in folded.get_layer("backbone").encoder.embedders)
    assert folded.count_params() == build("dcnv2", SPEC, **HP).count_params()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(folded(x)),
                               keras.ops.convert_to_numpy(model(x)[PRIMARY]), atol=1e-6)


@pytest.mark.parametrize("embedding, message", [
    ({"type": "hashed"}, "embedding: type must be one of"),
    ({"type": "mlet"}, "embedding: type 'mlet' needs a positive integer inner_dim"),
    ({"type": "mlet", "inner_dim": 4}, "embedding: MLET inner_dim 4 must exceed the embedding width 4"),
    ({"type": "multi", "num_sets": 0}, "embedding: num_sets must be a positive integer"),
    ({"type": "plain", "num_sets": 2}, "embedding: unknown option(s) ['num_sets'] for type 'plain'"),
    ({"type": "plain", "l2": -0.1}, "embedding: l2 must be a number >= 0"),
    ({"type": "plain", "l2": "big"}, "embedding: l2 must be a number >= 0"),
    ({"type": "plain", "initializer": "no_such_init"}, "embedding: initializer 'no_such_init' is not a Keras"),
])
def test_bad_embedding_options_name_the_problem(embedding, message):
    with pytest.raises(ValueError) as err:
        build("dcnv2", SPEC, embedding=embedding, **HP)
    assert message in str(err.value)
    assert embedding_options(None) == {"type": "plain"}


@pytest.mark.parametrize("kind", [{"type": "plain"}, {"type": "mlet", "inner_dim": 6}, {"type": "multi", "num_sets": 2}],
                         ids=lambda o: o["type"])
def test_l2_adds_the_whole_table_penalty_and_initializer_is_used(kind, tmp_path):
    """``l2``: the model's loss gains l2 * sum(E**2) over every full table (rows never looked up too)."""
    keras.utils.set_random_seed(2)
    init = {"class_name": "RandomNormal", "config": {"stddev": 1e-4, "seed": 5}}
    model = build("dcnv2", SPEC, embedding={**kind, "l2": 0.05, "initializer": init}, **HP)
    x, _ = batch(8)
    model(x)
    embedders = model.get_layer("backbone").encoder.embedders
    tables = [w for e in embedders for w in e.trainable_weights if w.path.endswith("embeddings")]
    assert tables
    values = np.concatenate([keras.ops.convert_to_numpy(w).ravel() for w in tables])
    assert 0 < values.std() < 3e-4  # drawn from N(0, 1e-4), not the default uniform(-0.05, 0.05)
    expected = 0.05 * sum(float(np.sum(keras.ops.convert_to_numpy(w).astype("float64") ** 2)) for w in tables)
    assert len(model.losses) == len(tables)
    np.testing.assert_allclose(sum(float(keras.ops.convert_to_numpy(v)) for v in model.losses), expected, rtol=1e-5)
    # The option survives a .keras round trip (the penalty is part of the saved config).
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded(x)
    np.testing.assert_allclose(sum(float(keras.ops.convert_to_numpy(v)) for v in loaded.losses), expected, rtol=1e-5)
