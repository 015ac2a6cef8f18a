"""Diagnostic plots (matplotlib, Agg, no pyplot state): per-cohort NE_diff bars and |Y| histograms."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _flatten_cohorts(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flatten_cohorts(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def plot_ne_diff(per_cohort_ne_diff: Mapping[str, Any], path: str, title: str | None = None) -> str:
    """Bar chart of per-cohort NE_diff (%), with error bars when several runs are given.

    Args:
      per_cohort_ne_diff: ``{cohort: NE_diff}`` in percent (``100 (NE_C2AL - NE_base) / NE_base``,
        negative is better, :func:`zoo.metrics.ne_diff`), or ``{cohort: [NE_diff of each run/seed]}``:
        the bar is the mean and the error bar the sample standard deviation (``ddof=1``; none for a
        single run). Nested dicts (``{axis: {cohort: ...}}``, the ``"cohorts"`` part of
        :func:`zoo.metrics.ne_diff`) are shown as ``axis/cohort``. NaN values are drawn as empty bars.
      path: output image file (the format follows the extension, e.g. ``.png``).
      title: figure title.

    Returns:
      ``path``.
    """
    flat = _flatten_cohorts(per_cohort_ne_diff)
    if not flat:
        raise ValueError("per_cohort_ne_diff: needs at least one cohort")
    names, means, stds = [], [], []
    for name, value in flat.items():
        runs = np.atleast_1d(np.asarray(value, dtype=np.float64))
        runs = runs[np.isfinite(runs)]
        names.append(str(name))
        means.append(float(runs.mean()) if runs.size else 0.0)
        stds.append(float(runs.std(ddof=1)) if runs.size > 1 else 0.0)
    fig = _figure(max(4.0, 0.7 * len(names) + 2.0), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    colors = ["tab:green" if m < 0 else "tab:red" for m in means]
    ax.bar(range(len(names)), means, yerr=stds if any(stds) else None, color=colors, capsize=4)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("NE_diff (%)  (negative is better)")
    ax.set_title(title or "C2AL vs baseline: NE_diff per cohort")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _points(n: int, points: int) -> list[int]:
    return sorted(set(int(i) for i in np.linspace(0, n - 1, max(1, min(points, n))).round()))


def plot_attention_histograms(records_baseline: Sequence[Mapping[str, Any]],
                              records_c2al: Sequence[Mapping[str, Any]], path: str, points: int = 3,
                              layers: Sequence[str] | None = None, bins: int = 40) -> str:
    """``|Y|`` histograms, baseline against C2AL, at several points of training (the paper's Fig. 5 view).

    ``points`` records are taken from each run, evenly spaced over its records (first, ..., last;
    e.g. 3: first, middle, last), pairing the i-th baseline point with the i-th C2AL point. The grid
    has one row per attention layer and one column per point; each panel overlays the two ``|Y|``
    histograms (densities, shared bins from 0 to the panel's largest value), titled with both steps.

    Args:
      records_baseline: records of the baseline run (:attr:`C2ALDiagnostics.history` or
        :func:`load_records`), in training order, each with an ``"abs_y"`` dict.
      records_c2al: the same for the C2AL run.
      path: output image file.
      points: number of training points (columns).
      layers: attention layer names to show (default: every layer present in both runs' first record).
      bins: histogram bins.

    Returns:
      ``path``.
    """
    if not records_baseline or not records_c2al:
        raise ValueError("records_baseline/records_c2al: need at least one record each")
    if layers is None:
        layers = [n for n in records_baseline[0].get("abs_y", {}) if n in records_c2al[0].get("abs_y", {})]
    layers = list(layers)
    if not layers:
        raise ValueError("layers: no attention layer (abs_y) common to both runs")
    base_idx = _points(len(records_baseline), points)
    c2al_idx = _points(len(records_c2al), points)
    cols = min(len(base_idx), len(c2al_idx))
    base_idx = [base_idx[int(i)] for i in np.linspace(0, len(base_idx) - 1, cols).round()]
    c2al_idx = [c2al_idx[int(i)] for i in np.linspace(0, len(c2al_idx) - 1, cols).round()]
    fig = _figure(3.4 * cols, 2.6 * len(layers))
    for r, layer in enumerate(layers):
        for c, (ib, ic) in enumerate(zip(base_idx, c2al_idx)):
            ax = fig.add_subplot(len(layers), cols, r * cols + c + 1)
            base = np.asarray(records_baseline[ib]["abs_y"].get(layer, []), dtype=np.float64)
            c2al = np.asarray(records_c2al[ic]["abs_y"].get(layer, []), dtype=np.float64)
            top = max([float(v.max()) for v in (base, c2al) if v.size] + [1e-12])
            edges = np.linspace(0.0, top, bins + 1)
            for values, label, color in ((base, "baseline", "tab:blue"), (c2al, "C2AL", "tab:orange")):
                if values.size:
                    ax.hist(values, bins=edges, density=True, alpha=0.5, label=label, color=color)
            ax.set_title(f"{layer}\nstep {records_baseline[ib].get('step')} / {records_c2al[ic].get('step')}",
                         fontsize=8)
            ax.set_xlabel("|Y|", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
