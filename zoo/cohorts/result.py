"""The discovery result (pure NumPy + JSON): the matrix, the chosen pair, its alternatives, save and load."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

from zoo.cohorts.divergence import DIVERGENCES, check_choice, divergence_matrix, pair_score
from zoo.cohorts.histograms import CohortHistograms

STRATEGIES = ("most", "least", "random")
JSON_NAME, PNG_NAME = "cohort_divergence.json", "cohort_divergence.png"


def from_histograms(hist: CohortHistograms, axis: Any, *, metric: str = "js", min_fraction: float = 0.01,
                    split: str = "valid") -> DiscoveryResult:
    """Exhaustive-mode discovery from histograms accumulated elsewhere (e.g. in-memory predictions).

    Args:
      hist: a :class:`CohortHistograms` over ``axis.cohorts`` (in that order).
      axis: the spec's cohort axis (``spec.axis(name)``).
      metric, min_fraction: as in :func:`discover`.
      split: the split the predictions came from (recorded only).
    """
    check_choice("metric", metric, DIVERGENCES)
    if list(hist.cohorts) != list(axis.cohorts):
        raise ValueError(f"hist: cohorts {list(hist.cohorts)} are not axis '{axis.name}' cohorts {list(axis.cohorts)}")
    return result_from_histograms(axis, hist, None, None, split=split, metric=metric, bins=hist.bins,
                                  min_fraction=min_fraction, mode="exhaustive", quantile=None)


def result_from_histograms(ax, hist, groups, thresholds, *, split, metric, bins, min_fraction, mode,
                           quantile) -> DiscoveryResult:
    """Builds the :class:`DiscoveryResult` (matrix, eligibility, chosen pair) from accumulated counts."""
    total = int(hist.rows.sum())
    if total == 0:
        raise ValueError(f"split '{split}': no rows to discover cohorts from")

    counts, rows, sums, pos = hist.counts, hist.rows, hist.sums, hist.positives
    cohorts = list(ax.cohorts)
    if groups is not None:
        for gid, name in enumerate(groups.cohorts):
            if groups.rows[gid] == 0:
                raise ValueError(f"axis '{ax.name}': the {name} group of feature '{ax.feature}' has no rows")
        counts = np.vstack([counts, groups.counts])
        rows, sums, pos = (np.concatenate([a, b]) for a, b in
                           ((rows, groups.rows), (sums, groups.sums), (pos, groups.positives)))
        cohorts += groups.cohorts
    matrix = divergence_matrix(counts, metric)
    fractions = rows / total
    n_axis = len(ax.cohorts)
    eligible = [c for i, c in enumerate(ax.cohorts) if rows[i] > 0 and fractions[i] >= min_fraction]
    excluded = {c: float(fractions[i]) for i, c in enumerate(ax.cohorts) if c not in eligible}
    with np.errstate(invalid="ignore", divide="ignore"):
        means, rates = sums / rows, pos / rows

    if mode == "exhaustive":
        if len(eligible) < 2:
            raise ValueError(f"axis '{ax.name}': fewer than two cohorts hold >= min_fraction={min_fraction} of the "
                             f"{total} rows of split '{split}' (fractions {dict(zip(cohorts, fractions.round(4)))})")
        idx = [cohorts.index(c) for c in eligible]
        # First maximum in cohort order: ties resolve deterministically.
        i, j = max(((i, j) for a, i in enumerate(idx) for j in idx[a + 1:]), key=lambda ij: pair_score(matrix, *ij))
        head, tail = (i, j) if means[i] >= means[j] else (j, i)
    else:
        head, tail = n_axis, n_axis + 1  # top_qXX, bottom_qXX
    return DiscoveryResult(
        axis=ax.name, mode=mode, metric=metric, bins=bins, split=split, min_fraction=float(min_fraction),
        cohorts=cohorts, rows=[int(r) for r in rows], fractions=[float(f) for f in fractions],
        mean_prediction=[_finite_or_none(m) for m in means], positive_rate=[_finite_or_none(r) for r in rates],
        matrix=[[_finite_or_none(v) for v in row] for row in matrix],
        histograms=[[int(c) for c in row] for row in counts],
        head=cohorts[head], tail=cohorts[tail], divergence=float(pair_score(matrix, head, tail)),
        eligible=eligible, excluded=excluded, total_rows=total,
        feature=ax.feature if mode == "quantile" else None,
        quantile=float(quantile) if mode == "quantile" else None, thresholds=thresholds,
    )



# ----- the result -------------------------------------------------------------------------------------
@dataclasses.dataclass
class DiscoveryResult:
    """What :func:`discover` found; every field is JSON-safe (NaN is stored as None).

    Attributes:
      axis, mode, metric, bins, split, min_fraction: the discovery's arguments.
      cohorts: names indexing every per-cohort list and the matrix: the axis's cohorts, then (quantile
        mode) ``top_qXX`` and ``bottom_qXX``.
      rows, fractions: rows per cohort and their share of ``total_rows`` (the split's rows streamed).
      mean_prediction, positive_rate: mean predicted probability and label rate per cohort (None if
        empty); the positive rate is descriptive only, the pair is chosen from predictions.
      matrix: ``matrix[i][j] = D(P_i || P_j)`` for the metric (None where a cohort is empty).
      histograms: the ``cohorts x bins`` counts the matrix was computed from.
      head, tail: the chosen pair (head = higher mean prediction, or the top quantile group).
      divergence: the pair's score (for KL the symmetric ``max(KL_ht, KL_th)``).
      eligible: axis cohorts holding >= ``min_fraction`` of the rows (the candidates).
      excluded: axis cohorts below it, with their fraction.
      total_rows: rows streamed.
      feature, quantile, thresholds: quantile mode only: the axis's feature, ``q``, and
        ``{"head_min": t_top, "tail_max": t_bottom, "values": n, "sampled": bool, "sample_size": k}``.
    """

    axis: str
    mode: str
    metric: str
    bins: int
    split: str
    min_fraction: float
    cohorts: list[str]
    rows: list[int]
    fractions: list[float]
    mean_prediction: list[float | None]
    positive_rate: list[float | None]
    matrix: list[list[float | None]]
    histograms: list[list[int]]
    head: str
    tail: str
    divergence: float
    eligible: list[str]
    excluded: dict[str, float]
    total_rows: int
    feature: str | None = None
    quantile: float | None = None
    thresholds: dict[str, Any] | None = None

    def c2al_config(self) -> dict[str, Any]:
        """The ``c2al`` block for training (:func:`zoo.data.c2al_masks` reads both forms).

        Exhaustive: ``{"axis", "head", "tail"}`` (cohort names of the axis). Quantile:
        ``{"axis", "feature", "head_min", "tail_max"}``: head rows have ``feature >= head_min``, tail
        rows ``feature <= tail_max``.
        """
        if self.mode == "quantile":
            return {"axis": self.axis, "feature": self.feature, "head_min": self.thresholds["head_min"],
                    "tail_max": self.thresholds["tail_max"]}
        return {"axis": self.axis, "head": self.head, "tail": self.tail}

    def score(self, a: str, b: str) -> float:
        """The symmetric pair score ``max(D[a, b], D[b, a])`` (equal to ``D[a, b]`` except for KL)."""
        i, j = self.index(a), self.index(b)
        return pair_score(self.matrix_array(), i, j)

    def pairs(self) -> list[tuple[str, str, float]]:
        """Candidate pairs ``(head, tail, score)``, most divergent first.

        The eligible axis cohorts' pairs, plus (quantile mode) the top/bottom pair. Each pair is
        oriented by mean prediction (head = higher).
        """
        out = [self._oriented(a, b) for k, a in enumerate(self.eligible) for b in self.eligible[k + 1:]]
        if self.mode == "quantile":
            out.append((self.head, self.tail, self.divergence))
        return sorted(out, key=lambda t: -t[2])

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["c2al"] = self.c2al_config()
        out["pairs"] = [{"head": h, "tail": t, "divergence": s} for h, t, s in self.pairs()]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DiscoveryResult:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in fields})

    @classmethod
    def load(cls, path: str) -> DiscoveryResult:
        """Reads a ``cohort_divergence.json`` (or the directory holding it)."""
        if os.path.isdir(path):
            path = os.path.join(path, JSON_NAME)
        with open(path) as fh:
            return cls.from_dict(json.load(fh))

    def save(self, out_dir: str) -> tuple[str, str]:
        """Writes ``cohort_divergence.json`` and the heatmap ``cohort_divergence.png``; returns both paths."""
        os.makedirs(out_dir, exist_ok=True)
        json_path, png_path = os.path.join(out_dir, JSON_NAME), os.path.join(out_dir, PNG_NAME)
        with open(json_path, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2, allow_nan=False)
        self.plot(png_path)
        return json_path, png_path

    def plot(self, path: str) -> str:
        """Heatmap of the matrix, values annotated, the chosen pair outlined; excluded cohorts marked ``*``."""
        from zoo.cohorts.plots import plot_divergence_heatmap  # matplotlib only when plotting

        return plot_divergence_heatmap(self, path)

    def format_table(self, top: int = 10) -> str:
        """The ``top`` most divergent candidate pairs and the chosen one, as plain text."""
        lines = [f"axis '{self.axis}' ({self.mode}, metric {self.metric}, {self.total_rows} rows of split "
                 f"'{self.split}')", f"{'head':<16} {'tail':<16} {'divergence':>10}"]
        for h, t, s in self.pairs()[:top]:
            lines.append(f"{h:<16} {t:<16} {s:>10.4f}")
        if self.excluded:
            lines.append("excluded: " + ", ".join(f"{c} ({f:.4f})" for c, f in self.excluded.items()))
        lines.append(f"chosen: head {self.head}, tail {self.tail}, {self.metric} {self.divergence:.4f}")
        lines.append(f"c2al config: {json.dumps(self.c2al_config())}")
        return "\n".join(lines)

    def matrix_array(self) -> np.ndarray:
        """The matrix as a float64 array (NaN where a cohort is empty)."""
        return np.array([[np.nan if v is None else v for v in row] for row in self.matrix], dtype=np.float64)

    def index(self, cohort: str) -> int:
        """The position of ``cohort`` in :attr:`cohorts`; ValueError naming it if absent."""
        try:
            return self.cohorts.index(cohort)
        except ValueError:
            raise ValueError(f"cohort '{cohort}': not in the discovery result of axis '{self.axis}' "
                             f"(cohorts: {self.cohorts})") from None

    def _oriented(self, a: str, b: str) -> tuple[str, str, float]:
        ma, mb = self.mean_prediction[self.index(a)], self.mean_prediction[self.index(b)]
        head, tail = (a, b) if (ma or 0.0) >= (mb or 0.0) else (b, a)
        return head, tail, self.score(a, b)


def choose_pair(result: DiscoveryResult, strategy: str = "most", seed: int = 0) -> dict[str, Any]:
    """A ``c2al`` config from a discovery result, for the main run and its ablations.

    Strategies:

    * ``"most"``: what :func:`discover` picked (:meth:`DiscoveryResult.c2al_config`).
    * ``"least"``: the eligible axis-cohort pair with the smallest score ``max(D[i, j], D[j, i])``.
    * ``"random"``: an eligible axis-cohort pair drawn uniformly with ``numpy.random.default_rng(seed)``.

    ``least`` and ``random`` always return the cohort form ``{"axis", "head", "tail"}`` (also in
    quantile mode, where they draw from the axis's own cohorts); head = higher mean prediction.
    """
    check_choice("strategy", strategy, STRATEGIES)
    if strategy == "most":
        return result.c2al_config()
    pairs = [result._oriented(a, b) for k, a in enumerate(result.eligible) for b in result.eligible[k + 1:]]
    if not pairs:
        raise ValueError(f"axis '{result.axis}': no eligible cohort pair to choose from "
                         f"(eligible: {result.eligible}, excluded: {result.excluded})")
    if strategy == "least":
        head, tail, _ = min(pairs, key=lambda t: t[2])
    else:
        head, tail, _ = pairs[int(np.random.default_rng(seed).integers(len(pairs)))]
    return {"axis": result.axis, "head": head, "tail": tail}


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


