"""Training on several devices, processes and hosts: ``zoo.train --distribution``.

:data:`DISTRIBUTIONS`:

* ``none`` (the default): Keras' default device.
* ``data_parallel`` (JAX): every variable replicated on every device
  (``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``), each global
  batch split across them. After :func:`initialize` the devices are those of every process, on
  every host, and Keras gives each process its own part of every batch (below).
* ``model_parallel`` (JAX): a 2-D device mesh ``(batch, model)`` of shape
  ``(devices / model_shards, model_shards)`` (``model_shards`` defaults to every device). The
  fused embedding tables (every ``MultiFieldEmbedding`` variable, :data:`TABLE_PATTERN`) are
  row-sharded over ``model`` with a ``keras.distribution.LayoutMap``; every other variable (the
  dense layers) is replicated; batches are split over ``batch``. JAX shards only whole blocks, so
  :func:`table_row_multiple` pads the tables' rows to a multiple of ``model_shards``
  (``embedding.row_multiple``: zero rows no id maps to). Embedding type ``distributed`` (keras_rs,
  which shards its own tables on a TPU's SparseCore) is refused. One process only.
* ``mirrored`` (TensorFlow): ``tf.distribute.MirroredStrategy`` over the local GPUs (else every
  logical CPU device),
  for users who stay on TensorFlow. Keras 3 + TensorFlow's ``MultiWorkerMirroredStrategy`` fails
  inside ``model.fit`` (keras-team/keras#20585), so there is no multi-worker TensorFlow option:
  use JAX for several hosts.

``training.batch_size`` stays the global batch. Under a distribution every batch is full
(:func:`zoo.data.training_batches` with ``full_batches``: the passes run on as one stream, each
pass still a permutation of every row, and an epoch is ``floor(rows / batch)`` batches), because
a batch must split evenly over the devices; no row is dropped or repeated (the remainder of a pass
starts the next epoch). :func:`check_batch_size` checks that the global batch divides.

Several processes (a GPU cluster, a TPU pod, or two local processes in the tests):
:func:`initialize` (``zoo.train --coordinator HOST:PORT --num-processes P --process-id I``, or
the environment variables ``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES``
and ``KERAS_DISTRIBUTION_PROCESS_ID`` that ``keras.distribution.initialize`` reads; on a Cloud
TPU pod JAX finds them itself) connects the processes before any computation. Every process
reads the same seeded stream and ``DataParallel.distribute_dataset`` (inside ``model.fit``)
re-batches each global batch of ``B`` rows into ``P`` parts of ``B / P`` and keeps part ``I``:
the processes together see each global batch once, every row in exactly one process
(tests/test_distribution.py counts them). Validation and test predictions run on every process
over the whole split (replicated inputs), so every process holds the same metrics; only the chief
(process 0, :func:`is_chief`) writes files.

Measured on 2 virtual CPU devices and on 2 local processes (tests/test_distribution.py): the loss
trajectory of the same seed and global batch equals one device's to 1e-5 (measured about 1e-7):
only the order of floating-point sums differs.

Example (one device here; with several JAX devices ``data_parallel`` yields a ``DataParallel``):

    >>> from zoo.distribution import DISTRIBUTIONS, distribution_scope
    >>> DISTRIBUTIONS
    ('none', 'data_parallel', 'model_parallel', 'mirrored')
    >>> with distribution_scope("none") as distribution:
    ...     layer = keras.layers.Dense(2)
    >>> print(distribution)
    None
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import keras

DISTRIBUTIONS = ("none", "data_parallel", "model_parallel", "mirrored")
BACKEND_OF = {"data_parallel": "jax", "model_parallel": "jax", "mirrored": "tensorflow"}
# The variable path of every fused table (layers.MultiFieldEmbedding's only weight, also inside MLET's
# ``inner``, a multi-embedding's ``set_m`` and the first-order table): row-sharded by ``model_parallel``.
TABLE_PATTERN = r"(.*/)?embeddings"
MESH_AXES = ("batch", "model")


def check_distribution(name: str, where: str = "distribution") -> str:
    """``name`` if it is one of :data:`DISTRIBUTIONS` and this backend can run it, else a one-line
    ``ValueError`` naming ``where``."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"{where}: must be one of {list(DISTRIBUTIONS)}, got {name!r}")
    needed = BACKEND_OF.get(name)
    if needed is not None and keras.backend.backend() != needed:
        why = "keras.distribution is JAX-only" if needed == "jax" else "tf.distribute is TensorFlow's"
        raise ValueError(f"{where}: {name!r} needs KERAS_BACKEND={needed} ({why}); "
                         f"this process runs {keras.backend.backend()!r}")
    return name


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Connects this process to the others of a multi-process run (JAX only; before any computation).

    Arguments left None come from ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` / ``_NUM_PROCESSES`` /
    ``_PROCESS_ID`` (``keras.distribution.initialize``), or on a TPU pod from JAX itself. On CPU the
    processes exchange gradients through gloo collectives.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(f"coordinator: several processes need KERAS_BACKEND=jax (keras.distribution is "
                         f"JAX-only); this process runs {keras.backend.backend()!r}")
    if num_processes is not None and (isinstance(num_processes, bool) or num_processes < 1):
        raise ValueError(f"num_processes: must be a positive int, got {num_processes!r}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id: must be in [0, {num_processes}), got {process_id!r}")
    keras.distribution.initialize(coordinator, num_processes, process_id)


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Inside, no distribution is current: what the chief alone runs (``model.save``, export), since
    a variable created under a multi-process distribution (Keras' saver builds one) waits for every
    process. The model's replicated variables read locally."""
    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def barrier(name: str) -> None:
    """Every process waits here for the others (a no-op in one process): the non-chief processes
    stay until the chief has written the run's files."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def process_count() -> int:
    """Processes of this run (1 unless :func:`initialize` connected several)."""
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def process_index() -> int:
    """This process's id (0 unless :func:`initialize` connected several)."""
    if keras.backend.backend() != "jax":
        return 0
    import jax

    return jax.process_index()


def is_chief() -> bool:
    """Whether this process writes the run's files (process 0, or the only one)."""
    return process_index() == 0


def device_count(name: str) -> int:
    """Devices the distribution ``name`` trains on (every process's; 1 for ``none``)."""
    if name == "none":
        return 1
    if name == "mirrored":
        return len(mirrored_devices())
    return len(keras.distribution.list_devices())


def mirrored_devices() -> list[str]:
    """The devices of ``mirrored``: every local GPU, else every logical CPU device."""
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")] or \
        [d.name for d in tf.config.list_logical_devices("CPU")]


_MIRRORED: list = []


def mirrored_strategy():
    """This process's one ``tf.distribute.MirroredStrategy`` over :func:`mirrored_devices`. One per
    process: a second strategy's collective ops reuse the first one's instance keys, and the replicas
    of two models' steps then meet in one all-reduce (a shape mismatch, measured)."""
    if not _MIRRORED:
        import tensorflow as tf

        _MIRRORED.append(tf.distribute.MirroredStrategy(devices=mirrored_devices()))
    return _MIRRORED[0]


def check_model_shards(name: str, model_shards: int | None) -> int:
    """The model axis' size of ``model_parallel`` (``model_shards``, default every device; it must
    divide the device count), 1 for the other distributions (``model_shards`` must then be None)."""
    if name != "model_parallel":
        if model_shards is not None:
            raise ValueError(f"model_shards: only for distribution 'model_parallel', got distribution {name!r}")
        return 1
    devices = device_count(name)
    if model_shards is None:
        return devices
    if isinstance(model_shards, bool) or not isinstance(model_shards, int) or model_shards < 1 \
            or devices % model_shards:
        raise ValueError(f"model_shards: must be a positive divisor of the {devices} devices, got {model_shards!r}")
    return model_shards


def batch_shards(name: str, model_shards: int | None = None) -> int:
    """How many parts each global batch is split into (the mesh's batch axis)."""
    if name == "none":
        return 1
    return device_count(name) // check_model_shards(name, model_shards)


def check_batch_size(batch_size: int, name: str, model_shards: int | None = None) -> None:
    """A one-line ``ValueError`` unless ``batch_size`` splits evenly over the batch axis (and the processes)."""
    shards = batch_shards(name, model_shards)
    parts = math.lcm(shards, process_count())
    if batch_size % parts:
        raise ValueError(f"training.batch_size: {batch_size} does not split evenly over the {parts} batch shards "
                         f"of distribution {name!r}; use a multiple of {parts}")


def table_row_multiple(name: str, model_shards: int | None = None) -> int:
    """The ``embedding.row_multiple`` the distribution needs: the model-shard count of ``model_parallel``, else 1."""
    return check_model_shards(name, model_shards) if name == "model_parallel" else 1


def make_distribution(name: str, model_shards: int | None = None):
    """The distribution of ``name``: a ``keras.distribution.Distribution`` (JAX), a
    ``tf.distribute.MirroredStrategy`` (``mirrored``) or None (``none``)."""
    check_distribution(name)
    shards = check_model_shards(name, model_shards)
    if name == "none":
        return None
    if name == "mirrored":
        return mirrored_strategy()
    devices = keras.distribution.list_devices()
    if name == "data_parallel":
        return keras.distribution.DataParallel(devices=devices)
    if process_count() > 1:
        raise ValueError("distribution: 'model_parallel' runs in one process (its tables are sharded over the "
                         "local devices); use 'data_parallel' across processes")
    mesh = keras.distribution.DeviceMesh((len(devices) // shards, shards), MESH_AXES, devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[TABLE_PATTERN] = ("model", None)
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


@contextlib.contextmanager
def distribution_scope(name: str, model_shards: int | None = None) -> Iterator[object]:
    """Variables created and models trained inside use the distribution ``name``; yields it (None for
    ``none``). Build and fit must both run inside."""
    distribution = make_distribution(name, model_shards)
    if distribution is None:
        yield None
        return
    with distribution.scope():
        yield distribution
