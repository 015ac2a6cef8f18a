"""Gradient alignment of the C2AL auxiliary losses (zoo.diagnostics.gradients): the statistics on hand-built
matrices, the closed form on hand-set heads with known answers, closed form and library autodiff against the
backend's own autodiff (TF GradientTape, jax.grad) on tiny C2AL models, the uncovered cases, and the callback's
records under model.fit."""

import os

import keras
import numpy as np
import pytest

from zoo import diagnostics as D
from zoo.c2al import AUX_HEAD, AUX_TAIL, C2AL, build_c2al, loss_weights
from zoo.model import PRIMARY, build, interaction_output, shared_representation

from helpers import HP, SPEC, batch, tiny_hparams  # noqa: E402  (tests/ is on sys.path under pytest)

LAMBDAS = {AUX_HEAD: 0.3, AUX_TAIL: 0.7}


def npy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def tiny_c2al(seed=0, **c2al_kwargs):
    keras.utils.set_random_seed(seed)
    return C2AL(build("dcnv2", SPEC, **HP), **c2al_kwargs)


def probe(n=48, seed=0):
    x, y = batch(n, seed=seed)
    rng = np.random.default_rng(seed + 100)
    head, tail = rng.random(n) < 0.3, rng.random(n) < 0.2
    targets = {PRIMARY: y, AUX_HEAD: y * head[:, None], AUX_TAIL: y * tail[:, None]}
    return x, targets, {"head": head, "tail": tail}


def set_head(model, output, kernel, bias):
    layer = model.get_layer(f"{output}_logit")
    layer.kernel.assign(np.asarray(kernel, "float32").reshape(layer.kernel.shape))
    layer.bias.assign(np.asarray(bias, "float32").reshape(layer.bias.shape))


def primary_probability(model, x):
    return npy(model(x, training=False)[PRIMARY]).astype(np.float64).ravel()


# ---------------------------------------------------------------------------------------------------
# The statistics on hand-built matrices
# ---------------------------------------------------------------------------------------------------

@pytest.mark.multi_backend
def test_alignment_stats_known_answers():
    g = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]])
    same = D.alignment_stats(g, 0.5 * g)
    assert same["cosine"] == pytest.approx(1.0) and same["sign"] == 1.0
    assert same["parallel_coef"] == pytest.approx(0.5) and same["orthogonal_norm"] == pytest.approx(0.0, abs=1e-12)
    assert same["parallel_norm"] == pytest.approx(0.5 * np.linalg.norm(g))
    opposite = D.alignment_stats(g, -2.0 * g)
    assert opposite["cosine"] == pytest.approx(-1.0) and opposite["sign"] == -1.0
    assert opposite["parallel_coef"] == pytest.approx(-2.0)
    # g_a = 2 g_p + e, <e, g_p> = 0: coefficient 2, parallel 2 ||g_p||, orthogonal ||e||, cosine 2||g||/||g_a||.
    gp = np.array([[1.0, 0.0], [0.0, 0.0]])
    e = np.array([[0.0, 3.0], [4.0, 0.0]])
    got = D.alignment_stats(gp, 2.0 * gp + e)
    assert got == pytest.approx({"cosine": 2.0 / np.sqrt(29.0), "parallel_coef": 2.0, "parallel_norm": 2.0,
                                 "orthogonal_norm": 5.0, "aux_norm": np.sqrt(29.0), "primary_norm": 1.0,
                                 "sign": 1.0})
    orthogonal = D.alignment_stats(gp, e)
    assert orthogonal["cosine"] == 0.0 and orthogonal["sign"] == 0.0 and orthogonal["orthogonal_norm"] == 5.0
    # Undefined: a zero primary gradient (no direction), a zero auxiliary one (no cosine), no rows.
    zero_p = D.alignment_stats(np.zeros((2, 2)), e)
    assert np.isnan(zero_p["cosine"]) and np.isnan(zero_p["parallel_coef"]) and zero_p["aux_norm"] == 5.0
    zero_a = D.alignment_stats(gp, np.zeros((2, 2)))
    assert np.isnan(zero_a["cosine"]) and zero_a["parallel_norm"] == 0.0 and zero_a["sign"] == 0.0
    assert all(np.isnan(v) for v in D.alignment_stats(np.zeros((0, 2)), np.zeros((0, 2))).values())
    with pytest.raises(ValueError, match="same size"):
        D.alignment_stats(gp, np.zeros(3))


# ---------------------------------------------------------------------------------------------------
# Closed form: hand-set heads with known answers
# ---------------------------------------------------------------------------------------------------

@pytest.mark.multi_backend
def test_closed_form_known_answers_on_hand_set_heads():
    model = tiny_c2al()
    x, targets, _ = probe()
    w = npy(model.get_layer("primary_logit").kernel).ravel()
    b = npy(model.get_layer("primary_logit").bias)
    y = targets[PRIMARY].ravel().astype(np.float64)

    # Identical heads and labels: G_k = lambda_k G_p, cosine 1, coefficient lambda_k, nothing orthogonal.
    set_head(model, AUX_HEAD, w, b)
    set_head(model, AUX_TAIL, w, b)
    same = {PRIMARY: y, AUX_HEAD: y, AUX_TAIL: y}
    got = D.gradient_alignment(model, x, same, LAMBDAS)
    assert got["method"] == "closed_form" and got["tap"] == "primary_head_input" and got["batch_size"] == 48
    for output, lam in LAMBDAS.items():
        stats = got["heads"][output]["all"]
        assert stats["cosine"] == pytest.approx(1.0, abs=1e-9) and stats["sign"] == 1.0
        assert stats["parallel_coef"] == pytest.approx(lam, rel=1e-9)
        assert stats["orthogonal_norm"] == pytest.approx(0.0, abs=1e-9 * stats["aux_norm"])
    # The same head with the residual reflected (soft labels y_k = 2 p - y, so p - y_k = -(p - y)): conflict.
    p = primary_probability(model, x)
    reflected = D.gradient_alignment(model, x, {PRIMARY: y, AUX_HEAD: 2 * p - y, AUX_TAIL: y}, LAMBDAS)
    assert reflected["heads"][AUX_HEAD]["all"]["cosine"] == pytest.approx(-1.0, abs=1e-6)
    assert reflected["heads"][AUX_HEAD]["all"]["sign"] == -1.0
    assert reflected["heads"][AUX_HEAD]["all"]["parallel_coef"] == pytest.approx(-LAMBDAS[AUX_HEAD], rel=1e-5)
    # A kernel orthogonal to the primary's: the gradients are orthogonal, whatever the residuals.
    v = np.random.default_rng(0).normal(size=w.shape)
    set_head(model, AUX_TAIL, v - (v @ w) / (w @ w) * w, 0.3)
    stats = D.gradient_alignment(model, x, targets, LAMBDAS)["heads"][AUX_TAIL]["all"]
    assert stats["cosine"] == pytest.approx(0.0, abs=1e-6)
    assert stats["orthogonal_norm"] == pytest.approx(stats["aux_norm"], rel=1e-6)
    # The factorization of the closed form: cosine = cos(w_p, w_k) * cos(p - y, p_k - y_k).
    rng = np.random.default_rng(1)
    w_k = rng.normal(size=w.shape)
    set_head(model, AUX_HEAD, w_k, -0.2)
    w_k = npy(model.get_layer("aux_head_logit").kernel).ravel().astype(np.float64)   # as stored (float32)
    p_k = npy(model(x, training=False)[AUX_HEAD]).astype(np.float64).ravel()
    r_p, r_k = p - y, p_k - targets[AUX_HEAD].ravel()
    cos = lambda a, c: a @ c / np.linalg.norm(a) / np.linalg.norm(c)  # noqa: E731
    got = D.gradient_alignment(model, x, targets, LAMBDAS)["heads"][AUX_HEAD]["all"]
    assert got["cosine"] == pytest.approx(cos(w, w_k) * cos(r_p, r_k), rel=1e-6)  # float32 forward passes
    assert got["aux_norm"] == pytest.approx(LAMBDAS[AUX_HEAD] * np.linalg.norm(r_k) * np.linalg.norm(w_k) / 48,
                                            rel=1e-6)
    assert got["primary_norm"] == pytest.approx(np.linalg.norm(r_p) * np.linalg.norm(w) / 48, rel=1e-6)


# ---------------------------------------------------------------------------------------------------
# Against the backend's own autodiff
# ---------------------------------------------------------------------------------------------------

def reference_gradients(model, x, targets, weights, tap="h"):
    """dL/dt of each output's weighted batch-mean BCE, with the backend directly (TF GradientTape, jax.grad),
    on the probabilities of the model's own sigmoid layers and Keras' probability BCE."""
    backbone = model.get_layer("backbone")
    t0 = backbone(x, training=False) if tap == "h" else backbone.compute_interaction(x, training=False)

    def losses(t):
        h = t if tap == "h" else backbone.over_arch(t, training=False)
        out = {}
        for name in weights:
            src = h if name == PRIMARY else t
            if name != PRIMARY and any(layer.name == f"{name}_mlp" for layer in model.layers):
                src = model.get_layer(f"{name}_mlp")(src, training=False)
            logit = model.get_layer(f"{name}_logit")(src)
            prob = model.get_layer(name)(logit)
            y = keras.ops.convert_to_tensor(np.asarray(targets[name], "float32").reshape(-1, 1))
            out[name] = weights[name] * keras.ops.mean(keras.losses.binary_crossentropy(y, prob))
        return out

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        t0 = tf.convert_to_tensor(t0)
        grads = {}
        for name in weights:
            with tf.GradientTape() as tape:
                tape.watch(t0)
                loss = losses(t0)[name]
            grads[name] = tape.gradient(loss, t0).numpy()
        return grads
    import jax

    return {name: np.asarray(jax.grad(lambda t, name=name: losses(t)[name])(t0)) for name in weights}


@pytest.mark.multi_backend
def test_closed_form_and_autodiff_match_the_backend_autodiff():
    model = tiny_c2al(seed=3)
    x, targets, masks = probe(seed=3)
    weights = {PRIMARY: 1.0, **LAMBDAS}
    ref = reference_gradients(model, x, targets, weights)
    closed = D.representation_gradients(model, x, targets, loss_weights(0.3, 0.7), method="closed_form")
    auto = D.representation_gradients(model, x, targets, LAMBDAS, method="autodiff")
    assert closed["method"] == "closed_form" and auto["method"] == "autodiff"
    for name in weights:
        scale = np.abs(ref[name]).max()
        assert scale > 0 and closed["gradients"][name].shape == ref[name].shape == (48, 4)  # h: the deep MLP's [8, 4]
        np.testing.assert_allclose(closed["gradients"][name], ref[name], atol=1e-5 * scale, rtol=1e-4)
        np.testing.assert_allclose(auto["gradients"][name], ref[name], atol=1e-5 * scale, rtol=1e-4)
    by_closed = D.gradient_alignment(model, x, targets, LAMBDAS, cohort_masks=masks, method="closed_form")
    by_auto = D.gradient_alignment(model, x, targets, LAMBDAS, cohort_masks=masks, method="autodiff")
    assert D.flatten_gradients(by_closed) == pytest.approx(D.flatten_gradients(by_auto), rel=1e-4, abs=1e-6)
    # The restrictions are the statistics of the masked rows of the same G.
    g = closed["gradients"]
    assert by_closed["rows"] == {"all": 48, "head": int(masks["head"].sum()), "tail": int(masks["tail"].sum())}
    for name in LAMBDAS:
        for rows, mask in masks.items():
            assert by_closed["heads"][name][rows] == pytest.approx(
                D.alignment_stats(g[PRIMARY][mask], g[name][mask]), nan_ok=True)


@pytest.mark.multi_backend
@pytest.mark.parametrize("tap", ["primary_head_input", "interaction_output"])
def test_autodiff_on_mlp_heads_and_taps(tap):
    model = tiny_c2al(seed=4, head_units={"head": [5, 3]}, tap=tap)
    x, targets, masks = probe(seed=4)
    with pytest.raises(NotImplementedError, match="closed form needs single Dense"):
        D.gradient_alignment(model, x, targets, LAMBDAS, method="closed_form")
    got = D.representation_gradients(model, x, targets, LAMBDAS)
    assert got["method"] == "autodiff" and got["tap"] == tap
    ref = reference_gradients(model, x, targets, {PRIMARY: 1.0, **LAMBDAS}, tap="h" if tap == "primary_head_input"
                              else "z")
    for name, g in ref.items():
        assert np.abs(g).max() > 0
        np.testing.assert_allclose(got["gradients"][name], g, atol=1e-5 * np.abs(g).max(), rtol=1e-4)
    width = (shared_representation if tap == "primary_head_input" else interaction_output)(model).shape[-1]
    assert got["gradients"][PRIMARY].shape == (48, width) and width == (4 if tap == "primary_head_input" else 15)
    flat = D.flatten_gradients(D.gradient_alignment(model, x, targets, LAMBDAS, cohort_masks=masks))
    assert -1.0 <= flat["gradients/aux_head/cosine"] <= 1.0 and "gradients/aux_tail/tail/sign" in flat


@pytest.mark.multi_backend
def test_default_rows_flatten_and_uncovered_cases():
    model = tiny_c2al(seed=5, heads=(AUX_TAIL,))
    x, targets, _ = probe(seed=5)
    got = D.gradient_alignment(model, x, targets, {AUX_TAIL: 0.5})
    assert list(got["heads"]) == [AUX_TAIL]
    assert got["rows"] == {"all": 48, "tail_nonzero": int((targets[AUX_TAIL] != 0).sum())}
    flat = D.flatten_gradients(got)
    assert sorted(flat) == sorted([f"gradients/aux_tail/{s}" for s in D.GRADIENT_STATS]
                                  + [f"gradients/aux_tail/tail_nonzero/{s}" for s in D.GRADIENT_STATS]
                                  + ["gradients/rows/tail_nonzero"])
    assert flat["gradients/aux_tail/cosine"] == got["heads"][AUX_TAIL]["all"]["cosine"]
    with pytest.raises(ValueError, match="lambdas: missing"):
        D.gradient_alignment(model, x, targets, {AUX_HEAD: 0.5})
    with pytest.raises(ValueError, match="y_targets: missing"):
        D.gradient_alignment(model, x, {PRIMARY: targets[PRIMARY]}, {AUX_TAIL: 0.5})
    with pytest.raises(ValueError, match="one entry per probe row"):
        D.gradient_alignment(model, x, targets, {AUX_TAIL: 0.5}, cohort_masks={"tail": np.ones(3, bool)})
    with pytest.raises(NotImplementedError, match="no auxiliary head"):
        D.gradient_alignment(build("dcnv2", SPEC, **HP), x, targets, LAMBDAS)
    hp = tiny_hparams("mmoe")
    towers = build_c2al("mmoe", SPEC, {"ablation": "ple_towers"}, **hp)
    with pytest.raises(NotImplementedError, match="ple_towers"):
        D.gradient_alignment(towers, x, targets, LAMBDAS)


# ---------------------------------------------------------------------------------------------------
# The callback
# ---------------------------------------------------------------------------------------------------

@pytest.mark.multi_backend
def test_callback_records_the_gradient_alignment(tmp_path):
    model = tiny_c2al(seed=6)
    x, targets, _ = probe(64, seed=6)
    px, pt, pmasks = probe(32, seed=7)
    path = os.path.join(tmp_path, "diag.jsonl")
    with pytest.raises(ValueError, match="lambdas: needed"):
        D.C2ALDiagnostics(px, probe_y=pt)
    diag = D.C2ALDiagnostics(px, every_n_steps=3, json_path=path, probe_y=pt, lambdas=loss_weights(0.3, 0.7),
                             probe_cohorts=pmasks)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss={k: keras.losses.BinaryCrossentropy() for k in pt},
                  loss_weights=loss_weights(0.3, 0.7))
    model.fit(x, targets, epochs=2, batch_size=16, verbose=0, callbacks=[diag])
    assert [r["step"] for r in diag.history] == [0, 3, 6, 8]
    keys = [f"gradients/{o}/{rows}{s}" for o in LAMBDAS for rows in ("", "head/", "tail/") for s in D.GRADIENT_STATS]
    for record in diag.history:
        assert all(k in record for k in keys) and record["gradients/rows/head"] == pmasks["head"].sum()
    # Each record reads the weights of its step: the last one is the trained model's.
    final = D.flatten_gradients(D.gradient_alignment(model, px, pt, LAMBDAS, cohort_masks=pmasks))
    assert {k: diag.history[-1][k] for k in final} == pytest.approx(final, nan_ok=True)
    assert diag.history[0]["gradients/aux_head/cosine"] != diag.history[-1]["gradients/aux_head/cosine"]
    records = D.load_records(path)
    assert records[-1]["gradients/aux_tail/tail/cosine"] == pytest.approx(
        diag.history[-1]["gradients/aux_tail/tail/cosine"], nan_ok=True)
