"""tf.data reader over the Beam job's TFRecord shards.

Layout written by :mod:`beam_jobs.build_tfrecords` under one data directory::

    spec.json                       the resolved feature spec
    stats.json                      rows, positives, per-split and per-cohort counts, OOV counts
    {train,valid,test}/part-*.tfrecord.gz
    dead_letter/*.jsonl

Batches are parsed with the spec's ``tf.io.parse_example`` features (after batching, one vectorized
parse per batch). :func:`model_batches` turns parsed batches into Keras ``(x, y)`` pairs, attaching
C2AL auxiliary labels from the stored cohort ids, so labels never come from a model input.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import tensorflow as tf

from zoo.spec import COHORT_KEY_PREFIX, FeatureSpec, SPLITS

SHARD_SUFFIX = ".tfrecord.gz"


def load_data_spec(data_dir: str) -> FeatureSpec:
    """The resolved spec the shards were written with."""
    with tf.io.gfile.GFile(os.path.join(data_dir, "spec.json")) as fh:
        return FeatureSpec.from_dict(json.load(fh))


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
    """Parsed batches of one split: dict of label, every feature and ``cohort/<axis>`` ids.

    Shapes: label and scalar features ``(B, 1)``, sequences ``(B, max_length)``.

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
    """
    spec = spec or load_data_spec(data_dir)
    files = tf.io.gfile.glob(shard_pattern(data_dir, split))
    if not files:
        raise FileNotFoundError(f"no shards match {shard_pattern(data_dir, split)}")
    files = sorted(files)
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
    rows = _split_rows(data_dir, split)
    if rows is not None and not repeat:
        # Known length: Keras shows full progress bars from the first epoch, and a shard set that
        # disagrees with stats.json fails loudly instead of training on partial data.
        batches = rows // batch_size if drop_remainder else -(-rows // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    ds = ds.map(lambda s: tf.io.parse_example(s, features), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _split_rows(data_dir: str, split: str) -> int | None:
    """Rows of a split according to ``stats.json``; None when the directory has no stats."""
    if not tf.io.gfile.exists(os.path.join(data_dir, "stats.json")):
        return None
    return int(load_stats(data_dir)["splits"][split]["rows"])


def c2al_masks(spec: FeatureSpec, batch: Mapping[str, tf.Tensor], c2al: Mapping[str, Any]):
    """Float (B, 1) membership masks of the configured head and tail cohorts."""
    axis = spec.axis(c2al["axis"])
    ids = batch[COHORT_KEY_PREFIX + axis.name]
    head = tf.cast(tf.equal(ids, axis.index(c2al["head"])), tf.float32)
    tail = tf.cast(tf.equal(ids, axis.index(c2al["tail"])), tf.float32)
    return head, tail


def model_batches(spec: FeatureSpec, ds: tf.data.Dataset, c2al: Mapping[str, Any] | None = None,
                  labels: str = "y_times_membership") -> tf.data.Dataset:
    """Maps parsed batches to Keras ``(x, y)``.

    ``x`` holds the model inputs only. ``y`` is ``{"primary": y}``, plus, when ``c2al`` names an
    axis and a (head, tail) pair, ``aux_head = y * 1[head]`` and ``aux_tail = y * 1[tail]``.

    Args:
      spec: the feature spec.
      ds: batches from :func:`read_split`.
      c2al: ``{"axis", "head", "tail"}`` or None for the baseline.
      labels: ``"y_times_membership"`` (C2AL) or ``"membership"`` (the 1[x in C] ablation).
    """
    names = [f.name for f in spec.inputs]
    if labels not in ("y_times_membership", "membership"):
        raise ValueError(f"labels '{labels}': must be 'y_times_membership' or 'membership'")

    def to_xy(batch):
        x = {n: batch[n] for n in names}
        y = batch[spec.label]
        targets = {"primary": y}
        if c2al is not None:
            head, tail = c2al_masks(spec, batch, c2al)
            if labels == "y_times_membership":
                head, tail = y * head, y * tail
            targets["aux_head"], targets["aux_tail"] = head, tail
        return x, targets

    return ds.map(to_xy, num_parallel_calls=tf.data.AUTOTUNE)
