"""Paired and Welch significance tests and power (zoo.significance) against closed forms and table values."""

import math
import statistics

import pytest

from zoo.significance import (minimum_detectable_effect, paired_t_test, seeds_for_effect, t_cdf, t_quantile,
                              welch_t_test)


def test_paired_t_test_matches_closed_forms():
    """Two-sided p of Student's t: df=1 is 1 - 2 atan(|t|)/pi, df=2 is 1 - |t| / sqrt(t^2 + 2)."""
    one = paired_t_test([0.1, 0.2], [0.0, 0.0])          # diffs 0.1, 0.2: t = 0.15 / (0.0707 / sqrt 2) = 3
    assert one["df"] == 1 and one["t"] == pytest.approx(3.0, abs=1e-4)
    assert one["p"] == pytest.approx(1 - 2 * math.atan(3.0) / math.pi, abs=1e-5)
    two = paired_t_test([1.0, 2.0, 4.0], [0.5, 0.5, 0.5])  # diffs 0.5, 1.5, 3.5
    t = two["t"]
    assert two["df"] == 2 and t == pytest.approx(1.8333 / (1.5275 / math.sqrt(3)), rel=1e-3)
    assert two["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-4)
    # Larger df against a table value: t = 2.776445 at df = 4 is the two-sided 5 % critical value.
    d = [1.0, 2.0, 3.0, 4.0, 5.0]
    scale = 2.776445 / paired_t_test(d, [0.0] * 5)["t"]
    shifted = [3.0 + (x - 3.0) / scale for x in d]       # same mean, spread scaled: t = 2.776445
    assert paired_t_test(shifted, [0.0] * 5)["p"] == pytest.approx(0.05, abs=2e-4)
    assert paired_t_test([1.0, 1.0], [1.0, 1.0])["p"] == 1.0   # identical pairs: no evidence


@pytest.mark.parametrize("q, df, table", [
    (0.975, 1, 12.706205), (0.975, 4, 2.776445), (0.8, 4, 0.940965), (0.975, 9, 2.262157), (0.995, 30, 2.749996),
    (0.025, 4, -2.776445),
])
def test_t_quantiles_match_the_table(q, df, table):
    assert t_quantile(q, df) == pytest.approx(table, abs=1e-5)
    assert t_cdf(table, df) == pytest.approx(q, abs=1e-7)


def test_t_cdf_of_one_degree_of_freedom_is_the_cauchy_cdf():
    for t in (-3.0, -0.5, 0.0, 1.0, 7.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-9)


def test_minimum_detectable_effect_and_the_seeds_it_needs():
    # (t_{0.975,4} + t_{0.8,4}) sd / sqrt(5) = (2.776445 + 0.940965) * 0.1 / 2.236068
    assert minimum_detectable_effect(0.1, 5) == pytest.approx(3.717410 * 0.1 / math.sqrt(5), abs=1e-6)
    assert minimum_detectable_effect(0.0, 5) == 0.0
    n = seeds_for_effect(0.1, 0.1)
    assert minimum_detectable_effect(0.1, n) <= 0.1 < minimum_detectable_effect(0.1, n - 1)
    with pytest.raises(ValueError, match="n: a paired t-test needs at least 2 pairs"):
        minimum_detectable_effect(0.1, 1)
    with pytest.raises(ValueError, match="q: must be in"):
        t_quantile(1.0, 3)


def test_welch_t_test_known_answers():
    # Equal variances and sizes: t = -3 / sqrt(1/3 + 1/3), df = 4 exactly; p from the t table (SciPy: 0.0213116).
    equal = welch_t_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert equal["t"] == pytest.approx(-3.674235, abs=1e-4)
    assert equal["df"] == pytest.approx(4.0)
    assert equal["p"] == pytest.approx(0.0213116, abs=1e-5)
    # Unequal sizes and variances: Welch-Satterthwaite df is not an integer (SciPy: t -0.461639, df 4.603101,
    # p 0.665328 for these two sets).
    a = [0.9582, 0.9661, 0.9640, 0.9692, 0.9653]
    b = [0.9626, 0.9700, 0.9650]
    unequal = welch_t_test(a, b)
    va, vb = statistics.variance(a) / 5, statistics.variance(b) / 3
    assert unequal["df"] == pytest.approx((va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 2), abs=1e-3)
    assert unequal["t"] == pytest.approx(-0.461639, abs=1e-4)
    assert unequal["df"] == pytest.approx(4.603101, abs=1e-3)
    assert unequal["p"] == pytest.approx(0.665328, abs=1e-4)
    assert welch_t_test([1.0, 1.0], [1.0, 1.0])["p"] == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        welch_t_test([1.0], [1.0, 2.0])
