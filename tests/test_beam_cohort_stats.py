"""beam_jobs.cohort_stats on the tiny fixture (tests/conftest.py ``tiny_case``): per axis and cohort the
counts, positives, base rates and per-feature marginals, and quantile cohorts of the ordinal axis's
feature, against a reference computed here from the hand-written stored rows."""

from __future__ import annotations

import collections
import json
import math
import os

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from beam_jobs import build_tfrecords, cohort_stats
from zoo.spec import SPLITS

pytestmark = pytest.mark.tf_only

TOP_K = 2
QS = [0.25]
NUM_QUANTILES = 5
# The 12 stored `value`s sorted: -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3. Five quantiles
# (min, 25 %, 50 %, 75 %, max) as Beam's ApproximateQuantiles picks them on so few values (exactly):
VALUE_QUANTILES = [-2.0, -0.5, 0.25, 1.0, 3.0]
# q = 0.25: bottom = value < -0.5 (-2, -1: both y=0), top = value >= 1.0 (1, 1.5, 2, 3: y = 0, 1, 1, 1).
VALUE_Q25 = {"bottom_q0.25": {"rows": 2, "positives": 0, "base_rate": 0.0},
             "middle": {"rows": 6, "positives": 3, "base_rate": 0.5},
             "top_q0.25": {"rows": 4, "positives": 3, "base_rate": 0.75}}


@pytest.fixture(scope="module")
def tiny_data(tiny_case, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cohort_data") / "data")
    spec_file = tmp_path_factory.mktemp("cohort_spec") / "tiny.yaml"
    spec_file.write_text(tiny_case.spec.to_json())
    build_tfrecords.run(["--spec", str(spec_file), "--input", tiny_case.input_pattern, "--output", out,
                         "--num_shards", "2", "--direct_running_mode=in_memory"])
    return out


def reference(case, data_dir: str) -> dict:
    """The expected statistics, from the stored rows of the fixture (tests/conftest.py TINY_EXPECTED)."""
    spec = case.spec
    rows = [r for s in SPLITS for r in case.expected[s]]
    out = {"dataset": "tiny", "data_dir": data_dir, "splits": list(SPLITS), "rows": 12, "positives": 6,
           "base_rate": 0.5, "axes": {}}
    for axis in spec.cohort_axes:
        entry = {"feature": axis.feature, "kind": "ordinal" if axis.ordinal else "categorical", "cohorts": {}}
        if axis.ordinal:
            entry["boundaries"] = list(axis.boundaries)
        for c, name in enumerate(axis.cohorts):
            members = [r for r in rows if r["cohort/" + axis.name][0] == c]
            pos = sum(r["y"][0] == 1.0 for r in members)
            feats = {}
            for f in spec.features:
                if f.kind == "dense":
                    xs = [float(np.float32(r[f.name][0])) for r in members]
                    if not xs:
                        feats[f.name] = {"rows": 0, "mean": None, "std": None, "min": None, "max": None}
                        continue
                    mean = sum(xs) / len(xs)
                    feats[f.name] = {"rows": len(xs), "mean": mean,
                                     "std": math.sqrt(max(sum(x * x for x in xs) / len(xs) - mean * mean, 0.0)),
                                     "min": min(xs), "max": max(xs)}
                    continue
                counts, positives = collections.Counter(), collections.Counter()
                for r in members:
                    ids = [v for v in r[f.name] if v != -1] if f.kind == "sequence" else [r[f.name][0]]
                    for v in ids:
                        counts[v] += 1
                        positives[v] += r["y"][0] == 1.0
                total = sum(counts.values())
                top = sorted(counts, key=lambda v: (-counts[v], v))[:TOP_K]
                feats[f.name] = {"distinct": len(counts), "ids": total, "top_values": [
                    {"value": v, "rows": counts[v], "share": counts[v] / total, "positives": positives[v],
                     "base_rate": positives[v] / counts[v]} for v in top]}
            entry["cohorts"][name] = {"rows": len(members), "positives": pos,
                                      "base_rate": pos / len(members) if members else None, "features": feats}
        out["axes"][axis.name] = entry
    out["quantile_cohorts"] = {"value": {"num_quantiles": NUM_QUANTILES, "quantiles": VALUE_QUANTILES, "by_q": {
        "0.25": {"boundaries": [-0.5, 1.0], "cohorts": VALUE_Q25,
                 "axis": {"name": "value_q0.25", "feature": "value", "boundaries": [-0.5, 1.0],
                          "cohorts": ["bottom_q0.25", "middle", "top_q0.25"]}}}}}
    return out


def same(a, b, path="") -> None:
    """Exact equality, floats to 1e-12 relative (sums of floats depend on the order of addition)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), (path, sorted(set(a) ^ set(b)))
        for k in a:
            same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), (path, a, b)
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def test_cohort_stats_exact(tiny_case, tiny_data, tmp_path):
    expected = reference(tiny_case, tiny_data)
    output = str(tmp_path / "stats.json")

    def check(actual):
        try:
            assert len(actual) == 1
            same(actual[0], expected)
        except AssertionError as err:
            raise BeamAssertException(str(err)) from err

    with BeamTestPipeline() as p:
        result = cohort_stats.build_pipeline(p, tiny_case.spec, tiny_data, output, SPLITS, TOP_K, QS,
                                             ["value"], NUM_QUANTILES, value_shards=3)
        assert_that(result, check)
    with open(output) as fh:
        same(json.load(fh), expected)


def test_cohort_stats_cli_and_split_selection(tiny_case, tiny_data, tmp_path, capsys):
    output = str(tmp_path / "train_stats.json")
    stats = cohort_stats.run(["--data", tiny_data, "--output", output, "--splits", "train", "--q", "0.1", "0.25",
                              "--numeric_features", "price", "--direct_running_mode=in_memory"])
    assert stats["rows"] == 6 and stats["positives"] == 3 and stats["splits"] == ["train"]
    assert {k: v["rows"] for k, v in stats["axes"]["value_band"]["cohorts"].items()} == {"low": 2, "mid": 2, "high": 2}
    assert list(stats["quantile_cohorts"]) == ["price", "value"]  # spec order
    assert len(stats["quantile_cohorts"]["value"]["quantiles"]) == 1001
    by_q = stats["quantile_cohorts"]["price"]["by_q"]
    assert set(by_q) == {"0.1", "0.25"}
    for q in by_q.values():
        assert sum(c["rows"] for c in q["cohorts"].values()) == 6
    assert "value_band       high" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no _SUCCESS marker"):
        cohort_stats.run(["--data", str(tmp_path), "--output", output, "--direct_running_mode=in_memory"])
    assert os.path.exists(output)
