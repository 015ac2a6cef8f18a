"""Embedding options: MLET (factorised training tables, folded for serving) and Multi-Embedding
(independent embedding sets). NumPy-reference numerics, shapes, parameter counts, argument errors,
fold equality, serialization, mixed precision and docstring examples. Run under TF and JAX."""

import os
import sys

import keras
import numpy as np
import pytest

from layers import embeddings as embeddings_module
from layers.embeddings import MLETEmbedding, MultiEmbedding, MultiFieldEmbedding

sys.path.insert(0, os.path.dirname(__file__))
import layer_checks  # noqa: E402

pytestmark = pytest.mark.multi_backend

# Field 0: vocab 4 (rows 0..4, OOV row 4); field 1: hash 6 (rows 5..10); field 2: vocab 5 (rows 11..16).
KW = dict(vocab_sizes=[4, 6, 5], modes=["vocab", "hash", "vocab"], input_fields=[0, 1, 2, 2])
NUM_ROWS = 5 + 6 + 6
FIELD_ROWS = [(0, 5), (5, 6), (11, 6)]


def inputs():
    return [
        np.array([[0], [3], [4], [-2]]),           # field 0: 4 and -2 are OOV -> row 4
        np.array([[5], [6], [-1], [13]]),          # field 1 (hash 6): 6->0, -1->5, 13->1
        np.array([[1], [2], [9], [0]]),            # field 2: 9 is OOV
        np.array([[1, 2, -1], [7, 0, 0], [4, 4, 4], [-1, -1, -1]]),  # sequence sharing field 2
    ]


def numpy_rows(ids, field):
    """Rows by the documented mapping, written out independently of the layer."""
    size, offset = KW["vocab_sizes"][field], [0, 5, 11][field]
    if KW["modes"][field] == "hash":
        return np.mod(ids, size) + offset
    return np.where((ids >= 0) & (ids < size), ids, size) + offset


def test_numpy_rows_are_the_documented_ones():
    # Guards the reference itself with hand-computed rows.
    np.testing.assert_array_equal(numpy_rows(np.array([0, 3, 4, -2]), 0), [0, 3, 4, 4])
    np.testing.assert_array_equal(numpy_rows(np.array([5, 6, -1, 13]), 1), [10, 5, 10, 6])
    np.testing.assert_array_equal(numpy_rows(np.array([1, 9, -1]), 2), [12, 16, 16])


def np_(x):
    return keras.ops.convert_to_numpy(x)


# ----------------------------------------------------------------------------------------------------
# MLETEmbedding
# ----------------------------------------------------------------------------------------------------
def make_mlet():
    return MLETEmbedding(output_dim=3, inner_dim=7, **KW)


def mlet_reference(layer, ids_list):
    a = np_(layer.inner.embeddings).astype(np.float64)
    kernels = [np_(p.kernel).astype(np.float64) for p in layer.projections]
    return [a[numpy_rows(ids, f)] @ kernels[f] for ids, f in zip(ids_list, KW["input_fields"])]


def test_mlet_matches_numpy_reference_shapes_and_params():
    layer = make_mlet()
    outputs = layer(inputs())
    assert [tuple(o.shape) for o in outputs] == [(4, 1, 3), (4, 1, 3), (4, 1, 3), (4, 3, 3)]
    for got, want in zip(outputs, mlet_reference(layer, inputs())):
        np.testing.assert_allclose(np_(got), want, rtol=0, atol=1e-6)
    # A: rows x k; one B_f (k x d) per field, not per input (inputs 2 and 3 share field 2's B).
    assert tuple(layer.inner.embeddings.shape) == (NUM_ROWS, 7)
    assert [tuple(p.kernel.shape) for p in layer.projections] == [(7, 3)] * 3
    assert layer.num_rows == NUM_ROWS and layer.count_params() == NUM_ROWS * 7 + 3 * 7 * 3
    np.testing.assert_array_equal(np_(layer.rows(1, np.array([6, -1]))), [5, 10])
    # Per-field projections start independent and are really used per field.
    k = [np_(p.kernel) for p in layer.projections]
    assert not np.allclose(k[0], k[1]) and not np.allclose(k[1], k[2])
    assert layer.compute_output_shape([(None, 1), (None, 5)]) == [(None, 1, 3), (None, 5, 3)]


def test_mlet_fold_equals_unfolded_including_oov_and_hashed_ids():
    layer = make_mlet()
    # Non-trivial weights (as after training), so the fold cannot pass by accident.
    rng = np.random.default_rng(0)
    layer.build([(None, x.shape[1]) for x in inputs()])
    layer.inner.embeddings.assign(rng.normal(size=(NUM_ROWS, 7)).astype("float32"))
    for p in layer.projections:
        p.kernel.assign(rng.normal(size=(7, 3)).astype("float32"))
    folded = layer.fold()
    assert type(folded) is MultiFieldEmbedding
    assert folded.count_params() == NUM_ROWS * 3 and folded.output_dim == 3
    cfg, ref = folded.get_config(), layer.get_config()
    assert {k: cfg[k] for k in KW} == {k: ref[k] for k in KW} and cfg["name"] == ref["name"]
    # The folded table is A_f @ B_f per field block.
    a = np_(layer.inner.embeddings).astype(np.float64)
    want_table = np.concatenate([a[o:o + r] @ np_(layer.projections[f].kernel) for f, (o, r) in enumerate(FIELD_ROWS)])
    np.testing.assert_allclose(np_(folded.embeddings), want_table, rtol=0, atol=1e-5)
    # Outputs: every input, OOV ids (4, -2, 9, -1) and hashed ids (6, -1, 13) included.
    unfolded = layer(inputs())
    for x, y in zip(folded(inputs()), unfolded):
        assert np.max(np.abs(np_(x) - np_(y))) <= 1e-6 * max(1.0, np.max(np.abs(np_(y))))
    # With the default (small) initial weights the bound is absolute 1e-6.
    fresh = make_mlet()
    out = fresh(inputs())
    for x, y in zip(fresh.fold()(inputs()), out):
        assert np.max(np.abs(np_(x) - np_(y))) <= 1e-6


def test_mlet_fold_needs_weights():
    with pytest.raises(ValueError, match="fold"):
        make_mlet().fold()


@pytest.mark.parametrize("kwargs, argument", [
    (dict(vocab_sizes=[3], output_dim=4, inner_dim=4), "inner_dim"),
    (dict(vocab_sizes=[3], output_dim=4, inner_dim=2), "inner_dim"),
    (dict(vocab_sizes=[3], output_dim=0, inner_dim=8), "output_dim"),
    (dict(vocab_sizes=[], output_dim=2, inner_dim=8), "vocab_sizes"),
    (dict(vocab_sizes=[3, 0], output_dim=2, inner_dim=8), "vocab_sizes"),
    (dict(vocab_sizes=[3], output_dim=2, inner_dim=8, modes=["bucket"]), "modes"),
    (dict(vocab_sizes=[3], output_dim=2, inner_dim=8, input_fields=[1]), "input_fields"),
])
def test_mlet_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        MLETEmbedding(**kwargs)


# ----------------------------------------------------------------------------------------------------
# MultiEmbedding
# ----------------------------------------------------------------------------------------------------
def make_multi():
    return MultiEmbedding(num_sets=3, output_dim=2, **KW)


def test_multi_embedding_sets_are_independent_and_match_numpy():
    layer = make_multi()
    outputs = layer(inputs())
    assert len(outputs) == 3
    tables = [np_(s.embeddings) for s in layer.sets]
    for m, (set_out, table) in enumerate(zip(outputs, tables)):
        assert [tuple(o.shape) for o in set_out] == [(4, 1, 2), (4, 1, 2), (4, 1, 2), (4, 3, 2)], m
        for got, ids, f in zip(set_out, inputs(), KW["input_fields"]):
            np.testing.assert_array_equal(np_(got), table[numpy_rows(ids, f)])
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.allclose(tables[i], tables[j]), (i, j)
            assert not np.allclose(np_(outputs[i][3]), np_(outputs[j][3])), (i, j)
    assert [tuple(t.shape) for t in tables] == [(NUM_ROWS, 2)] * 3
    assert layer.count_params() == 3 * NUM_ROWS * 2 and layer.num_rows == NUM_ROWS
    np.testing.assert_array_equal(np_(layer.rows(0, np.array([4, -2]))), [4, 4])
    assert layer.compute_output_shape([(None, 1), (None, 5)]) == [[(None, 1, 2), (None, 5, 2)]] * 3


def test_multi_embedding_seeded_initializer_still_gives_distinct_reproducible_sets():
    def make():
        return MultiEmbedding(num_sets=2, vocab_sizes=[10], output_dim=4,
                              embeddings_initializer=keras.initializers.RandomNormal(seed=7))
    x = [np.array([[1, 2, 3]])]
    a, b = make(), make()
    a(x), b(x)
    ta, tb = [np_(s.embeddings) for s in a.sets], [np_(s.embeddings) for s in b.sets]
    assert not np.allclose(ta[0], ta[1])
    for u, v in zip(ta, tb):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(num_sets=0, vocab_sizes=[3], output_dim=2), "num_sets"),
    (dict(num_sets=1.5, vocab_sizes=[3], output_dim=2), "num_sets"),
    (dict(num_sets=2, vocab_sizes=[3], output_dim=0), "output_dim"),
    (dict(num_sets=2, vocab_sizes=[], output_dim=2), "vocab_sizes"),
    (dict(num_sets=2, vocab_sizes=[3], output_dim=2, modes=["bucket"]), "modes"),
    (dict(num_sets=2, vocab_sizes=[3], output_dim=2, input_fields=[2]), "input_fields"),
])
def test_multi_embedding_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        MultiEmbedding(**kwargs)


# ----------------------------------------------------------------------------------------------------
# Shared checks
# ----------------------------------------------------------------------------------------------------
CASES = [(make_mlet, inputs()), (make_multi, inputs())]


@pytest.mark.parametrize("make_layer, inputs", CASES)
def test_get_config_round_trip(make_layer, inputs):
    layer_checks.check_config_round_trip(make_layer)


@pytest.mark.parametrize("make_layer, inputs", CASES)
def test_keras_file_round_trip(make_layer, inputs, tmp_path):
    layer_checks.check_keras_round_trip(make_layer, inputs, tmp_path)


@pytest.mark.tf_only
@pytest.mark.parametrize("make_layer, inputs", CASES)
def test_saved_model_round_trip(make_layer, inputs, tmp_path):
    layer_checks.check_saved_model_round_trip(make_layer, inputs, tmp_path)


@pytest.mark.parametrize("make_layer, inputs", CASES)
def test_mixed_bfloat16_forward(make_layer, inputs):
    layer = layer_checks.check_mixed_bfloat16(make_layer, inputs)
    assert len(layer.weights) > 0


def test_mlet_fold_under_mixed_bfloat16():
    layer = layer_checks.check_mixed_bfloat16(make_mlet, inputs())
    folded = layer.fold()
    assert keras.backend.standardize_dtype(folded.embeddings.dtype) == "float32"
    out = folded(inputs())
    assert keras.backend.standardize_dtype(out[0].dtype) == "bfloat16"


def test_docstring_examples_run():
    layer_checks.check_docstring_examples(embeddings_module)
