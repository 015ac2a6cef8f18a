"""Runs benchmark worker commands as subprocesses, a fixed number at a time."""

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
