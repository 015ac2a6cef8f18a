"""Evaluation metrics: AUC, log loss and normalized entropy, overall and per cohort.

NE = mean log loss / H(p̄), with H(p) = -p log p - (1-p) log(1-p) and p̄ the positive rate of the
evaluated rows; per cohort, p̄ is the rate within the cohort (docs/methods.md#normalized-entropy). NE_diff =
(NE_variant - NE_base) / NE_base in percent; negative is better. Where the true click probability is
known (the synthetic data's oracle column), the oracle's metrics are ``evaluate(y, p_true, ...)`` and
:func:`gap_closed` is the share of the baseline-to-oracle NE gap a variant closes.

These are exact full-data metrics (AUC by ranks with ties averaged), computed once on the
evaluation split; training-time progress uses ``keras.metrics.AUC``.
"""

from __future__ import annotations

from typing import Any, Mapping


import numpy as np

EPS = 1e-7


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney statistic; NaN when only one class is present."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    ranks = np.empty(len(p), dtype=np.float64)
    # Average ranks (1-based) over runs of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_p)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(p)]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy with probabilities clipped to [EPS, 1 - EPS]."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.clip(np.asarray(p, dtype=np.float64).ravel(), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def entropy(rate: float) -> float:
    """Binary entropy H(rate) in nats (0 for a pure set)."""
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    return float(-rate * np.log(rate) - (1 - rate) * np.log(1 - rate))


def normalized_entropy(y: np.ndarray, p: np.ndarray) -> float:
    """NE = log loss / H(base rate); NaN when the rows hold a single class."""
    h = entropy(float(np.mean(y)))
    return log_loss(y, p) / h if h > 0 else float("nan")


def summarize(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """rows, positives, base rate, AUC, log loss and NE of one set of rows."""
    y = np.asarray(y).ravel()
    return {
        "rows": int(len(y)),
        "positives": int(np.sum(y)),
        "base_rate": float(np.mean(y)) if len(y) else float("nan"),
        "auc": auc(y, p),
        "log_loss": log_loss(y, p) if len(y) else float("nan"),
        "ne": normalized_entropy(y, p) if len(y) else float("nan"),
    }


def evaluate(y: np.ndarray, p: np.ndarray, cohorts: Mapping[str, np.ndarray],
             cohort_names: Mapping[str, list[str]]) -> dict[str, Any]:
    """Overall metrics plus per-cohort metrics for every axis.

    Args:
      y: labels (N,).
      p: predicted probabilities (N,).
      cohorts: axis name -> cohort index per row (N,).
      cohort_names: axis name -> cohort names, indexed by cohort index.
    """
    y, p = np.asarray(y).ravel(), np.asarray(p).ravel()
    out: dict[str, Any] = {"overall": summarize(y, p), "cohorts": {}}
    for axis, ids in cohorts.items():
        ids = np.asarray(ids).ravel()
        out["cohorts"][axis] = {
            name: summarize(y[ids == i], p[ids == i])
            for i, name in enumerate(cohort_names[axis]) if np.any(ids == i)
        }
    return out


def ne_diff(variant: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """NE_diff in percent, overall and per cohort, between two :func:`evaluate` results."""

    def pct(a: float, b: float) -> float:
        return float(100.0 * (a - b) / b) if b and np.isfinite(a) and np.isfinite(b) else float("nan")

    out = {"overall": pct(variant["overall"]["ne"], base["overall"]["ne"]), "cohorts": {}}
    for axis, cohorts in base["cohorts"].items():
        out["cohorts"][axis] = {
            name: pct(variant["cohorts"][axis][name]["ne"], m["ne"])
            for name, m in cohorts.items() if name in variant["cohorts"].get(axis, {})
        }
    return out


def gap_closed(base: Mapping[str, Any], variant: Mapping[str, Any], oracle: Mapping[str, Any]) -> dict[str, Any]:
    """Share of the oracle gap a variant closes, overall and per cohort, from three :func:`evaluate` results.

    gap_closed = (NE_base - NE_variant) / (NE_base - NE_oracle)

    1 means the variant reaches the oracle (the true click probability), 0 the baseline; negative
    values are worse than the baseline. NaN where undefined: a missing cohort, a non-finite NE, or
    no gap (NE_base == NE_oracle). Same structure as :func:`ne_diff`.
    """

    def share(b: float, v: float, o: float) -> float:
        if not (np.isfinite(b) and np.isfinite(v) and np.isfinite(o)) or b == o:
            return float("nan")
        return float((b - v) / (b - o))

    out = {"overall": share(base["overall"]["ne"], variant["overall"]["ne"], oracle["overall"]["ne"]),
           "cohorts": {}}
    for axis, cohorts in base["cohorts"].items():
        v_axis, o_axis = variant["cohorts"].get(axis, {}), oracle["cohorts"].get(axis, {})
        out["cohorts"][axis] = {
            name: share(m["ne"], v_axis[name]["ne"], o_axis[name]["ne"])
            if name in v_axis and name in o_axis else float("nan")
            for name, m in cohorts.items()
        }
    return out

