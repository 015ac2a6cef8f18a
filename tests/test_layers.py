"""Layers: NumPy-reference numerics, shapes, parameter counts, argument errors, serialization
(get_config, .keras, SavedModel), mixed precision and docstring examples. Run under TF and JAX."""

import os
import sys

import keras
import numpy as np
import pytest

import layers
from layers import MLP, DualEmbedding, FeatureGate, MultiFieldEmbedding
from layers import blocks as blocks_module
from layers import embeddings as embeddings_module

sys.path.insert(0, os.path.dirname(__file__))
import layer_checks  # noqa: E402

pytestmark = pytest.mark.multi_backend


def numpy_fused_lookup(table, vocab_sizes, modes, input_fields, inputs):
    """Reference: rows by the documented formula, one field at a time."""
    rows_per_field = [v + 1 if m == "vocab" else v for v, m in zip(vocab_sizes, modes)]
    offsets = np.concatenate([[0], np.cumsum(rows_per_field)[:-1]])
    out = []
    for ids, f in zip(inputs, input_fields):
        v = vocab_sizes[f]
        if modes[f] == "hash":
            rows = np.mod(ids, v)
        else:
            rows = np.where((ids >= 0) & (ids < v), ids, v)
        out.append(table[rows + offsets[f]])
    return out


EMB_KW = dict(vocab_sizes=[4, 6, 5], modes=["vocab", "hash", "vocab"], input_fields=[0, 1, 2, 2], output_dim=3)


def emb_inputs():
    return [
        np.array([[0], [3], [4], [-2]]),           # field 0 (vocab 4): 4 and -2 are OOV -> row 4
        np.array([[5], [6], [-1], [13]]),          # field 1 (hash 6): 6->0, -1->5, 13->1
        np.array([[1], [2], [9], [0]]),            # field 2 (vocab 5): 9 is OOV
        np.array([[1, 2, -1], [7, 0, 0], [4, 4, 4], [-1, -1, -1]]),  # sequence sharing field 2
    ]


def test_multi_field_embedding_matches_numpy_reference():
    layer = MultiFieldEmbedding(**EMB_KW)
    outputs = layer(emb_inputs())
    table = keras.ops.convert_to_numpy(layer.embeddings)
    expected = numpy_fused_lookup(table, **{k: EMB_KW[k] for k in ("vocab_sizes", "modes", "input_fields")},
                                  inputs=emb_inputs())
    assert [tuple(o.shape) for o in outputs] == [(4, 1, 3), (4, 1, 3), (4, 1, 3), (4, 3, 3)]
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, rtol=0, atol=0)
    # Table: 5 + 6 + 6 rows; OOV ids of field 0 hit row 4 (its own OOV row), never row 0..3 or field 1.
    assert layer.num_rows == 17 and layer.count_params() == 17 * 3
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.rows(0, np.array([4, -2, 3]))), [4, 4, 3])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.rows(1, np.array([6, -1]))), [5, 10])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.rows(2, np.array([9, 0]))), [16, 11])


def test_padded_rows_change_nothing_but_the_table_shape():
    """``row_multiple``: 17 rows padded to 20; the real rows are the unpadded draw, the padding zero,
    the lookups equal the NumPy reference and the unpadded layer's, and a training step (Adam with an
    L2 regularizer) leaves the padding at zero."""
    keras.utils.set_random_seed(11)
    plain = MultiFieldEmbedding(**EMB_KW, embeddings_regularizer="l2")
    plain(emb_inputs())
    keras.utils.set_random_seed(11)
    padded = MultiFieldEmbedding(**EMB_KW, row_multiple=4, embeddings_regularizer="l2")
    outputs = padded(emb_inputs())
    table = keras.ops.convert_to_numpy(padded.embeddings)
    assert (padded.num_rows, padded.table_rows, table.shape) == (17, 20, (20, 3))
    np.testing.assert_array_equal(table[:17], keras.ops.convert_to_numpy(plain.embeddings))
    np.testing.assert_array_equal(table[17:], np.zeros((3, 3)))
    expected = numpy_fused_lookup(table[:17], **{k: EMB_KW[k] for k in ("vocab_sizes", "modes", "input_fields")},
                                  inputs=emb_inputs())
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)
    inputs = [keras.Input((x.shape[1],), dtype="int32") for x in emb_inputs()]
    model = keras.Model(inputs, keras.ops.sum(keras.ops.concatenate(padded(inputs), axis=1), axis=(1, 2)))
    model.compile(keras.optimizers.Adam(0.1), "mse")
    model.fit(emb_inputs(), np.ones(4), epochs=2, verbose=0)
    trained = keras.ops.convert_to_numpy(padded.embeddings)
    assert not np.array_equal(trained[:17], table[:17])  # it trained
    np.testing.assert_array_equal(trained[17:], np.zeros((3, 3)))
    assert padded.get_config()["row_multiple"] == 4 and MultiFieldEmbedding(**EMB_KW, row_multiple=17).table_rows == 17
    with pytest.raises(ValueError, match=r"^row_multiple: must be a positive int, got 0$"):
        MultiFieldEmbedding(**EMB_KW, row_multiple=0)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(vocab_sizes=[], output_dim=2), "vocab_sizes"),
    (dict(vocab_sizes=[3, 0], output_dim=2), "vocab_sizes"),
    (dict(vocab_sizes=[3], output_dim=0), "output_dim"),
    (dict(vocab_sizes=[3], output_dim=2, modes=["bucket"]), "modes"),
    (dict(vocab_sizes=[3], output_dim=2, input_fields=[1]), "input_fields"),
])
def test_multi_field_embedding_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        MultiFieldEmbedding(**kwargs)


def test_dual_embedding_tables_are_independent_and_match_numpy():
    dual = DualEmbedding(vocab_sizes=[4, 6, 5], modes=["vocab", "hash", "vocab"], input_fields=[0, 1, 2, 2],
                         attention_dim=2, representation_dim=5)
    att, rep = dual(emb_inputs())
    keys = {k: EMB_KW[k] for k in ("vocab_sizes", "modes", "input_fields")}
    for outputs, table in ((att, dual.attention.embeddings), (rep, dual.representation.embeddings)):
        want = numpy_fused_lookup(keras.ops.convert_to_numpy(table), inputs=emb_inputs(), **keys)
        for got, w in zip(outputs, want):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), w)
    assert [tuple(a.shape) for a in att] == [(4, 1, 2)] * 3 + [(4, 3, 2)]
    assert [tuple(r.shape) for r in rep] == [(4, 1, 5)] * 3 + [(4, 3, 5)]
    assert dual.count_params() == 17 * (2 + 5)
    # One initializer instance for both tables must still give independent starting tables.
    shared = DualEmbedding(vocab_sizes=[50], attention_dim=4, representation_dim=4,
                           embeddings_initializer=keras.initializers.RandomNormal(seed=7))
    shared([np.array([[1]])])
    assert not np.allclose(keras.ops.convert_to_numpy(shared.attention.embeddings),
                           keras.ops.convert_to_numpy(shared.representation.embeddings))
    for argument in ("attention_dim", "representation_dim"):
        with pytest.raises(ValueError, match=argument):
            DualEmbedding(vocab_sizes=[3], **{"attention_dim": 2, "representation_dim": 2, argument: 0})


def numpy_mlp(x, dense_weights, activation=lambda v: np.maximum(v, 0)):
    for kernel, bias in dense_weights:
        x = activation(x @ kernel + bias)
    return x


def test_mlp_matches_numpy_reference():
    mlp = MLP([5, 2], activation="relu")
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    got = keras.ops.convert_to_numpy(mlp(x))
    weights = [(keras.ops.convert_to_numpy(d.kernel), keras.ops.convert_to_numpy(d.bias)) for d in mlp._dense]
    np.testing.assert_allclose(got, numpy_mlp(x, weights), rtol=1e-5, atol=1e-6)
    assert mlp.count_params() == 4 * 5 + 5 + 5 * 2 + 2


def test_mlp_layer_norm_matches_numpy_reference():
    mlp = MLP([3], activation="linear", norm="layer")
    x = np.random.default_rng(1).normal(size=(4, 2)).astype("float32")
    got = keras.ops.convert_to_numpy(mlp(x))
    d = mlp._dense[0]
    z = x @ keras.ops.convert_to_numpy(d.kernel) + keras.ops.convert_to_numpy(d.bias)
    want = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert mlp.count_params() == 2 * 3 + 3 + 2 * 3  # kernel, bias, gamma/beta


def test_mlp_batch_norm_moving_statistics_use_norm_momentum():
    """One training step moves the moving mean by (1 - momentum) * (batch mean - moving mean)."""
    mlp = MLP([3], activation="linear", norm="batch", norm_momentum=0.9)
    x = np.random.default_rng(3).normal(size=(16, 2)).astype("float32") + 2.0
    mlp(x, training=True)
    z = x @ keras.ops.convert_to_numpy(mlp._dense[0].kernel)  # no bias before batch norm
    moving_mean = keras.ops.convert_to_numpy(mlp._norms[0].moving_mean)
    np.testing.assert_allclose(moving_mean, 0.1 * z.mean(0), rtol=1e-4, atol=1e-6)
    assert MLP.from_config(mlp.get_config()).norm_momentum == 0.9


@pytest.mark.parametrize("epsilon", [None, 1e-3])
def test_mlp_batch_norm_epsilon_against_numpy(epsilon):
    """Training-mode batch norm of small pre-activations: (z - mean) / sqrt(var + eps), eps 1e-5 by default."""
    kwargs = {} if epsilon is None else {"norm_epsilon": epsilon}
    mlp = MLP([2], activation="linear", norm="batch", **kwargs)
    x = (np.random.default_rng(4).normal(size=(32, 3)) * 1e-2).astype("float32")  # var(z) ~ 1e-4
    got = keras.ops.convert_to_numpy(mlp(x, training=True)).astype("float64")
    z = x.astype("float64") @ keras.ops.convert_to_numpy(mlp._dense[0].kernel).astype("float64")
    eps = 1e-5 if epsilon is None else epsilon
    np.testing.assert_allclose(got, (z - z.mean(0)) / np.sqrt(z.var(0) + eps), rtol=1e-3, atol=1e-4)
    assert MLP.from_config(mlp.get_config()).norm_epsilon == eps


@pytest.mark.parametrize("kwargs, argument", [
    (dict(units=[]), "units"), (dict(units=[4, -1]), "units"),
    (dict(units=[4], norm="batch", norm_epsilon=0), "norm_epsilon"),
    (dict(units=[4], dropout=1.0), "dropout"), (dict(units=[4], norm="group"), "norm"),
    (dict(units=[4], norm="batch", norm_momentum=1.0), "norm_momentum"),
])
def test_mlp_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        MLP(**kwargs)


def make_embedding():
    return MultiFieldEmbedding(**EMB_KW)


def make_padded_embedding():
    return MultiFieldEmbedding(**EMB_KW, row_multiple=8)


def make_mlp():
    return MLP([4, 2], activation="gelu", dropout=0.1, norm="batch")


MLP_INPUT = np.random.default_rng(2).normal(size=(3, 5)).astype("float32")
def make_dual():
    return DualEmbedding(vocab_sizes=[4, 6, 5], modes=["vocab", "hash", "vocab"], input_fields=[0, 1, 2, 2],
                         attention_dim=2, representation_dim=3)


GATE_X = np.random.default_rng(5).normal(size=(4, 6)).astype("float32")
GATE_CONTEXT = np.random.default_rng(6).normal(size=(4, 4)).astype("float32")
CASES = [(make_embedding, emb_inputs()), (make_padded_embedding, emb_inputs()), (make_mlp, MLP_INPUT), (make_dual, emb_inputs()),
         (lambda: FeatureGate(units=[4], context_dim=3), GATE_X),              # learned context
         (lambda: FeatureGate(units=[4]), [GATE_X, GATE_CONTEXT])]            # a passed context


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
    layer_checks.check_mixed_bfloat16(make_layer, inputs)


@pytest.mark.parametrize("module", [embeddings_module, blocks_module])
def test_docstring_examples_run(module):
    layer_checks.check_docstring_examples(module)


def test_package_exports():
    assert {"DualEmbedding", "MLP", "MultiFieldEmbedding"} <= set(layers.__all__)


def test_weights_sharing_an_initializer_start_different():
    """One Keras initializer instance repeats its values for equal shapes; every layer must avoid that."""
    from layers import FieldSelfAttention, LowRankMixtureCross

    def arrays(layer):
        return {w.path.split("/")[-2] + "/" + w.name: keras.ops.convert_to_numpy(w) for w in layer.weights}

    mlp = MLP([4, 4, 4])
    mlp(np.ones((2, 4), "float32"))
    kernels = [keras.ops.convert_to_numpy(d.kernel) for d in mlp._dense]
    assert not np.allclose(kernels[1], kernels[2]) and not np.allclose(kernels[0], kernels[1])
    attention = FieldSelfAttention(num_heads=1, attention_dim=4)
    attention(np.ones((2, 3, 4), "float32"))
    q, k, v = (keras.ops.convert_to_numpy(w) for w in attention.weights[:3])
    assert not np.allclose(q, k) and not np.allclose(k, v)
    cross = LowRankMixtureCross(num_experts=2, low_rank=4)
    cross(np.ones((2, 4), "float32"))
    assert not np.allclose(keras.ops.convert_to_numpy(cross.u_kernel), keras.ops.convert_to_numpy(cross.v_kernel))
    # Seeded initializers stay reproducible.
    seeded = [MLP([4, 4], kernel_initializer=keras.initializers.GlorotUniform(seed=3)) for _ in range(2)]
    for layer in seeded:
        layer(np.ones((2, 4), "float32"))
    for a, b in zip(seeded[0]._dense, seeded[1]._dense):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a.kernel), keras.ops.convert_to_numpy(b.kernel))
