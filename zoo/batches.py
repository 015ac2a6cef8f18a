"""Endless in-memory batches for ``model.fit``: one pipeline, and so one iterator, for every epoch.

Keras builds a fresh iterator over a finite dataset (or arrays) each epoch; on TensorFlow tearing the
previous one down waits for its tf.data threads and stalls some epoch starts for seconds. Training
from :func:`memory_batches` with ``steps_per_epoch`` = one pass has no such pause and reshuffles every
pass from a stateless seed, so two runs with the same seed see the same batches.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def memory_batches(columns: Any, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                   start_step: int = 0) -> tf.data.Dataset:
    """Endless batches of in-memory columns: pass ``e`` visits every row once, in the order of
    ``tf.random.experimental.stateless_shuffle`` seeded by ``(seed, e)``, in batches of ``batch_size``
    (the last one of a pass partial).

    ``start_step`` drops that many batches from the front: the dataset starts at pass
    ``start_step // steps`` (its permutation computed as ever) and at that pass's batch
    ``start_step % steps``; only index slices are skipped, no rows are gathered for them (a resumed
    run, :mod:`zoo.checkpoint`).

    Args:
      columns: equal-length arrays (first axis = rows) in any nest of dicts, tuples and lists, e.g.
        :func:`zoo.data.split_arrays` or ``(x, y, sample_weight)``; each batch has the same structure.
      batch_size: rows per batch.
      seed: the permutation seed: the same seed gives the same batches on every run.
      shuffle: False keeps the row order of ``columns`` in every pass.
      start_step: batches to skip (>= 0).

    Raises:
      ValueError: no arrays, arrays of different lengths, or no rows.

    >>> import numpy as np
    >>> ds = memory_batches({"x": np.arange(5)}, 2, shuffle=False)
    >>> [b["x"].tolist() for b in ds.take(4).as_numpy_iterator()]
    [[0, 1], [2, 3], [4], [0, 1]]
    >>> ds = memory_batches({"x": np.arange(5)}, 2, shuffle=False, start_step=4)
    >>> [b["x"].tolist() for b in ds.take(2).as_numpy_iterator()]
    [[2, 3], [4]]
    """
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"start_step: must be an int >= 0, got {start_step!r}")
    leaves = tf.nest.flatten(columns)
    lengths = {len(leaf) for leaf in leaves}
    if not leaves or len(lengths) != 1:
        raise ValueError(f"columns: must be arrays of one length, got lengths {sorted(lengths)}")
    rows = lengths.pop()
    if rows == 0:
        raise ValueError("columns: no rows")
    steps, size = -(-rows // batch_size), int(batch_size)
    tensors = tf.nest.map_structure(tf.convert_to_tensor, columns)

    def one_pass(epoch):
        order = tf.range(rows, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.range(steps).map(lambda i: order[i * size:(i + 1) * size])

    ds = tf.data.Dataset.counter(start=start_step // steps).flat_map(one_pass)
    if start_step % steps:
        ds = ds.skip(start_step % steps)  # index slices only: the gather below runs on kept batches
    ds = ds.map(lambda index: tf.nest.map_structure(lambda t: tf.gather(t, index), tensors),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
