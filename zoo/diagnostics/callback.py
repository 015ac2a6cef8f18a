"""The C2AL training callback: :func:`zoo.diagnostics.collect` (and, given probe labels,
:func:`zoo.diagnostics.gradient_alignment`) on a probe batch, to TensorBoard and JSON lines."""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Mapping

import keras
import numpy as np

from zoo.diagnostics.collection import collect, flatten_stats, to_numpy
from zoo.diagnostics.gradients import METHODS, flatten_gradients, gradient_alignment


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class C2ALDiagnostics(keras.callbacks.Callback):
    """Logs :func:`collect` on a fixed probe batch at train begin, every N optimizer steps and at train end.

    Each record is ``{"step": s, "epoch": e, "event": "train_begin" | "step" | "train_end",
    <flatten_stats scalars>, "abs_y": {<layer>: [|Y| values]}}``; ``step`` is the optimizer step count
    (``model.optimizer.iterations`` at train begin, then advanced by the batches seen, so a resumed run
    keeps counting), ``epoch`` the 0-based epoch in progress (at train end: the last one). A step
    record is taken whenever the step count crosses a multiple of ``every_n_steps`` (once per
    crossing, also with ``steps_per_execution > 1``); the train-end record is skipped when a record of
    that step was just taken. Records are kept in :attr:`history` and written as they are taken:

    * ``log_dir``: TensorBoard event files (``tf.summary``): every scalar at its step and a histogram
      ``attention/<layer>/abs_y`` of every layer's (full) ``|Y|``. Needs TensorFlow (installed with
      the TF backend; also used under JAX when importable); without it a warning is given once and
      only the JSON/history are kept.
    * ``json_path``: JSON lines, one record per line (the file is started afresh by the first record of
      this callback). NaN/inf are written as null. ``abs_y`` is evenly subsampled to at most
      ``max_abs_y`` values per layer (also in :attr:`history`).

    Given ``probe_y`` (and ``lambdas``), each record also carries the gradient alignment of the
    auxiliary losses with the primary loss at the tap (:func:`gradient_alignment` on the probe batch,
    :func:`flatten_gradients` keys ``gradients/<aux>/<stat>`` and ``gradients/<aux>/<rows>/<stat>``);
    the model must then be a C2AL model.

    Under JAX, reading the model syncs the training state (Keras does it when ``self.model`` is
    accessed), which happens only on record steps.

    Args:
      probe_x: a dict batch of model inputs (same for every record; a few hundred rows is plenty).
      every_n_steps: record period in optimizer steps (>= 1).
      log_dir: TensorBoard log directory, or None.
      json_path: JSON-lines output file, or None.
      max_abs_y: cap on the ``|Y|`` values per layer kept in a record.
      probe_y: the probe batch's fit targets ``{"primary": y, "aux_head": y_head, "aux_tail": y_tail}``
        to record the gradient alignment; None (default) records none.
      lambdas: the auxiliary loss weights (e.g. :func:`zoo.c2al.loss_weights`); needed with ``probe_y``.
      probe_cohorts: the ``cohort_masks`` of :func:`gradient_alignment`, e.g. ``{"head": in_head,
        "tail": in_tail}`` (bool per probe row); None: the rows with a non-zero auxiliary label.
      gradient_method: the ``method`` of :func:`gradient_alignment`.

    Example::

        diag = C2ALDiagnostics(probe_x, every_n_steps=200, log_dir="runs/tb/diag",
                               json_path="runs/diag.jsonl")
        model.fit(dataset, epochs=3, callbacks=[diag])
        plot_attention_histograms(base_diag.history, diag.history, "attention.png")
    """

    def __init__(self, probe_x: Mapping[str, Any], every_n_steps: int = 100, log_dir: str | None = None,
                 json_path: str | None = None, max_abs_y: int = 4096, probe_y: Mapping[str, Any] | None = None,
                 lambdas: Mapping[str, float] | None = None, probe_cohorts: Mapping[str, Any] | None = None,
                 gradient_method: str = "auto"):
        super().__init__()
        if isinstance(every_n_steps, bool) or int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ValueError(f"every_n_steps: must be a positive integer, got {every_n_steps}")
        if not isinstance(probe_x, Mapping):
            raise ValueError(f"probe_x: must be a dict of model inputs, got {type(probe_x).__name__}")
        self.probe_x = {k: np.asarray(v) for k, v in probe_x.items()}
        self.every_n_steps = int(every_n_steps)
        self.log_dir = log_dir
        self.json_path = json_path
        self.max_abs_y = int(max_abs_y)
        if probe_y is not None and not isinstance(probe_y, Mapping):
            raise ValueError(f"probe_y: must be a dict of fit targets, got {type(probe_y).__name__}")
        if probe_y is not None and lambdas is None:
            raise ValueError("lambdas: needed with probe_y (the auxiliary loss weights, e.g. zoo.c2al.loss_weights)")
        if gradient_method not in METHODS:
            raise ValueError(f"gradient_method: must be one of {METHODS}, got {gradient_method!r}")
        self.probe_y = None if probe_y is None else {k: np.asarray(v) for k, v in probe_y.items()}
        self.lambdas = None if lambdas is None else dict(lambdas)
        self.probe_cohorts = None if probe_cohorts is None else {k: np.asarray(v) for k, v in probe_cohorts.items()}
        self.gradient_method = gradient_method
        self.history: list[dict[str, Any]] = []
        self._step = 0
        self._epoch = 0
        self._epoch_base = 0
        self._writer = None
        self._tf_warned = False
        self._json_started = False

    # -- Keras hooks --------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        try:
            self._step = int(to_numpy(self.model.optimizer.iterations))
        except (AttributeError, TypeError, ValueError):
            pass
        self._epoch_base = self._step
        self._record("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._epoch_base = self._step

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch_base + int(batch) + 1
        crossed = step // self.every_n_steps > self._step // self.every_n_steps
        self._step = max(step, self._step)
        if crossed:
            self._record("step")

    def on_train_end(self, logs=None):
        if not (self.history and self.history[-1]["step"] == self._step):
            self._record("train_end")
        if self._writer is not None:
            self._writer.flush()

    # -- recording ----------------------------------------------------------------------------------
    def _record(self, event: str) -> dict[str, Any]:
        model = self.model
        stats = collect(model, self.probe_x)
        record: dict[str, Any] = {"step": self._step, "epoch": self._epoch, "event": event,
                                  **flatten_stats(stats)}
        if self.probe_y is not None:
            record.update(flatten_gradients(gradient_alignment(
                model, self.probe_x, self.probe_y, self.lambdas, self.probe_cohorts, method=self.gradient_method)))
        full_abs_y = {rec["name"]: rec["abs_y"] for rec in stats["attention"]}
        record["abs_y"] = {}
        for name, values in full_abs_y.items():
            if values.size > self.max_abs_y:
                values = values[np.linspace(0, values.size - 1, self.max_abs_y).round().astype(int)]
            record["abs_y"][name] = [float(v) for v in values]
        self.history.append(record)
        if self.log_dir is not None:
            self._write_tensorboard(record, full_abs_y)
        if self.json_path is not None:
            self._write_json(record)
        return record

    def _write_tensorboard(self, record: Mapping[str, Any], abs_y: Mapping[str, np.ndarray]) -> None:
        if self._writer is None:
            try:
                import tensorflow as tf
            except ImportError:
                if not self._tf_warned:
                    warnings.warn("C2ALDiagnostics: TensorFlow is not importable; TensorBoard logging is "
                                  "skipped (history and JSON are still written)")
                    self._tf_warned = True
                return
            self._tf = tf
            self._writer = tf.summary.create_file_writer(self.log_dir)
        tf = self._tf
        with self._writer.as_default(step=int(record["step"])):
            for key, value in record.items():
                if key in ("step", "epoch", "event", "abs_y") or not math.isfinite(value):
                    continue
                tf.summary.scalar(key, value)
            for name, values in abs_y.items():
                tf.summary.histogram(f"attention/{name}/abs_y", values.astype(np.float32))
        self._writer.flush()

    def _write_json(self, record: Mapping[str, Any]) -> None:
        directory = os.path.dirname(os.path.abspath(self.json_path))
        os.makedirs(directory, exist_ok=True)
        with open(self.json_path, "a" if self._json_started else "w") as fh:
            fh.write(json.dumps(_json_safe(dict(record))) + "\n")
        self._json_started = True

    def close(self) -> None:
        """Closes the TensorBoard writer (a later record opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def load_records(path: str) -> list[dict[str, Any]]:
    """The records of a :class:`C2ALDiagnostics` JSON-lines file (null scalars read back as NaN)."""
    records = []
    with open(path) as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                records.append({k: (float("nan") if v is None else v) for k, v in rec.items()})
    return records

