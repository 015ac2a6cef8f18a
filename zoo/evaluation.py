"""A trained model on a split of the Beam job's TFRecords: predictions, the oracle's metrics, the text report.

:func:`predict_split` reads a split once (labels, the primary head's probabilities, cohort ids per
axis and, on data that carries it, the true click probability); :func:`predict_tasks` does the same
for every task of a multi-task model; :func:`oracle_metrics` evaluates the stored true probabilities
(the known answer of the synthetic data); :func:`format_report` prints what :mod:`zoo.train` measured.
"""

from __future__ import annotations

from typing import Any, Mapping

import keras
import numpy as np

from zoo import data, metrics, protocol
from zoo.model import PRIMARY
from zoo.spec import COHORT_KEY_PREFIX, TASK_PREFIX, FeatureSpec


def predict_tasks(model: keras.Model, spec: FeatureSpec, data_dir: str, split: str, batch_size: int) -> tuple:
    """``({label: y}, {label: p}, cohort ids per axis)`` of every row of a split for every task of a
    multi-task model (outputs ``primary`` and ``task_<label>``), in one pass."""
    names = [f.name for f in spec.inputs]
    outputs = {label: (PRIMARY if label == spec.label else TASK_PREFIX + label) for label in spec.labels}
    ys = {label: [] for label in spec.labels}
    probs = {label: [] for label in spec.labels}
    cohorts = {a.name: [] for a in spec.cohort_axes}
    for batch in data.read_split(data_dir, split, batch_size, spec=spec).as_numpy_iterator():
        out = protocol.predict_batch(model, {n: batch[n] for n in names})
        for label, output in outputs.items():
            probs[label].append(np.asarray(out[output]).ravel())
            ys[label].append(batch[label][:, 0])
        for a in spec.cohort_axes:
            cohorts[a.name].append(batch[COHORT_KEY_PREFIX + a.name][:, 0])
    cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return cat(ys), cat(probs), cat(cohorts)


def predict_split(model: keras.Model | None, spec: FeatureSpec, data_dir: str, split: str,
                  batch_size: int, oracle: bool = False) -> tuple:
    """(labels, primary probabilities, cohort ids per axis) of every row of a split, in one pass.

    With ``oracle=True`` a fourth element follows: the spec's oracle column (the stored true click
    probability, :attr:`FeatureSpec.oracle`) per row, or None when the spec has none. ``model``
    None skips prediction (the probabilities are None): the oracle's own pass.
    """
    names = [f.name for f in spec.inputs]
    key = spec.oracle if oracle else None
    ys, probs, truth, cohorts = [], [], [], {a.name: [] for a in spec.cohort_axes}
    for batch in data.read_split(data_dir, split, batch_size, spec=spec).as_numpy_iterator():
        if model is not None:
            out = protocol.predict_batch(model, {n: batch[n] for n in names})
            probs.append(np.asarray(out[PRIMARY] if isinstance(out, dict) else out).ravel())
        ys.append(batch[spec.label][:, 0])
        if key is not None:
            truth.append(batch[key][:, 0])
        for a in spec.cohort_axes:
            cohorts[a.name].append(batch[COHORT_KEY_PREFIX + a.name][:, 0])
    out = (np.concatenate(ys), np.concatenate(probs) if model is not None else None,
           {k: np.concatenate(v) for k, v in cohorts.items()})
    if oracle:
        out += (np.concatenate(truth) if key is not None else None,)
    return out


def oracle_metrics(spec: FeatureSpec, data_dir: str, split: str = "test", batch_size: int = 16384) -> dict | None:
    """:func:`zoo.metrics.evaluate` of the spec's oracle column (the true P(y=1|x)) on a split; None without one."""
    if spec.oracle is None:
        return None
    y, _, cohorts, p_true = predict_split(None, spec, data_dir, split, batch_size, oracle=True)
    return metrics.evaluate(y, p_true, cohorts, {a.name: list(a.cohorts) for a in spec.cohort_axes})


def format_report(summary: Mapping[str, Any]) -> str:
    """A plain-text table of overall and per-cohort NE, AUC and NE_diff.

    With an oracle (``summary["oracle"]``, datasets that carry the true click probability) an
    ``oracle`` row follows the variants, overall and per cohort, and the per-cohort table shows the
    share of the baseline-to-oracle NE gap C2AL closes (``gap_closed``).
    """
    variants = summary["variants"]
    oracle = summary.get("oracle")
    rows = dict(variants, **({"oracle": oracle} if oracle is not None else {}))
    lines = [f"{'variant':<10} {'rows':>8} {'AUC':>8} {'logloss':>8} {'NE':>8}  epochs (best; cap reached)"]
    for name, res in rows.items():
        o = res["overall"]
        fit = res.get("training")
        epochs = f"  {fit['epochs_run']} ({fit['best_epoch']}; {'yes' if fit['hit_cap'] else 'no'})" if fit else ""
        lines.append(f"{name:<10} {o['rows']:>8d} {o['auc']:>8.4f} {o['log_loss']:>8.4f} {o['ne']:>8.4f}{epochs}")
    tasked = {name: res["tasks"] for name, res in variants.items() if res.get("tasks")}
    if tasked:  # multi-task: every task's metrics, overall and per cohort
        lines.append(f"per task ({'variant':<10} {'task':<14} {'rows':>8} {'AUC':>8} {'logloss':>8} {'NE':>8}):")
        for name, tasks in tasked.items():
            for task, res in tasks.items():
                o = res["overall"]
                lines.append(f"  {name:<18} {task:<14} {o['rows']:>8d} {o['auc']:>8.4f} {o['log_loss']:>8.4f} "
                             f"{o['ne']:>8.4f}")
                for axis, cohorts in res["cohorts"].items():
                    for cohort, m in cohorts.items():
                        lines.append(f"    {axis}={cohort:<12} rows {m['rows']:>7d} AUC {m['auc']:.4f} "
                                     f"logloss {m['log_loss']:.4f} NE {m['ne']:.4f}")
    diff = summary.get("ne_diff_percent")
    if diff is not None:
        lines.append(f"NE_diff overall (C2AL vs baseline): {diff['overall']:+.3f}%")
    gap = summary.get("gap_closed")
    if gap is not None:
        lines.append(f"oracle gap closed overall (C2AL vs baseline): {gap['overall']:+.3f}")
    c2al = summary.get("c2al")
    if c2al:
        if summary.get("c2al_ablation") not in (None, "none"):
            lines.append(f"C2AL ablation: {summary['c2al_ablation']}")
        if "feature" in c2al:
            pair = f"head: {c2al['feature']} >= {c2al['head_min']}, tail: {c2al['feature']} <= {c2al['tail_max']}"
        else:
            pair = f"head={c2al['head']}, tail={c2al['tail']}"
        axis = c2al.get("axis")
        first = next(iter(variants.values()))["cohorts"].get(axis, {}) if axis else {}
        lines.append(f"per cohort on axis '{axis}' ({pair}):" if first else f"C2AL pair: {pair}")
        for cohort, m in first.items():
            row = f"  {cohort:<14} rows {m['rows']:>7d} base rate {m['base_rate']:.3f}"
            for name, res in rows.items():
                ne = res["cohorts"].get(axis, {}).get(cohort, {}).get("ne", float("nan"))
                row += f"  NE[{name}] {ne:.4f}"
            if diff is not None:
                row += f"  NE_diff {diff['cohorts'][axis].get(cohort, float('nan')):+.3f}%"
            if gap is not None:
                row += f"  gap_closed {gap['cohorts'].get(axis, {}).get(cohort, float('nan')):+.3f}"
            lines.append(row)
    return "\n".join(lines)
