"""Interaction layers: NumPy-reference numerics (explicit loops over pairs / experts / fields), shapes,
parameter counts, argument errors, the AttentionFM gradient identity dL/dY = sum_b S_b^T dL/dG_b,
serialization (get_config, .keras, SavedModel), mixed precision and docstring examples. Run under TF and JAX."""

import os
import re
import sys

import keras
import numpy as np
import pytest

from layers import fusion as fusion_module
from layers import interactions as interactions_module
from layers.fusion import BilinearFusion
from layers.interactions import AFM, FM, AttentionFM, LinearCompression, LowRankMixtureCross

sys.path.insert(0, os.path.dirname(__file__))
import layer_checks  # noqa: E402

pytestmark = pytest.mark.multi_backend

B, N, D = 4, 4, 5  # the docstring examples' shapes: under JAX each new shape costs compiles


def names(argument):
    """Regex for a ValueError message naming ``argument`` first (Keras may wrap call-time errors)."""
    return rf"(?:^|\n|\x1b\[\d+m){re.escape(argument)}: "


def npy(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def field_embeddings(seed=0, b=B, n=N, d=D, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=(b, n, d))).astype("float32")


def set_weight(variable, seed):
    value = np.random.default_rng(seed).normal(size=tuple(variable.shape)).astype("float32")
    variable.assign(value)
    return value.astype("float64")


def softmax(x, axis):
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------------------------- FM

def numpy_fm(e, first_order=None, bias=None, reduce_sum=True):
    """Reference: explicit double loop over the pairs i < j."""
    b, n, d = e.shape
    out = np.zeros((b, d))
    for i in range(n):
        for j in range(i + 1, n):
            out += e[:, i, :] * e[:, j, :]
    if not reduce_sum:
        return out
    out = out.sum(axis=1, keepdims=True)             # sum_{i<j} <e_i, e_j>
    if first_order is not None:
        out += first_order.reshape(b, n).sum(axis=1, keepdims=True)
    if bias is not None:
        out += bias
    return out


def test_fm_matches_pairwise_numpy_reference():
    e = field_embeddings(0)
    w = np.random.default_rng(1).normal(size=(B, N)).astype("float32")
    fm = FM(use_bias=True)
    assert tuple(fm(e).shape) == (B, 1)
    bias = set_weight(fm.bias, 2)
    assert fm.count_params() == 1
    np.testing.assert_allclose(npy(fm(e)), numpy_fm(e, bias=bias), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(npy(fm(e, first_order=w)), numpy_fm(e, w, bias), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(npy(fm(e, first_order=w[..., None])), numpy_fm(e, w, bias), rtol=1e-5, atol=1e-5)

    plain = FM()
    np.testing.assert_allclose(npy(plain(e)), numpy_fm(e), rtol=1e-5, atol=1e-5)
    assert plain.count_params() == 0
    vector = FM(reduce_sum=False)
    out = npy(vector(e))
    assert out.shape == (B, D) and vector.count_params() == 0
    np.testing.assert_allclose(out, numpy_fm(e, reduce_sum=False), rtol=1e-5, atol=1e-5)


def test_fm_rejects_bad_arguments():
    with pytest.raises(ValueError, match=names("use_bias")):
        FM(reduce_sum=False, use_bias=True)
    e = field_embeddings(0)
    with pytest.raises(ValueError, match=names("first_order")):
        FM(reduce_sum=False)(e, first_order=np.ones((B, N), "float32"))
    with pytest.raises(ValueError, match=names("first_order")):
        FM()(e, first_order=np.ones((B, N + 1), "float32"))
    with pytest.raises(ValueError, match=names("embeddings")):
        FM()(np.ones((B, N), "float32"))


def test_fm_first_order_survives_keras_file(tmp_path):
    e_in, w_in = keras.Input((N, D)), keras.Input((N, 1))
    model = keras.Model([e_in, w_in], FM(use_bias=True, bias_initializer="ones")(e_in, first_order=w_in))
    inputs = [field_embeddings(3), np.random.default_rng(4).normal(size=(B, N, 1)).astype("float32")]
    path = os.path.join(str(tmp_path), "fm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    expected = numpy_fm(inputs[0], inputs[1], 1.0)
    np.testing.assert_allclose(npy(loaded(inputs)), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------- AttentionFM

def numpy_attention_fm(e, y):
    """Reference: S = E E^T by explicit dot products, then G = S Y (y: (n, k) or (B, n, k))."""
    b, n, _ = e.shape
    y = np.broadcast_to(y, (b,) + y.shape[-2:])
    g = np.zeros((b, n, y.shape[-1]))
    for s in range(b):
        sim = np.array([[np.dot(e[s, i], e[s, j]) for j in range(n)] for i in range(n)])
        g[s] = sim @ y[s]
    return g


def test_attention_fm_static_matches_numpy_reference():
    e = field_embeddings(0)
    layer = AttentionFM(k=2, kernel_initializer="zeros")
    layer(e)
    w = set_weight(layer.attention_matrix, 1)
    g, y = layer(e, return_attention=True)
    assert tuple(g.shape) == (B, N * 2) and tuple(y.shape) == (N, 2)
    assert layer.count_params() == N * 2
    np.testing.assert_allclose(npy(y), w, rtol=0, atol=0)
    np.testing.assert_allclose(npy(g), numpy_attention_fm(e, w).reshape(B, N * 2), rtol=1e-5, atol=1e-5)

    normed = AttentionFM(k=2, normalize="softmax", flatten=False, kernel_initializer="zeros")
    normed(e)
    w = set_weight(normed.attention_matrix, 2)
    g, y = normed(e, return_attention=True)
    assert tuple(g.shape) == (B, N, 2)
    np.testing.assert_allclose(npy(y), softmax(w, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(npy(g), numpy_attention_fm(e, softmax(w, axis=0)), rtol=1e-5, atol=1e-5)


def test_attention_fm_dynamic_matches_numpy_reference():
    e = field_embeddings(5)
    k, hidden = 2, 8
    layer = AttentionFM(k=k, mode="dynamic", normalize="softmax", hidden_units=[hidden], flatten=False,
                        kernel_initializer="zeros")
    layer(e)
    dense = (layer._mlp._dense[0], layer._logits)
    (k1, b1), (k2, b2) = [(set_weight(d.kernel, 40 + i), set_weight(d.bias, 50 + i)) for i, d in enumerate(dense)]
    g, y = layer(e, return_attention=True)
    h = np.maximum(e.reshape(B, N * D) @ k1 + b1, 0)
    y_ref = softmax((h @ k2 + b2).reshape(B, N, k), axis=1)
    assert tuple(g.shape) == (B, N, k) and tuple(y.shape) == (B, N, k)
    np.testing.assert_allclose(npy(y), y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(npy(y).sum(axis=1), np.ones((B, k)), atol=1e-5)
    np.testing.assert_allclose(npy(g), numpy_attention_fm(e, y_ref), rtol=1e-5, atol=1e-5)
    assert layer.count_params() == (N * D * hidden + hidden) + (hidden * N * k + N * k)

    linear = AttentionFM(k=k, mode="dynamic", hidden_units=[], kernel_initializer="zeros")  # linear map, no softmax
    linear(e)
    kernel, bias = set_weight(linear._logits.kernel, 60), set_weight(linear._logits.bias, 61)
    g = linear(e)
    y_ref = (e.reshape(B, N * D) @ kernel + bias).reshape(B, N, k)
    np.testing.assert_allclose(npy(g), numpy_attention_fm(e, y_ref).reshape(B, N * k), rtol=1e-5, atol=1e-5)
    assert linear.count_params() == N * D * N * k + N * k


@pytest.mark.parametrize("kwargs, argument", [
    (dict(k=0), "k"), (dict(k=None), "k"), (dict(k=2, mode="adaptive"), "mode"),
    (dict(k=2, normalize="sigmoid"), "normalize"), (dict(k=2, mode="dynamic", hidden_units=[4, 0]), "hidden_units"),
])
def test_attention_fm_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=names(argument)):
        AttentionFM(**kwargs)


def test_attention_fm_rejects_non_field_input():
    with pytest.raises(ValueError, match=names("embeddings")):
        AttentionFM(k=2)(np.ones((B, N), "float32"))


def gradients_wrt_trainables(layer, inputs, loss_of_output):
    """d loss(layer(inputs)) / d layer.trainable_variables, by the active backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_of_output(layer(inputs))
        return [npy(g) for g in tape.gradient(loss, layer.trainable_variables)]
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(values):
            outputs, _ = layer.stateless_call(values, non_trainable, inputs)
            return loss_of_output(outputs)

        return [npy(g) for g in jax.grad(loss_fn)(trainable)]
    pytest.skip(f"no gradient helper for backend {backend}")


def test_attention_fm_gradient_wrt_y_is_s_transpose_times_dl_dg():
    """docs/methods.md#attention-fm: G = S Y is linear in Y, so dL/dY = sum_b S_b^T dL/dG_b with S_b = E_b E_b^T."""
    e = field_embeddings(6, scale=0.5)
    layer = AttentionFM(k=2, flatten=False, kernel_initializer="zeros")
    layer(e)
    y = set_weight(layer.attention_matrix, 7)
    r = np.random.default_rng(8).normal(size=(B, N, 2)).astype("float32")

    def loss(g):  # L = 1/2 ||G||^2 + <G, R>   ->   dL/dG = G + R
        return 0.5 * keras.ops.sum(keras.ops.square(g)) + keras.ops.sum(g * r)

    (grad_y,) = gradients_wrt_trainables(layer, e, loss)
    e64 = e.astype("float64")
    sim = np.einsum("bnd,bmd->bnm", e64, e64)
    dl_dg = sim @ y + r
    expected = np.einsum("bmn,bmk->nk", sim, dl_dg)    # sum_b S_b^T dL/dG_b
    assert grad_y.shape == (N, 2)
    np.testing.assert_allclose(grad_y, expected, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------- AFM

def numpy_afm(e, kernel, bias, h, p=None):
    """Reference: explicit loop over the pairs i < j, softmax over the pairs, attention pooling."""
    b, n, d = e.shape
    products, scores = [], []
    for i in range(n):
        for j in range(i + 1, n):
            pij = e[:, i, :] * e[:, j, :]                           # (B, d)
            products.append(pij)
            scores.append(np.maximum(pij @ kernel + bias, 0) @ h)   # (B,)
    a = softmax(np.stack(scores, axis=1), axis=1)                   # (B, P)
    pooled = sum(a[:, t:t + 1] * products[t] for t in range(len(products)))
    return (pooled if p is None else (pooled @ p)[:, None]), a


def test_afm_matches_pairwise_numpy_reference():
    e = field_embeddings(9)
    layer = AFM(attention_dim=4, attention_dropout=0.5, kernel_initializer="zeros")
    layer(e)
    weights = [set_weight(v, 10 + i) for i, v in enumerate(
        (layer.attention_kernel, layer.attention_bias, layer.attention_vector, layer.projection))]
    y, a = layer(e, return_attention=True)
    y_ref, a_ref = numpy_afm(e, *weights)
    pairs = N * (N - 1) // 2
    assert tuple(y.shape) == (B, 1) and tuple(a.shape) == (B, pairs)
    assert layer.count_params() == D * 4 + 4 + 4 + D
    assert a_ref.std(axis=1).min() > 1e-3                       # attention is not uniform here
    np.testing.assert_allclose(npy(a), a_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(npy(y), y_ref, rtol=1e-5, atol=1e-5)
    # Dropout acts on the attention weights in training only.
    assert not np.allclose(npy(layer(e, training=True)), y_ref, atol=1e-3)
    # Pooled dropout zeroes whole entries of the pooled vector and scales the rest by 1 / (1 - rate).
    keras.utils.set_random_seed(1)
    dropped = AFM(attention_dim=4, reduce_sum=False, pooled_dropout=0.5, kernel_initializer="zeros")
    dropped(e)
    for v, w in zip((dropped.attention_kernel, dropped.attention_bias, dropped.attention_vector), weights[:3]):
        v.assign(w.astype("float32"))
    full = numpy_afm(e, *weights[:3])[0]
    np.testing.assert_allclose(npy(dropped(e)), full, rtol=1e-5, atol=1e-6)  # inference: no dropout
    train = npy(dropped(e, training=True))
    kept = train != 0
    assert 0.2 < kept.mean() < 0.8
    np.testing.assert_allclose(train[kept], 2.0 * full[kept], rtol=1e-5, atol=1e-6)

    pooled = AFM(attention_dim=4, reduce_sum=False, kernel_initializer="zeros")
    pooled(e)
    weights = [set_weight(v, 20 + i) for i, v in enumerate(
        (pooled.attention_kernel, pooled.attention_bias, pooled.attention_vector))]
    out = npy(pooled(e))
    assert out.shape == (B, D) and pooled.count_params() == D * 4 + 4 + 4
    np.testing.assert_allclose(out, numpy_afm(e, *weights)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(attention_dim=0), "attention_dim"), (dict(attention_dropout=1.0), "attention_dropout"),
    (dict(attention_dropout=-0.1), "attention_dropout"), (dict(pooled_dropout=1.0), "pooled_dropout"),
])
def test_afm_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=names(argument)):
        AFM(**kwargs)


def test_afm_needs_two_fields():
    with pytest.raises(ValueError, match=names("embeddings")):
        AFM()(np.ones((B, 1, D), "float32"))


# ----------------------------------------------------------------------------- LowRankMixtureCross

def numpy_mixture_cross(x0, x, u, v, c, gates, bias):
    """Reference: one expert at a time, x_{l+1} = sum_e w_e x0 * (U_e tanh(C_e tanh(V_e^T x)) + b) + x."""
    logits = x @ gates                                           # (B, E)
    w = softmax(logits, axis=1)
    out = x.copy()
    for e in range(u.shape[0]):
        z = np.tanh(np.tanh(x @ v[e]) @ c[e].T) @ u[e].T + bias     # (B, D)
        out += w[:, e:e + 1] * (x0 * z)
    return out


def test_low_rank_mixture_cross_matches_numpy_reference():
    dim, experts, rank = 6, 2, 3
    rng = np.random.default_rng(11)
    x0 = rng.normal(size=(B, dim)).astype("float32")
    x1 = rng.normal(size=(B, dim)).astype("float32")
    layer = LowRankMixtureCross(num_experts=experts, low_rank=rank, kernel_initializer="zeros")
    layer(x0)
    weights = [set_weight(w, 30 + i) for i, w in enumerate(
        (layer.u_kernel, layer.v_kernel, layer.c_kernel, layer.gate_kernel, layer.bias))]
    assert [tuple(w.shape) for w in weights] == [(experts, dim, rank), (experts, dim, rank), (experts, rank, rank),
                                                 (dim, experts), (dim,)]
    assert layer.count_params() == experts * (2 * dim * rank + rank * rank) + dim * experts + dim
    np.testing.assert_allclose(npy(layer(x0)), numpy_mixture_cross(x0, x0, *weights), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(npy(layer(x0, x1)), numpy_mixture_cross(x0, x1, *weights), rtol=1e-5, atol=1e-5)
    # Extra leading axes are mapped row by row.
    stacked = npy(layer(np.stack([x0, x0]), np.stack([x0, x1])))
    assert stacked.shape == (2, B, dim)
    np.testing.assert_allclose(stacked[1], numpy_mixture_cross(x0, x1, *weights), rtol=1e-5, atol=1e-5)

    no_bias = LowRankMixtureCross(num_experts=1, low_rank=4, use_bias=False, kernel_initializer="zeros")
    no_bias(x0)
    assert no_bias.count_params() == 2 * dim * 4 + 16                   # one expert: no gate weights
    weights = [set_weight(w, 40 + i) for i, w in enumerate((no_bias.u_kernel, no_bias.v_kernel, no_bias.c_kernel))]
    np.testing.assert_allclose(npy(no_bias(x0, x1)), numpy_mixture_cross(x0, x1, *weights, np.zeros((dim, 1)), 0.0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(num_experts=0), "num_experts"), (dict(low_rank=0), "low_rank"), (dict(low_rank=2.5), "low_rank"),
])
def test_low_rank_mixture_cross_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=names(argument)):
        LowRankMixtureCross(**kwargs)


def test_low_rank_mixture_cross_rejects_mismatched_x():
    with pytest.raises(ValueError, match=names("x")):
        LowRankMixtureCross(num_experts=2, low_rank=2, kernel_initializer="zeros")(
            np.ones((B, 4), "float32"), np.ones((B, 5), "float32"))


# ------------------------------------------------------------------------------- LinearCompression

def test_linear_compression_matches_numpy_reference():
    e = field_embeddings(12)
    layer = LinearCompression(num_outputs=2, kernel_initializer="zeros")
    layer(e)
    w = set_weight(layer.kernel, 13)
    out = npy(layer(e))
    expected = np.zeros((B, 2, D))
    for o in range(2):
        for i in range(N):
            expected[:, o, :] += w[o, i] * e[:, i, :]
    assert out.shape == (B, 2, D) and layer.count_params() == 2 * N
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_linear_compression_rejects_bad_arguments():
    with pytest.raises(ValueError, match=names("num_outputs")):
        LinearCompression(num_outputs=0)
    with pytest.raises(ValueError, match=names("embeddings")):
        LinearCompression(num_outputs=2)(np.ones((B, N), "float32"))


# ------------------------------------------------------------------------------------ harness checks

# Shapes and configurations as in the docstring examples: under JAX every new weight shape costs a
# compile of the random initializer (the numeric tests above use zeros and assign their weights).
E_INPUT = field_embeddings(14)
X_INPUT = np.random.default_rng(15).normal(size=(4, 6)).astype("float32")

FUSION_X = np.random.default_rng(5).normal(size=(4, 6)).astype("float32")
FUSION_Y = np.random.default_rng(6).normal(size=(4, 4)).astype("float32")
CASES = [
    pytest.param(lambda: FM(use_bias=True), E_INPUT, {}, id="fm"),
    pytest.param(lambda: FM(reduce_sum=False), E_INPUT, {}, id="fm_vector"),
    pytest.param(lambda: AttentionFM(k=2, normalize="softmax"), E_INPUT, dict(return_attention=True),
                 id="attention_fm_static"),
    pytest.param(lambda: AttentionFM(k=2, mode="dynamic", normalize="softmax", hidden_units=[8], flatten=False),
                 E_INPUT, dict(return_attention=True), id="attention_fm_dynamic"),
    pytest.param(lambda: AFM(attention_dim=4, attention_dropout=0.2, pooled_dropout=0.1), E_INPUT, {}, id="afm"),
    pytest.param(lambda: LowRankMixtureCross(num_experts=2, low_rank=3), X_INPUT, {}, id="mixture_cross"),
    pytest.param(lambda: LinearCompression(num_outputs=2), E_INPUT, {}, id="linear_compression"),
    pytest.param(lambda: BilinearFusion(num_heads=2), [FUSION_X, FUSION_Y], {}, id="bilinear_fusion"),
    pytest.param(lambda: BilinearFusion(num_heads=2, use_linear=False, reduce_heads=False), [FUSION_X, FUSION_Y],
                 {}, id="bilinear_fusion_per_head"),
]


@pytest.mark.parametrize("make_layer, inputs, call_kwargs", CASES)
def test_get_config_round_trip(make_layer, inputs, call_kwargs):
    layer_checks.check_config_round_trip(make_layer)


@pytest.mark.parametrize("make_layer, inputs, call_kwargs", CASES)
def test_keras_file_round_trip(make_layer, inputs, call_kwargs, tmp_path):
    layer_checks.check_keras_round_trip(make_layer, inputs, tmp_path, **call_kwargs)


@pytest.mark.tf_only
@pytest.mark.parametrize("make_layer, inputs, call_kwargs", CASES)
def test_saved_model_round_trip(make_layer, inputs, call_kwargs, tmp_path):
    layer_checks.check_saved_model_round_trip(make_layer, inputs, tmp_path, **call_kwargs)


@pytest.mark.parametrize("make_layer, inputs, call_kwargs", CASES)
def test_mixed_bfloat16_forward(make_layer, inputs, call_kwargs):
    layer_checks.check_mixed_bfloat16(make_layer, inputs, **call_kwargs)


@pytest.mark.parametrize("module", [interactions_module, fusion_module])
def test_docstring_examples_run(module):
    layer_checks.check_docstring_examples(module)
