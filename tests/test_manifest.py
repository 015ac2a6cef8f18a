"""Shard integrity: the manifest build_tfrecords writes (beam_jobs.manifest), the readers' cheap check,
``python -m beam_jobs.verify``, small inputs dealt over every shard, and the one-line errors of
``zoo.train`` on a broken data directory. One 200-row synthetic job with 4 shards per split, copied and
broken per test."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from beam_jobs import build_tfrecords, manifest, verify
from beam_jobs.tfrecord import frame
from zoo import cli, data, train
from zoo.datasets.synthetic import write_raw
from zoo.spec import SPLITS, load_spec

pytestmark = pytest.mark.tf_only

ROWS, SHARDS = 200, 4
SHARD = "train/part-00002-of-00004.tfrecord.gz"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw200")
    write_raw(load_spec("configs/datasets/synthetic.yaml"), None, str(raw), rows=ROWS, malformed_rows=0)
    out = str(tmp_path_factory.mktemp("data200") / "data")
    build_tfrecords.run(["--spec", "configs/datasets/synthetic.yaml", "--input", str(raw / "*.csv"), "--output", out,
                         "--num_shards", str(SHARDS), "--direct_running_mode=in_memory"])
    return out


def _copy(data_dir: str, tmp_path) -> str:
    broken = str(tmp_path / "broken")
    shutil.copytree(data_dir, broken)
    return broken


def _records(path: str) -> int:
    return sum(1 for _ in tf.data.TFRecordDataset(path, compression_type="GZIP"))


def _verify(path: str, capsys) -> tuple[int, list[str]]:
    code = verify.main([path])
    return code, capsys.readouterr().out.splitlines()


def test_manifest_describes_every_shard_as_written(data_dir):
    with open(os.path.join(data_dir, "manifest.json")) as fh:
        written = json.load(fh)
    with open(os.path.join(data_dir, "stats.json")) as fh:
        stats = json.load(fh)
    expected = {"version": 1, "checksum": "sha256", "splits": {}}
    for split in SPLITS:
        shards = {}
        for path in sorted(glob.glob(os.path.join(data_dir, split, "part-*.tfrecord.gz"))):
            with open(path, "rb") as fh:
                raw = fh.read()
            shards[os.path.basename(path)] = {"records": _records(path), "bytes": len(raw),
                                              "sha256": hashlib.sha256(raw).hexdigest()}
        assert sorted(shards) == [f"part-{i:05d}-of-{SHARDS:05d}.tfrecord.gz" for i in range(SHARDS)]
        expected["splits"][split] = {"records": sum(s["records"] for s in shards.values()),
                                     "bytes": sum(s["bytes"] for s in shards.values()), "shards": shards}
        assert expected["splits"][split]["records"] == stats["splits"][split]["rows"]
    assert written == expected
    assert sum(written["splits"][s]["records"] for s in SPLITS) == ROWS
    # The cheap check passes and gives the reader the manifest's shards and counts.
    checked = manifest.check_shards(data_dir)
    for split in SPLITS:
        assert checked[split].records == stats["splits"][split]["rows"]
        assert checked[split].files == sorted(glob.glob(os.path.join(data_dir, split, "part-*.tfrecord.gz")))


def test_small_input_is_dealt_over_every_shard(data_dir):
    """200 rows in one chunk, 4 shards: every shard gets k // 4 or k // 4 + 1 of a split's k rows."""
    with open(os.path.join(data_dir, "manifest.json")) as fh:
        splits = json.load(fh)["splits"]
    for split in SPLITS:
        counts = [e["records"] for e in splits[split]["shards"].values()]
        k = splits[split]["records"]
        assert k >= SHARDS and len(counts) == SHARDS
        assert sorted(counts) == sorted([k // SHARDS + (i < k % SHARDS) for i in range(SHARDS)]), (split, counts)
    # Whether an input is dealt: fewer than 8 chunks per shard (any files serve as the input here).
    files = os.path.join(data_dir, "*", "*.gz")
    size = sum(os.path.getsize(p) for p in glob.glob(files))
    assert build_tfrecords.spreads_records(files, SHARDS, 1 << 20)  # 1 chunk
    assert build_tfrecords.spreads_records(files, 1, -(-size // 7))  # 7 chunks, 1 shard
    assert not build_tfrecords.spreads_records(files, 1, size // 8)  # 8 chunks or more: the fast path


def test_several_small_chunks_are_dealt_over_every_shard(tmp_path):
    """The same 200 rows in chunks of 4 KiB (4 chunks): still no empty shard, and balanced (one encoder
    instance here: within one row per split)."""
    raw = tmp_path / "raw"
    write_raw(load_spec("configs/datasets/synthetic.yaml"), None, str(raw), rows=ROWS, malformed_rows=0)
    out = str(tmp_path / "data")
    build_tfrecords.run(["--spec", "configs/datasets/synthetic.yaml", "--input", str(raw / "*.csv"), "--output", out,
                         "--num_shards", str(SHARDS), "--chunk_bytes", "4096", "--direct_running_mode=in_memory"])
    splits = json.load(open(os.path.join(out, "manifest.json")))["splits"]
    assert sum(splits[s]["records"] for s in SPLITS) == ROWS
    for split in SPLITS:
        counts = [e["records"] for e in splits[split]["shards"].values()]
        assert len(counts) == SHARDS and min(counts) >= 1 and max(counts) - min(counts) <= 1, (split, counts)


def test_deal_rotates_the_extra_records_and_keeps_the_bytes():
    """Known answer of EncodeChunk._deal: 10 records over 4 shards twice, then 3, from shard 0."""
    spec = load_spec("configs/datasets/synthetic.yaml")
    records = [bytes([i]) * (i + 1) for i in range(10)]
    framed = frame(records)
    lengths = np.array([len(r) for r in records])
    fast = build_tfrecords.EncodeChunk(spec, 4)
    fast._next = [1, 0, 0]
    assert [(s, k, bytes(b)) for s, k, b in fast._deal(0, framed, lengths)] == [(1, 10, framed)]
    assert fast._next[0] == 2
    enc = build_tfrecords.EncodeChunk(spec, 4, spread=True)
    enc._next = [0, 0, 0]
    got = list(enc._deal(0, framed, lengths))
    assert [(s, k) for s, k, _ in got] == [(0, 3), (1, 3), (2, 2), (3, 2)]
    assert b"".join(bytes(b) for _, _, b in got) == framed
    assert bytes(got[1][2]) == frame(records[3:6])
    assert [(s, k) for s, k, _ in enc._deal(0, framed, lengths)] == [(2, 3), (3, 3), (0, 2), (1, 2)]
    assert [(s, k) for s, k, _ in enc._deal(0, frame(records[:3]), lengths[:3])] == [(0, 1), (1, 1), (2, 1)]
    assert enc._next[0] == 3


def test_truncated_shard_is_an_error_naming_it(data_dir, tmp_path, capsys):
    broken = _copy(data_dir, tmp_path)
    path = os.path.join(broken, SHARD)
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size - 10)
    message = (f"{path}: expected {size} bytes (manifest.json), found {size - 10}: the shard is truncated; "
               f"re-copy the directory or re-run the Beam job that wrote {broken}, and check it with "
               f"`python -m beam_jobs.verify {broken}`")
    with pytest.raises(manifest.IntegrityError) as raised:
        data.read_split(broken, "train", 32)
    assert str(raised.value) == message
    with pytest.raises(manifest.IntegrityError, match="the shard is truncated"):
        manifest.open_data_dir(broken)  # the Beam jobs reading a data directory
    data.read_split(broken, "valid", 32)  # the other splits are fine
    code, lines = _verify(broken, capsys)
    assert code == 1
    bad = [ln for ln in lines if ln.startswith("BAD")]
    assert len(bad) == 1 and bad[0].startswith(f"BAD  {path}: truncated gzip stream")
    assert f"expected {size} bytes, found {size - 10}" in bad[0] and "sha256 mismatch" in bad[0]
    # zoo.train stops before training, with the same one line on stderr.
    assert train.main(["--data", broken, "--model", "configs/models/dcnv2_test.yaml",
                       "--output", str(tmp_path / "run"), "--variants", "baseline"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"python -m zoo.train: error: {message} (--debug for the traceback)"


def test_missing_and_stray_shards_are_errors_naming_them(data_dir, tmp_path):
    broken = _copy(data_dir, tmp_path)
    path = os.path.join(broken, SHARD)
    entry = json.load(open(os.path.join(broken, "manifest.json")))["splits"]["train"]["shards"][os.path.basename(SHARD)]
    os.remove(path)
    with pytest.raises(manifest.IntegrityError) as raised:
        data.read_split(broken, "train", 32)
    assert str(raised.value).startswith(f"{path}: shard missing (manifest.json lists it with {entry['records']} "
                                        f"records, {entry['bytes']} bytes); re-copy the directory or re-run")
    stray = os.path.join(broken, "train", "part-00009-of-00010.tfrecord.gz")
    shutil.copy(os.path.join(data_dir, SHARD), stray)
    with pytest.raises(manifest.IntegrityError) as raised:
        manifest.check_shards(broken)
    assert str(raised.value).startswith(f"{path}: shard missing")
    assert "(and 1 more problem(s))" in str(raised.value)
    shutil.copy(os.path.join(data_dir, SHARD), path)
    with pytest.raises(manifest.IntegrityError, match=f"^{stray}: not in manifest.json"):
        data.read_split(broken, "train", 32)


def test_flipped_byte_is_reported_by_verify_and_good_data_passes(data_dir, tmp_path, capsys):
    code, lines = _verify(data_dir, capsys)
    assert code == 0
    assert len([ln for ln in lines if ln.startswith("ok   ")]) == 3 * SHARDS
    assert lines[-1] == f"verify: {data_dir}: ok: 12/12 shards good, {ROWS} records read, " \
        f"{sum(os.path.getsize(p) for p in glob.glob(os.path.join(data_dir, '*', '*.tfrecord.gz')))} bytes"
    broken = _copy(data_dir, tmp_path)
    path = os.path.join(broken, SHARD)
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 0x40
    open(path, "wb").write(bytes(raw))
    manifest.check_shards(broken)  # the size is right: only reading finds it
    code, lines = _verify(broken, capsys)
    assert code == 1
    bad = [ln for ln in lines if ln.startswith("BAD")]
    assert len(bad) == 1 and bad[0].startswith(f"BAD  {path}: ") and "sha256 mismatch" in bad[0], bad
    assert lines[-1].startswith(f"verify: {broken}: BAD (1 bad shard(s), 0 other problem(s)): 11/12 shards good")
    # tf.data fails mid-read; zoo.train turns that into one line naming the directory and verify.
    with pytest.raises(tf.errors.DataLossError) as raised:
        for _ in data.read_split(broken, "train", 32):
            pass
    line = cli.data_loss_hint(broken)(raised.value)
    assert "\n" not in line and "function_node" not in line and "[Op:" not in line
    assert line.startswith(f"{broken}: a shard could not be read (DataLossError: ")
    assert line.endswith(f"run `python -m beam_jobs.verify {broken}` to find it, then re-copy it or re-run the Beam job")


def test_a_record_count_that_disagrees_is_reported(data_dir, tmp_path, capsys):
    broken = _copy(data_dir, tmp_path)
    path = os.path.join(broken, "manifest.json")
    written = json.load(open(path))
    name = os.path.basename(SHARD)
    written["splits"]["train"]["shards"][name]["records"] += 1
    written["splits"]["train"]["records"] += 1
    json.dump(written, open(path, "w"))
    stats_path = os.path.join(broken, "stats.json")
    rows = json.load(open(stats_path))["splits"]["train"]["rows"]
    with pytest.raises(manifest.IntegrityError, match=f"^{stats_path}: split 'train' has {rows} rows but "
                                                      f"manifest.json lists {rows + 1} records"):
        data.read_split(broken, "train", 32)
    code, lines = _verify(broken, capsys)
    assert code == 1 and any(ln.startswith(f"BAD  {os.path.join(broken, SHARD)}: expected "
                                           f"{written['splits']['train']['shards'][name]['records']} records, found")
                             for ln in lines), lines


def test_a_directory_without_manifest_is_read_as_before(data_dir, tmp_path, capsys):
    legacy = _copy(data_dir, tmp_path)
    os.remove(os.path.join(legacy, "manifest.json"))
    assert manifest.check_shards(legacy)["train"].records is None
    rows = json.load(open(os.path.join(legacy, "stats.json")))["splits"]["valid"]["rows"]
    assert sum(int(b["click"].shape[0]) for b in data.read_split(legacy, "valid", 8)) == rows
    code, lines = _verify(legacy, capsys)
    assert code == 0 and lines[-1].endswith("no manifest.json (written before the jobs wrote one): sizes and "
                                            "checksums not checked, re-run the Beam job to get one")


def test_train_without_spec_json_is_one_line(tmp_path, capsys):
    empty = str(tmp_path / "nospec")
    os.makedirs(os.path.join(empty, "train"))
    argv = ["--data", empty, "--output", str(tmp_path / "run"), "--variants", "baseline"]
    assert train.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err == (f"python -m zoo.train: error: {empty}: data directory has no spec.json (write one with "
                            "beam_jobs.build_tfrecords) (--debug for the traceback)\n")
    with pytest.raises(FileNotFoundError, match="no spec.json"):
        train.main(argv + ["--debug"])
