"""C2AL diagnostics (zoo.diagnostics): statistics on hand-built arrays with known answers, collect() on
small Wukong and DHEN models, the callback under model.fit (JSON, history, TensorBoard) and the plots."""

import glob
import json
import math
import os

import keras
import numpy as np
import pytest

from zoo import diagnostics as D
from zoo.c2al import C2AL
from zoo.model import PRIMARY, build

from helpers import DHEN_HP, UNIFORM, WUKONG_HP, batch  # noqa: E402  (tests/ is on sys.path under pytest)

PNG = b"\x89PNG\r\n\x1a\n"
# The tiny spec and hyper-parameters of tests/test_backbones_b.py (every id input at width 4, as DHEN
# and Wukong need): tokens user, item, wide, hist + one dense token (price), so n = 5, d = 4; embedding
# rows: user 6 + OOV, item 5 hashed (shared by hist), wide 3 + OOV = 16.
SPEC = UNIFORM
HPARAMS = {"dhen": DHEN_HP, "wukong": WUKONG_HP}


def make(name, embedding=None, **overrides):
    return build(name, SPEC, embedding=embedding, **{**HPARAMS[name], **overrides})


def npy(x):
    return keras.ops.convert_to_numpy(x)


# ---------------------------------------------------------------------------------------------------
# Statistics: known answers
# ---------------------------------------------------------------------------------------------------

@pytest.mark.multi_backend
def test_near_zero_fraction():
    y = np.array([[1.0, 0.0005, 0.0], [0.002, -0.001, -2.0]])   # threshold 1e-3 * 2 = 0.002
    assert D.near_zero_fraction(y) == pytest.approx(4 / 6)      # 0.0005, 0, 0.002, -0.001
    assert D.near_zero_fraction(y, rel_eps=0.0) == pytest.approx(1 / 6)
    assert D.near_zero_fraction(np.zeros((3, 2))) == 1.0
    assert D.near_zero_fraction(np.eye(4)) == pytest.approx(12 / 16)


@pytest.mark.multi_backend
def test_normalized_entropy():
    assert D.normalized_entropy(np.full((4, 3), -0.7)) == pytest.approx(1.0)    # uniform magnitudes
    one_hot = np.zeros((5, 2))
    one_hot[3, 1] = 4.0
    assert D.normalized_entropy(one_hot) == pytest.approx(0.0)
    # Magnitudes (1, 1, 2) -> p = (1/4, 1/4, 1/2): H = 1.5 log 2, divided by log 3.
    assert D.normalized_entropy([1.0, -1.0, 2.0]) == pytest.approx(1.5 * math.log(2) / math.log(3))
    # Two equal non-zero entries out of 4: H = log 2, / log 4 = 1/2.
    assert D.normalized_entropy([0.0, 3.0, 0.0, -3.0]) == pytest.approx(0.5)
    assert D.normalized_entropy(np.zeros(6)) == 0.0
    # axis=0 (docs/methods.md#taps: column-normalized variant): column 0 uniform (1), column 1 one-hot (0) -> 0.5.
    y = np.array([[1.0, 0.0], [1.0, 5.0], [1.0, 0.0]])
    assert D.normalized_entropy(y, axis=0) == pytest.approx(0.5)


@pytest.mark.multi_backend
def test_excess_kurtosis():
    # Bernoulli(1/4) entries: m2 = 3/16, m4 = 21/256 -> 21/256 / (9/256) - 3 = -2/3.
    assert D.excess_kurtosis([0.0, 0.0, 0.0, 1.0]) == pytest.approx(-2 / 3)
    assert D.excess_kurtosis([[1.0, -1.0], [-1.0, 1.0]]) == pytest.approx(-2.0)  # symmetric two-point
    y = np.random.default_rng(0).standard_t(5, size=(40, 7))
    c = y.ravel() - y.mean()
    manual = np.mean(c ** 4) / np.mean(c ** 2) ** 2 - 3.0
    assert D.excess_kurtosis(y) == pytest.approx(manual, rel=1e-12)
    assert abs(D.excess_kurtosis(np.random.default_rng(1).normal(size=200_000))) < 0.05  # Gaussian: 0
    assert math.isnan(D.excess_kurtosis(np.full(5, 0.1)))    # constant: undefined


@pytest.mark.multi_backend
def test_participation_ratio():
    assert D.participation_ratio(np.full((3, 4), -2.0)) == pytest.approx(1.0)
    one_hot = np.zeros(10)
    one_hot[7] = 3.0
    assert D.participation_ratio(one_hot) == pytest.approx(1 / 10)
    assert D.participation_ratio([2.0, -2.0, 0.0, 0.0, 0.0]) == pytest.approx(2 / 5)   # m equal of N
    y = np.array([1.0, 2.0, 0.0, -1.0])
    # power 2: (1 + 4 + 1)^2 / (4 (1 + 16 + 1)) = 36 / 72; power 1 (docs/methods.md#diagnostics metric 4): 4^2 / (4 * 6) = 2/3
    assert D.participation_ratio(y) == pytest.approx(0.5)
    assert D.participation_ratio(y, power=1) == pytest.approx(2 / 3)
    assert D.participation_ratio(np.zeros(3)) == 0.0


@pytest.mark.multi_backend
def test_dead_relu_fraction():
    a = np.array([[0.0, 1.0, 0.0, 0.0],
                  [0.0, 2.0, 3.0, 0.0],
                  [0.0, 0.0, 0.0, 0.0],
                  [0.0, 1.0, 0.0, 0.5]])
    assert D.dead_relu_fraction(a) == pytest.approx(1 / 4)               # only unit 0 is always 0
    assert D.dead_relu_fraction(a, min_dead_fraction=0.75) == pytest.approx(3 / 4)  # units 0, 2, 3
    assert D.dead_relu_fraction(np.maximum(a, 0.0)[None]) == pytest.approx(1 / 4)  # (..., U)
    assert D.dead_relu_fraction(-np.ones((2, 3))) == 1.0


@pytest.mark.multi_backend
def test_information_abundance():
    assert D.information_abundance(np.diag([3.0, 2.0, 1.0])) == pytest.approx(2.0)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))
    table = q[:, :3] @ np.diag([3.0, 2.0, 1.0])                          # same singular values
    assert D.information_abundance(table) == pytest.approx(2.0)
    assert D.information_abundance(np.outer(np.arange(1.0, 6.0), [1.0, -2.0, 0.5])) == pytest.approx(1.0)
    assert D.information_abundance(q[:, :4]) == pytest.approx(4.0)       # equal singular values: d
    with pytest.raises(ValueError, match="table"):
        D.information_abundance(np.ones(3))


@pytest.mark.multi_backend
def test_attention_stats_per_example_is_the_mean_over_examples():
    y = np.random.default_rng(3).normal(size=(6, 5, 3))
    got = D.attention_stats(y, per_example=True)
    assert got["near_zero_fraction"] == pytest.approx(np.mean([D.near_zero_fraction(e) for e in y]))
    assert got["normalized_entropy"] == pytest.approx(np.mean([D.normalized_entropy(e) for e in y]))
    assert got["excess_kurtosis"] == pytest.approx(np.mean([D.excess_kurtosis(e) for e in y]))
    assert got["participation_ratio"] == pytest.approx(np.mean([D.participation_ratio(e) for e in y]))


# ---------------------------------------------------------------------------------------------------
# collect on small models
# ---------------------------------------------------------------------------------------------------

def _direct_stats(y):
    return {"near_zero_fraction": D.near_zero_fraction(y), "normalized_entropy": D.normalized_entropy(y),
            "excess_kurtosis": D.excess_kurtosis(y), "participation_ratio": D.participation_ratio(y)}


@pytest.mark.multi_backend
def test_collect_wukong_static_y_over_arch_and_tables():
    keras.utils.set_random_seed(0)
    model = make("wukong")
    backbone = model.get_layer("backbone")
    x, _ = batch(32)
    # A hand-set head: layer 0 always active (bias +1, kernel 0), layer 1 always dead (bias -1).
    head = backbone.head
    d0, d1 = head._dense
    d0.kernel.assign(np.zeros(d0.kernel.shape, "float32"))
    d0.bias.assign(np.ones(d0.bias.shape, "float32"))
    d1.bias.assign(-1e3 * np.ones(d1.bias.shape, "float32"))
    stats = D.collect(model, x)

    fms = backbone.attention_fms
    assert [r["name"] for r in stats["attention"]] == [fm.name for fm in fms] and len(fms) == 2
    for rec, fm in zip(stats["attention"], fms):
        w = npy(fm.attention_matrix)                   # static, normalize=None: Y is the weight
        assert rec["mode"] == "static" and rec["shape"] == list(w.shape)
        for key, value in _direct_stats(w).items():
            assert rec[key] == pytest.approx(value, rel=1e-9), key
        np.testing.assert_allclose(rec["abs_y"], np.abs(w).ravel(), rtol=1e-6)

    over = stats["over_arch"]
    assert [(r["name"], r["units"], r["dead_relu_fraction"]) for r in over["layers"]] == [
        ("head/dense_0", 8, 0.0), ("head/dense_1", 4, 1.0)]
    assert over["units"] == 12 and over["dead_relu_fraction"] == pytest.approx(4 / 12)

    # Tables: user (6 + OOV rows) then item (5 hashed rows) in the width-4 fused table; wide its own.
    assert sorted(stats["information_abundance"]) == ["item", "user", "wide"]
    fused = npy(backbone.encoder.embedders[0].embeddings)
    assert fused.shape == (16, 4)
    assert stats["information_abundance"]["user"] == pytest.approx(D.information_abundance(fused[:7]))
    assert stats["information_abundance"]["item"] == pytest.approx(D.information_abundance(fused[7:12]))
    assert stats["information_abundance"]["wide"] == pytest.approx(D.information_abundance(fused[12:]))

    # The forward-pass wrappers are gone afterwards, and the C2AL-wrapped model gives the same numbers.
    assert "over_arch" not in vars(backbone) and all("attention" not in vars(fm) for fm in fms)
    assert head.activation is keras.activations.get("relu")
    flat = D.flatten_stats(stats)
    assert D.flatten_stats(D.collect(C2AL(model), x)) == pytest.approx(flat)
    assert flat["over_arch/head/dense_1/dead_relu_fraction"] == 1.0
    assert flat["attention/fmb_attention_fm_0/participation_ratio"] == stats["attention"][0]["participation_ratio"]


@pytest.mark.multi_backend
def test_collect_dhen_dynamic_y_on_the_probe_batch_and_mlet_tables():
    keras.utils.set_random_seed(1)
    model = make("dhen", embedding={"type": "mlet", "inner_dim": 6})
    backbone = model.get_layer("backbone")
    x, _ = batch(16)
    stats = D.collect(model, x)
    ys = [npy(y) for y in backbone.attention_matrices(x)]       # (B, n, k) per layer, the reference
    assert len(stats["attention"]) == len(backbone.attention_fms) == 2
    for rec, y in zip(stats["attention"], ys):
        assert rec["mode"] == "dynamic" and rec["shape"] == [16, 5, 3]
        assert {k: rec[k] for k in D.Y_STATS} == pytest.approx(D.attention_stats(y, per_example=True), rel=1e-5)
        np.testing.assert_allclose(np.sort(rec["abs_y"]), np.sort(np.abs(y).ravel()), rtol=1e-5, atol=1e-7)
    assert [r["name"] for r in stats["over_arch"]["layers"]] == ["head/dense_0", "head/dense_1"]
    folded = npy(backbone.encoder.embedders[0].fold().embeddings)   # MLET: the served table A B_f
    assert stats["information_abundance"]["user"] == pytest.approx(D.information_abundance(folded[:7]), rel=1e-5)
    assert stats["information_abundance"]["item"] == pytest.approx(D.information_abundance(folded[7:12]), rel=1e-5)
    # No head: the over-arch is the identity, so there is nothing to measure.
    assert D.collect(make("dhen", head_units=[]), x)["over_arch"] is None


# ---------------------------------------------------------------------------------------------------
# Callback
# ---------------------------------------------------------------------------------------------------

def _fit(model, callback, epochs=2):
    x, y = batch(64, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss={PRIMARY: keras.losses.BinaryCrossentropy()})
    model.fit(x, {PRIMARY: y}, epochs=epochs, batch_size=16, verbose=0, callbacks=[callback])


@pytest.mark.multi_backend
def test_callback_records_json_and_history(tmp_path):
    keras.utils.set_random_seed(2)
    model = make("wukong")
    probe, _ = batch(32, seed=3)
    path = os.path.join(tmp_path, "sub", "diag.jsonl")
    diag = D.C2ALDiagnostics(probe, every_n_steps=3, json_path=path)
    _fit(model, diag)                       # 2 epochs x 4 steps: begin (0), 3, 6, end (8)
    assert [(r["step"], r["epoch"], r["event"]) for r in diag.history] == [
        (0, 0, "train_begin"), (3, 0, "step"), (6, 1, "step"), (8, 1, "train_end")]
    records = D.load_records(path)
    assert len(records) == 4 and [r["step"] for r in records] == [0, 3, 6, 8]
    key = "attention/fmb_attention_fm_0/normalized_entropy"
    assert records[-1][key] == pytest.approx(diag.history[-1][key])
    assert set(records[0]["abs_y"]) == {"fmb_attention_fm_0", "fmb_attention_fm_1"}
    # Every record reads the weights of its step (under JAX this needs the state sync): Y is trained.
    first, last = diag.history[0]["abs_y"]["fmb_attention_fm_0"], diag.history[-1]["abs_y"]["fmb_attention_fm_0"]
    assert not np.allclose(first, last)
    np.testing.assert_allclose(last, np.abs(npy(model.get_layer("backbone").attention_fms[0].attention_matrix))
                               .ravel(), rtol=1e-6)
    with open(path) as fh:
        assert all(isinstance(json.loads(line), dict) for line in fh)


@pytest.mark.tf_only
def test_callback_writes_tensorboard_events(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    model = make("dhen")
    probe, _ = batch(32, seed=4)
    log_dir = os.path.join(tmp_path, "tb")
    diag = D.C2ALDiagnostics(probe, every_n_steps=2, log_dir=log_dir, json_path=os.path.join(tmp_path, "d.jsonl"))
    _fit(model, diag)                       # begin (0), 2, 4, 6, 8; the end record would repeat step 8
    diag.close()
    assert [r["step"] for r in diag.history] == [0, 2, 4, 6, 8]
    assert len(D.load_records(os.path.join(tmp_path, "d.jsonl"))) == 5
    events = glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
    assert len(events) == 1
    steps: dict[str, list[int]] = {}
    for event in tf.compat.v1.train.summary_iterator(events[0]):
        for value in event.summary.value:
            steps.setdefault(value.tag, []).append(event.step)
    assert steps["over_arch/dead_relu_fraction"] == [0, 2, 4, 6, 8]
    assert steps["attention/attention_fm_1/excess_kurtosis"] == [0, 2, 4, 6, 8]
    assert steps["attention/attention_fm_0/abs_y"] == [0, 2, 4, 6, 8]    # the |Y| histograms
    assert steps["information_abundance/wide"] == [0, 2, 4, 6, 8]


# ---------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------

@pytest.mark.multi_backend
def test_plots_write_png(tmp_path):
    single = D.plot_ne_diff({"head": -0.25, "tail": -0.17, "mid": 0.02}, os.path.join(tmp_path, "ne.png"))
    runs = D.plot_ne_diff({"value_band": {"low": [-0.2, -0.1, -0.3], "high": [0.1, float("nan")]}},
                          os.path.join(tmp_path, "ne_runs.png"), title="3 seeds")
    rng = np.random.default_rng(0)

    def records(scale):
        return [{"step": 10 * i, "abs_y": {"fm_0": list(np.abs(rng.normal(0, scale * (i + 1), 60))),
                                           "fm_1": list(np.abs(rng.laplace(0, 1, 60)))}} for i in range(5)]

    hist = D.plot_attention_histograms(records(1.0), records(2.0), os.path.join(tmp_path, "a", "hist.png"))
    one = D.plot_attention_histograms(records(1.0)[:1], records(2.0), os.path.join(tmp_path, "h1.png"),
                                      points=3, layers=["fm_1"])
    for path in (single, runs, hist, one):
        with open(path, "rb") as fh:
            assert fh.read(8) == PNG
    with pytest.raises(ValueError, match="layers"):
        D.plot_attention_histograms(records(1.0), [{"abs_y": {"other": [1.0]}}], os.path.join(tmp_path, "x.png"))
