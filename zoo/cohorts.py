"""Cohort discovery for C2AL: which two cohorts does the baseline model see most differently?

Stage 1 of C2AL (METHODS.md section 1.3): along one semantic cohort axis of the spec, take the
**baseline model's predicted probabilities** on held-out data, form one histogram per cohort, compute a
pairwise divergence between the cohorts' histograms and pick the most contrasting pair as
``(C_head, C_tail)``. The full divergence matrix is kept so the choice can be audited.

Command line (writes ``cohort_divergence.json`` and ``cohort_divergence.png`` under ``--out``)::

    python -m zoo.cohorts --data runs/synthetic/data --model runs/synthetic/train/baseline/model.keras \\
        --axis user_value --out runs/synthetic/cohorts

Top-down:

* :func:`discover` streams one split of the TFRecords (:func:`zoo.data.read_split`), predicts the
  primary probability batch by batch and accumulates per-cohort histograms in a
  :class:`CohortHistograms`. It never holds all predictions, only ``cohorts x bins`` counts, so it
  scales to data that does not fit in memory. Two modes:

  - ``"exhaustive"``: every pair of the axis's cohorts that holds at least ``min_fraction`` of the
    rows is a candidate; the pair with the largest divergence wins.
  - ``"quantile"`` (ordinal axes, i.e. ``boundaries`` on a feature): the pair is the top ``q`` vs the
    bottom ``q`` of the axis's feature values (the paper's "top 5 % vs bottom 5 % of users by user
    value"). The thresholds come from a first streaming pass over the feature column.

  In the pair, the cohort with the higher mean predicted probability is the **head**, the other the
  **tail**.
* :class:`DiscoveryResult` holds everything (rows, fractions, mean predictions, positive rates,
  histograms, the matrix, the pair, excluded cohorts, thresholds); :meth:`DiscoveryResult.c2al_config`
  is the ``c2al`` block training uses and :meth:`DiscoveryResult.save` writes the JSON and a heatmap.
* :func:`choose_pair` picks the most-, least-divergent or a random eligible pair, for ablations.
* :class:`CohortHistograms` is the streaming accumulator; :func:`divergence` and
  :func:`divergence_matrix` the metrics (:data:`DIVERGENCES`).

Histograms use ``bins`` equal-width bins on ``[0, 1]``: bin ``k`` holds ``k/bins <= p < (k+1)/bins``
and ``p == 1`` goes to the last bin.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

DIVERGENCES = ("js", "kl", "w1", "cosine")
MODES = ("exhaustive", "quantile")
STRATEGIES = ("most", "least", "random")
KL_EPS = 1e-10
QUANTILE_EXACT_ROWS = 1_000_000
JSON_NAME, PNG_NAME = "cohort_divergence.json", "cohort_divergence.png"


# ----- discovery --------------------------------------------------------------------------------------
def discover(model: Any, data_dir: str, axis: str, *, split: str = "valid", bins: int = 50,
             metric: str = "js", min_fraction: float = 0.01, mode: str = "exhaustive",
             quantile: float = 0.05, batch_size: int = 4096, max_batches: int | None = None,
             seed: int = 0) -> "DiscoveryResult":
    """Finds the most contrasting (head, tail) cohort pair on one axis from a model's predictions.

    The model's primary probability ``p = P(y=1 | x)`` is predicted batch by batch
    (``model.predict_on_batch`` on the spec's input features; a dict output is read at ``"primary"``)
    and binned per cohort. With ``P_i`` the normalized histogram of cohort ``i``, the matrix is
    ``D[i, j] = divergence(P_i, P_j, metric)``.

    * ``mode="exhaustive"``: candidates are all pairs of cohorts with ``rows_i / rows >= min_fraction``
      (the others are reported in ``excluded`` with their fraction); the chosen pair maximizes
      ``D[i, j]``. KL is asymmetric, so pairs are scored by ``max(D[i, j], D[j, i])``.
    * ``mode="quantile"``: the axis must be ordinal. Pass 1 streams the axis's feature column and
      computes ``t_bottom = Q(quantile)`` and ``t_top = Q(1 - quantile)`` (``numpy.quantile``, linear
      interpolation) exactly when the split has at most 1,000,000 rows, else on a uniform sample of
      1,000,000 values (a seeded reservoir sample: each value gets a uniform key from
      ``numpy.random.default_rng(seed)`` and the values with the smallest keys are kept). Thresholds
      are rounded to float32, the dtype of the stored feature. Pass 2 accumulates the histograms of
      ``top_qXX`` (value >= t_top, the head) and ``bottom_qXX`` (value <= t_bottom, the tail) next to
      the axis's own cohorts, whose pairs stay in the matrix for reference and for :func:`choose_pair`.

    Args:
      model: a Keras model taking the spec's input features (from :func:`zoo.model.build`, or a
        C2AL-wrapped one: only ``"primary"`` is read).
      data_dir: the Beam job's output directory (``spec.json`` and TFRecord shards).
      axis: a cohort axis of the data's spec.
      split: the split to stream (held-out data: ``valid`` by default).
      bins: histogram bins on ``[0, 1]`` (>= 2).
      metric: one of :data:`DIVERGENCES`.
      min_fraction: cohorts below this fraction of the rows are excluded from the candidates.
      mode: ``"exhaustive"`` or ``"quantile"``.
      quantile: the head/tail fraction of quantile mode, in ``(0, 0.5)``.
      batch_size: rows per streamed batch.
      max_batches: stop after this many batches (each pass); None streams the whole split.
      seed: seed of the quantile mode's reservoir sample.

    Returns:
      A :class:`DiscoveryResult`.

    Raises:
      ValueError: an argument is out of range, the axis is unknown (``SpecError``) or not ordinal in
        quantile mode, fewer than two cohorts are eligible, or the predictions are not probabilities.
    """
    from zoo import data as data_lib
    from zoo.spec import COHORT_KEY_PREFIX

    _check_choice("metric", metric, DIVERGENCES)
    _check_choice("mode", mode, MODES)
    bins = _check_bins(bins)
    if not 0.0 <= float(min_fraction) < 1.0:
        raise ValueError(f"min_fraction: must be in [0, 1), got {min_fraction!r}")
    if mode == "quantile" and not 0.0 < float(quantile) < 0.5:
        raise ValueError(f"quantile: must be in (0, 0.5), got {quantile!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size!r}")
    if max_batches is not None and int(max_batches) < 1:
        raise ValueError(f"max_batches: must be >= 1 or None, got {max_batches!r}")

    spec = data_lib.load_data_spec(data_dir)
    ax = spec.axis(axis)  # SpecError (a ValueError) naming the axis and the known ones
    if mode == "quantile" and not ax.ordinal:
        raise ValueError(f"axis '{ax.name}': quantile mode needs an ordinal axis (boundaries on a feature); "
                         f"'{ax.name}' is categorical, use mode='exhaustive'")
    names = [f.name for f in spec.inputs]
    cohort_key = COHORT_KEY_PREFIX + ax.name

    def batches():
        ds = data_lib.read_split(data_dir, split, int(batch_size), spec=spec)
        if max_batches is not None:
            ds = ds.take(int(max_batches))
        return ds.as_numpy_iterator()

    thresholds = None
    if mode == "quantile":
        sample = _QuantileSample(QUANTILE_EXACT_ROWS, seed)
        for batch in batches():
            sample.add(batch[ax.feature])
        thresholds = sample.thresholds(float(quantile), ax.feature)

    hist = CohortHistograms(list(ax.cohorts), bins)
    groups = None
    if thresholds is not None:
        label = _quantile_label(float(quantile))
        groups = CohortHistograms([f"top_{label}", f"bottom_{label}"], bins)
        t_top, t_bottom = np.float32(thresholds["head_min"]), np.float32(thresholds["tail_max"])
    for batch in batches():
        probs = predict_primary(model, {n: batch[n] for n in names})
        labels = batch[spec.label]
        hist.update(probs, batch[cohort_key], labels=labels)
        if groups is not None:
            values = batch[ax.feature].astype(np.float32).ravel()
            for gid, member in enumerate((values >= t_top, values <= t_bottom)):
                groups.update(probs.ravel()[member], np.full(int(member.sum()), gid), labels=labels.ravel()[member])
    if int(hist.rows.sum()) == 0:
        raise ValueError(f"split '{split}': no rows under {data_dir}")
    return _result(ax, hist, groups, thresholds, split=split, metric=metric, bins=bins,
                   min_fraction=min_fraction, mode=mode, quantile=quantile)


def from_histograms(hist: "CohortHistograms", axis: Any, *, metric: str = "js", min_fraction: float = 0.01,
                    split: str = "valid") -> "DiscoveryResult":
    """Exhaustive-mode discovery from histograms accumulated elsewhere (e.g. in-memory predictions).

    Args:
      hist: a :class:`CohortHistograms` over ``axis.cohorts`` (in that order).
      axis: the spec's cohort axis (``spec.axis(name)``).
      metric, min_fraction: as in :func:`discover`.
      split: the split the predictions came from (recorded only).
    """
    _check_choice("metric", metric, DIVERGENCES)
    if list(hist.cohorts) != list(axis.cohorts):
        raise ValueError(f"hist: cohorts {list(hist.cohorts)} are not axis '{axis.name}' cohorts {list(axis.cohorts)}")
    return _result(axis, hist, None, None, split=split, metric=metric, bins=hist.bins,
                   min_fraction=min_fraction, mode="exhaustive", quantile=None)


def _result(ax, hist, groups, thresholds, *, split, metric, bins, min_fraction, mode, quantile) -> "DiscoveryResult":
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
        i, j = max(((i, j) for a, i in enumerate(idx) for j in idx[a + 1:]), key=lambda ij: _pair_score(matrix, *ij))
        head, tail = (i, j) if means[i] >= means[j] else (j, i)
    else:
        head, tail = n_axis, n_axis + 1  # top_qXX, bottom_qXX
    return DiscoveryResult(
        axis=ax.name, mode=mode, metric=metric, bins=bins, split=split, min_fraction=float(min_fraction),
        cohorts=cohorts, rows=[int(r) for r in rows], fractions=[float(f) for f in fractions],
        mean_prediction=[_finite_or_none(m) for m in means], positive_rate=[_finite_or_none(r) for r in rates],
        matrix=[[_finite_or_none(v) for v in row] for row in matrix],
        histograms=[[int(c) for c in row] for row in counts],
        head=cohorts[head], tail=cohorts[tail], divergence=float(_pair_score(matrix, head, tail)),
        eligible=eligible, excluded=excluded, total_rows=total,
        feature=ax.feature if mode == "quantile" else None,
        quantile=float(quantile) if mode == "quantile" else None, thresholds=thresholds,
    )



def predict_primary(model: Any, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The model's primary probability of one batch as a flat float64 array."""
    out = model.predict_on_batch(dict(inputs))
    if isinstance(out, Mapping):
        if "primary" not in out:
            raise ValueError(f"model: its output dict has no 'primary' key (keys: {sorted(out)})")
        out = out["primary"]
    return np.asarray(out, dtype=np.float64).ravel()


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
        i, j = self._index(a), self._index(b)
        return _pair_score(self._matrix(), i, j)

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
    def from_dict(cls, raw: Mapping[str, Any]) -> "DiscoveryResult":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in fields})

    @classmethod
    def load(cls, path: str) -> "DiscoveryResult":
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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        m = self._matrix()
        n = len(self.cohorts)
        size = max(4.0, 0.75 * n + 2.5)
        fig, ax = plt.subplots(figsize=(size + 1.2, size))
        image = ax.imshow(np.ma.masked_invalid(m), cmap="viridis")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=f"{self.metric} divergence")
        finite = m[np.isfinite(m)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i in range(n):
            for j in range(n):
                text = "n/a" if not np.isfinite(m[i, j]) else f"{m[i, j]:.3g}"
                color = "black" if np.isfinite(m[i, j]) and m[i, j] > mid else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color if np.isfinite(m[i, j]) else "grey")
        labels = [c + (" *" if c in self.excluded else "") for c in self.cohorts]
        ax.set_xticks(range(n), labels, rotation=45, ha="right")
        ax.set_yticks(range(n), labels)
        h, t = self._index(self.head), self._index(self.tail)
        for r, c in ((h, t), (t, h)):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
        title = f"{self.metric} divergence of predicted-probability histograms\naxis '{self.axis}' ({self.mode}, " \
                f"split {self.split}): head {self.head}, tail {self.tail}"
        if self.excluded:
            title += f"\n* excluded (< {self.min_fraction:g} of rows)"
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

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

    def _matrix(self) -> np.ndarray:
        return np.array([[np.nan if v is None else v for v in row] for row in self.matrix], dtype=np.float64)

    def _index(self, cohort: str) -> int:
        try:
            return self.cohorts.index(cohort)
        except ValueError:
            raise ValueError(f"cohort '{cohort}': not in the discovery result of axis '{self.axis}' "
                             f"(cohorts: {self.cohorts})") from None

    def _oriented(self, a: str, b: str) -> tuple[str, str, float]:
        ma, mb = self.mean_prediction[self._index(a)], self.mean_prediction[self._index(b)]
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
    _check_choice("strategy", strategy, STRATEGIES)
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


# ----- streaming histograms ---------------------------------------------------------------------------
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
        self.bins = _check_bins(bins)
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


# ----- divergences ------------------------------------------------------------------------------------
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
    _check_choice("metric", metric, DIVERGENCES)
    p, q = _normalized(p, "p"), _normalized(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p, q: histograms must have the same number of bins, got {p.size} and {q.size}")
    return float(_DIVERGENCE_FNS[metric](p, q))


def divergence_matrix(counts: Any, metric: str = "js") -> np.ndarray:
    """``D[i, j] = divergence(counts[i], counts[j], metric)`` for a ``(cohorts x bins)`` count array.

    Rows that sum to zero (empty cohorts) give NaN in their row and column.
    """
    _check_choice("metric", metric, DIVERGENCES)
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


# ----- helpers ----------------------------------------------------------------------------------------
class _QuantileSample:
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


def _pair_score(matrix: np.ndarray, i: int, j: int) -> float:
    return float(max(matrix[i, j], matrix[j, i]))


def _quantile_label(q: float) -> str:
    pct = 100.0 * q
    return f"q{int(round(pct)):02d}" if abs(pct - round(pct)) < 1e-9 else f"q{pct:g}".replace(".", "p")


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: must be one of {tuple(choices)}, got {value!r}")


def _check_bins(bins: int) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ValueError(f"bins: must be an integer >= 2, got {bins!r}")
    return int(bins)


# ----- command line -----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="output directory of beam_jobs.build_tfrecords")
    parser.add_argument("--model", required=True, help="the baseline model (.keras)")
    parser.add_argument("--axis", required=True, help="cohort axis of the data's spec")
    parser.add_argument("--out", required=True, help="directory for cohort_divergence.{json,png}")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--metric", default="js", choices=DIVERGENCES)
    parser.add_argument("--bins", type=int, default=50)
    parser.add_argument("--min-fraction", type=float, default=0.01)
    parser.add_argument("--mode", default="exhaustive", choices=MODES)
    parser.add_argument("--quantile", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--max-batches", type=int, default=None)
    args = parser.parse_args(argv)
    from zoo.model import load_model  # the CLI alone needs Keras; discovery's maths does not

    model = load_model(args.model)
    result = discover(model, args.data, args.axis, split=args.split, bins=args.bins, metric=args.metric,
                      min_fraction=args.min_fraction, mode=args.mode, quantile=args.quantile,
                      batch_size=args.batch_size, max_batches=args.max_batches)
    json_path, png_path = result.save(args.out)
    print(result.format_table())
    print(f"\nwrote {os.path.abspath(json_path)}\n      {os.path.abspath(png_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
