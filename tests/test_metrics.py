"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest

from zoo.metrics import auc, entropy, evaluate, gap_closed, log_loss, ne_diff, normalized_entropy


def test_auc_known_answers():
    # 2 positives x 2 negatives; pairs (0.8>0.3), (0.8>0.1), (0.4>0.3), (0.4>0.1) -> 4/4.
    assert auc([1, 0, 1, 0], [0.8, 0.3, 0.4, 0.1]) == 1.0
    # Positive scores 0.9, 0.2; negatives 0.5, 0.1: wins 0.9>0.5, 0.9>0.1, 0.2>0.1 -> 3/4.
    assert auc([1, 0, 1, 0], [0.9, 0.5, 0.2, 0.1]) == 0.75
    # Ties count half: pos 0.5 vs neg 0.5 -> 0.5; pos 0.5 vs neg 0.2 -> 1 -> 1.5/2.
    assert auc([1, 0, 0], [0.5, 0.5, 0.2]) == 0.75
    assert math.isnan(auc([1, 1], [0.2, 0.3]))


def test_auc_equals_pairwise_definition_on_random_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 2)  # many ties
    pos, neg = p[y == 1], p[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert auc(y, p) == pytest.approx(pairwise, abs=1e-12)


def test_log_loss_entropy_and_ne():
    y, p = np.array([1, 0, 1, 1]), np.array([0.9, 0.2, 0.6, 0.5])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.5)) / 4
    assert log_loss(y, p) == pytest.approx(expected)
    assert entropy(0.75) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert normalized_entropy(y, p) == pytest.approx(expected / entropy(0.75))
    # Predicting the base rate everywhere gives NE = 1 exactly.
    assert normalized_entropy(y, np.full(4, 0.75)) == pytest.approx(1.0)
    assert log_loss([1], [1.0]) == pytest.approx(-math.log(1 - 1e-7))  # clipped, finite


def test_per_cohort_metrics_use_the_base_rate_within_the_cohort():
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.7, 0.4, 0.6, 0.2, 0.1, 0.3])
    cohorts = {"axis": np.array([0, 0, 0, 1, 1, 1])}
    result = evaluate(y, p, cohorts, {"axis": ["a", "b", "empty"]})
    a = result["cohorts"]["axis"]["a"]
    assert a["rows"] == 3 and a["positives"] == 2 and a["base_rate"] == pytest.approx(2 / 3)
    assert a["ne"] == pytest.approx(log_loss(y[:3], p[:3]) / entropy(2 / 3))
    # b: positive 0.2 beats negative 0.1, loses to 0.3 -> 0.5.
    assert result["cohorts"]["axis"]["b"]["auc"] == pytest.approx(0.5)
    assert "empty" not in result["cohorts"]["axis"]
    assert result["overall"]["ne"] == pytest.approx(log_loss(y, p) / entropy(0.5))


def test_ne_diff_in_percent():
    base = {"overall": {"ne": 0.8}, "cohorts": {"axis": {"a": {"ne": 0.5}, "b": {"ne": 1.0}}}}
    variant = {"overall": {"ne": 0.792}, "cohorts": {"axis": {"a": {"ne": 0.51}, "b": {"ne": 0.97}}}}
    diff = ne_diff(variant, base)
    assert diff["overall"] == pytest.approx(-1.0)
    assert diff["cohorts"]["axis"] == {"a": pytest.approx(2.0), "b": pytest.approx(-3.0)}


def test_gap_closed_on_hand_numbers():
    def res(overall, head, tail=None):
        cohorts = {"h": {"ne": head}} if tail is None else {"h": {"ne": head}, "t": {"ne": tail}}
        return {"overall": {"ne": overall}, "cohorts": {"axis": cohorts}}

    base, variant, oracle = res(0.80, 0.90, 0.70), res(0.77, 0.90, 0.75), res(0.70, 0.60)
    out = gap_closed(base, variant, oracle)
    # overall (0.80 - 0.77) / (0.80 - 0.70) = 0.3; head (0.90 - 0.90) / (0.90 - 0.60) = 0;
    # tail: the oracle has no such cohort -> NaN.
    assert out["overall"] == pytest.approx(0.3)
    assert out["cohorts"]["axis"]["h"] == pytest.approx(0.0)
    assert math.isnan(out["cohorts"]["axis"]["t"])
    assert gap_closed(res(0.8, 0.9), res(0.7, 0.95), res(0.7, 0.6))["overall"] == pytest.approx(1.0)
    assert gap_closed(res(0.8, 0.9), res(0.7, 0.95), res(0.7, 0.6))["cohorts"]["axis"]["h"] == pytest.approx(-1 / 6)
    assert math.isnan(gap_closed(res(0.7, 0.9), res(0.6, 0.9), res(0.7, 0.6))["overall"])  # no gap
    assert math.isnan(gap_closed(res(float("nan"), 0.9), res(0.6, 0.9), res(0.5, 0.6))["overall"])
    # The oracle's own metrics are evaluate() of the true probabilities: NE by hand.
    y, p_true = np.array([1, 0, 0, 1]), np.array([0.7, 0.2, 0.4, 0.9])
    ll = -(math.log(0.7) + math.log(0.8) + math.log(0.6) + math.log(0.9)) / 4
    oracle_res = evaluate(y, p_true, {"axis": np.array([0, 0, 1, 1])}, {"axis": ["a", "b"]})
    assert oracle_res["overall"]["ne"] == pytest.approx(ll / entropy(0.5))
    assert oracle_res["cohorts"]["axis"]["b"]["ne"] == pytest.approx(
        -(math.log(0.6) + math.log(0.9)) / 2 / entropy(0.5))
