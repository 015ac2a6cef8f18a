"""Significance tests and power for seed-paired (and unpaired) experiments (pure Python, no SciPy).

A study trains a baseline and a variant with the same seeds (same initial weights, data order and
dropout masks), so the per-seed differences ``d_s = a_s - b_s`` carry the method's effect plus the
path noise the method adds. With ``n`` seeds, mean ``d̄`` and standard deviation ``s_d``:

* :func:`paired_t_test`: ``t = d̄ / (s_d / sqrt(n))`` with ``n - 1`` degrees of freedom, two-sided
  ``p = P(|T| >= |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2)`` (the regularized incomplete beta);
* :func:`welch_t_test`: two unpaired sets of seeds (e.g. two frameworks, whose seeds do not pair):
  ``t = (mean(a) - mean(b)) / sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with the Welch-Satterthwaite degrees
  of freedom ``(s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2 / (n_a - 1) + (s_b^2/n_b)^2 / (n_b - 1))``;
* :func:`minimum_detectable_effect`: the smallest true mean difference the test detects with
  probability ``power`` at level ``alpha``:
  ``MDE = (t_{1 - alpha/2, n-1} + t_{power, n-1}) s_d / sqrt(n)`` (the usual approximation that
  ignores the non-central t's skew);
* :func:`t_quantile`: the Student-t quantile, by bisection on :func:`t_cdf`.

    >>> round(t_quantile(0.975, 4), 4)
    2.7764
    >>> round(minimum_detectable_effect(sd=0.1, n=5), 4)     # (2.7764 + 0.9410) * 0.1 / sqrt(5)
    0.1662
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def _regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) (Lentz continued fraction; Numerical Recipes 6.4)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _regularized_incomplete_beta(b, a, 1 - x)
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1.0 + num / c if abs(c) > 1e-300 else 1e-300
        f *= c * d
        if abs(1.0 - c * d) < 1e-12:
            break
    return front * (f - 1.0) / a


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) of Student's t with ``df`` degrees of freedom (a real number >= 1)."""
    if df < 1:
        raise ValueError(f"df: must be >= 1, got {df}")
    tail = 0.5 * _regularized_incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (bisection to 1e-10)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q: must be in (0, 1), got {q}")
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < q:
            low = mid
        else:
            high = mid
        if high - low < 1e-10:
            break
    return (low + high) / 2


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Two-sided paired t-test of mean(a - b) = 0: t, degrees of freedom, p-value."""
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    if n < 2:
        return {"t": None, "df": n - 1, "p": None}
    sd = statistics.stdev(diffs)
    if sd == 0:
        return {"t": None, "df": n - 1, "p": 1.0 if statistics.fmean(diffs) == 0 else 0.0}
    t = statistics.fmean(diffs) / (sd / math.sqrt(n))
    df = n - 1
    p = _regularized_incomplete_beta(df / 2, 0.5, df / (df + t * t))  # P(|T| >= |t|)
    return {"t": round(t, 4), "df": df, "p": round(p, 5)}


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Two-sided Welch t-test of mean(a) = mean(b) for unpaired samples: t, degrees of freedom, p-value."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"welch_t_test: needs at least 2 values per sample, got {len(a)} and {len(b)}")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return {"t": None, "df": None, "p": 1.0 if diff == 0 else 0.0}
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    p = _regularized_incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return {"t": round(t, 4), "df": round(df, 3), "p": round(p, 5)}


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The paired test's minimum detectable mean difference (same unit as ``sd``); see the module."""
    if n < 2:
        raise ValueError(f"n: a paired t-test needs at least 2 pairs, got {n}")
    df = n - 1
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * sd / math.sqrt(n)


def seeds_for_effect(sd: float, effect: float, alpha: float = 0.05, power: float = 0.8,
                     max_n: int = 1000) -> int | None:
    """The fewest paired seeds whose :func:`minimum_detectable_effect` is at most ``effect``."""
    for n in range(2, max_n + 1):
        if minimum_detectable_effect(sd, n, alpha, power) <= effect:
            return n
    return None
