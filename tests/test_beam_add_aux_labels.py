"""beam_jobs.add_aux_labels on the tiny fixture (tests/conftest.py ``tiny_case``): every record comes back
with aux/head = y * 1[value_band == high] and aux/tail = y * 1[value_band == low], shard for shard,
and zoo.data reads them through the recorded spec."""

from __future__ import annotations

import collections
import glob
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import add_aux_labels, build_tfrecords, fileio
from zoo.spec import SPLITS, example_class, load_spec

pytestmark = pytest.mark.tf_only


@pytest.fixture(scope="module")
def tiny_data(tiny_case, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("aux_data") / "data")
    spec_file = tmp_path_factory.mktemp("aux_spec") / "tiny.yaml"
    spec_file.write_text(tiny_case.spec.to_json())
    build_tfrecords.run(["--spec", str(spec_file), "--input", tiny_case.input_pattern, "--output", out,
                         "--num_shards", "2", "--direct_running_mode=in_memory"])
    return out


def _canonical(row: dict) -> tuple:
    kind = lambda v: "float_list" if isinstance(v[0], float) else "int64_list"  # noqa: E731
    return tuple(sorted((k, kind(v), tuple(v)) for k, v in row.items()))


def _expected(case, split: str, dtype=float) -> list[tuple]:
    out = []
    for r in case.expected[split]:
        y, band = r["y"][0], r["cohort/value_band"][0]
        out.append(_canonical({**r, "aux/head": (dtype(y * (band == 2)),), "aux/tail": (dtype(y * (band == 0)),)}))
    return out


def _decode(record: bytes) -> tuple:
    ex = example_class().FromString(record)
    return tuple(sorted((k, f.WhichOneof("kind"), tuple(getattr(f, f.WhichOneof("kind")).value))
                        for k, f in ex.features.feature.items()))


def test_add_aux_labels_exact(tiny_case, tiny_data, tmp_path):
    spec = add_aux_labels.aux_spec(tiny_case.spec, "value_band", "high", "low")
    shards = sorted(glob.glob(os.path.join(tiny_data, "*", "part-*.tfrecord.gz")))
    out = str(tmp_path / "out")
    with BeamTestPipeline() as p:
        pcolls = add_aux_labels.build_pipeline(p, spec, tiny_data, out, shards)
        records = pcolls["shards"] | beam.FlatMap(
            lambda kv: [(kv[0].split("/")[0], _decode(r)) for r in build_tfrecords._gunzip_records(kv[1][1])])
        for split in SPLITS:
            assert_that(records | f"Only_{split}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
                        | f"Rows_{split}" >> beam.Map(lambda kv: kv[1]),
                        equal_to(_expected(tiny_case, split)), label=f"records_{split}")
        # By hand: train has high rows y=1,1 and low rows y=1,0; valid high y=0, low y=0; test high y=1, low y=0.
        assert_that(pcolls["aux_stats"], equal_to([{
            "axis": "value_band", "head": "high", "tail": "low", "dtype": "float32", "splits": {
                "train": {"rows": 6, "head": {"rows": 2, "positives": 2}, "tail": {"rows": 2, "positives": 1}},
                "valid": {"rows": 3, "head": {"rows": 1, "positives": 0}, "tail": {"rows": 1, "positives": 0}},
                "test": {"rows": 3, "head": {"rows": 1, "positives": 1}, "tail": {"rows": 1, "positives": 0}}}}]),
            label="aux_stats")
    # Shard for shard: the same file names, each holding its input shard's records.
    assert sorted(os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "*", "*.gz"))) == \
        sorted(os.path.relpath(p, tiny_data) for p in shards)


def test_add_aux_labels_cli_and_reader(tiny_case, tiny_data, tmp_path):
    from zoo import data

    out = str(tmp_path / "aux")
    info = add_aux_labels.run(["--data", tiny_data, "--output", out, "--dtype", "int64",
                               "--direct_running_mode=in_memory"])  # axis/head/tail from the spec's c2al
    assert fileio.is_complete(out)
    spec = load_spec(out)
    assert spec.aux_labels == {"axis": "value_band", "head": "high", "tail": "low", "dtype": "int64"}
    assert "aux/head" in spec.parse_spec("all") and "aux/head" not in spec.parse_spec("inputs")
    assert info["stats"]["rows"] == 12 and info["stats"]["aux_labels"]["splits"]["train"]["head"]["positives"] == 2
    for split in SPLITS:
        got = collections.Counter()
        for batch in data.read_split(out, split, batch_size=4):
            n = batch["y"].shape[0]
            for i in range(n):
                got[tuple(sorted((k, "float_list" if v.dtype.name == "float32" else "int64_list",
                                  tuple(v[i].numpy().tolist())) for k, v in batch.items()))] += 1
        assert got == collections.Counter(_expected(tiny_case, split, int)), split
    # The new shards' manifest: every shard's records, bytes and SHA-256 as on disk (shard for shard
    # the input's record counts).
    import hashlib
    import json

    written = json.load(open(os.path.join(out, "manifest.json")))
    source = json.load(open(os.path.join(tiny_data, "manifest.json")))
    for split in SPLITS:
        shards = written["splits"][split]["shards"]
        assert sorted(shards) == sorted(source["splits"][split]["shards"])
        assert written["splits"][split]["records"] == info["stats"]["splits"][split]["rows"]
        for name, entry in shards.items():
            raw = open(os.path.join(out, split, name), "rb").read()
            assert entry == {"records": source["splits"][split]["shards"][name]["records"], "bytes": len(raw),
                             "sha256": hashlib.sha256(raw).hexdigest()}
