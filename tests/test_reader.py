"""Writer -> reader round trip: the Beam job's shards read back by zoo.data give the hand-written values
of the tiny fixture (tests/conftest.py ``tiny_case``), and model_batches builds C2AL labels from them."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs import build_tfrecords
from beam_jobs.manifest import IntegrityError
from zoo import data
from zoo.spec import SPLITS, load_spec

pytestmark = pytest.mark.tf_only


@pytest.fixture(scope="module")
def tiny_data(tiny_case, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny_data"))
    build_tfrecords.run(["--spec", _spec_file(tiny_case, tmp_path_factory), "--input", tiny_case.input_pattern,
                         "--output", out, "--num_shards", "2", "--direct_running_mode=in_memory"])
    return out


def _spec_file(tiny_case, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny_spec") / "tiny.yaml"
    path.write_text(tiny_case.spec.to_json())  # JSON is YAML
    return str(path)


def _rows(batch: dict) -> list[tuple]:
    """Unbatches parsed tensors into hashable rows ((key, kind, values), ...) sorted by key."""
    n = int(tf.shape(batch[next(iter(batch))])[0])
    rows = []
    for i in range(n):
        row = []
        for key, tensor in batch.items():
            kind = "float_list" if tensor.dtype == tf.float32 else "int64_list"
            row.append((key, kind, tuple(tensor[i].numpy().tolist())))
        rows.append(tuple(sorted(row)))
    return rows


def _expected(rows: list[dict]) -> list[tuple]:
    kind = lambda v: "float_list" if isinstance(v[0], float) else "int64_list"  # noqa: E731
    return [tuple(sorted((k, kind(v), tuple(v)) for k, v in r.items())) for r in rows]


def test_read_split_returns_what_was_written(tiny_case, tiny_data):
    spec = tiny_case.spec
    assert load_spec(tiny_data).to_dict() == spec.to_dict()
    assert data.load_stats(tiny_data) == tiny_case.expected_stats
    for split in SPLITS:
        got = []
        for batch in data.read_split(tiny_data, split, batch_size=2):  # spec from spec.json
            assert set(batch) == set(spec.parse_spec("all"))
            assert batch["hist"].shape[1:] == (3,) and batch["y"].shape[1:] == (1,)
            got.extend(_rows(batch))
        # Shard order is not fixed: compare as multisets of rows.
        assert collections.Counter(got) == collections.Counter(_expected(tiny_case.expected[split])), split


def test_model_batches_c2al_labels(tiny_case, tiny_data):
    spec = tiny_case.spec
    c2al = spec.c2al  # value_band: head = high (cohort id 2), tail = low (cohort id 0)
    totals = collections.Counter()
    for split in SPLITS:
        parsed = data.read_split(tiny_data, split, batch_size=2)
        both = tf.data.Dataset.zip((parsed,
                                    data.model_batches(spec, parsed, c2al),
                                    data.model_batches(spec, parsed, c2al, labels="membership"),
                                    data.model_batches(spec, parsed)))
        for batch, (x, y), (_, member), (x_base, y_base) in both:
            assert set(x) == {f.name for f in spec.inputs} == set(x_base)
            assert "value" not in x  # input: false
            assert set(y_base) == {"primary"}
            primary = y["primary"].numpy()
            np.testing.assert_array_equal(primary, batch["y"].numpy())
            band = batch["cohort/value_band"].numpy()
            head, tail = (band == 2).astype(np.float32), (band == 0).astype(np.float32)
            for name, mask in (("aux_head", head), ("aux_tail", tail)):
                aux = y[name].numpy()
                assert aux.shape == primary.shape
                assert np.all(aux <= primary)
                assert np.all(aux[mask == 0] == 0)
                np.testing.assert_array_equal(aux, primary * mask)
                np.testing.assert_array_equal(member[name].numpy(), mask)
                totals[name] += aux.sum()
                totals[name + "_members"] += member[name].numpy().sum()
    # By hand: high holds 4 rows (3 clicks), low holds 4 rows (1 click).
    assert totals == {"aux_head": 3, "aux_head_members": 4, "aux_tail": 1, "aux_tail_members": 4}


def test_read_split_length_is_known_from_stats_and_checked(tiny_case, tiny_data, tmp_path):
    import json
    import shutil

    rows = tiny_case.expected_stats["splits"]["train"]["rows"]  # 6
    assert int(data.read_split(tiny_data, "train", batch_size=4).cardinality()) == 2
    assert int(data.read_split(tiny_data, "train", batch_size=4, drop_remainder=True).cardinality()) == rows // 4
    assert int(data.read_split(tiny_data, "train", batch_size=4, repeat=True).cardinality()) == -1  # infinite
    # Shards that disagree with stats.json fail instead of silently training on part of the data:
    # before reading, against manifest.json's record count, and without a manifest (older jobs) when
    # the dataset turns out shorter than its known length.
    broken = str(tmp_path / "broken")
    shutil.copytree(tiny_data, broken)
    stats = json.load(open(f"{broken}/stats.json"))
    stats["splits"]["train"]["rows"] = rows + 4
    json.dump(stats, open(f"{broken}/stats.json", "w"))
    with pytest.raises(IntegrityError, match=f"stats.json: split 'train' has {rows + 4} rows but manifest.json "
                                             f"lists {rows} records"):
        data.read_split(broken, "train", batch_size=4)
    os.remove(f"{broken}/manifest.json")
    with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain 3 elements but contained only 2"):
        list(data.read_split(broken, "train", batch_size=4))


def test_memory_batches_each_pass_is_a_seeded_permutation_of_every_row():
    from zoo.batches import memory_batches

    x = np.arange(10)
    columns = ({"x": x}, x * 10)  # a nest: rows stay aligned across its arrays

    def passes(seed, count=3, shuffle=True):
        batches = list(memory_batches(columns, 4, seed=seed, shuffle=shuffle).take(3 * count).as_numpy_iterator())
        for feats, y in batches:
            np.testing.assert_array_equal(y, feats["x"] * 10)
        assert [len(y) for _, y in batches] == [4, 4, 2] * count  # each pass ends with its partial batch
        return [np.concatenate([feats["x"] for feats, _ in batches[3 * p:3 * p + 3]]) for p in range(count)]

    first = passes(seed=7)
    for order in first:
        assert sorted(order.tolist()) == list(range(10))  # every row once per pass
    assert not np.array_equal(first[0], first[1])  # reshuffled every pass
    assert all(np.array_equal(a, b) for a, b in zip(first, passes(seed=7)))  # the same seed, the same batches
    assert not np.array_equal(first[0], passes(seed=8)[0])
    assert all(order.tolist() == list(range(10)) for order in passes(seed=7, shuffle=False))
    with pytest.raises(ValueError, match=r"columns: must be arrays of one length, got lengths \[3, 4\]"):
        memory_batches({"a": np.arange(3), "b": np.arange(4)}, 2)
    with pytest.raises(ValueError, match="columns: no rows"):
        memory_batches({"a": np.arange(0)}, 2)


@pytest.mark.parametrize("reader", ["memory", "stream"])
def test_training_batches_serve_every_train_row_once_per_epoch(tiny_case, tiny_data, reader):
    rows = tiny_case.expected_stats["splits"]["train"]["rows"]  # 6
    ds, steps, used = data.training_batches(tiny_data, load_spec(tiny_data), 4, seed=3, reader=reader)
    assert (steps, used) == (2, reader)
    batches = list(ds.take(3 * steps))
    assert [int(tf.shape(b["y"])[0]) for b in batches] == [4, 2] * 3  # an epoch is exactly one pass
    written = sorted(_rows(next(iter(data.read_split(tiny_data, "train", batch_size=rows)))))
    epochs = [sorted(_rows(batches[2 * e]) + _rows(batches[2 * e + 1])) for e in range(3)]
    assert all(epoch == written for epoch in epochs)
    again, _, _ = data.training_batches(tiny_data, load_spec(tiny_data), 4, seed=3, reader=reader)
    assert [_rows(b) for b in again.take(3 * steps)] == [_rows(b) for b in batches]  # seeded: the same order


def test_training_batches_auto_holds_what_fits_and_counts_rows_without_a_manifest(tiny_data, tmp_path, monkeypatch):
    import shutil

    spec = load_spec(tiny_data)
    assert data.parsed_row_bytes(spec) == sum(
        int(np.prod(f.shape)) * f.dtype.size for f in spec.parse_spec("all").values())
    assert data.training_batches(tiny_data, spec, 4, seed=0)[2] == "memory"
    monkeypatch.setattr(data, "MEMORY_READER_LIMIT", 6 * data.parsed_row_bytes(spec) - 1)  # one byte short
    assert data.training_batches(tiny_data, spec, 4, seed=0)[2] == "stream"
    with pytest.raises(ValueError, match=r"reader 'disk': must be one of \['auto', 'memory', 'stream'\]"):
        data.training_batches(tiny_data, spec, 4, seed=0, reader="disk")
    bare = str(tmp_path / "bare")  # no manifest.json, no stats.json: the rows are counted from the shards
    shutil.copytree(tiny_data, bare)
    os.remove(f"{bare}/manifest.json")
    os.remove(f"{bare}/stats.json")
    assert data.split_rows(bare, "train") == 6
    assert data.training_batches(bare, spec, 4, seed=0)[1] == 2
