"""Diagnostic statistics (pure NumPy, float64, backend-free), each documented with its formula.

The four ``Y`` statistics of an attention matrix (:data:`Y_STATS`, :func:`attention_stats`), the
dead-ReLU fraction of a batch of activations and the information abundance of an embedding table.
"""

from __future__ import annotations

import math

import numpy as np

Y_STATS = ("near_zero_fraction", "normalized_entropy", "excess_kurtosis", "participation_ratio")


# ---------------------------------------------------------------------------------------------------
# Statistics. Each public function is the row-wise private one applied to all entries as one row, so
# the per-example (dynamic Y) statistics use exactly the same formulas.
# ---------------------------------------------------------------------------------------------------

def _as_rows(y) -> np.ndarray:
    a = np.asarray(y, dtype=np.float64)
    if a.size == 0:
        raise ValueError("y: needs at least one entry, got an empty array")
    return a.reshape(1, -1)


def _near_zero_rows(r: np.ndarray, rel_eps: float) -> np.ndarray:
    a = np.abs(r)
    return np.mean(a <= rel_eps * a.max(axis=1, keepdims=True), axis=1)  # all-zero row: 0 <= 0 -> 1.0


def _entropy_rows(r: np.ndarray) -> np.ndarray:
    a = np.abs(r)
    total = a.sum(axis=1, keepdims=True)
    n = r.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(total > 0, a / np.where(total > 0, total, 1.0), 0.0)
        h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    if n == 1:
        return np.where(total[:, 0] > 0, 1.0, 0.0)
    return np.where(total[:, 0] > 0, h / math.log(n), 0.0)


def _kurtosis_rows(r: np.ndarray) -> np.ndarray:
    c = r - r.mean(axis=1, keepdims=True)
    m2 = np.mean(c ** 2, axis=1)
    m4 = np.mean(c ** 4, axis=1)
    scale = np.abs(r).max(axis=1)
    degenerate = m2 <= (1e-12 * scale) ** 2          # constant row (up to rounding): undefined
    with np.errstate(divide="ignore", invalid="ignore"):
        k = m4 / np.where(degenerate, 1.0, m2) ** 2 - 3.0
    return np.where(degenerate, np.nan, k)


def _participation_rows(r: np.ndarray, power: float) -> np.ndarray:
    w = np.abs(r) ** power
    num = w.sum(axis=1) ** 2
    den = r.shape[1] * np.sum(w ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def near_zero_fraction(y, rel_eps: float = 1e-3) -> float:
    """Fraction of the entries of ``y`` that are near zero relative to its largest magnitude.

        near_zero(y) = (1 / N) * #{ i : |y_i| <= rel_eps * max_j |y_j| }

    over all ``N`` entries of ``y`` (any shape). docs/methods.md#diagnostics, metric 1 (``near_zero_frac(Y,
    eps = 1e-3 max|Y|)``). An all-zero ``y`` returns 1.0 (every entry is ``<= 0``).

    Args:
      y: array of any shape, at least one entry.
      rel_eps: threshold relative to ``max |y|``, >= 0.

    Returns:
      A float in ``[0, 1]``.
    """
    if rel_eps < 0:
        raise ValueError(f"rel_eps: must be >= 0, got {rel_eps}")
    return float(_near_zero_rows(_as_rows(y), float(rel_eps))[0])


def normalized_entropy(y, axis: int | None = None) -> float:
    """Shannon entropy of the magnitude distribution of ``y``, divided by its maximum.

    With ``axis=None`` (the default; used by :func:`collect`), over all ``N`` entries::

        p_i = |y_i| / sum_j |y_j|,      H = - sum_i p_i log p_i   (0 log 0 = 0),      NE = H / log N

    1 means uniform magnitudes, 0 means a single non-zero entry. With ``axis`` set, the same is
    computed for each 1-D slice along ``axis`` (e.g. ``axis=0`` of an ``(n, k)`` ``Y``: each column
    normalized over the ``n`` fields, ``H / log n``, docs/methods.md#diagnostics, metric 2) and averaged over the slices.

    Conventions: an all-zero slice (no mass) gives 0.0 (treated as fully collapsed); a single-entry
    slice gives 1.0 if non-zero.

    Args:
      y: array of any shape, at least one entry.
      axis: None (all entries) or the axis whose slices are normalized separately.

    Returns:
      A float in ``[0, 1]``.
    """
    if axis is None:
        return float(_entropy_rows(_as_rows(y))[0])
    a = np.asarray(y, dtype=np.float64)
    slices = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
    if slices.size == 0:
        raise ValueError("y: needs at least one entry, got an empty array")
    return float(np.mean(_entropy_rows(slices)))


def excess_kurtosis(y) -> float:
    """Fisher's (excess) kurtosis of the entries of ``y``, a heavy-tail indicator (docs/methods.md#diagnostics, metric 3).

    Over all ``N`` entries, with central moments ``m_r = (1/N) sum_i (y_i - mean(y))^r``::

        kurt(y) = m_4 / m_2^2 - 3

    (the biased, population estimator: no small-sample correction). 0 for a Gaussian, -1.2 for a
    uniform distribution, -2 for a symmetric two-point distribution, large and positive for a few
    spikes among many near-equal entries. A constant ``y`` (``m_2 = 0``, up to rounding: ``m_2 <=
    (1e-12 max|y|)^2``) has no kurtosis: NaN.

    Args:
      y: array of any shape, at least one entry.

    Returns:
      A float ``>= -2``, or NaN for a constant array.
    """
    return float(_kurtosis_rows(_as_rows(y))[0])


def participation_ratio(y, power: float = 2.0) -> float:
    """Participation ratio of the entries of ``y``: the fraction of entries that effectively carry weight.

    Over all ``N`` entries, with weights ``w_i = |y_i|^power``::

        PR(y) = (sum_i w_i)^2 / (N * sum_i w_i^2)

    The default ``power=2`` is the physics (inverse participation ratio) definition
    ``PR = (sum y^2)^2 / (N sum y^4)``, which treats ``y_i^2`` as the weight of entry ``i``, so it is
    invariant to the sign and the scale of ``y`` and it matches "energy" rather than magnitude.
    ``power=1`` gives docs/methods.md#diagnostics, metric 4, ``(sum |y|)^2 / (N sum y^2)``. Either way PR is in
    ``(0, 1]``: 1 when all ``|y_i|`` are equal, ``1/N`` when a single entry is non-zero, ``m/N`` for
    ``m`` equal non-zero entries. An all-zero ``y`` returns 0.0 (no entry participates).

    Args:
      y: array of any shape, at least one entry.
      power: exponent of the weights, > 0.

    Returns:
      A float in ``[1/N, 1]`` (0.0 for all zeros).
    """
    if power <= 0:
        raise ValueError(f"power: must be > 0, got {power}")
    return float(_participation_rows(_as_rows(y), float(power))[0])


def dead_relu_fraction(activations, min_dead_fraction: float = 1.0) -> float:
    """Fraction of units that are dead on a probe batch (docs/methods.md#diagnostics, metric 5).

    ``activations`` is ``(B, U)`` (or ``(..., U)``, flattened to ``(B', U)``): the post-ReLU outputs
    of ``U`` units on ``B`` examples. Unit ``u`` is dead when it is inactive (``a_bu <= 0``) on at
    least ``min_dead_fraction`` of the examples::

        dead(u)  = [ (1/B) #{ b : a_bu <= 0 } >= min_dead_fraction ]
        fraction = (1/U) sum_u dead(u)

    With the default ``min_dead_fraction=1.0`` a unit is dead when it is ``<= 0`` for **every**
    example; docs/methods.md#diagnostics gives ``0.99`` as a looser alternative.

    Args:
      activations: array of shape ``(B, U)`` or ``(..., U)``, ``B >= 1``.
      min_dead_fraction: in ``(0, 1]``.

    Returns:
      A float in ``[0, 1]``.
    """
    if not 0.0 < min_dead_fraction <= 1.0:
        raise ValueError(f"min_dead_fraction: must be in (0, 1], got {min_dead_fraction}")
    a = np.asarray(activations, dtype=np.float64)
    if a.ndim < 1 or a.size == 0:
        raise ValueError(f"activations: needs shape (B, U) with entries, got {a.shape}")
    a = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(1, -1)
    inactive = np.mean(a <= 0.0, axis=0)
    return float(np.mean(inactive >= min_dead_fraction - 1e-12))


def information_abundance(table) -> float:
    """Information abundance of an embedding table (Guo et al., ICML 2024, arXiv 2310.04400, Def. 1; docs/methods.md#information-abundance).

    For ``E in R^{V x d}`` with singular values ``sigma_1 >= .. >= sigma_r``::

        IA(E) = ||sigma||_1 / ||sigma||_inf = (sum_j sigma_j) / max_j sigma_j

    In ``[1, rank(E)]``: 1 for a rank-1 (fully collapsed) table, ``d`` when all singular values are
    equal (e.g. orthogonal columns of equal norm). An all-zero table returns 0.0.

    Args:
      table: a 2-D array ``(V, d)``.

    Returns:
      A float.
    """
    e = np.asarray(table, dtype=np.float64)
    if e.ndim != 2 or e.size == 0:
        raise ValueError(f"table: needs a non-empty 2-D array, got shape {e.shape}")
    s = np.linalg.svd(e, compute_uv=False)
    return float(s.sum() / s.max()) if s.max() > 0 else 0.0


def attention_stats(y, per_example: bool = False) -> dict[str, float]:
    """The four ``Y`` statistics (:data:`Y_STATS`) of an attention matrix, at their defaults.

    Args:
      y: ``(n, k)`` (one matrix) or, with ``per_example=True``, ``(B, n, k)``: the statistics of each
        example's ``(n, k)`` matrix, averaged over the ``B`` examples (NaN kurtoses are left out of
        the mean; NaN if every one is NaN).
      per_example: see ``y``.
    """
    a = np.asarray(y, dtype=np.float64)
    rows = a.reshape(a.shape[0], -1) if per_example else _as_rows(a)
    if rows.size == 0:
        raise ValueError("y: needs at least one entry, got an empty array")
    kurt = _kurtosis_rows(rows)
    return {
        "near_zero_fraction": float(np.mean(_near_zero_rows(rows, 1e-3))),
        "normalized_entropy": float(np.mean(_entropy_rows(rows))),
        "excess_kurtosis": float(np.nanmean(kurt)) if np.any(np.isfinite(kurt)) else float("nan"),
        "participation_ratio": float(np.mean(_participation_rows(rows, 2.0))),
    }

