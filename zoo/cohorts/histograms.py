"""Streaming accumulators (pure NumPy): per-cohort probability histograms and the quantile sample."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from zoo.cohorts.divergence import check_bins, divergence_matrix


class CohortHistograms:
    """Per-cohort histograms of predicted probabilities, accumulated batch by batch.

    Holds only ``cohorts x bins`` counts (plus per-cohort sums of probabilities and labels), never the
    predictions themselves. Bin ``k`` of ``bins`` equal-width bins holds ``k/bins <= p < (k+1)/bins``;
    ``p == 1`` goes to the last bin.

    Args:
      axis_cohorts: cohort names; cohort id ``i`` is ``axis_cohorts[i]``.
      bins: number of bins on ``[0, 1]`` (>= 2).
    """

    def __init__(self, axis_cohorts: Sequence[str], bins: int = 50):
        self.cohorts = [str(c) for c in axis_cohorts]
        if not self.cohorts:
            raise ValueError("axis_cohorts: needs at least one cohort")
        if len(set(self.cohorts)) != len(self.cohorts):
            raise ValueError(f"axis_cohorts: names must be distinct, got {self.cohorts}")
        self.bins = check_bins(bins)
        self.counts = np.zeros((len(self.cohorts), self.bins), dtype=np.int64)
        self.sums = np.zeros(len(self.cohorts), dtype=np.float64)
        self.positives = np.zeros(len(self.cohorts), dtype=np.float64)

    def update(self, probabilities: Any, cohort_ids: Any, labels: Any = None) -> None:
        """Adds one batch.

        Args:
          probabilities: predicted probabilities in ``[0, 1]``, any shape (flattened).
          cohort_ids: integer cohort id per row in ``[0, len(axis_cohorts))``, same size.
          labels: optional labels per row (counted per cohort as ``positives``).

        Raises:
          ValueError: sizes differ, a probability is NaN or outside ``[0, 1]``, or an id is out of range.
        """
        p = np.asarray(probabilities, dtype=np.float64).ravel()
        ids = np.asarray(cohort_ids).ravel()
        if ids.size != p.size:
            raise ValueError(f"cohort_ids: {ids.size} ids for {p.size} probabilities")
        if p.size == 0:
            return
        if np.isnan(p).any():
            raise ValueError(f"probabilities: {int(np.isnan(p).sum())} NaN value(s) in the batch")
        if p.min() < 0.0 or p.max() > 1.0:
            raise ValueError(f"probabilities: must lie in [0, 1], got values in [{p.min()!r}, {p.max()!r}]")
        if not np.issubdtype(ids.dtype, np.integer):
            if not np.all(np.equal(np.mod(ids, 1), 0)):
                raise ValueError("cohort_ids: must be integers")
            ids = ids.astype(np.int64)
        n = len(self.cohorts)
        if ids.min() < 0 or ids.max() >= n:
            raise ValueError(f"cohort_ids: must lie in [0, {n}) for cohorts {self.cohorts}, "
                             f"got values in [{ids.min()}, {ids.max()}]")
        ids = ids.astype(np.int64)
        bin_idx = np.minimum(np.floor(p * self.bins).astype(np.int64), self.bins - 1)
        self.counts += np.bincount(ids * self.bins + bin_idx, minlength=n * self.bins).reshape(n, self.bins)
        self.sums += np.bincount(ids, weights=p, minlength=n)
        if labels is not None:
            y = np.asarray(labels, dtype=np.float64).ravel()
            if y.size != p.size:
                raise ValueError(f"labels: {y.size} labels for {p.size} probabilities")
            self.positives += np.bincount(ids, weights=y, minlength=n)

    @property
    def rows(self) -> np.ndarray:
        """Rows per cohort, shape ``(cohorts,)``."""
        return self.counts.sum(axis=1)

    @property
    def fractions(self) -> np.ndarray:
        """Each cohort's share of all rows seen (zeros before any row)."""
        rows = self.rows
        total = rows.sum()
        return rows / total if total else np.zeros(len(rows))

    @property
    def mean_prediction(self) -> np.ndarray:
        """Mean predicted probability per cohort (NaN for an empty cohort)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.rows

    def matrix(self, metric: str = "js") -> np.ndarray:
        """``(cohorts x cohorts)`` array ``D[i, j] = divergence(P_i, P_j, metric)``; NaN where a cohort is empty."""
        return divergence_matrix(self.counts, metric)


class QuantileSample:
    """The values of one feature column for quantile thresholds: all of them up to ``capacity``, else a
    uniform sample of ``capacity`` (each value gets a seeded uniform key; the smallest keys are kept,
    which is reservoir sampling in a vectorized form; pruning happens at ``2 * capacity``)."""

    def __init__(self, capacity: int, seed: int):
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)
        self.values: list[np.ndarray] = []
        self.keys: list[np.ndarray] | None = None
        self.seen = 0
        self.held = 0

    def add(self, values: Any) -> None:
        v = np.asarray(values, dtype=np.float32).ravel()
        self.seen += v.size
        self.values.append(v)
        self.held += v.size
        if self.keys is not None:
            self.keys.append(self.rng.random(v.size))
        elif self.held > self.capacity:
            self.keys = [self.rng.random(self.held)]
            self.values = [np.concatenate(self.values)]
        if self.keys is not None and self.held >= 2 * self.capacity:
            self._prune()

    def _prune(self) -> None:
        values, keys = np.concatenate(self.values), np.concatenate(self.keys)
        keep = np.argpartition(keys, self.capacity - 1)[: self.capacity]
        self.values, self.keys, self.held = [values[keep]], [keys[keep]], self.capacity

    def thresholds(self, q: float, feature: str) -> dict[str, Any]:
        if self.seen == 0:
            raise ValueError(f"feature '{feature}': no values to compute quantiles from")
        if self.keys is not None and self.held > self.capacity:
            self._prune()
        values = np.concatenate(self.values).astype(np.float64)
        t_bottom, t_top = (float(np.float32(t)) for t in np.quantile(values, [q, 1.0 - q]))
        if not t_top > t_bottom:
            raise ValueError(f"feature '{feature}': the top and bottom {q:g} quantiles coincide ({t_top}); "
                             "too few distinct values for quantile mode")
        return {"head_min": t_top, "tail_max": t_bottom, "values": int(self.seen),
                "sampled": self.keys is not None, "sample_size": int(values.size)}


def quantile_label(q: float) -> str:
    """The group suffix of quantile ``q``: ``0.05 -> "q05"``, ``0.025 -> "q2p5"``."""
    pct = 100.0 * q
    return f"q{int(round(pct)):02d}" if abs(pct - round(pct)) < 1e-9 else f"q{pct:g}".replace(".", "p")


