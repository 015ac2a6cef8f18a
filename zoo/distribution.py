"""Training on several devices: ``zoo.train --distribution`` (``keras.distribution``, JAX backend).

``none`` (the default) trains on Keras' default device. ``data_parallel`` replicates every variable
on all local devices (``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``)
and splits each global batch across them: ``training.batch_size`` stays the global batch, so the
loss trajectory is the one-device trajectory up to the order of floating-point sums (measured on 2
virtual CPU devices: the same losses to 1e-5, measured 1e-7; tests/test_distribution.py).

``keras.distribution`` works on the JAX backend only. On TensorFlow, Keras 3's
``MultiWorkerMirroredStrategy`` fails inside ``model.fit`` (keras-team/keras#20585), and
``tf.distribute`` strategies are not wired into ``zoo.train``: ``data_parallel`` there is a one-line
error naming the backend. Model parallelism (sharded embedding tables) and several processes or
hosts are not implemented yet.

Example (one device; under JAX with several devices, ``data_parallel`` yields a ``DataParallel``):

    >>> from zoo.distribution import DISTRIBUTIONS, distribution_scope
    >>> DISTRIBUTIONS
    ('none', 'data_parallel')
    >>> with distribution_scope("none") as distribution:
    ...     layer = keras.layers.Dense(2)
    >>> print(distribution)
    None
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras

DISTRIBUTIONS = ("none", "data_parallel")


def check_distribution(name: str, where: str = "distribution") -> str:
    """``name`` if it is one of :data:`DISTRIBUTIONS` and this backend can run it, else a one-line
    ``ValueError`` naming ``where``."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"{where}: must be one of {list(DISTRIBUTIONS)}, got {name!r}")
    if name != "none" and keras.backend.backend() != "jax":
        raise ValueError(f"{where}: {name!r} needs KERAS_BACKEND=jax (keras.distribution is JAX-only); "
                         f"this process runs {keras.backend.backend()!r}")
    return name


def make_distribution(name: str):
    """The ``keras.distribution.Distribution`` of ``name`` over all local devices (None for ``none``)."""
    check_distribution(name)
    if name == "none":
        return None
    return keras.distribution.DataParallel(devices=keras.distribution.list_devices())


@contextlib.contextmanager
def distribution_scope(name: str) -> Iterator[object]:
    """Variables created and models trained inside use the distribution ``name``; yields it (None for
    ``none``). Build and fit must both run inside."""
    distribution = make_distribution(name)
    if distribution is None:
        yield None
        return
    with distribution.scope():
        yield distribution
