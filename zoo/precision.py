"""Mixed precision: the Keras dtype policy a model is built under (``training.dtype_policy``).

``float32`` (the default) computes and stores everything in float32. ``mixed_bfloat16`` and
``mixed_float16`` keep every variable in float32 and compute the layers in bfloat16 / float16
(Keras' ``DTypePolicy``: each layer casts its inputs to the compute dtype and reads its float32
variables cast). The output heads stay float32 (``zoo.model``'s sigmoids, ``zoo.c2al``'s auxiliary
heads), so losses, metrics and the served probabilities are float32 whatever the policy; the served
graph's inputs are the spec's (int64 ids, float32 dense).

``mixed_float16`` needs loss scaling, which ``keras.Model.compile`` adds by itself (it wraps the
optimizer in ``keras.optimizers.LossScaleOptimizer`` when the model's policy is ``mixed_float16``);
it is meant for GPUs (float16 on CPU is slow). ``mixed_bfloat16`` needs no scaling (bfloat16 has
float32's exponent range); CPUs with AVX-512 BF16 / AMX and TPUs run it natively.

Example:

    >>> import keras
    >>> from zoo.precision import dtype_policy_scope
    >>> with dtype_policy_scope("mixed_bfloat16"):
    ...     dense = keras.layers.Dense(2)
    >>> dense.compute_dtype, dense.variable_dtype, keras.config.dtype_policy().name
    ('bfloat16', 'float32', 'float32')
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras

DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def check_dtype_policy(name: str, where: str = "dtype_policy") -> str:
    """``name`` if it is one of :data:`DTYPE_POLICIES`, else a one-line ``ValueError`` naming ``where``."""
    if name not in DTYPE_POLICIES:
        raise ValueError(f"{where}: must be one of {list(DTYPE_POLICIES)}, got {name!r}")
    return name


@contextlib.contextmanager
def dtype_policy_scope(name: str) -> Iterator[None]:
    """Layers created inside take the policy ``name`` (one of :data:`DTYPE_POLICIES`); Keras' global
    policy is restored on exit, also after an error. A layer keeps its policy in its config, so a
    model saved to ``.keras`` reloads with it."""
    check_dtype_policy(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
