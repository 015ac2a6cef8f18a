"""DHEN, Wukong, PLE and MMoE backbones: shapes, training, round trip, embedding options, C2AL, export,
attention reachability and argument checks. Run under TF and JAX (export: TF only)."""

import os

import keras
import numpy as np
import pytest

from layers import MultiFieldEmbedding
from zoo.c2al import C2AL
from zoo.model import PRIMARY, build, fold_embeddings, primary_model, shared_representation
from zoo.registry import backbone_names, get_backbone
from zoo.spec import FeatureSpec
from zoo.c2al import compile_model

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
OPTIONS = [{"type": "plain"}, {"type": "mlet", "inner_dim": 6}, {"type": "multi", "num_sets": 2}]  # plain: above


def make(name, embedding=None, **overrides):
    spec, hp, _ = CASES[name]
    return build(name, spec, embedding=embedding, **{**hp, **overrides})


def npy(x):
    return keras.ops.convert_to_numpy(x)


def test_registered():
    assert {"dhen", "wukong", "ple", "mmoe"} <= set(backbone_names())


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


def bce(y, p):
    p = np.clip(np.asarray(p, "float64"), 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_c2al_training_and_round_trip(name, tmp_path):
    """One model per backbone through its life: shapes, C2AL's served path, a few steps, .keras round trip."""
    keras.utils.set_random_seed(0)
    model = make(name)
    backbone = model.get_layer("backbone")
    x, y = batch(512, seed=1)
    assert tuple(model(x)[PRIMARY].shape) == (512, 1)
    assert shared_representation(model).shape == (None, CASES[name][2])

    wrapped = C2AL(model)  # the served path of the wrapped model is the baseline: weights and outputs
    out = wrapped(x)
    assert sorted(out) == ["aux_head", "aux_tail", PRIMARY]
    served = primary_model(wrapped)
    assert served.count_params() == model.count_params()
    assert [w.path for w in served.weights] == [w.path for w in model.weights]
    np.testing.assert_array_equal(npy(served(x)), npy(out[PRIMARY]))
    np.testing.assert_array_equal(npy(served(x)), npy(model(x)[PRIMARY]))

    attention = [npy(w).copy() for w in backbone.weights if "attention" in w.path]
    before = bce(y, npy(model(x)[PRIMARY]))
    compile_model(model, 0.01, None)
    model.fit(x, {PRIMARY: y}, epochs=4, batch_size=64, verbose=0)
    assert bce(y, npy(model(x)[PRIMARY])) < before - 0.05
    after = [npy(w) for w in backbone.weights if "attention" in w.path]
    assert len(attention) == {"dhen": 8, "wukong": 2}.get(name, 0)
    assert all(not np.allclose(a, b) for a, b in zip(attention, after))  # Y (or its MLP) is trained

    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(npy(loaded(x)[PRIMARY]), npy(model(x)[PRIMARY]), atol=1e-6)
    assert loaded.get_layer("backbone").get_config() == backbone.get_config()


@pytest.mark.parametrize("embedding", OPTIONS[1:], ids=lambda o: o["type"])
@pytest.mark.parametrize("name", NAMES)
def test_every_embedding_option(name, embedding):
    keras.utils.set_random_seed(2)
    overrides, width = NO_HEAD[name] if embedding["type"] == "multi" else ({}, CASES[name][2])
    model = make(name, embedding=embedding, **overrides)
    backbone = model.get_layer("backbone")
    x, _ = batch(16)
    out = npy(model(x)[PRIMARY])
    assert out.shape == (16, 1) and np.all(np.isfinite(out))
    assert shared_representation(model).shape == (None, width)
    assert len(backbone.interactions) == backbone.num_sets == embedding.get("num_sets", 1)
    if embedding["type"] == "mlet":  # the MLET tables fold into plain ones with equal outputs
        folded = fold_embeddings(model)
        assert all(type(e) is MultiFieldEmbedding for e in folded.get_layer("backbone").encoder.embedders)
        np.testing.assert_allclose(npy(folded(x)), out, atol=1e-6)
    if embedding["type"] == "multi" and name in ("dhen", "wukong"):
        assert len(backbone.attention_fms) == 2 * 2   # one per set and layer


@pytest.mark.tf_only
@pytest.mark.parametrize("name, embedding", [
    ("dhen", {"type": "mlet", "inner_dim": 6}),
    ("wukong", {"type": "multi", "num_sets": 2}),
    ("ple", {"type": "plain"}),
    ("mmoe", {"type": "mlet", "inner_dim": 6}),
], ids=["dhen-mlet", "wukong-multi", "ple-plain", "mmoe-mlet"])
def test_export_serves_the_keras_numbers(name, embedding, tmp_path):
    import tensorflow as tf

    from zoo.export import export_saved_model

    keras.utils.set_random_seed(4)
    model = C2AL(make(name, embedding=embedding))
    spec = CASES[name][0]
    path = export_saved_model(model, spec, str(tmp_path), name, verify=False)  # compared below
    loaded = tf.saved_model.load(path)
    x, _ = batch(64, seed=5)
    got = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in x.items()})["probability"]
    expected = npy(model(x)[PRIMARY])
    assert np.max(np.abs(got.numpy() - expected)) <= 1e-5


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


@pytest.mark.parametrize("name, spec, kwargs, argument", [
    ("dhen", SPEC, {}, "embedding_dim"),
    ("dhen", UNIFORM, dict(num_layers=0), "num_layers"),
    ("dhen", UNIFORM, dict(modules=["attention_fm", "fm"]), "modules"),
    ("dhen", UNIFORM, dict(modules=[]), "modules"),
    ("dhen", UNIFORM, dict(attention_mode="global"), "attention_mode"),
    ("dhen", UNIFORM, dict(attention_k=0), "attention_k"),
    ("dhen", UNIFORM, dict(attention_normalize="sigmoid"), "attention_normalize"),
    ("dhen", UNIFORM, dict(cross_rank=0), "cross_rank"),
    ("dhen", UNIFORM, dict(modules=["mlp"], mlp_units=[]), "mlp_units"),
    ("dhen", UNIFORM, dict(num_dense_tokens=0), "num_dense_tokens"),
    ("dhen", UNIFORM, dict(head_units=[8, 0]), "head_units"),
    ("dhen", UNIFORM, dict(norm="group"), "norm"),
    ("wukong", SPEC, {}, "embedding_dim"),
    ("wukong", UNIFORM, dict(num_layers=0), "num_layers"),
    ("wukong", UNIFORM, dict(num_fmb_tokens=0), "num_fmb_tokens"),
    ("wukong", UNIFORM, dict(num_lcb_tokens=-1), "num_lcb_tokens"),
    ("wukong", UNIFORM, dict(fm_rank=1.5), "fm_rank"),
    ("wukong", UNIFORM, dict(fmb_units=[-2]), "fmb_units"),
    ("wukong", UNIFORM, dict(dropout=1.0), "dropout"),
    ("ple", SPEC, dict(num_tasks=0), "num_tasks"),
    ("ple", SPEC, dict(num_levels=0), "num_levels"),
    ("ple", SPEC, dict(num_specific_experts=-1), "num_specific_experts"),
    ("ple", SPEC, dict(num_specific_experts=0, num_shared_experts=0), "num_shared_experts"),
    ("ple", SPEC, dict(expert_units=[]), "expert_units"),
    ("ple", SPEC, dict(tower_units=[0]), "tower_units"),
    ("mmoe", SPEC, dict(num_experts=0), "num_experts"),
    ("mmoe", SPEC, dict(num_tasks=0), "num_tasks"),
    ("mmoe", SPEC, dict(gate_units=[-1]), "gate_units"),
])
def test_bad_hyper_parameters_name_the_argument(name, spec, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        build(name, spec, **{**CASES[name][1], **kwargs})
