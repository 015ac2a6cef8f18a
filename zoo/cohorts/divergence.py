"""Divergences between predicted-probability histograms (pure NumPy): js, kl, w1, cosine and the matrix."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

DIVERGENCES = ("js", "kl", "w1", "cosine")
KL_EPS = 1e-10


def divergence(p: Any, q: Any, metric: str = "js") -> float:
    """Divergence between two histograms over the same equal-width bins of ``[0, 1]``.

    ``p`` and ``q`` are non-negative counts or weights; each is normalized to sum to 1 first. With
    ``P``, ``Q`` the normalized histograms over ``K`` bins:

    * ``"js"``: Jensen-Shannon divergence with base-2 logs, in ``[0, 1]``:
      ``JS = KL2(P || M) / 2 + KL2(Q || M) / 2`` with ``M = (P + Q) / 2`` and ``0 log 0 = 0``.
    * ``"kl"``: ``KL(P || Q) = sum_k P'_k ln(P'_k / Q'_k)`` in nats, with additive smoothing
      ``P' = (P + eps) / sum(P + eps)`` (same for ``Q``), ``eps = 1e-10`` (:data:`KL_EPS`), so empty
      bins give a large finite value. Asymmetric: ``KL(P || Q) != KL(Q || P)`` in general.
    * ``"w1"``: Wasserstein-1 distance between the two distributions placed on the bin centers of
      ``[0, 1]``: ``W1 = sum_k |F_P(k) - F_Q(k)| / K`` with ``F`` the cumulative sums, in ``[0, 1 - 1/K]``.
    * ``"cosine"``: ``1 - <P, Q> / (|P| |Q|)``, in ``[0, 1]`` for non-negative histograms.

    Raises:
      ValueError: unknown metric, shapes differ, a value is negative or not finite, or a histogram
        sums to zero.
    """
    check_choice("metric", metric, DIVERGENCES)
    p, q = _normalized(p, "p"), _normalized(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p, q: histograms must have the same number of bins, got {p.size} and {q.size}")
    return float(_DIVERGENCE_FNS[metric](p, q))


def divergence_matrix(counts: Any, metric: str = "js") -> np.ndarray:
    """``D[i, j] = divergence(counts[i], counts[j], metric)`` for a ``(cohorts x bins)`` count array.

    Rows that sum to zero (empty cohorts) give NaN in their row and column.
    """
    check_choice("metric", metric, DIVERGENCES)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"counts: must be (cohorts x bins), got shape {counts.shape}")
    n = counts.shape[0]
    out = np.full((n, n), np.nan)
    live = [i for i in range(n) if counts[i].sum() > 0]
    for i in live:
        for j in live:
            out[i, j] = 0.0 if i == j else divergence(counts[i], counts[j], metric)
    return out


def _normalized(h: Any, name: str) -> np.ndarray:
    h = np.asarray(h, dtype=np.float64).ravel()
    if h.size == 0:
        raise ValueError(f"{name}: empty histogram")
    if not np.all(np.isfinite(h)):
        raise ValueError(f"{name}: histogram has a non-finite value")
    if (h < 0).any():
        raise ValueError(f"{name}: histogram has a negative value ({h.min()!r})")
    total = h.sum()
    if total <= 0:
        raise ValueError(f"{name}: histogram sums to zero (an empty cohort has no distribution)")
    return h / total


def _xlogy_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """``sum a log2(a / b)`` over ``a > 0``."""
    nz = a > 0
    return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2
    return min(1.0, max(0.0, 0.5 * _xlogy_ratio(p, m) + 0.5 * _xlogy_ratio(q, m)))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = (p + KL_EPS) / (1 + KL_EPS * p.size)
    q = (q + KL_EPS) / (1 + KL_EPS * q.size)
    return max(0.0, float(np.sum(p * np.log(p / q))))


def _w1(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(np.abs(np.cumsum(p) - np.cumsum(q))) / p.size)


def _cosine(p: np.ndarray, q: np.ndarray) -> float:
    return min(1.0, max(0.0, 1.0 - float(np.dot(p, q) / (np.linalg.norm(p) * np.linalg.norm(q)))))


_DIVERGENCE_FNS = {"js": _js, "kl": _kl, "w1": _w1, "cosine": _cosine}

def pair_score(matrix: np.ndarray, i: int, j: int) -> float:
    """The symmetric score of cohorts ``i`` and ``j``: ``max(D[i, j], D[j, i])``."""
    return float(max(matrix[i, j], matrix[j, i]))


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raises ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: must be one of {tuple(choices)}, got {value!r}")


def check_bins(bins: int) -> int:
    """``bins`` as an int; ValueError unless it is an integer >= 2."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins: must be an integer >= 2, got {bins!r}")
    return int(bins)


