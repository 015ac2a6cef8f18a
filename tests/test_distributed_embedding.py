"""layers.DistributedMultiFieldEmbedding (keras_rs.layers.DistributedEmbedding, default placement on CPU):
the plain layer's outputs with the same weights, a NumPy reference, its regularization, round trips,
the encoder's ``distributed`` embedding type and an export that serves the plain graph."""

import keras
import numpy as np
import pytest

import layer_checks
from layers import DistributedMultiFieldEmbedding, MultiFieldEmbedding
from layers import distributed_embedding as distributed_module
from zoo.encoder import embedding_options

pytestmark = pytest.mark.multi_backend

SIZES, MODES, FIELDS = [3, 5, 4], ["vocab", "hash", "vocab"], [0, 1, 2, 1]  # input 3 shares field 1 (a sequence)


def ids(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-2, 6, (n, 1)), rng.integers(-9, 12, (n, 1)), rng.integers(0, 6, (n, 1)),
            rng.integers(-9, 12, (n, 3))]


def make(**kwargs):
    return DistributedMultiFieldEmbedding(SIZES, 4, modes=MODES, input_fields=FIELDS, **kwargs)


def reference(tables, inputs):
    """NumPy: field f's local row (OOV row V_f, or v mod H_f) in its own table."""
    out = []
    for field, x in zip(FIELDS, inputs):
        size = SIZES[field]
        local = np.mod(x, size) if MODES[field] == "hash" else np.where((x >= 0) & (x < size), x, size)
        out.append(tables[field][local])
    return out


def test_outputs_equal_a_numpy_reference_and_the_plain_layer_with_the_same_weights():
    layer, x = make(), ids()
    out = layer(x)
    tables = [layer_checks.to_numpy(t) for t in layer.tables]
    assert [t.shape for t in tables] == [(4, 4), (5, 4), (5, 4)]  # V + 1 OOV row, H rows, V + 1
    for got, want in zip(out, reference(tables, x)):
        np.testing.assert_array_equal(layer_checks.to_numpy(got), want)
    plain = MultiFieldEmbedding(SIZES, 4, modes=MODES, input_fields=FIELDS)
    plain(x)
    plain.embeddings.assign(np.concatenate(tables))
    for got, want in zip(out, plain(x)):
        np.testing.assert_array_equal(layer_checks.to_numpy(got), layer_checks.to_numpy(want))
    folded = layer.fold()
    assert type(folded) is MultiFieldEmbedding and folded.name == layer.name
    for got, want in zip(folded(x), out):
        np.testing.assert_array_equal(layer_checks.to_numpy(got), layer_checks.to_numpy(want))


def test_the_regularizer_is_the_plain_layers_on_the_fused_table_and_gradients_reach_each_table():
    reg = keras.regularizers.L2(0.1)
    layer, x = make(embeddings_regularizer=reg), ids()
    layer(x)
    fused = np.concatenate([layer_checks.to_numpy(t) for t in layer.tables])
    np.testing.assert_allclose(float(sum(layer_checks.to_numpy(v) for v in layer.losses)),
                               0.1 * np.sum(fused.astype("float64") ** 2), rtol=1e-5)
    model = layer_checks.wrap(layer, x)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    before = [layer_checks.to_numpy(t).copy() for t in layer.tables]
    model.fit(x, [np.ones((6, 1, 4)), np.ones((6, 1, 4)), np.ones((6, 1, 4)), np.ones((6, 3, 4))], verbose=0)
    assert all(not np.allclose(a, layer_checks.to_numpy(t)) for a, t in zip(before, layer.tables))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"^placement: must be one of \['auto', 'sparsecore', 'default_device'\]"):
        make(placement="tpu")
    with pytest.raises(ValueError, match=r"^inputs: expected 4 tensors"):
        make()(ids()[:2])
    with pytest.raises(ValueError, match=r"^fold: the layer has no weights yet"):
        make().fold()
    with pytest.raises(ValueError, match=r"^embedding: placement must be one of"):
        embedding_options({"type": "distributed", "placement": "cpu"})
    assert embedding_options({"type": "distributed"}) == {"type": "distributed", "placement": "auto"}


def test_round_trips(tmp_path):
    x = ids()
    layer_checks.check_config_round_trip(lambda: make(placement="default_device"))
    layer_checks.check_keras_round_trip(make, x, tmp_path)
    if keras.backend.backend() == "tensorflow":
        layer_checks.check_saved_model_round_trip(make, x, tmp_path)
    layer_checks.check_mixed_bfloat16(make, x)


def test_docstring_examples_run():
    layer_checks.check_docstring_examples(distributed_module)


@pytest.mark.tf_only
def test_a_distributed_model_exports_the_plain_served_graph(tmp_path):
    import tensorflow as tf

    from helpers import UNIFORM, batch, tiny_hparams
    from zoo.c2al import C2AL
    from zoo.export import OUTPUT, SIGNATURE, export_saved_model
    from zoo.model import PRIMARY, build, fold_embeddings

    keras.utils.set_random_seed(3)
    model = C2AL(build("dcnv2", UNIFORM, embedding={"type": "distributed"}, **tiny_hparams("dcnv2")))
    keras.utils.set_random_seed(3)
    plain = build("dcnv2", UNIFORM, **tiny_hparams("dcnv2"))
    folded = fold_embeddings(model)
    assert not any(isinstance(layer, DistributedMultiFieldEmbedding)
                   for layer in folded.get_layer("backbone").encoder.embedders)
    assert folded.count_params() == plain.count_params()  # the served graph is the plain one
    path = export_saved_model(model, UNIFORM, str(tmp_path), "dcnv2_distributed")  # verify: <= 1e-5
    x, _ = batch(32, seed=6)
    served = tf.saved_model.load(path).signatures[SIGNATURE](**{k: tf.constant(v) for k, v in x.items()})
    np.testing.assert_allclose(served[OUTPUT].numpy(), layer_checks.to_numpy(model(x)[PRIMARY]), atol=1e-6)
