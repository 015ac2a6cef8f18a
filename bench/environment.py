"""What a benchmark ran on: versions, processor, accelerator, backend and date, for its results file."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def accelerators() -> list[str]:
    """Accelerators the Keras backend sees (empty on CPU only)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [f"{d.platform}:{d.device_kind}" for d in jax.devices() if d.platform != "cpu"]
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    return []


def revision() -> str | None:
    """The checkout's commit (short), with ``+dirty`` where tracked files differ from it; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment(packages: tuple[str, ...] = ("keras", "keras_rs", "numpy", "jax", "tensorflow")) -> dict:
    """Versions of ``packages`` that are installed, the Keras backend, processor, accelerators, the code's
    git revision (:func:`revision`) and the date."""
    import keras

    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            continue
    return {
        **versions,
        "backend": keras.backend.backend(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "accelerators": accelerators(),
        "machine": platform.machine(),
        "revision": revision(),
        "date": time.strftime("%Y-%m-%d"),
    }
