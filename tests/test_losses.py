"""The primary head's losses (zoo.losses): BCE + pairwise ranking against NumPy references (all pairs
and the capped next-k-rows sample), its fallback to BCE, its options' errors, serialization, and the
``training.loss`` plumbing into model YAMLs and compiled models. Run under TF and JAX."""

import itertools
import os
import re
import sys

import keras
import numpy as np
import pytest

from zoo import losses
from zoo.c2al import build_c2al, compile_model
from zoo.config import ConfigError, load_model_config, training_options
from zoo.losses import BCEWithPairwiseRanking, loss_options, primary_loss
from zoo.model import PRIMARY, build

sys.path.insert(0, os.path.dirname(__file__))
import layer_checks  # noqa: E402
from helpers import HP, SPEC, batch  # noqa: E402

pytestmark = pytest.mark.multi_backend
EPS = keras.config.epsilon()


def npy_logits(p):
    p = np.clip(p.astype("float64"), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def npy_bce(y, p):
    p = np.clip(p.astype("float64"), EPS, 1 - EPS)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def npy_all_pairs(y, p):
    """Mean of log(1 + exp(-(z_i - z_j))) over every (positive i, negative j) pair, and the pair count."""
    z = npy_logits(p)
    terms = [np.log1p(np.exp(-(z[i] - z[j]))) for i, j in itertools.product(range(len(y)), repeat=2)
             if y[i] == 1 and y[j] == 0]
    return (float(np.mean(terms)) if terms else None), len(terms)


def npy_next_rows(y, p, k):
    """The capped sample: each row b against rows b+1..b+k (mod B), each unordered pair once."""
    z, rows = npy_logits(p), len(y)
    seen, total, count = set(), 0.0, 0
    for b in range(rows):
        for t in range(1, k + 1):
            c = (b + t) % rows
            pair = frozenset((b, c))
            if c == b or pair in seen or y[b] == y[c]:
                continue
            seen.add(pair)
            i, j = (b, c) if y[b] == 1 else (c, b)
            total += np.log1p(np.exp(-(z[i] - z[j])))
            count += 1
    return (total / count if count else None), count


def call(loss, y, p):
    return float(keras.ops.convert_to_numpy(loss(y[:, None].astype("float32"), p[:, None].astype("float32"))))


def sample(rows, seed, positive_rate=0.3):
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < positive_rate).astype("float32")
    y[0], y[1] = 1.0, 0.0  # at least one pair
    return y, rng.uniform(0.02, 0.98, rows).astype("float32")


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 1.0])
def test_all_pairs_matches_numpy(alpha):
    y, p = sample(23, seed=1)
    ranking, count = npy_all_pairs(y, p)
    assert count == int(y.sum()) * int(len(y) - y.sum())
    expected = alpha * npy_bce(y, p) + (1 - alpha) * ranking
    assert call(BCEWithPairwiseRanking(alpha, pairs_per_row=None), y, p) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("rows,k", [(20, 1), (20, 3), (21, 4), (9, 2)])
def test_next_rows_sample_matches_numpy(rows, k):
    y, p = sample(rows, seed=rows + k)
    ranking, count = npy_next_rows(y, p, k)
    _, all_count = npy_all_pairs(y, p)
    assert 0 < count < all_count  # a true subsample
    expected = 0.7 * npy_bce(y, p) + 0.3 * ranking
    assert call(BCEWithPairwiseRanking(0.7, pairs_per_row=k), y, p) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("rows", [10, 11])
def test_a_cap_of_half_the_batch_compares_every_pair_once(rows):
    y, p = sample(rows, seed=3)
    full = call(BCEWithPairwiseRanking(0.5, pairs_per_row=None), y, p)
    for k in ((rows - 1) // 2 + (rows % 2 == 0), rows - 1, rows + 5):  # even B: t = B/2 at weight 1/2
        assert call(BCEWithPairwiseRanking(0.5, pairs_per_row=k), y, p) == pytest.approx(full, rel=1e-5)
    assert call(BCEWithPairwiseRanking(0.5, pairs_per_row=1), y, p) != pytest.approx(full, rel=1e-3)


@pytest.mark.parametrize("pairs_per_row", [None, 4])
@pytest.mark.parametrize("label", [0.0, 1.0])
def test_a_batch_with_one_class_falls_back_to_bce(pairs_per_row, label):
    y = np.full(12, label, "float32")
    p = np.linspace(0.1, 0.9, 12).astype("float32")
    assert call(BCEWithPairwiseRanking(0.7, pairs_per_row), y, p) == pytest.approx(npy_bce(y, p), rel=1e-5)


def test_the_ranking_term_orders_scores_not_calibration():
    y = np.array([1, 0, 1, 0], "float32")
    ranked = np.array([0.6, 0.4, 0.6, 0.4], "float32")   # every positive above every negative
    reversed_ = ranked[::-1].copy()
    ranking_only = BCEWithPairwiseRanking(alpha=0.0, pairs_per_row=None)
    assert call(ranking_only, y, ranked) == pytest.approx(np.log1p(np.exp(-2 * np.log(1.5))), rel=1e-5)
    assert call(ranking_only, y, reversed_) > call(ranking_only, y, ranked)


def test_gradients_flow_to_the_scores():
    y, p = sample(16, seed=5)
    loss = BCEWithPairwiseRanking(0.5, pairs_per_row=3)
    scores = keras.Variable(p[:, None])
    if keras.backend.backend() == "jax":
        import jax

        grad = jax.grad(lambda v: loss(y[:, None], v))(keras.ops.convert_to_tensor(p[:, None]))
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss(y[:, None], scores.value)
        grad = tape.gradient(value, scores.value)
    grad = keras.ops.convert_to_numpy(grad).ravel()
    assert np.all(np.isfinite(grad))
    assert np.all(grad[y == 1] < 0) and np.all(grad[y == 0] > 0)  # raise positives, lower negatives


def test_sample_weights_are_refused():
    y, p = sample(8, seed=0)
    with pytest.raises(ValueError, match=r"^sample_weight: "):
        BCEWithPairwiseRanking()(y[:, None], p[:, None], sample_weight=np.ones(8, "float32"))


def test_loss_options_fill_defaults_and_name_bad_keys():
    assert loss_options("bce") == {"type": "bce"}
    assert loss_options("bce_ranking") == {"type": "bce_ranking", "alpha": 0.7, "pairs_per_row": 256}
    assert loss_options({"type": "bce_ranking", "pairs_per_row": None})["pairs_per_row"] is None
    cases = [("hinge", r"^training\.loss: must be one of \['bce', 'bce_ranking'\]"),
             ({"alpha": 0.5}, r"^training\.loss: must be one of"),
             ({"type": "bce", "alpha": 0.5}, r"^training\.loss: unknown key\(s\) \['alpha'\] for type 'bce'"),
             ({"type": "bce_ranking", "pairs": 3}, r"^training\.loss: unknown key\(s\) \['pairs'\]"),
             ({"type": "bce_ranking", "alpha": 1.5}, r"^training\.loss\.alpha: must be a number in \[0, 1\]"),
             ({"type": "bce_ranking", "alpha": True}, r"^training\.loss\.alpha: "),
             ({"type": "bce_ranking", "pairs_per_row": 0}, r"^training\.loss\.pairs_per_row: must be a positive"),
             ({"type": "bce_ranking", "pairs_per_row": 2.5}, r"^training\.loss\.pairs_per_row: ")]
    for value, message in cases:
        with pytest.raises(ValueError, match=message):
            loss_options(value)


def test_primary_loss_types():
    assert isinstance(primary_loss(None), keras.losses.BinaryCrossentropy)
    made = primary_loss({"type": "bce_ranking", "alpha": 0.4, "pairs_per_row": 8})
    assert isinstance(made, BCEWithPairwiseRanking) and (made.alpha, made.pairs_per_row) == (0.4, 8)


def test_config_round_trip_without_custom_objects():
    loss = BCEWithPairwiseRanking(alpha=0.25, pairs_per_row=None)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, BCEWithPairwiseRanking)
    assert (again.alpha, again.pairs_per_row) == (0.25, None)
    y, p = sample(10, seed=2)
    assert call(again, y, p) == pytest.approx(call(loss, y, p), rel=1e-6)


def test_training_loss_in_a_model_yaml(tmp_path):
    assert training_options(None)["loss"] == {"type": "bce"}
    assert training_options({"loss": {"type": "bce_ranking", "alpha": 0.5}})["loss"] == {
        "type": "bce_ranking", "alpha": 0.5, "pairs_per_row": 256}
    path = tmp_path / "m.yaml"
    path.write_text("backbone: dcnv2\ntraining: {loss: {type: bce_ranking, alpha: 2}}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: training.loss.alpha: must be a number in [0, 1]")):
        load_model_config(str(path))


def test_compiled_models_rank_on_the_primary_head_only(tmp_path):
    options = {"type": "bce_ranking", "alpha": 0.6, "pairs_per_row": 16}
    model = build_c2al("dcnv2", SPEC, None, **HP)
    compile_model(model, 1e-3, {"lambda_head": 0.1, "lambda_tail": 0.1}, auc_metric=False, loss=options)
    assert len(model.loss) == 3 and isinstance(model.loss[PRIMARY], BCEWithPairwiseRanking)
    assert all(type(v) is keras.losses.BinaryCrossentropy for k, v in model.loss.items() if k != PRIMARY)

    features, labels = batch(64)
    plain = build("dcnv2", SPEC, **HP)
    compile_model(plain, 1e-3, None, auc_metric=False, loss=options)
    plain.fit(features, {PRIMARY: labels}, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    plain.save(path)
    again = keras.saving.load_model(path)  # no custom_objects
    restored = again.loss[PRIMARY]
    assert isinstance(restored, BCEWithPairwiseRanking) and (restored.alpha, restored.pairs_per_row) == (0.6, 16)
    np.testing.assert_allclose(again.predict(features, verbose=0)[PRIMARY],
                               plain.predict(features, verbose=0)[PRIMARY], atol=1e-6)


def test_docstring_examples():
    layer_checks.check_docstring_examples(losses)


def test_zoo_train_compiles_the_yaml_loss(tmp_path):
    from zoo.train import build_variant

    path = tmp_path / "ranked.yaml"
    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "models",
                        "dcnv2_test.yaml")
    path.write_text(f"base: {base}\ntraining: {{loss: {{type: bce_ranking, alpha: 0.9}}}}\n")
    model_cfg = load_model_config(str(path))
    for variant in ("baseline", "c2al"):
        model = build_variant(variant, SPEC, model_cfg, {"lambda_head": 0.1, "lambda_tail": 0.1}, seed=0)
        assert isinstance(model.loss[PRIMARY], BCEWithPairwiseRanking) and model.loss[PRIMARY].alpha == 0.9
