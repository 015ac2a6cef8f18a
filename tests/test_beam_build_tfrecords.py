"""The Beam job (beam_jobs.build_tfrecords): exact examples, dead letters and stats on a tiny fixture
(tests/conftest.py ``tiny_case``), the CLI on synthetic data, and a split that gets no rows."""

from __future__ import annotations

import collections
import glob
import json
import os

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import add_aux_labels, build_tfrecords, cohort_stats
from beam_jobs.options import DEFAULT_RUNNER_ARGS
from zoo.datasets.synthetic import write_raw
from zoo.spec import SPLITS, FeatureSpec, load_spec

pytestmark = pytest.mark.tf_only


def decode(serialized: bytes) -> tuple:
    """A serialized Example as a hashable, sorted ((key, list kind, values), ...), independent of the spec."""
    example = tf.train.Example.FromString(serialized)
    out = []
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out.append((key, kind, tuple(getattr(feature, kind).value)))
    return tuple(sorted(out))


def canonical(row: dict) -> tuple:
    """A hand-written expected row in the same form as :func:`decode` (float -> float_list)."""
    kind = lambda v: "float_list" if isinstance(v[0], float) else "int64_list"  # noqa: E731
    return tuple(sorted((k, kind(v), tuple(v)) for k, v in row.items()))


def read_shards(pattern: str) -> list[bytes]:
    files = sorted(glob.glob(pattern))
    return [r.numpy() for f in files for r in tf.data.TFRecordDataset(f, compression_type="GZIP")]


def test_tiny_fixture_exact(tiny_case, tmp_path):
    out = str(tmp_path / "out")
    expected = {s: [canonical(r) for r in rows] for s, rows in tiny_case.expected.items()}
    with BeamTestPipeline() as p:
        pcolls = build_tfrecords.build_pipeline(p, tiny_case.spec, tiny_case.input_pattern, out, num_shards=2)
        for split in SPLITS:
            got = (pcolls["examples"]
                   | f"Only_{split}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
                   | f"Decode_{split}" >> beam.Map(lambda kv: decode(kv[1])))
            assert_that(got, equal_to(expected[split]), label=f"examples_{split}")
        assert_that(pcolls["dead_letter"] | beam.Map(lambda d: d["reason"]),
                    equal_to([r for _, _, r in tiny_case.bad]), label="dead_letter_reasons")
        assert_that(pcolls["dead_letter_counts"],
                    equal_to(sorted(collections.Counter(r for _, _, r in tiny_case.bad).items())),
                    label="dead_letter_counts")
        assert_that(pcolls["stats"], equal_to([tiny_case.expected_stats]), label="stats")

    # What landed on disk: num_shards GZIP shards per split holding exactly the expected examples.
    for split in SPLITS:
        files = glob.glob(os.path.join(out, split, "part-*.tfrecord.gz"))
        assert len(files) == 2, files
        got = collections.Counter(decode(s) for s in read_shards(os.path.join(out, split, "part-*.tfrecord.gz")))
        assert got == collections.Counter(expected[split]), split
    with open(os.path.join(out, "stats.json")) as fh:
        assert json.load(fh) == tiny_case.expected_stats
    dead = []
    for path in glob.glob(os.path.join(out, "dead_letter", "*.jsonl")):
        with open(path) as fh:
            dead.extend(json.loads(line) for line in fh if line.strip())
    assert sorted(d["reason"] for d in dead) == sorted(r for _, _, r in tiny_case.bad)
    by_line = {d["line"]: d for d in dead}
    for name, raw, reason in tiny_case.bad:
        d = by_line[raw.decode("utf-8", errors="replace")]
        assert set(d) == {"file", "line", "reason", "error"}
        assert os.path.basename(d["file"]) == name and d["reason"] == reason
    errors = sorted(d["error"] for d in dead)
    assert any("feature 'price': cannot parse 'abc'" in e for e in errors)
    assert any("feature 'price': blank value and no default" in e for e in errors)
    assert any("feature 'tags'" in e and "max_length" in e for e in errors)
    assert any("feature 'item': id 1180591620717411303424 is outside int64" in e for e in errors)
    assert any("feature 'hist': id -1 is reserved for sequence padding" in e for e in errors)


def test_cli_on_synthetic(tmp_path, capsys):
    """The CLI with the default runner options (multi-processing DirectRunner), then a rerun in memory."""
    spec = load_spec("configs/datasets/synthetic.yaml")
    write_raw(spec, None, str(tmp_path / "raw"), rows=2000, malformed_rows=8)
    out = str(tmp_path / "out")
    argv = ["--spec", "configs/datasets/synthetic.yaml", "--input", str(tmp_path / "raw" / "*.csv"),
            "--output", out, "--num_shards", "3"]
    info = build_tfrecords.run(argv)
    stats = info["stats"]
    assert stats["rows"] == 2000
    assert sum(stats["splits"][s]["rows"] for s in SPLITS) == 2000
    assert stats["dead_letter"]["total"] == 8
    # synthetic.py rotates four corruptions: 8 lines -> 2 of each reason.
    assert stats["dead_letter"]["by_reason"] == {
        "bad_label": 2, "bad_number": 2, "missing_value": 2, "wrong_column_count": 2}
    for axis in spec.cohort_axes:
        assert list(stats["cohorts"][axis.name]) == list(axis.cohorts)
        assert sum(c["rows"] for c in stats["cohorts"][axis.name].values()) == 2000
    assert stats["positives"] == sum(stats["splits"][s]["positives"] for s in SPLITS)
    # Beam counters agree with stats.json.
    assert info["counters"]["rows"] == 2000
    assert {k: v for k, v in info["counters"].items() if k.startswith("dead_letter/")} == {
        f"dead_letter/{r}": n for r, n in stats["dead_letter"]["by_reason"].items()}
    for split in SPLITS:
        files = glob.glob(os.path.join(out, split, "part-*-of-00003.tfrecord.gz"))
        assert len(files) == 3
        assert len(read_shards(os.path.join(out, split, "part-*.tfrecord.gz"))) == stats["splits"][split]["rows"]
    with open(os.path.join(out, "spec.json")) as fh:
        assert FeatureSpec.from_dict(json.load(fh)).to_dict() == spec.to_dict()
    printed = capsys.readouterr().out
    assert build_tfrecords.summary_line(stats) in printed
    assert "dead letters: 8 (bad_label=2, bad_number=2, missing_value=2, wrong_column_count=2)" in printed

    # A rerun with fewer shards replaces the earlier shards instead of leaving stale ones behind.
    info = build_tfrecords.run(argv[:-1] + ["1", "--direct_running_mode=in_memory"])
    for split in SPLITS:
        assert len(glob.glob(os.path.join(out, split, "part-*.tfrecord.gz"))) == 1
    assert info["stats"] == stats


def test_empty_split_and_given_split_column(tmp_path):
    """A split with no rows still gets readable (empty) shards and a stats entry; bad split values are dead letters."""
    spec_dict = {
        "name": "given_split", "label": "y",
        "format": {"columns": ["y", "x", "fold"], "split_column": "fold", "header": False},
        "defaults": {"embedding_dim": 2},
        "features": [{"name": "x", "kind": "categorical", "vocab_size": 5}],
        "cohort_axes": [{"name": "x", "feature": "x", "values": {"low": [0, 1]}}],
    }
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "rows.csv").write_text("1,0,train\n0,1,train\n0,7,valid\n1,2,holdout\n")
    spec = FeatureSpec.from_dict(spec_dict)
    with open(tmp_path / "spec.yaml", "w") as fh:
        fh.write(spec.to_json())  # JSON is YAML
    out = str(tmp_path / "out")
    stats = build_tfrecords.run(["--spec", str(tmp_path / "spec.yaml"), "--input", str(tmp_path / "raw" / "*.csv"),
                                 "--output", out, "--num_shards", "2",
                                 "--direct_running_mode=in_memory"])["stats"]
    assert stats["splits"] == {
        "train": {"rows": 2, "positives": 1, "base_rate": 0.5},
        "valid": {"rows": 1, "positives": 0, "base_rate": 0.0},
        "test": {"rows": 0, "positives": 0, "base_rate": None},
    }
    assert stats["cohorts"]["x"] == {"low": {"rows": 2, "positives": 1, "base_rate": 0.5},
                                     "other": {"rows": 1, "positives": 0, "base_rate": 0.0}}
    assert stats["features"]["x"] == {"kind": "categorical", "out_of_vocab": 1}
    assert stats["dead_letter"] == {"total": 1, "by_reason": {"bad_split": 1}}
    assert len(glob.glob(os.path.join(out, "test", "part-*.tfrecord.gz"))) == 2
    from zoo.data import read_split

    assert sum(int(tf.shape(b["y"])[0]) for b in read_split(out, "test", batch_size=4)) == 0
    assert sum(int(tf.shape(b["y"])[0]) for b in read_split(out, "train", batch_size=4)) == 2


@pytest.mark.parametrize("multiline", [False, True])
def test_quoted_csv_fields_are_read_not_dead_lettered(tmp_path, multiline):
    """RFC 4180 input: a title column (not a feature) whose quoted values hold the delimiter, doubled
    quotes and (with format.multiline) line breaks; every good row is written, the bad ones are
    counted by reason."""
    titles = ['"Shawshank Redemption, The (1994)"', "Heat (1995)", '"Say ""Anything"" (1989)"',
              '"Seven, (a.k.a. Se7en) (1995)"']
    if multiline:
        titles.append('"Two\nLines (2001)"')
    lines = ["user,item,title,rating"]
    for i in range(200):
        lines.append(f"{i % 17},{i % 11},{titles[i % len(titles)]},{1 + i % 5}")
    lines += ['3,4,"never closed,5', '3,4,"Heat" (1995),5']  # quoting errors: dead letters
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "ratings.csv").write_text("\n".join(lines) + "\n")
    spec = FeatureSpec.from_dict({
        "name": "quoted", "label": {"name": "liked", "column": "rating", "positive": ">= 4"}, "user_id": "user",
        "format": {"columns": ["user", "item", "title", "rating"], "multiline": multiline},
        "defaults": {"embedding_dim": 2},
        "features": [{"name": "user", "kind": "categorical", "vocab_size": 20},
                     {"name": "item", "kind": "categorical", "vocab_size": 20}],
    })
    with open(tmp_path / "spec.yaml", "w") as fh:
        fh.write(spec.to_json())
    stats = build_tfrecords.run(["--spec", str(tmp_path / "spec.yaml"), "--input", str(tmp_path / "raw" / "*.csv"),
                                 "--output", str(tmp_path / "out"), "--num_shards", "1",
                                 "--direct_running_mode=in_memory"])["stats"]
    assert stats["rows"] == 200
    assert stats["positives"] == 80  # ratings 4 and 5
    # Line by line each bad line is a dead letter. With multiline a quote left open runs on to the
    # end of the file (the next lines are inside the field): one record, one dead letter holding both.
    want = 1 if multiline else 2
    assert stats["dead_letter"] == {"total": want, "by_reason": {"bad_quoting": want}}
    dead = [json.loads(line) for path in glob.glob(str(tmp_path / "out" / "dead_letter" / "*"))
            for line in open(path)]
    assert sorted(d["line"] for d in dead) == (['3,4,"never closed,5\n3,4,"Heat" (1995),5'] if multiline
                                               else ['3,4,"Heat" (1995),5', '3,4,"never closed,5'])


@pytest.mark.parametrize("job, argv", [
    (build_tfrecords, ["--spec", "s.yaml", "--input", "i", "--output", "o"]),
    (cohort_stats, ["--data", "d", "--output", "o.json"]),
    (add_aux_labels, ["--data", "d", "--output", "o"]),
], ids=["build_tfrecords", "cohort_stats", "add_aux_labels"])
def test_a_flag_of_neither_the_job_nor_beam_is_an_error_naming_it(job, argv, capsys):
    with pytest.raises(SystemExit) as raised:
        job.parse_args(argv + ["--temp_location", "/tmp/x", "--num_shard=3"])  # a typo of --num_shards
    assert raised.value.code == 2
    assert "error: unknown flag '--num_shard': not an option of this job nor of Apache Beam" in capsys.readouterr().err
    assert job.parse_args(argv + ["--temp_location", "/tmp/x"])[1][-2:] == ["--temp_location", "/tmp/x"]


def test_runner_defaults_only_without_runner_options():
    base = ["--spec", "s.yaml", "--input", "i", "--output", "o"]
    args, rest = build_tfrecords.parse_args(base + ["--temp_location", "/tmp/x"])
    assert (args.spec, args.input, args.output, args.num_shards) == ("s.yaml", "i", "o", build_tfrecords.DEFAULT_NUM_SHARDS)
    assert rest == DEFAULT_RUNNER_ARGS + ["--temp_location", "/tmp/x"]
    for user in (["--runner", "DataflowRunner", "--project", "p"],
                 ["--direct_running_mode=in_memory"], ["--direct_num_workers", "4"]):
        assert build_tfrecords.parse_args(base + user)[1] == user


def _snapshot(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out


def test_outputs_appear_atomically(tiny_case, tmp_path, monkeypatch):
    """Outputs are staged in <output>/.tmp-<run id>/ and promoted after success, _SUCCESS last; a failed
    run leaves the previous outputs untouched; a killed run's staging directory is removed next time."""
    from beam_jobs import fileio

    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(tiny_case.spec.to_json())
    out = str(tmp_path / "out")
    argv = ["--spec", str(spec_file), "--input", tiny_case.input_pattern, "--output", out, "--num_shards", "2",
            "--direct_running_mode=in_memory"]
    assert not fileio.is_complete(out)
    build_tfrecords.run(argv)
    before = _snapshot(out)
    assert fileio.is_complete(out) and "_SUCCESS" in before
    assert not [p for p in before if p.startswith(".tmp-")]
    assert len([p for p in before if p.startswith("train/part-")]) == 2

    def boom(self, element):
        raise RuntimeError("boom: a worker failed mid-run")

    monkeypatch.setattr(build_tfrecords.EncodeChunk, "process", boom)
    with pytest.raises(Exception, match="boom"):
        build_tfrecords.run(argv[:-2] + ["1", "--direct_running_mode=in_memory"])
    monkeypatch.undo()
    assert _snapshot(out) == before  # the previous complete output, its _SUCCESS included, is intact
    assert not glob.glob(os.path.join(out, ".tmp-*"))

    os.makedirs(os.path.join(out, ".tmp-killed", "train"))
    with open(os.path.join(out, ".tmp-killed", "train", "part-00000-of-00009.tfrecord.gz"), "wb") as fh:
        fh.write(b"half a shard")
    info = build_tfrecords.run(argv[:-2] + ["1", "--direct_running_mode=in_memory"])
    after = _snapshot(out)
    assert not [p for p in after if p.startswith(".tmp-")]
    assert sorted(p for p in after if p.startswith(("train/", "valid/", "test/"))) == [
        f"{s}/part-00000-of-00001.tfrecord.gz" for s in ("test", "train", "valid")]
    assert info["stats"] == tiny_case.expected_stats and after["_SUCCESS"] != before["_SUCCESS"]
