"""tf.data reader over the Beam job's TFRecord shards.

Layout written by :mod:`beam_jobs.build_tfrecords` under one data directory::

    spec.json                       the resolved feature spec
    stats.json                      rows, positives, per-split and per-cohort counts, OOV counts
    manifest.json                   records, bytes and SHA-256 of every shard (beam_jobs.manifest)
    {train,valid,test}/part-*.tfrecord.gz
    dead_letter/*.jsonl
    _SUCCESS

Before a split is read its shards are checked against ``manifest.json`` (presence and byte sizes
from one listing, record totals against ``stats.json``; :func:`beam_jobs.manifest.check_shards`): a
missing, truncated or stray shard raises :class:`~beam_jobs.manifest.IntegrityError`, one line
naming it, instead of failing mid-epoch. A directory without a manifest (older jobs, hand-written
test directories) is read as found. ``python -m beam_jobs.verify DIR`` checks the checksums.

Batches are parsed with the spec's ``tf.io.parse_example`` features (after batching, one vectorized
parse per batch). :func:`model_batches` turns parsed batches into Keras ``(x, y)`` pairs, attaching
C2AL auxiliary labels from the stored cohort ids, so labels never come from a model input.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from beam_jobs.manifest import SHARD_SUFFIX, check_shards
from zoo.batches import memory_batches
from zoo.config import READERS
from zoo.spec import COHORT_KEY_PREFIX, SPLITS, TASK_PREFIX, FeatureSpec, load_spec


def load_stats(data_dir: str) -> dict[str, Any]:
    with tf.io.gfile.GFile(os.path.join(data_dir, "stats.json")) as fh:
        return json.load(fh)


def shard_pattern(data_dir: str, split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split '{split}': must be one of {SPLITS}")
    return os.path.join(data_dir, split, f"part-*{SHARD_SUFFIX}")


def read_split(data_dir: str, split: str, batch_size: int, *, spec: FeatureSpec | None = None,
               shuffle: bool = False, seed: int | None = None, shuffle_buffer: int = 100_000,
               repeat: bool = False, drop_remainder: bool = False) -> tf.data.Dataset:
    """Parsed batches of one split: dict of every label, every feature and ``cohort/<axis>`` ids.

    Shapes: label and scalar features ``(B, 1)``, sequences ``(B, max_length)``. The dataset's
    length is known (and checked by tf.data) from the manifest's record count of the split, or
    ``stats.json``'s rows without a manifest.

    Args:
      data_dir: the Beam job's output directory.
      split: ``train``, ``valid`` or ``test``.
      batch_size: rows per batch.
      spec: the spec to parse with; defaults to the ``spec.json`` next to the shards.
      shuffle: shuffle shard order and rows (for training); deterministic given ``seed``.
      seed: shuffle seed.
      shuffle_buffer: rows held by the row shuffle.
      repeat: repeat forever (use with ``steps_per_epoch``).
      drop_remainder: drop the last partial batch.

    Raises:
      IntegrityError: a shard is missing, has the wrong size or is not in ``manifest.json``.
      FileNotFoundError: no ``spec.json`` (and no ``spec``), or no shards.
    """
    if split not in SPLITS:
        raise ValueError(f"split '{split}': must be one of {SPLITS}")
    spec = spec or load_spec(data_dir)
    shards = check_shards(data_dir, [split])[split]
    files = shards.files
    if not files:
        raise FileNotFoundError(f"no shards match {shard_pattern(data_dir, split)}")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle or seed is not None,
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    features = spec.parse_spec("all")
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    rows = shards.records if shards.records is not None else _split_rows(data_dir, split)
    if rows is not None and not repeat:
        # Known length: Keras shows full progress bars from the first epoch, and shards holding fewer
        # records than the manifest (or stats.json) says fail loudly instead of training on partial data.
        batches = rows // batch_size if drop_remainder else -(-rows // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    ds = ds.map(lambda s: tf.io.parse_example(s, features), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _split_rows(data_dir: str, split: str) -> int | None:
    """Rows of a split according to ``stats.json``; None when the directory has no stats."""
    if not tf.io.gfile.exists(os.path.join(data_dir, "stats.json")):
        return None
    return int(load_stats(data_dir)["splits"][split]["rows"])


def split_rows(data_dir: str, split: str) -> int:
    """Rows of a split: the manifest's record count, else ``stats.json``'s, else counted from the shards
    (a directory with neither)."""
    shards = check_shards(data_dir, [split])[split]
    rows = shards.records if shards.records is not None else _split_rows(data_dir, split)
    if rows is None:
        records = tf.data.TFRecordDataset(shards.files, compression_type="GZIP")
        rows = int(records.reduce(np.int64(0), lambda count, _: count + 1))
    return int(rows)


# ``training.reader: auto`` (zoo.config.READERS) holds the train split in memory up to this many bytes.
MEMORY_READER_LIMIT = 2 * 1024 ** 3


def parsed_row_bytes(spec: FeatureSpec) -> int:
    """Bytes of one parsed row (every column of :func:`read_split`: 4 per float32, 8 per int64 value)."""
    return sum(int(np.prod(f.shape)) * f.dtype.size for f in spec.parse_spec("all").values())


def reader_and_steps(data_dir: str, spec: FeatureSpec, batch_size: int, reader: str = "auto",
                     full_batches: bool = False) -> tuple[str, int]:
    """The reader :func:`training_batches` uses (``auto`` resolved) and the batches of one epoch: one pass
    (``ceil(rows / batch_size)``), or ``max(1, rows // batch_size)`` with ``full_batches``.

    Raises:
      ValueError: an unknown ``reader`` or an empty train split.
    """
    if reader not in READERS:
        raise ValueError(f"reader '{reader}': must be one of {list(READERS)}")
    rows = split_rows(data_dir, "train")
    if rows == 0:
        raise ValueError(f"{data_dir}: the train split is empty")
    if reader == "auto":
        reader = "memory" if rows * parsed_row_bytes(spec) <= MEMORY_READER_LIMIT else "stream"
    return reader, max(1, rows // batch_size) if full_batches else -(-rows // batch_size)


def training_batches(data_dir: str, spec: FeatureSpec, batch_size: int, *, seed: int,
                     reader: str = "auto", start_step: int = 0,
                     full_batches: bool = False) -> tuple[tf.data.Dataset, int, str]:
    """Endless shuffled batches of the train split, the batches of one pass (an epoch) and the reader used.

    One dataset (and so one iterator) serves every epoch of a ``model.fit(..., steps_per_epoch=steps)``:
    each pass over the split is reshuffled and ends with its partial batch, so an epoch is exactly one
    pass. A fresh iterator per epoch (what Keras does with a finite dataset and no ``steps_per_epoch``)
    costs a multi-second pause on TensorFlow while the previous iterator's tf.data threads shut down.

    Args:
      data_dir: the Beam job's output directory.
      spec: the feature spec to parse with.
      batch_size: rows per batch.
      seed: the shuffle seed; the same seed gives the same batches in the same order on either reader's
        every run (a baseline and a C2AL run see the same data).
      reader: ``memory`` (parse once, then each pass a stateless permutation of every row:
        :func:`zoo.batches.memory_batches`), ``stream`` (:func:`read_split` every pass: shard order and a 100K-row
        buffer shuffled) or ``auto`` (``memory`` when :func:`parsed_row_bytes` x rows is at most
        :data:`MEMORY_READER_LIMIT`).
      start_step: start after that many batches of the endless sequence (a resumed run,
        :mod:`zoo.checkpoint`): the batches from there on are those of the uninterrupted sequence.
        ``memory`` starts at the right pass and offset without gathering the skipped rows;
        ``stream`` reads, parses and drops them (``Dataset.skip``: about the time of reading that
        part of the data, without training).
      full_batches: every batch has exactly ``batch_size`` rows (what a batch split over several
        devices needs, :mod:`zoo.distribution`): the passes run on as one stream (``rebatch``: a
        pass's last rows fill a batch with the next pass's first rows, each pass still one
        permutation of every row, no row dropped or repeated) and an epoch is ``max(1, rows //
        batch_size)`` batches, so epochs no longer start with a pass.

    Raises:
      ValueError: an unknown ``reader``; the errors of :func:`read_split` for bad shards.
    """
    reader, steps = reader_and_steps(data_dir, spec, batch_size, reader, full_batches)
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"start_step: must be an int >= 0, got {start_step!r}")
    skip_now = 0 if full_batches else start_step  # full batches: start_step counts them, skipped after the rebatch
    if reader == "memory":
        ds = memory_batches(split_arrays(data_dir, "train", spec), batch_size, seed=seed, start_step=skip_now)
    else:
        ds = read_split(data_dir, "train", batch_size, spec=spec, shuffle=True, seed=seed).repeat()
        if skip_now:
            ds = ds.skip(skip_now)
    if full_batches:
        ds = ds.rebatch(batch_size, drop_remainder=True)  # endless: drop_remainder never drops a row
        if start_step:
            ds = ds.skip(start_step)
    return ds.prefetch(tf.data.AUTOTUNE), steps, reader


def split_arrays(data_dir: str, split: str, spec: FeatureSpec | None = None,
                 batch_size: int = 65536) -> dict[str, np.ndarray]:
    """Every parsed column of a split as one NumPy array (the :func:`read_split` shapes), in file order.

    For splits that fit in memory: the validation split of the training protocol, the cached arrays of
    the benchmarks.
    """
    columns: dict[str, list] = {}
    for batch in read_split(data_dir, split, batch_size, spec=spec).as_numpy_iterator():
        for key, value in batch.items():
            columns.setdefault(key, []).append(value)
    if not columns:
        raise ValueError(f"{data_dir}: the {split} split is empty")
    return {key: np.concatenate(parts) for key, parts in columns.items()}


COHORT_KEYS = ("axis", "head", "tail")
QUANTILE_KEYS = ("feature", "head_min", "tail_max")


def quantile_pair(spec: FeatureSpec, c2al: Mapping[str, Any]) -> tuple[str, float, float]:
    """``(feature, head_min, tail_max)`` of a quantile-form ``c2al`` config, validated.

    Raises:
      ValueError: a key is missing, a threshold is not a finite number, ``head_min <= tail_max``, or
        the feature is a sequence. ``SpecError`` for an undeclared feature or axis.
    """
    missing = [k for k in QUANTILE_KEYS if k not in c2al]
    if missing:
        raise ValueError(f"c2al: quantile form needs key '{missing[0]}' (keys {list(QUANTILE_KEYS)}); "
                         f"got {sorted(c2al)}")
    feature = spec.feature(c2al["feature"])  # SpecError naming an undeclared feature
    if c2al.get("axis") is not None:
        spec.axis(c2al["axis"])
    if feature.kind == "sequence":
        raise ValueError(f"c2al: feature '{feature.name}' is a sequence; quantile cohorts need a scalar feature")
    bounds = {}
    for key in ("head_min", "tail_max"):
        value = c2al[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"c2al: '{key}' must be a finite number, got {value!r}")
        bounds[key] = float(value)
    if not bounds["head_min"] > bounds["tail_max"]:
        raise ValueError(f"c2al: 'head_min' ({bounds['head_min']}) must exceed 'tail_max' "
                         f"({bounds['tail_max']}) so the head and tail cohorts are disjoint")
    return feature.name, bounds["head_min"], bounds["tail_max"]


def c2al_masks(spec: FeatureSpec, batch: Mapping[str, tf.Tensor], c2al: Mapping[str, Any]):
    """Float (B, 1) membership masks ``(1[x in C_head], 1[x in C_tail])`` of a ``c2al`` config.

    Two forms (both written by :meth:`zoo.cohorts.DiscoveryResult.c2al_config`):

    * cohort form ``{"axis", "head", "tail"}``: membership by the stored cohort ids
      ``cohort/<axis>`` (``head`` and ``tail`` are cohort names of the axis);
    * quantile form ``{"feature", "head_min", "tail_max"}`` (``axis`` optional, informational):
      membership by the raw feature column ``batch[feature]`` (shape ``(B, 1)``, compared in float32):
      head = ``feature >= head_min``, tail = ``feature <= tail_max``; needs ``head_min > tail_max``
      so the cohorts are disjoint. When any quantile key is present the quantile form is used.

    Raises:
      ValueError: the config is in neither form (the message names the missing key), a threshold is
        not a finite number or ``head_min <= tail_max``, or the feature is a sequence or not in the
        batch. ``SpecError`` (a ``ValueError``) for an unknown axis, cohort or feature.
    """
    if any(k in c2al for k in QUANTILE_KEYS):
        name, head_min, tail_max = quantile_pair(spec, c2al)
        if name not in batch:
            raise ValueError(f"c2al: feature '{name}' is not in the batch (keys: {sorted(batch)})")
        values = tf.cast(batch[name], tf.float32)
        head = tf.cast(values >= tf.constant(head_min, tf.float32), tf.float32)
        tail = tf.cast(values <= tf.constant(tail_max, tf.float32), tf.float32)
        return head, tail
    for key in COHORT_KEYS:
        if key not in c2al:
            raise ValueError(f"c2al: missing key '{key}'; give {{axis, head, tail}} (cohort form) or "
                             f"{{feature, head_min, tail_max}} (quantile form), got {sorted(c2al)}")
    axis = spec.axis(c2al["axis"])
    ids = batch[COHORT_KEY_PREFIX + axis.name]
    head = tf.cast(tf.equal(ids, axis.index(c2al["head"])), tf.float32)
    tail = tf.cast(tf.equal(ids, axis.index(c2al["tail"])), tf.float32)
    return head, tail


def model_batches(spec: FeatureSpec, ds: tf.data.Dataset, c2al: Mapping[str, Any] | None = None,
                  labels: str = "y_times_membership", aux: Sequence[str] = ("aux_head", "aux_tail"),
                  cohort_weights: Mapping[str, float] | None = None) -> tf.data.Dataset:
    """Maps parsed batches to Keras ``(x, y)`` or ``(x, y, sample_weight)``.

    ``x`` holds the model inputs only. ``y`` is ``{"primary": y}`` (the primary label), plus one
    ``"task_<label>"`` target per further label of a multi-task spec (``labels: [..]``; the output names
    of :func:`zoo.model.task_output`), plus, when ``c2al`` gives a
    (head, tail) pair (:func:`c2al_masks`, cohort or quantile form), ``aux_head = y * 1[head]`` and
    ``aux_tail = y * 1[tail]`` (those named in ``aux``).

    Args:
      spec: the feature spec.
      ds: batches from :func:`read_split`.
      c2al: the (head, tail) pair, or None for the baseline.
      labels: ``"y_times_membership"`` (C2AL) or ``"membership"`` (the 1[x in C] ablation).
      aux: the auxiliary targets to emit: both (C2AL), one (single-head ablations) or none.
      cohort_weights: ``{"head": a_head, "tail": a_tail}`` (needs ``c2al``): also yield the sample
        weights ``{"primary": 1 + a_head * 1[head] + a_tail * 1[tail]}`` of the primary loss, float32
        ``(B, 1)`` (the ``reweight`` ablation, :func:`zoo.c2al.reweight_coefficients`).
    """
    names = [f.name for f in spec.inputs]
    if labels not in ("y_times_membership", "membership"):
        raise ValueError(f"labels '{labels}': must be 'y_times_membership' or 'membership'")
    aux = tuple(aux)
    if len(set(aux)) != len(aux) or not set(aux) <= {"aux_head", "aux_tail"}:
        raise ValueError(f"aux: must be a subset of ('aux_head', 'aux_tail'), got {aux}")
    if cohort_weights is not None:
        if c2al is None:
            raise ValueError("cohort_weights: needs a c2al (head, tail) pair")
        unknown = sorted(set(cohort_weights) - {"head", "tail"})
        if unknown:
            raise ValueError(f"cohort_weights: unknown key '{unknown[0]}'; keys are ['head', 'tail']")
        coefficients = {role: float(cohort_weights.get(role, 0.0)) for role in ("head", "tail")}

    def to_xy(batch):
        x = {n: batch[n] for n in names}
        y = batch[spec.label]
        targets = {"primary": y}
        for label in spec.labels[1:]:
            targets[TASK_PREFIX + label] = batch[label]
        if c2al is None:
            return x, targets
        head, tail = c2al_masks(spec, batch, c2al)
        if labels == "y_times_membership":
            aux_targets = {"aux_head": y * head, "aux_tail": y * tail}
        else:
            aux_targets = {"aux_head": head, "aux_tail": tail}
        targets.update({name: aux_targets[name] for name in aux})
        if cohort_weights is None:
            return x, targets
        weight = 1.0 + coefficients["head"] * head + coefficients["tail"] * tail
        return x, targets, {"primary": weight}

    return ds.map(to_xy, num_parallel_calls=tf.data.AUTOTUNE)
