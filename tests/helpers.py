"""Test fixtures: small TFRecord data directories written straight from the spec (no Beam)."""

from __future__ import annotations

import os

import tensorflow as tf

from zoo.datasets.synthetic import generate
from zoo.spec import SPLITS, FeatureSpec


def synthetic_rows(rows: int, seed: int = 0, contrast: bool = True) -> list[dict]:
    """Parsed rows of the synthetic generator, as ``FeatureSpec.parse_raw_row`` would return them."""
    table = generate(rows=rows, seed=seed, contrast=contrast)
    return [{k: (v[i] if k == "recent_categories" else v[i].item()) for k, v in table.items()}
            for i in range(rows)]


def write_data_dir(spec: FeatureSpec, rows: list[dict], data_dir: str) -> dict[str, int]:
    """Writes rows as the Beam job lays them out (spec.json + one GZIP shard per split)."""
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "spec.json"), "w") as fh:
        fh.write(spec.to_json())
    counts = {}
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for split in SPLITS:
        os.makedirs(os.path.join(data_dir, split), exist_ok=True)
        path = os.path.join(data_dir, split, "part-00000-of-00001.tfrecord.gz")
        selected = [r for r in rows if spec.split_of(r) == split]
        with tf.io.TFRecordWriter(path, options) as writer:
            for r in selected:
                writer.write(spec.encode_example(r))
        counts[split] = len(selected)
    return counts
