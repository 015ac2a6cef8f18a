"""Attention layers: NumPy-reference numerics (explicit loops over heads / positions), shapes,
parameter counts, argument errors, masking and top-k, DARE gradient isolation through a
DualEmbedding, then serialization (get_config, .keras, SavedModel), mixed precision and docstring
examples. Run under TF and JAX."""

import math
import os
import sys

import keras
import numpy as np
import pytest

from layers import attention as attention_module
from layers.attention import FieldSelfAttention, TargetAttention
from layers.embeddings import DualEmbedding

sys.path.insert(0, os.path.dirname(__file__))
import layer_checks  # noqa: E402

pytestmark = pytest.mark.multi_backend


def np_(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


# ---------------------------------------------------------------------------------------------------
# FieldSelfAttention
# ---------------------------------------------------------------------------------------------------
def numpy_field_self_attention(x, wq, wk, wv, wres, heads, head_dim, use_residual, use_scale, norm=None):
    """AutoInt interacting layer, one example / head / field at a time."""
    b_size, n, _ = x.shape
    out = np.zeros((b_size, n, heads * head_dim))
    alpha = np.zeros((b_size, heads, n, n))
    for b in range(b_size):
        for h in range(heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            for m in range(n):
                q = x[b, m] @ wq[:, cols]
                logits = np.array([q @ (x[b, j] @ wk[:, cols]) for j in range(n)])
                if use_scale:
                    logits = logits / math.sqrt(head_dim)
                e = np.exp(logits - logits.max())
                alpha[b, h, m] = e / e.sum()
                out[b, m, cols] = sum(alpha[b, h, m, j] * (x[b, j] @ wv[:, cols]) for j in range(n))
    if use_residual:
        out = out + (x @ wres if wres is not None else x)
    out = np.maximum(out, 0.0)
    if norm is not None:
        gamma, beta, eps = norm
        mean, var = out.mean(-1, keepdims=True), out.var(-1, keepdims=True)
        out = (out - mean) / np.sqrt(var + eps) * gamma + beta
    return out, alpha


FSA_CASES = [
    # (input width d, kwargs, expected parameter count)
    (8, dict(num_heads=2, attention_dim=3, use_scale=True, use_layer_norm=True), 4 * 8 * 6 + 2 * 6),  # projected res
    (8, dict(num_heads=2, attention_dim=4), 3 * 8 * 8),                                                # identity res
    (8, dict(num_heads=1, attention_dim=4, use_residual=False), 3 * 8 * 4),                            # no residual
]


@pytest.mark.parametrize("width, kwargs, params", FSA_CASES)
def test_field_self_attention_matches_numpy_reference(width, kwargs, params):
    layer = FieldSelfAttention(**kwargs)
    x = np.random.default_rng(0).normal(size=(3, 4, width)).astype("float32")  # one shape: fewer JAX compiles
    out, alpha = layer(x, return_attention_scores=True)
    heads, head_dim = kwargs["num_heads"], kwargs["attention_dim"]
    assert tuple(out.shape) == (3, 4, heads * head_dim) and tuple(alpha.shape) == (3, heads, 4, 4)
    assert layer.count_params() == params
    wres = np_(layer._residual.kernel) if layer._residual is not None else None
    assert (wres is not None) == (kwargs.get("use_residual", True) and width != heads * head_dim)
    norm = (np_(layer._norm.gamma), np_(layer._norm.beta), layer._norm.epsilon) if layer._norm else None
    want_out, want_alpha = numpy_field_self_attention(
        x.astype("float64"), np_(layer._query.kernel), np_(layer._key.kernel), np_(layer._value.kernel), wres,
        heads, head_dim, kwargs.get("use_residual", True), kwargs.get("use_scale", False), norm)
    np.testing.assert_allclose(np_(alpha), want_alpha, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np_(out), want_out, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np_(layer(x)), np_(out), rtol=0, atol=0)  # same output without scores


@pytest.mark.parametrize("kwargs, argument", [
    (dict(num_heads=0, attention_dim=4), "num_heads"),
    (dict(num_heads=1.5, attention_dim=4), "num_heads"),
    (dict(num_heads=2, attention_dim=-1), "attention_dim"),
    (dict(num_heads=2, attention_dim="8"), "attention_dim"),
])
def test_field_self_attention_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        FieldSelfAttention(**kwargs)


def test_field_self_attention_rejects_bad_input_rank():
    with pytest.raises(ValueError, match="inputs"):
        FieldSelfAttention(num_heads=1, attention_dim=2)(np.ones((2, 3), "float32"))


# ---------------------------------------------------------------------------------------------------
# TargetAttention
# ---------------------------------------------------------------------------------------------------
def numpy_mlp_score(q, k, dense_weights):
    """DIN activation unit on one (query, key) pair: relu hidden layers, then a linear output."""
    x = np.concatenate([q, k, q - k, q * k])
    for kernel, bias in dense_weights[:-1]:
        x = np.maximum(x @ kernel + bias, 0.0)
    kernel, bias = dense_weights[-1]
    return float(x @ kernel + bias)


def numpy_target_attention(query, keys, mask, values=None, top_k=None, use_scale=True, mlp_weights=None):
    """Masked (top-k) softmax attention, one example and position at a time; returns (pooled, w)."""
    values = keys if values is None else values
    b_size, length, width = keys.shape
    pooled = np.zeros((b_size, values.shape[-1]))
    weights = np.zeros((b_size, length))
    for b in range(b_size):
        scores = np.zeros(length)
        for j in range(length):
            scores[j] = (query[b] @ keys[b, j] if mlp_weights is None
                         else numpy_mlp_score(query[b], keys[b, j], mlp_weights))
        if use_scale:
            scores = scores / math.sqrt(width)
        valid = [j for j in range(length) if mask[b, j]]
        if top_k is not None:  # stable: equal scores keep the lower position
            valid = sorted(sorted(valid, key=lambda j: -scores[j])[:top_k])
        if not valid:
            continue
        s = scores[valid] - scores[valid].max()
        e = np.exp(s) / np.exp(s).sum()
        for j, w in zip(valid, e):
            weights[b, j] = w
            pooled[b] += w * values[b, j]
    return pooled, weights


def ta_inputs(seed=0, width=4, value_width=3, with_values=True):
    rng = np.random.default_rng(seed)
    inputs = {
        "query": rng.normal(size=(4, width)).astype("float32"),
        "keys": rng.normal(size=(4, 6, width)).astype("float32"),
        "mask": np.array([[1, 1, 1, 1, 1, 1],      # all valid
                          [1, 0, 1, 1, 0, 0],      # padding inside and at the end
                          [0, 0, 0, 1, 0, 0],      # one valid item
                          [0, 0, 0, 0, 0, 0]],     # no valid item
                         bool),
    }
    if with_values:
        inputs["values"] = rng.normal(size=(4, 6, value_width)).astype("float32")
    return inputs


def scorer_weights(layer):
    dense = [(np_(d.kernel), np_(d.bias)) for d in layer._mlp._dense]
    return dense + [(np_(layer._mlp_out.kernel)[:, 0], np_(layer._mlp_out.bias)[0])]


TA_CASES = [
    # (kwargs, with values, expected parameter count)
    (dict(), True, 0),
    (dict(top_k=2, use_scale=False), False, 0),
    (dict(top_k=3, score="mlp", mlp_units=[5, 3]), True, 16 * 5 + 5 + 5 * 3 + 3 + 3 + 1),
]


@pytest.mark.parametrize("kwargs, with_values, params", TA_CASES)
def test_target_attention_matches_numpy_reference(kwargs, with_values, params):
    layer = TargetAttention(**kwargs)
    inputs = ta_inputs(with_values=with_values)
    pooled, weights = layer(inputs, return_attention_scores=True)
    out_width = 3 if with_values else 4
    assert tuple(pooled.shape) == (4, out_width) and tuple(weights.shape) == (4, 6)
    assert layer.count_params() == params
    mlp = scorer_weights(layer) if kwargs.get("score") == "mlp" else None
    as64 = {k: v.astype("float64") if v.dtype != bool else v for k, v in inputs.items()}
    want_pooled, want_w = numpy_target_attention(
        as64["query"], as64["keys"], as64["mask"], as64.get("values"), kwargs.get("top_k"),
        kwargs.get("use_scale", True), mlp)
    np.testing.assert_allclose(np_(weights), want_w, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np_(pooled), want_pooled, rtol=0, atol=1e-5)
    # The list form is the same call.
    listed = [inputs["query"], inputs["keys"], inputs["mask"]] + ([inputs["values"]] if with_values else [])
    np.testing.assert_allclose(np_(layer(listed)), np_(pooled), rtol=0, atol=0)


def test_target_attention_masking():
    layer = TargetAttention()
    inputs = ta_inputs(seed=1)
    pooled, weights = (np_(t) for t in layer(inputs, return_attention_scores=True))
    mask = inputs["mask"]
    assert np.all(weights[~mask] == 0.0)                                   # padding: exactly zero weight
    np.testing.assert_allclose(weights.sum(-1), [1, 1, 1, 0], atol=1e-6)  # valid rows sum to one
    np.testing.assert_allclose(weights[2], [0, 0, 0, 1, 0, 0], atol=0)    # a single valid item takes it all
    assert np.all(pooled[3] == 0.0) and np.all(weights[3] == 0.0)          # no valid item: zeros, no NaN
    assert np.all(np.isfinite(pooled)) and np.all(np.isfinite(weights))
    # Whatever sits in the padded slots (huge keys / values) changes nothing.
    junk = dict(inputs)
    junk["keys"] = np.where(mask[..., None], inputs["keys"], 1e4).astype("float32")
    junk["values"] = np.where(mask[..., None], inputs["values"], -1e6).astype("float32")
    junk_pooled, junk_weights = (np_(t) for t in layer(junk, return_attention_scores=True))
    np.testing.assert_allclose(junk_weights, weights, rtol=0, atol=0)
    np.testing.assert_allclose(junk_pooled, pooled, rtol=0, atol=1e-6)
    # No mask means every position is valid; a 0/1 integer mask equals the bool mask.
    no_mask = {k: v for k, v in inputs.items() if k != "mask"}
    all_valid = dict(inputs, mask=np.ones_like(mask))
    np.testing.assert_allclose(np_(layer(no_mask)), np_(layer(all_valid)), rtol=0, atol=0)
    np.testing.assert_allclose(np_(layer(dict(inputs, mask=mask.astype("int32")))), pooled, rtol=0, atol=0)


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_target_attention_top_k_keeps_exactly_k_valid_positions(top_k):
    rng = np.random.default_rng(top_k)
    query = rng.normal(size=(4, 4)).astype("float32")
    keys = rng.normal(size=(4, 6, 4)).astype("float32")
    mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 1, 1], [1, 0, 0, 0, 0, 0]], bool)
    _, weights = TargetAttention(top_k=top_k)({"query": query, "keys": keys, "mask": mask},
                                              return_attention_scores=True)
    weights = np_(weights)
    scores = np.einsum("bd,bld->bl", query, keys)
    for b in range(4):
        valid = np.flatnonzero(mask[b])
        expected = set(valid[np.argsort(-scores[b, valid], kind="stable")[:top_k]].tolist())
        kept = set(np.flatnonzero(weights[b] > 0).tolist())
        assert len(kept) == min(top_k, len(valid)) and kept == expected, (b, kept, expected)
    assert np.all(weights[~mask] == 0)


def test_target_attention_top_k_ties_keep_lower_positions():
    keys = np.ones((4, 6, 4), "float32")  # every score equal
    mask = np.array([[1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1], [0] * 6], bool)
    _, weights = TargetAttention(top_k=2)({"query": np.ones((4, 4), "float32"), "keys": keys, "mask": mask},
                                          return_attention_scores=True)
    np.testing.assert_allclose(np_(weights), [[0.5, 0.5, 0, 0, 0, 0], [0, 0.5, 0, 0.5, 0, 0],
                                              [0, 0, 0, 0, 0, 1], [0] * 6], atol=1e-7)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(top_k=0), "top_k"), (dict(top_k=2.5), "top_k"), (dict(score="cosine"), "score"),
    (dict(score="mlp", mlp_units=[]), "mlp_units"), (dict(score="mlp", mlp_units=[4, 0]), "mlp_units"),
])
def test_target_attention_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        TargetAttention(**kwargs)


def test_target_attention_rejects_bad_inputs():
    q, k = np.ones((2, 3), "float32"), np.ones((2, 5, 4), "float32")
    with pytest.raises(ValueError, match="query"):
        TargetAttention()({"query": q, "keys": k})
    with pytest.raises(ValueError, match="inputs"):
        TargetAttention()({"query": q, "key": k})


# ---------------------------------------------------------------------------------------------------
# DARE: gradients through DualEmbedding + TargetAttention reach each table through one path only
# ---------------------------------------------------------------------------------------------------
_JITTED = {}


def outputs_and_gradients(model, inputs, loss_fn):
    """``(model(inputs), d loss_fn(model(inputs)) / d each trainable variable)`` as NumPy (zeros where
    no gradient flows). Under JAX one jitted value-and-grad per (model, loss_fn), reused across calls."""
    variables = model.trainable_variables
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            outputs = model(inputs)
            loss = loss_fn(outputs)
        grads = tape.gradient(loss, variables)
        return ([np_(o) for o in outputs],
                [np.zeros(v.shape) if g is None else np_(tf.convert_to_tensor(g)) for g, v in zip(grads, variables)])
    if keras.backend.backend() == "jax":
        import jax

        key = (id(model), loss_fn)
        if key not in _JITTED:
            def loss_of(trainable, non_trainable, data):
                outputs, _ = model.stateless_call(trainable, non_trainable, data)
                return loss_fn(outputs), outputs

            _JITTED[key] = jax.jit(jax.grad(loss_of, has_aux=True))
        grads, outputs = _JITTED[key]([v.value for v in variables], [v.value for v in model.non_trainable_variables],
                                      inputs)
        return [np_(o) for o in outputs], [np_(g) for g in grads]
    pytest.skip(f"no gradient helper for {keras.backend.backend()}")


VOCAB, D_ATT, D_REP, TOP_K = 6, 3, 4, 3
DARE_TARGET = np.array([[2], [5], [0]])
DARE_SEQ = np.array([[1, 3, 2, 4, -1],      # 4 valid, top-3 kept; the target id 2 is in the history
                     [0, 1, -1, -1, -1],    # fewer valid than top_k
                     [-1, -1, -1, -1, -1]])  # no history: zeros, no NaN in the gradient


def dare_model():
    dual = DualEmbedding(vocab_sizes=[VOCAB], attention_dim=D_ATT, representation_dim=D_REP, input_fields=[0, 0])
    attention = TargetAttention(top_k=TOP_K)
    target, seq = keras.Input((1,), dtype="int32"), keras.Input((DARE_SEQ.shape[1],), dtype="int32")
    (a_t, a_seq), (_, r_seq) = dual([target, seq])
    pooled, weights = attention({"query": a_t[:, 0], "keys": a_seq, "values": r_seq,
                                 "mask": keras.ops.greater_equal(seq, 0)}, return_attention_scores=True)
    model = keras.Model([target, seq], [pooled, weights])
    rng = np.random.default_rng(7)  # distinct random rows: no score ties
    dual.attention.embeddings.assign(rng.normal(size=(VOCAB + 1, D_ATT)).astype("float32"))
    dual.representation.embeddings.assign(rng.normal(size=(VOCAB + 1, D_REP)).astype("float32"))
    return model, dual


def numpy_dare(t_att, t_rep, g_pooled, g_weights):
    """Forward pass and table gradients for a loss with dL/dpooled = g_pooled(pooled), dL/dw = g_weights.

    Representation path: pooled = sum_j w_j r_j       =>  dL/dr_j = w_j * dL/dpooled.
    Attention path:      s_j = <a_t, a_j> / sqrt(d_a), w = softmax over the top-k valid s
                         dL/ds_j = w_j (u_j - sum_i w_i u_i),  u_j = <dL/dpooled, r_j> + dL/dw_j
                         dL/da_j += dL/ds_j a_t / sqrt(d_a),   dL/da_t += dL/ds_j a_j / sqrt(d_a).
    """
    rows_t = np.where(DARE_TARGET[:, 0] >= 0, DARE_TARGET[:, 0], VOCAB)
    rows = np.where(DARE_SEQ >= 0, DARE_SEQ, VOCAB)
    query, keys, values = t_att[rows_t], t_att[rows], t_rep[rows]
    pooled, w = numpy_target_attention(query, keys, DARE_SEQ >= 0, values, TOP_K, use_scale=True)
    g = g_pooled(pooled)
    grad_att, grad_rep = np.zeros_like(t_att), np.zeros_like(t_rep)
    scale = 1 / math.sqrt(D_ATT)
    for b in range(len(rows)):
        u = np.array([g[b] @ values[b, j] for j in range(rows.shape[1])]) + g_weights[b]
        ds = w[b] * (u - w[b] @ u)
        for j in range(rows.shape[1]):
            grad_rep[rows[b, j]] += w[b, j] * g[b]
            grad_att[rows[b, j]] += ds[j] * query[b] * scale
            grad_att[rows_t[b]] += ds[j] * keys[b, j] * scale
    return pooled, w, grad_att, grad_rep


def test_dare_gradients_reach_each_table_through_one_path_only():
    model, dual = dare_model()
    inputs = [DARE_TARGET, DARE_SEQ]
    variables = model.trainable_variables
    i_att = next(i for i, v in enumerate(variables) if v is dual.attention.embeddings)
    i_rep = next(i for i, v in enumerate(variables) if v is dual.representation.embeddings)
    t_att, t_rep = np_(dual.attention.embeddings), np_(dual.representation.embeddings)
    ops = keras.ops
    c = np.random.default_rng(8).normal(size=(3, D_REP))
    c_w = np.random.default_rng(9).normal(size=(3, DARE_SEQ.shape[1]))

    # (1) A loss of the pooled values only: L = sum(c * pooled) + sum(pooled^2) / 2.
    def pooled_loss(outputs):
        pooled = outputs[0]
        return ops.sum(ops.convert_to_tensor(c, pooled.dtype) * pooled) + 0.5 * ops.sum(pooled * pooled)

    (got_pooled, got_w), grads = outputs_and_gradients(model, inputs, pooled_loss)
    pooled, w, want_att, want_rep = numpy_dare(t_att, t_rep, lambda p: c + p, np.zeros_like(c_w))
    np.testing.assert_allclose(got_pooled, pooled, atol=1e-5)
    np.testing.assert_allclose(got_w, w, atol=1e-6)
    assert np.all(got_pooled[2] == 0) and all(np.all(np.isfinite(g)) for g in grads)
    assert (got_w[0] > 0).sum() == TOP_K
    # (a) representation rows: exactly sum_j w_j * dL/dpooled, nothing from the attention side.
    np.testing.assert_allclose(grads[i_rep], want_rep, atol=1e-5)
    assert np.all(grads[i_rep][5] == 0) and np.all(grads[i_rep][VOCAB] == 0)  # target-only id, padding row
    # (b) attention rows: exactly the gradient through the scores (softmax Jacobian).
    np.testing.assert_allclose(grads[i_att], want_att, atol=1e-5)
    assert np.abs(grads[i_att]).max() > 1e-3 and np.all(grads[i_att][VOCAB] == 0)

    # (c) A loss of the attention weights only: L = sum(c_w * w). The representation table gets
    # exactly zero gradient; the attention table gets the softmax-Jacobian gradient.
    def weights_loss(outputs):
        weights = outputs[1]
        return ops.sum(ops.convert_to_tensor(c_w, weights.dtype) * weights)

    _, grads = outputs_and_gradients(model, inputs, weights_loss)
    _, _, want_att, _ = numpy_dare(t_att, t_rep, lambda p: np.zeros_like(p), c_w)
    assert np.all(grads[i_rep] == 0)
    np.testing.assert_allclose(grads[i_att], want_att, atol=1e-5)
    assert np.abs(want_att).max() > 1e-3

    # (d) With every representation row equal the pooled output cannot depend on the weights, so
    # a pooled-only loss sends exactly zero gradient into the attention table.
    dual.representation.embeddings.assign(np.tile(t_rep[:1], (VOCAB + 1, 1)).astype("float32"))
    _, grads = outputs_and_gradients(model, inputs, pooled_loss)
    np.testing.assert_allclose(grads[i_att], 0.0, atol=1e-6)
    assert np.abs(grads[i_rep]).max() > 1e-3


# ---------------------------------------------------------------------------------------------------
# Serialization, export, mixed precision, docstrings
# ---------------------------------------------------------------------------------------------------
FSA_INPUT = np.random.default_rng(3).normal(size=(3, 4, 8)).astype("float32")


def make_fsa():
    return FieldSelfAttention(num_heads=2, attention_dim=3, use_scale=True, use_layer_norm=True)


def make_fsa_identity():
    return FieldSelfAttention(num_heads=2, attention_dim=4)  # 8 = 2 x 4: identity residual


def make_ta():
    return TargetAttention(top_k=3)


def make_ta_mlp():
    return TargetAttention(score="mlp", mlp_units=[6], mlp_activation="sigmoid", use_scale=False)


CASES = [(make_fsa, FSA_INPUT), (make_fsa_identity, FSA_INPUT), (make_ta, ta_inputs(seed=4)),
         (make_ta_mlp, ta_inputs(seed=5))]


@pytest.mark.parametrize("make_layer, inputs", CASES)
def test_get_config_round_trip(make_layer, inputs):
    layer_checks.check_config_round_trip(make_layer)


@pytest.mark.parametrize("make_layer, inputs", CASES)
def test_keras_file_round_trip(make_layer, inputs, tmp_path):
    layer_checks.check_keras_round_trip(make_layer, inputs, tmp_path, return_attention_scores=True)


@pytest.mark.tf_only
@pytest.mark.parametrize("make_layer, inputs", CASES)
def test_saved_model_round_trip(make_layer, inputs, tmp_path):
    layer_checks.check_saved_model_round_trip(make_layer, inputs, tmp_path, return_attention_scores=True)


@pytest.mark.parametrize("make_layer, inputs", CASES)
def test_mixed_bfloat16_forward(make_layer, inputs):
    layer_checks.check_mixed_bfloat16(make_layer, inputs, return_attention_scores=True)


def test_docstring_examples_run():
    layer_checks.check_docstring_examples(attention_module)
