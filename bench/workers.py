"""What benchmark workers share: running worker commands as subprocesses a fixed number at a time, the
precision names of ``--precision`` and the epoch timer of a measured ``model.fit``."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Mapping, Sequence


def run_workers(commands: Mapping[str, Sequence[str]], jobs: int) -> list[str]:
    """Runs every command (name -> argv), at most ``jobs`` at once, in the given order.

    Workers share one accelerator when there is one, so JAX allocates GPU memory on demand in them
    instead of pre-allocating 75 % each. Returns ``"<name> (exit code N)"`` for each failed worker.
    """
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    pending, active, failed = list(commands), [], []
    while pending or active:
        while pending and len(active) < max(1, jobs):
            name = pending.pop(0)
            active.append((name, subprocess.Popen(list(commands[name]), env=env)))
        time.sleep(1)
        for name, proc in list(active):
            if proc.poll() is not None:
                active.remove((name, proc))
                if proc.returncode != 0:
                    failed.append(f"{name} (exit code {proc.returncode})")
    return failed


PRECISIONS = ("float32", "bfloat16")


def precision_policy(precision: str) -> str:
    """The ``training.dtype_policy`` of a ``--precision`` (``bfloat16``: ``mixed_bfloat16``, as
    ``zoo.train --dtype-policy`` sets it; zoo.precision)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision: must be one of {list(PRECISIONS)}, got {precision!r}")
    return "float32" if precision == "float32" else f"mixed_{precision}"


def epoch_timer():
    """A Keras callback recording every epoch's wall time and the time spent inside its train steps."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.in_steps = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._start, self._steps = time.perf_counter(), 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self._batch = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self._steps += time.perf_counter() - self._batch

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(time.perf_counter() - self._start)
            self.in_steps.append(self._steps)

    return EpochTimer()
