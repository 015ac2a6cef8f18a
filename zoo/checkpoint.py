"""Preemption-safe training: periodic atomic checkpoints and an exact resume of :func:`zoo.protocol.fit`.

A run killed at any point (``SIGKILL``, a preempted VM) and started again with the same command
continues from its last checkpoint and ends with the weights, history and metrics of a run that was
never interrupted: bit-identical on CPU (``tests/test_resume.py``).

Why not ``keras.callbacks.BackupAndRestore``: it restores the model, optimizer and epoch, but not the
protocol's callbacks (``EarlyStopping``'s ``wait``, ``best``, ``best_weights``, ``best_epoch``;
``ReduceLROnPlateau``'s ``wait``, ``best``, ``cooldown_counter``), nor the history of the finished
epochs (``FitResult.history``, ``best_epoch``), nor the running training loss of a partial epoch; and
after a mid-epoch backup it starts that epoch's data from its beginning. Here a checkpoint holds
everything the rest of the run depends on:

* ``model.variables`` (the weights and every ``SeedGenerator`` state, so dropout masks continue),
  ``model.optimizer.variables`` (Adam's moments, the iteration count, the loss scale of a
  ``LossScaleOptimizer``), ``model.metrics_variables`` (the epoch's running losses: added back after
  the first resumed batch, :meth:`ResumeCallback._merge_metrics`) and the learning rate
  (``ReduceLROnPlateau`` may have lowered it);
* the protocol callbacks' state and ``EarlyStopping.best_weights``;
* the global step (batches trained), the epochs completed, the per-epoch history and the training
  seconds so far;
* a fingerprint of the run (model config, seed, variant, cohort pair, steps per epoch, reader and the
  data directory's manifest): a checkpoint of another run is refused with one line naming the file
  and the first key that differs, never silently continued.

Layout and atomicity: ``<run_dir>/checkpoint/step-<global step, 12 digits>/`` holds ``arrays.npz``
and ``state.json``. A checkpoint is written into ``checkpoint/tmp-<step>-<pid>/``, every file
fsynced, then the directory renamed to its ``step-`` name (the commit point: ``rename`` is atomic on
POSIX) and the parent fsynced; only then are older ``step-`` directories removed. A run killed while
writing leaves a ``tmp-`` directory, which is ignored (and cleared by the next write): the previous
checkpoint is used. If both an old and a new ``step-`` directory survive, the highest step wins.

When: at the end of every epoch (after the validation, the learning-rate schedule and early stopping
have seen it) and, with ``training.checkpoint_every_steps: N`` (N > 0), also after every N-th
global step inside an epoch. ``0`` (the default) checkpoints at epoch ends only; a mid-epoch kill
then repeats at most one epoch's steps, and the result is still exact.

Resume (:class:`Checkpoint` loads the newest one, ``resume=False`` deletes it instead): the data
starts at the saved global step (:func:`zoo.data.training_batches` ``start_step``: the memory reader
starts at the right pass and offset without gathering skipped rows, the stream reader reads and
drops the skipped batches), ``model.fit`` runs with ``initial_epoch`` = the epochs completed, and
:class:`ResumeCallback` restores the state after the protocol callbacks' ``on_train_begin`` has reset
theirs. A partial epoch is finished with only its remaining steps: the callback sets
``model.stop_training`` after them, Keras then runs the epoch's end as usual (validation, schedule,
early stopping, a checkpoint), and :class:`EpochBoundary` (the first callback) clears the flag
before the protocol's callbacks see the epoch end, so only a real early stop ends the run. A
checkpoint of a finished fit (the cap reached or an early stop) is restored without training.
``zoo.train`` removes a run's checkpoints once its ``metrics.json`` is written.

On JAX (also ``--distribution data_parallel``) reading ``callback.model`` syncs the training state
into the variables (Keras does this for checkpointing callbacks), and assigning an array to a
replicated variable lays it out on every device; the resumed trajectory is the same.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import time
from typing import Any, Mapping, Sequence

import keras
import numpy as np

DIRECTORY = "checkpoint"
_STEP_PREFIX, _TMP_PREFIX = "step-", "tmp-"
STATE_FILE, ARRAYS_FILE = "state.json", "arrays.npz"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and the key."""


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """``{dotted key: JSON of the leaf}`` of a nest of mappings (lists are leaves), keys sorted."""
    if isinstance(value, Mapping) and value:
        out: dict[str, str] = {}
        for key in sorted(value, key=str):
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(value, sort_keys=True, default=str)}


def data_fingerprint(data_dir: str) -> str:
    """SHA-256 over the data directory's ``spec.json``, ``manifest.json`` and ``stats.json`` (their
    bytes) and every shard's name and size: another data set, or rewritten shards, change it."""
    digest = hashlib.sha256()
    for name in ("spec.json", "manifest.json", "stats.json"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as fh:
                digest.update(name.encode() + b"\0" + fh.read() + b"\0")
    for path in sorted(glob.glob(os.path.join(data_dir, "*", "part-*"))):
        digest.update(f"{os.path.relpath(path, data_dir)}\0{os.path.getsize(path)}\0".encode())
    return digest.hexdigest()


@dataclasses.dataclass
class State:
    """The non-array part of a checkpoint (``state.json``).

    Attributes:
      step: global steps (batches) trained.
      epochs: epochs completed (``model.fit``'s ``initial_epoch`` on resume).
      finished: the fit had ended (the cap reached or an early stop).
      history: per-epoch logs of the completed epochs (:attr:`zoo.protocol.FitResult.history`).
      callbacks: ``{"early_stopping": {...}, "reduce_lr": {...}}`` scalar state of the protocol's callbacks.
      learning_rate: the optimizer's learning rate.
      seconds: training wall time so far.
      fingerprint: :func:`flatten` of the run's identity.
      variables: ``[path, shape, dtype]`` of every saved model/optimizer/metric variable, in order.
    """

    step: int
    epochs: int
    finished: bool
    history: dict[str, list[float]]
    callbacks: dict[str, dict[str, Any]]
    learning_rate: float
    seconds: float
    fingerprint: dict[str, str]
    variables: dict[str, list[list[Any]]]
    format: int = FORMAT


@dataclasses.dataclass
class Restored:
    """A loaded checkpoint: where it lies, its :class:`State` and its arrays by group."""

    path: str
    state: State
    arrays: dict[str, list[np.ndarray]]


_GROUPS = ("model", "optimizer", "metrics", "best_weights")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpoint:
    """The checkpoints of one run directory.

    Args:
      run_dir: the run's directory; checkpoints go to ``<run_dir>/checkpoint``.
      fingerprint: the run's identity (a nest of mappings; :func:`flatten`ed). A checkpoint whose
        fingerprint differs is refused (:class:`CheckpointError` naming ``state.json`` and the key).
      every_steps: also checkpoint after every that many global steps (0: at epoch ends only).
      resume: load the newest checkpoint (:attr:`restored`); False deletes existing ones.
      writer: whether this process writes and deletes checkpoints (False: the non-chief processes of
        a multi-process run, which read the chief's from a shared file system).
    """

    def __init__(self, run_dir: str, fingerprint: Mapping[str, Any], every_steps: int = 0, resume: bool = True,
                 writer: bool = True):
        if isinstance(every_steps, bool) or not isinstance(every_steps, int) or every_steps < 0:
            raise ValueError(f"checkpoint_every_steps: must be an int >= 0, got {every_steps!r}")
        self.directory = os.path.join(run_dir, DIRECTORY)
        self.fingerprint = flatten(dict(fingerprint))
        self.every_steps = every_steps
        self.writer = bool(writer)
        if not resume:
            self.clear()
        self.restored: Restored | None = self.load() if resume else None

    @property
    def start_step(self) -> int:
        """The global step training resumes at (0 without a checkpoint)."""
        return self.restored.state.step if self.restored else 0

    def _committed(self) -> list[tuple[int, str]]:
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            if name.startswith(_STEP_PREFIX) and name[len(_STEP_PREFIX):].isdigit():
                found.append((int(name[len(_STEP_PREFIX):]), os.path.join(self.directory, name)))
        return sorted(found)

    def load(self) -> Restored | None:
        """The newest committed checkpoint, checked against the fingerprint; None when there is none.
        ``tmp-`` directories (a write that was interrupted) are ignored."""
        committed = self._committed()
        if not committed:
            return None
        path = committed[-1][1]
        state_path = os.path.join(path, STATE_FILE)
        try:
            with open(state_path) as fh:
                raw = json.load(fh)
            state = State(**raw)
        except (OSError, ValueError, TypeError) as err:
            raise CheckpointError(f"{state_path}: not a readable checkpoint ({err}); "
                                  "rerun with --no-resume to start over") from None
        if state.format != FORMAT:
            raise CheckpointError(f"{state_path}: format: checkpoint format {state.format}, this code reads {FORMAT}")
        for key in sorted(set(state.fingerprint) | set(self.fingerprint)):
            old, new = state.fingerprint.get(key, "<unset>"), self.fingerprint.get(key, "<unset>")
            if old != new:
                raise CheckpointError(f"{state_path}: written by another run: {key} is {old} there, {new} here; "
                                      "rerun with --no-resume to start over")
        with np.load(os.path.join(path, ARRAYS_FILE), allow_pickle=False) as npz:
            arrays = {group: [npz[f"{group}/{i}"] for i in range(len(state.variables[group]))] for group in _GROUPS}
        return Restored(path, state, arrays)

    def write(self, state: State, arrays: Mapping[str, Sequence[np.ndarray]]) -> str:
        """Writes a checkpoint atomically (see the module docstring); returns its directory (where the
        chief writes it, when this process is not the :attr:`writer`)."""
        final = os.path.join(self.directory, f"{_STEP_PREFIX}{state.step:012d}")
        if not self.writer:
            return final
        os.makedirs(self.directory, exist_ok=True)
        for name in os.listdir(self.directory):  # interrupted writes of earlier processes
            if name.startswith(_TMP_PREFIX):
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        tmp = os.path.join(self.directory, f"{_TMP_PREFIX}{state.step:012d}-{os.getpid()}")
        os.makedirs(tmp)
        with open(os.path.join(tmp, ARRAYS_FILE), "wb") as fh:
            np.savez(fh, **{f"{group}/{i}": a for group in _GROUPS for i, a in enumerate(arrays.get(group, ()))})
            fh.flush()
            os.fsync(fh.fileno())
        with open(os.path.join(tmp, STATE_FILE), "w") as fh:
            json.dump(dataclasses.asdict(state), fh)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if os.path.exists(final):  # the same step again (e.g. a finished fit restored and re-saved)
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(self.directory)
        for _, old in self._committed():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def clear(self) -> None:
        """Removes every checkpoint of the run (a finished run, or ``--no-resume``; the writer only)."""
        if self.writer:
            shutil.rmtree(self.directory, ignore_errors=True)


def _numpy(variables: Sequence[Any]) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _describe(variables: Sequence[Any]) -> list[list[Any]]:
    return [[getattr(v, "path", getattr(v, "name", "")), list(v.shape), str(v.dtype)] for v in variables]


def _assign(variables: Sequence[Any], arrays: Sequence[np.ndarray], group: str, where: str) -> None:
    if len(variables) != len(arrays):
        raise CheckpointError(f"{where}: {group}: {len(arrays)} variables saved, the model has {len(variables)}")
    for v, a in zip(variables, arrays):
        if tuple(v.shape) != tuple(a.shape):
            raise CheckpointError(f"{where}: {group}: variable {v.path} has shape {tuple(v.shape)}, "
                                  f"the checkpoint {tuple(a.shape)}")
        v.assign(a)


class EpochBoundary(keras.callbacks.Callback):
    """The first callback of a checkpointed fit: at an epoch's end it clears the ``stop_training``
    that :class:`ResumeCallback` set to end a resumed partial epoch, before the protocol's
    callbacks (early stopping may set it again, for real)."""

    def __init__(self):
        super().__init__()
        self.pending = False

    def on_epoch_end(self, epoch, logs=None):
        if self.pending:
            self.model.stop_training = False
            self.pending = False


class ResumeCallback(keras.callbacks.Callback):
    """The last callback of a checkpointed fit: restores a checkpoint at train begin, counts global
    steps, finishes a resumed partial epoch after its remaining steps, writes the checkpoints and
    records the history.

    Args:
      checkpoint: the run's :class:`Checkpoint` (its :attr:`Checkpoint.restored`, if any, is restored).
      epoch_steps: steps per epoch of the fit.
      max_epochs: the protocol's cap (a checkpoint at its last epoch is ``finished``).
      boundary: the fit's :class:`EpochBoundary`.
      early_stopping, reduce_lr: the protocol's callbacks (None when off).
    """

    def __init__(self, checkpoint: Checkpoint, epoch_steps: int, max_epochs: int, boundary: EpochBoundary,
                 early_stopping: keras.callbacks.EarlyStopping | None,
                 reduce_lr: keras.callbacks.ReduceLROnPlateau | None):
        super().__init__()
        self.checkpoint, self.epoch_steps, self.max_epochs = checkpoint, int(epoch_steps), int(max_epochs)
        self.boundary, self.early_stopping, self.reduce_lr = boundary, early_stopping, reduce_lr
        restored = checkpoint.restored
        state = restored.state if restored else None
        self.step = state.step if state else 0
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (state.history if state else {}).items()}
        self.prior_seconds = state.seconds if state else 0.0
        self.started = time.time()
        self._offset = self.step - state.epochs * self.epoch_steps if state else 0  # steps done in the epoch
        self._epoch_steps_done = 0
        self._first_epoch = True
        self.last_path: str | None = None

    # -- state ------------------------------------------------------------------------------------
    def _callback_state(self) -> dict[str, dict[str, Any]]:
        out = {}
        if self.early_stopping is not None:
            es = self.early_stopping
            out["early_stopping"] = {"wait": int(es.wait), "best": None if es.best is None else float(es.best),
                                     "best_epoch": int(es.best_epoch), "stopped_epoch": int(es.stopped_epoch)}
        if self.reduce_lr is not None:
            rl = self.reduce_lr
            out["reduce_lr"] = {"wait": int(rl.wait), "best": None if rl.best is None else float(rl.best),
                                "cooldown_counter": int(rl.cooldown_counter)}
        return out

    def restore_callbacks(self, model: keras.Model) -> None:
        """Sets the protocol callbacks' state, ``best_weights`` included, from the restored checkpoint."""
        restored = self.checkpoint.restored
        saved = restored.state.callbacks
        if self.early_stopping is not None and "early_stopping" in saved:
            for key, value in saved["early_stopping"].items():
                setattr(self.early_stopping, key, value)
            best = restored.arrays["best_weights"]
            self.early_stopping.best_weights = [np.array(a) for a in best] if best else None
        if self.reduce_lr is not None and "reduce_lr" in saved:
            for key, value in saved["reduce_lr"].items():
                setattr(self.reduce_lr, key, value)

    def restore_model(self, model: keras.Model) -> None:
        """Assigns the restored model, optimizer variables and learning rate (the optimizer is built first)."""
        restored = self.checkpoint.restored
        where = os.path.join(restored.path, ARRAYS_FILE)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        _assign(model.variables, restored.arrays["model"], "model", where)
        _assign(model.optimizer.variables, restored.arrays["optimizer"], "optimizer", where)
        model.optimizer.learning_rate = restored.state.learning_rate

    def save(self, epochs: int, finished: bool) -> str:
        model = self.model  # on JAX this syncs the training state into the variables
        best = self.early_stopping.best_weights if self.early_stopping is not None else None
        arrays = {"model": _numpy(model.variables), "optimizer": _numpy(model.optimizer.variables),
                  "metrics": _numpy(model.metrics_variables), "best_weights": [np.array(a) for a in best or ()]}
        state = State(step=self.step, epochs=epochs, finished=finished, history=self.history,
                      callbacks=self._callback_state(),
                      learning_rate=float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
                      seconds=round(self.seconds, 3), fingerprint=self.checkpoint.fingerprint,
                      variables={"model": _describe(model.variables), "optimizer": _describe(model.optimizer.variables),
                                 "metrics": _describe(model.metrics_variables),
                                 "best_weights": [["", list(a.shape), str(a.dtype)] for a in arrays["best_weights"]]})
        self.last_path = self.checkpoint.write(state, arrays)
        return self.last_path

    @property
    def seconds(self) -> float:
        return self.prior_seconds + time.time() - self.started

    # -- Keras hooks ------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self.checkpoint.restored is not None:  # after the protocol callbacks reset theirs
            self.restore_model(self.model)
            self.restore_callbacks(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_steps_done = 0

    def _merge_metrics(self) -> None:
        """Adds the saved running sums of the partial epoch to those of its first resumed batch.

        Keras builds the compiled losses' trackers in the first train step (on TensorFlow without a
        distribution strategy) and resets every metric at an epoch's start, so the saved values
        cannot be assigned before that step. The zoo's metrics (the loss trackers: ``Mean``; and
        ``AUC``) keep sums and counts, so ``saved + first batch`` is the float32 addition the
        uninterrupted run makes (``0 + x`` is exact and the addition commutes): the epoch's logged
        training losses come out bit-identical.
        """
        restored = self.checkpoint.restored
        variables = self.model.metrics_variables
        if len(variables) != len(restored.arrays["metrics"]):
            raise CheckpointError(f"{os.path.join(restored.path, ARRAYS_FILE)}: metrics: "
                                  f"{len(restored.arrays['metrics'])} variables saved, the model has {len(variables)}")
        for v, saved in zip(variables, restored.arrays["metrics"]):
            v.assign(keras.ops.add(v, keras.ops.convert_to_tensor(saved, dtype=v.dtype)))

    def on_train_batch_end(self, batch, logs=None):
        if self._first_epoch and self._offset and self._epoch_steps_done == 0:
            self._merge_metrics()
        self.step += 1
        self._epoch_steps_done += 1
        done = self._epoch_steps_done + (self._offset if self._first_epoch else 0)
        if done >= self.epoch_steps:
            if self._first_epoch and self._offset:  # the resumed partial epoch has run its remaining steps
                self.boundary.pending = True
                self.model.stop_training = True
            return  # the epoch's end writes the checkpoint
        if self.checkpoint.every_steps and self.step % self.checkpoint.every_steps == 0:
            self.save(epochs=epoch_of(self.step, self.epoch_steps), finished=False)

    def on_epoch_end(self, epoch, logs=None):
        self._first_epoch = False
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        finished = bool(self.model.stop_training) or epoch + 1 >= self.max_epochs
        self.save(epochs=epoch + 1, finished=finished)


def epoch_of(step: int, epoch_steps: int) -> int:
    """Epochs completed after ``step`` global steps."""
    return step // epoch_steps


class ResumableTensorBoard(keras.callbacks.TensorBoard):
    """``keras.callbacks.TensorBoard`` whose batch summaries continue at the optimizer's step after a resume.

    Keras counts the batch summaries' step from 0 in every ``fit`` (tensorflow/tensorflow#45274): a
    resumed run would write its ``batch_*`` curves over the killed run's steps, while the epoch
    summaries (``initial_epoch``) and ``evaluation_*_vs_iterations`` continue. Here the count starts
    at ``model.optimizer.iterations`` when the first batch begins, i.e. after :class:`ResumeCallback`
    restored it, so batch ``n`` of the run is written at step ``n`` however often it was resumed. The
    steps a kill lost (after the last checkpoint) are trained and written again: TensorBoard then
    shows two points there, the lost one and the kept one. Arguments are the Keras callback's.
    """

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not hasattr(self, "_global_train_batch"):  # the counter Keras keeps; a test checks it still does
            raise RuntimeError("keras.callbacks.TensorBoard no longer keeps _global_train_batch: "
                               "zoo.checkpoint.ResumableTensorBoard needs updating")
        self._continue_from_optimizer = True

    def on_train_batch_begin(self, batch, logs=None):
        if self._continue_from_optimizer:
            self._continue_from_optimizer = False
            self._global_train_batch = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        super().on_train_batch_begin(batch, logs)
