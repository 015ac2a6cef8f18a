"""Known answers of the token-stack and gated-expert backbones DHEN, Wukong, PLE and MMoE: parameter
counts, widths of ``h`` (with and without a head, per embedding set), trained and reachable
attention matrices, PLE's tasks, MMoE as a PLE special case. The contract every backbone meets is
tests/test_backbone_contract.py. Run under TF and JAX."""

import keras
import numpy as np
import pytest

from zoo.model import PRIMARY, build, shared_representation
from zoo.registry import get_backbone

from helpers import DHEN_HP, SPEC, UNIFORM, WUKONG_HP, batch  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.multi_backend


D = 4                      # embedding width of UNIFORM
N = 4 + 1                  # tokens: user, item, wide, hist + one dense token (price)
ROWS = 16                  # embedding rows: user 6 + OOV, item 5 hashed, wide 3 + OOV
PLE_HP = dict(num_specific_experts=1, num_shared_experts=2, expert_units=[8, 6], gate_units=[4], tower_units=[8])
MMOE_HP = dict(num_experts=3, expert_units=[8, 6], gate_units=[4], tower_units=[8])
CASES = {
    "dhen": (UNIFORM, DHEN_HP, 4),
    "wukong": (UNIFORM, WUKONG_HP, 4),
    "ple": (SPEC, PLE_HP, 8),
    "mmoe": (SPEC, MMOE_HP, 8),
}
NAMES = sorted(CASES)
# Without a head, h is the interaction output: flatten(X_L) (DHEN, Wukong) or the gated expert output.
NO_HEAD = {
    "dhen": (dict(head_units=[]), N * D),
    "wukong": (dict(head_units=[]), (2 + 2) * D),
    "ple": (dict(tower_units=[]), 6),
    "mmoe": (dict(tower_units=[]), 6),
}


def make(name, embedding=None, **overrides):
    spec, hp, _ = CASES[name]
    return build(name, spec, embedding=embedding, **{**hp, **overrides})


def npy(x):
    return keras.ops.convert_to_numpy(x)


def test_dhen_parameter_count():
    model = make("dhen")
    nd, k, a, r = N * D, 3, 6, 3
    layer = ((nd * a + a) + (a * N * k + N * k)      # dynamic AttentionFM: attention MLP, then logits
             + (nd * r + r * nd + nd)                 # low-rank cross
             + N * N                                  # linear module (field recombination)
             + ((N * k + 2 * nd) * nd + nd)           # ensemble projection
             + 2 * D)                                 # LayerNorm
    head = (nd * 8 + 8) + (8 * 4 + 4)
    assert model.count_params() == ROWS * D + (1 * D + D) + 2 * layer + head + (4 + 1)


def test_wukong_parameter_count_and_residual_projection():
    model = make("wukong")
    k, u, nf, nl = 3, 6, 2, 2

    def layer(n):
        fmb = n * k + 2 * n * k + (n * k * u + u) + (u * nf * D + nf * D)   # Y, LN, MLP, output Dense
        residual = (nf + nl) * n if n != nf + nl else 0
        return fmb + nl * n + residual + 2 * D

    head = ((nf + nl) * D * 8 + 8) + (8 * 4 + 4)
    assert model.count_params() == ROWS * D + (1 * D + D) + layer(N) + layer(nf + nl) + head + (4 + 1)
    backbone = model.get_layer("backbone")
    residuals = backbone.interactions[0]["residual"]
    assert residuals[0] is not None and residuals[1] is None   # 5 -> 4 rows, then identity


@pytest.mark.parametrize("name", NAMES)
def test_h_width_with_and_without_a_head(name):
    keras.utils.set_random_seed(2)
    model = make(name)
    assert shared_representation(model).shape == (None, CASES[name][2])
    attention = [w for w in model.get_layer("backbone").weights if "attention" in w.path]
    assert len(attention) == {"dhen": 8, "wukong": 2}.get(name, 0)  # trained: see the contract suite
    overrides, width = NO_HEAD[name]
    model = make(name, embedding={"type": "multi", "num_sets": 2}, **overrides)
    assert shared_representation(model).shape == (None, width)
    if name in ("dhen", "wukong"):
        assert len(model.get_layer("backbone").attention_fms) == 2 * 2   # one per set and layer


def test_dhen_attention_matrices_are_reachable():
    model = make("dhen")
    backbone = model.get_layer("backbone")
    x, _ = batch(8)
    ys = backbone.attention_matrices(x)
    assert len(backbone.attention_fms) == 2 and [tuple(y.shape) for y in ys] == [(8, N, 3)] * 2
    assert all(fm.mode == "dynamic" for fm in backbone.attention_fms)
    static = make("dhen", attention_mode="static", attention_normalize="softmax").get_layer("backbone")
    ys = static.attention_matrices(x)
    assert [tuple(y.shape) for y in ys] == [(N, 3)] * 2
    np.testing.assert_allclose(npy(ys[0]).sum(axis=0), np.ones(3), rtol=1e-5)  # soft-maxed over the n rows


def test_wukong_static_attention_matrix_is_reachable():
    model = make("wukong")
    backbone = model.get_layer("backbone")
    ys = backbone.attention_matrices()
    assert [tuple(y.shape) for y in ys] == [(N, 3), (2 + 2, 3)]
    np.testing.assert_array_equal(npy(ys[0]), npy(backbone.attention_fms[0].attention_matrix))
    assert backbone.attention_fms[0].attention_matrix.path == "backbone/fmb_attention_fm_0/attention_matrix"


def test_ple_exposes_every_task_and_h_is_the_primary_task():
    model = make("ple", num_tasks=3, num_levels=2)
    backbone = model.get_layer("backbone")
    x, _ = batch(8)
    tasks = backbone(x, all_tasks=True)
    assert len(tasks) == 3 and all(tuple(t.shape) == (8, 8) for t in tasks)
    np.testing.assert_allclose(npy(tasks[0]), npy(backbone(x)), atol=1e-6)
    assert len(backbone.towers) == 3 and backbone.experts.num_levels == 2
    # A functional model with a head per task calls a fresh backbone with all_tasks=True first
    # (Keras maps a layer's outputs by the structure of its first call).
    inputs = SPEC.keras_inputs()
    fresh = get_backbone("ple")(SPEC.to_dict(), name="backbone", **{**PLE_HP, "num_tasks": 3, "num_levels": 2})
    heads = [keras.layers.Dense(1, name=f"task_{t}")(u) for t, u in enumerate(fresh(inputs, all_tasks=True))]
    assert [tuple(t.shape) for t in keras.Model(inputs, heads).outputs] == [(None, 1)] * 3


def test_mmoe_is_single_level_ple_without_specific_experts():
    mmoe = make("mmoe", num_tasks=2)
    ple = make("ple", num_tasks=2, num_levels=1, num_specific_experts=0, num_shared_experts=3)
    assert mmoe.count_params() == ple.count_params()
    ple.set_weights(mmoe.get_weights())
    x, _ = batch(16)
    np.testing.assert_allclose(npy(ple(x)[PRIMARY]), npy(mmoe(x)[PRIMARY]), atol=1e-6)
