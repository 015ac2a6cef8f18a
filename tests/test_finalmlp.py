"""FinalMLP and its layers: FeatureGate and BilinearFusion against NumPy loops and their argument
errors (their serialization round trips are in tests/test_layers.py and tests/test_interactions.py);
the backbone's h against a NumPy forward pass (gates, streams, per-head bilinear terms), its own
context tables against the shared embeddings, parameter counts and the spec checks of the gate
contexts. Run under TF and JAX."""

import os
import re
import sys

import keras
import numpy as np
import pytest

from layers.blocks import FeatureGate
from layers.fusion import BilinearFusion
from zoo.c2al import C2AL
from zoo.model import PRIMARY, build, shared_representation

sys.path.insert(0, os.path.dirname(__file__))
from helpers import batch, mlp_params, spec_with  # noqa: E402

pytestmark = pytest.mark.multi_backend

USPEC = spec_with()  # user, item, wide, hist at width 4 (hist shares item's table) and the dense price
X_WIDTH = 4 * 4 + 1
EMBEDDINGS = (7 + 5 + 4) * 4  # user (6 + OOV), item (5 hashed), wide (3 + OOV) rows at width 4


def names(argument):
    return rf"(?:^|\n|\x1b\[\d+m){re.escape(argument)}: "


def npy(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0.0)


def randomize(layer, seed, scale=0.5):
    """Every weight of ``layer`` to seeded normals (biases and the zero context included)."""
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if w.trainable:
            w.assign((scale * rng.normal(size=tuple(w.shape))).astype("float32"))


def dense_np(layer, x, activation=None):
    y = x @ npy(layer.kernel)
    if layer.bias is not None:
        y = y + npy(layer.bias)
    return activation(y) if activation else y


def gate_np(gate, x, context=None):
    c = np.broadcast_to(npy(gate.context_bias), (x.shape[0], gate.context_dim)) if context is None else context
    if gate._hidden is not None:
        for dense in gate._hidden._dense:
            c = dense_np(dense, c, relu)
    return 2.0 * sigmoid(dense_np(gate._output, c)) * x


def mlp_np(mlp, x):
    for dense in mlp._dense:
        x = dense_np(dense, x, relu)
    return x


def fusion_np(kernel, x, y, num_heads):
    """Per-head terms s[b, j*O + o] = sum_p sum_q x_j[p] W[j, p, q, o] y_j[q], with explicit loops."""
    batch_size, (k, px, py, out) = x.shape[0], kernel.shape
    s = np.zeros((batch_size, num_heads * out))
    for b in range(batch_size):
        for j in range(k):
            xj, yj = x[b, j * px:(j + 1) * px], y[b, j * py:(j + 1) * py]
            for o in range(out):
                s[b, j * out + o] = sum(xj[p] * kernel[j, p, q, o] * yj[q] for p in range(px) for q in range(py))
    return s


# ------------------------------------------------------------------------------------- FeatureGate
def test_feature_gate_matches_numpy_with_and_without_context():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6)).astype("float32")
    learned = FeatureGate(units=[4, 3], context_dim=2)
    np.testing.assert_allclose(npy(learned(x)), x, atol=1e-6)  # zero context and biases: the identity
    randomize(learned, 1)
    np.testing.assert_allclose(npy(learned(x)), gate_np(learned, x.astype("float64")), atol=1e-5)
    assert learned.count_params() == 2 + mlp_params(2, [4, 3]) + mlp_params(3, [6])

    context = rng.normal(size=(5, 3)).astype("float32")
    conditioned = FeatureGate(units=[])
    out = conditioned([x, context])
    assert conditioned.count_params() == mlp_params(3, [6])  # no learned context when one is passed
    randomize(conditioned, 2)
    out = npy(conditioned([x, context]))
    np.testing.assert_allclose(out, gate_np(conditioned, x.astype("float64"), context.astype("float64")), atol=1e-5)
    assert np.all(np.abs(out) < 2 * np.abs(x) + 1e-6)  # g in (0, 2)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(units=[0]), "units"), (dict(context_dim=0), "context_dim"), (dict(context_dim=True), "context_dim")])
def test_feature_gate_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=names(argument)):
        FeatureGate(**kwargs)


def test_feature_gate_needs_a_context_or_its_width():
    with pytest.raises(ValueError, match=names("context_dim")):
        FeatureGate(units=[2])(np.ones((2, 3), "float32"))
    with pytest.raises(ValueError, match=names("x")):
        FeatureGate(context_dim=2)(np.ones((2, 3, 1), "float32"))
    with pytest.raises(ValueError, match=names("inputs")):
        FeatureGate(context_dim=2)([np.ones((2, 3), "float32")] * 3)


# ----------------------------------------------------------------------------------- BilinearFusion
def test_bilinear_fusion_matches_numpy_loops():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6)).astype("float32")
    y = rng.normal(size=(4, 9)).astype("float32")
    per_head = BilinearFusion(num_heads=3, output_dim=2, use_linear=False, reduce_heads=False)
    s = npy(per_head([x, y]))
    kernel = npy(per_head.kernel)
    assert kernel.shape == (3, 2, 3, 2) and s.shape == (4, 6)
    np.testing.assert_allclose(s, fusion_np(kernel, x.astype("float64"), y.astype("float64"), 3), atol=1e-5)

    fused = BilinearFusion(num_heads=3, output_dim=2)
    out = npy(fused([x, y]))
    randomize(fused, 4)
    out = npy(fused([x, y]))
    terms = fusion_np(npy(fused.kernel), x.astype("float64"), y.astype("float64"), 3).reshape(4, 3, 2).sum(axis=1)
    expected = terms + dense_np(fused._linear_x, x.astype("float64")) + dense_np(fused._linear_y, y.astype("float64"))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert fused.count_params() == 3 * 2 * 3 * 2 + (6 * 2 + 2) + 9 * 2  # W, w_x and b, w_y


def test_bilinear_fusion_rejects_bad_arguments():
    with pytest.raises(ValueError, match=names("use_linear")):
        BilinearFusion(use_linear=True, reduce_heads=False)
    with pytest.raises(ValueError, match=names("num_heads")):
        BilinearFusion(num_heads=0)
    with pytest.raises(ValueError, match=names("num_heads")):
        BilinearFusion(num_heads=2)([np.ones((2, 4), "float32"), np.ones((2, 3), "float32")])
    with pytest.raises(ValueError, match=names("inputs")):
        BilinearFusion()(np.ones((2, 4), "float32"))


# --------------------------------------------------------------------------------------- backbone
HP = dict(mlp1_units=[6], mlp2_units=[5, 4], fs_units=[3], num_heads=2)


def make(**overrides):
    keras.utils.set_random_seed(7)
    return build("finalmlp", USPEC, **{**HP, **overrides})


def test_h_matches_a_numpy_forward_pass_with_shared_context():
    model = make(fs1_context=["item", "hist"], fs2_context=[], fs_context_table="shared")
    backbone = model.get_layer("backbone")
    randomize(backbone, 8)
    x, _ = batch(8)
    (tokens,), dense = backbone.encoder(x)
    flat = np.concatenate([npy(t) for t in tokens] + [npy(dense)], axis=1)
    assert flat.shape == (8, X_WIDTH)
    module = backbone.interactions[0]
    gate1, gate2 = (g["gate"] for g in module["gates"])
    context1 = np.concatenate([npy(tokens[1]), npy(tokens[3])], axis=1)  # item, then hist (mean-pooled)
    o1 = mlp_np(module["mlp1"], gate_np(gate1, flat, context1))
    o2 = mlp_np(module["mlp2"], gate_np(gate2, flat))
    s = fusion_np(npy(module["fusion"].kernel), o1, o2, 2)
    expected = np.concatenate([o1, o2, s], axis=1)
    assert shared_representation(model).shape == (None, 6 + 4 + 2)
    np.testing.assert_allclose(npy(backbone(x)), expected, atol=1e-5)


def test_own_context_table_equals_the_shared_embeddings_with_the_same_rows():
    x, _ = batch(16, seed=1)
    shared = make(fs1_context=["item", "hist"], fs2_context=["user"], fs_context_table="shared")
    own = make(fs1_context=["item", "hist"], fs2_context=["user"], fs_context_table="own")
    backbone_own, backbone_shared = own.get_layer("backbone"), shared.get_layer("backbone")
    by_path = {w.path: w for w in own.weights}
    for w in shared.weights:  # every weight they have in common, the heads included
        by_path[w.path].assign(npy(w).astype("float32"))
    encoder_table = npy(backbone_shared.encoder.embedders[0].embeddings)
    offsets = backbone_shared.encoder.embedders[0].offsets  # fused width-4 tables: user, item, wide
    item, user = slice(offsets[1], offsets[1] + 5), slice(offsets[0], offsets[0] + 7)
    gates = backbone_own.interactions[0]["gates"]
    assert gates[0]["table"].num_rows == 5 and gates[1]["table"].num_rows == 7  # item's 5 buckets; user + OOV
    gates[0]["table"].embeddings.assign(encoder_table[item].astype("float32"))
    gates[1]["table"].embeddings.assign(encoder_table[user].astype("float32"))
    np.testing.assert_allclose(npy(own(x)[PRIMARY]), npy(shared(x)[PRIMARY]), atol=1e-6)
    # Own tables are trained apart from the embeddings: rows 5 and 7 at width 4 more than shared.
    assert own.count_params() == shared.count_params() + (5 + 7) * 4


def test_parameter_counts():
    model = make()  # learned contexts at the spec's width 4
    gates = 2 * (4 + mlp_params(4, [3]) + mlp_params(3, [X_WIDTH]))
    streams = mlp_params(X_WIDTH, [6]) + mlp_params(X_WIDTH, [5, 4])
    fusion = 2 * (6 // 2) * (4 // 2)
    h = 6 + 4 + 2
    assert model.count_params() == EMBEDDINGS + gates + streams + fusion + h + 1
    plain = make(feature_selection=False)
    assert plain.count_params() == EMBEDDINGS + streams + fusion + h + 1
    assert C2AL(plain).count_params() == plain.count_params() + 2 * (h + 1)
    sized = make(fs_context_dim=2)
    assert sized.count_params() == model.count_params() - 2 * ((4 - 2) + (4 - 2) * 3)


def test_without_feature_selection_both_streams_see_the_flat_input():
    model = make(feature_selection=False)
    backbone = model.get_layer("backbone")
    randomize(backbone, 9)
    x, _ = batch(4)
    (tokens,), dense = backbone.encoder(x)
    flat = np.concatenate([npy(t) for t in tokens] + [npy(dense)], axis=1)
    module = backbone.interactions[0]
    o1, o2 = mlp_np(module["mlp1"], flat), mlp_np(module["mlp2"], flat)
    expected = np.concatenate([o1, o2, fusion_np(npy(module["fusion"].kernel), o1, o2, 2)], axis=1)
    np.testing.assert_allclose(npy(backbone(x)), expected, atol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (dict(fs1_context=["nope"]), r"^fs1_context: 'nope' is not an input of the spec; its id features are"),
    (dict(fs2_context=["price"]), r"^fs2_context: 'price' is a dense feature"),
    (dict(fs1_context=["user", "user"]), r"^fs1_context: lists a feature twice"),
    (dict(fs1_context="user"), r"^fs1_context: must be a list of feature names"),
    (dict(num_heads=4), r"^num_heads: 4 heads must divide the last width of mlp1_units, got 6"),
    (dict(feature_selection=False, fs2_context=["item"]), r"^fs2_context: a gate context needs feature_selection"),
])
def test_bad_hyper_parameters_name_the_argument(overrides, message):
    with pytest.raises(ValueError, match=message):
        make(**overrides)


def test_mixed_widths_need_an_explicit_context_width():
    mixed = spec_with(width_of_wide=2)
    with pytest.raises(ValueError, match=r"^fs_context_dim: the spec's id inputs have no one embedding width"):
        build("finalmlp", mixed, **HP)
    model = build("finalmlp", mixed, fs_context_dim=3, **HP)  # flat input: 3 * 4 + 2 + 1 wide
    x, _ = batch(4)
    assert npy(model(x)[PRIMARY]).shape == (4, 1)
    shared = build("finalmlp", mixed, fs1_context=["user"], fs2_context=["wide"], fs_context_table="shared", **HP)
    assert npy(shared(x)[PRIMARY]).shape == (4, 1)  # shared contexts need no width of their own
