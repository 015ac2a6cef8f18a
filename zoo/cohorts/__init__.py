"""Cohort discovery for C2AL: which two cohorts does the baseline model see most differently?

Stage 1 of C2AL (docs/methods.md#cohort-discovery): along one semantic cohort axis of the spec, take the
**baseline model's predicted probabilities** on held-out data, form one histogram per cohort, compute a
pairwise divergence between the cohorts' histograms and pick the most contrasting pair as
``(C_head, C_tail)``. The full divergence matrix is kept so the choice can be audited.

Command line (writes ``cohort_divergence.json`` and ``cohort_divergence.png`` under ``--output``)::

    python -m zoo.cohorts --data runs/synthetic/data --model runs/synthetic/train/baseline/model.keras \\
        --axis user_value --output runs/synthetic/cohorts

Modules: :mod:`zoo.cohorts.divergence` (the metrics, NumPy), :mod:`zoo.cohorts.histograms` (the
streaming accumulators, NumPy), :mod:`zoo.cohorts.result` (:class:`DiscoveryResult`, its JSON,
:func:`choose_pair`, :func:`from_histograms`), :mod:`zoo.cohorts.stream` (:func:`discover`: the
TFRecords through the model), :mod:`zoo.cohorts.plots` (the heatmap, matplotlib) and
:mod:`zoo.cohorts.cli`. None of them imports TensorFlow at import time.

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

from zoo.cohorts.cli import main
from zoo.cohorts.divergence import DIVERGENCES, KL_EPS, divergence, divergence_matrix
from zoo.cohorts.histograms import CohortHistograms, QuantileSample
from zoo.cohorts.result import JSON_NAME, PNG_NAME, STRATEGIES, DiscoveryResult, choose_pair, from_histograms
from zoo.cohorts.stream import MODES, QUANTILE_EXACT_ROWS, discover, predict_primary

__all__ = [
    "DIVERGENCES", "JSON_NAME", "KL_EPS", "MODES", "PNG_NAME", "QUANTILE_EXACT_ROWS", "STRATEGIES",
    "CohortHistograms", "DiscoveryResult", "QuantileSample",
    "choose_pair", "discover", "divergence", "divergence_matrix", "from_histograms", "main", "predict_primary",
]
