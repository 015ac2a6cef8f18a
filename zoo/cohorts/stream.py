"""Discovery over the TFRecords (I/O): streams a split through the model into per-cohort histograms."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from zoo.cohorts.divergence import DIVERGENCES, check_bins, check_choice
from zoo.cohorts.histograms import CohortHistograms, QuantileSample, quantile_label
from zoo.cohorts.result import DiscoveryResult, result_from_histograms

MODES = ("exhaustive", "quantile")
QUANTILE_EXACT_ROWS = 1_000_000


def discover(model: Any, data_dir: str, axis: str, *, split: str = "valid", bins: int = 50,
             metric: str = "js", min_fraction: float = 0.01, mode: str = "exhaustive",
             quantile: float = 0.05, batch_size: int = 4096, max_batches: int | None = None,
             seed: int = 0) -> DiscoveryResult:
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
    from zoo.spec import COHORT_KEY_PREFIX, load_spec

    check_choice("metric", metric, DIVERGENCES)
    check_choice("mode", mode, MODES)
    bins = check_bins(bins)
    if not 0.0 <= float(min_fraction) < 1.0:
        raise ValueError(f"min_fraction: must be in [0, 1), got {min_fraction!r}")
    if mode == "quantile" and not 0.0 < float(quantile) < 0.5:
        raise ValueError(f"quantile: must be in (0, 0.5), got {quantile!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size!r}")
    if max_batches is not None and int(max_batches) < 1:
        raise ValueError(f"max_batches: must be >= 1 or None, got {max_batches!r}")

    spec = load_spec(data_dir)
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
        sample = QuantileSample(QUANTILE_EXACT_ROWS, seed)
        for batch in batches():
            sample.add(batch[ax.feature])
        thresholds = sample.thresholds(float(quantile), ax.feature)

    hist = CohortHistograms(list(ax.cohorts), bins)
    groups = None
    if thresholds is not None:
        label = quantile_label(float(quantile))
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
    return result_from_histograms(ax, hist, groups, thresholds, split=split, metric=metric, bins=bins,
                                  min_fraction=min_fraction, mode=mode, quantile=quantile)


def predict_primary(model: Any, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The model's primary probability of one batch as a flat float64 array."""
    from zoo.protocol import predict_batch  # here: zoo.cohorts' maths import no Keras (test_import_weight)

    out = predict_batch(model, dict(inputs))  # zoo.protocol: also under a mirrored strategy
    if isinstance(out, Mapping):
        if "primary" not in out:
            raise ValueError(f"model: its output dict has no 'primary' key (keys: {sorted(out)})")
        out = out["primary"]
    return np.asarray(out, dtype=np.float64).ravel()

