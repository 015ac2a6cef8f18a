"""bench/train_scaling.py: the Criteo-shaped data it generates (split sizes, vocabularies, a learnable
label), its summary arithmetic and option checks with known answers, and its ``--quick`` smoke run
(one JAX subprocess per (distribution, devices), about 40 s on the 2-core machine)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, clean_env

sys.path.insert(0, os.path.join(ROOT, "bench"))
import train_scaling  # noqa: E402

pytestmark = pytest.mark.tf_only  # the bench's workers run JAX in their own processes


def test_vocabularies_are_log_spaced_from_10_to_200k():
    sizes = train_scaling.VOCAB_SIZES
    assert len(sizes) == 26 and sizes[0] == 10 and sizes[-1] == 200_000
    ratios = np.diff(np.log(sizes))
    assert ratios == pytest.approx(np.full(25, np.log(20_000) / 25), abs=0.02)  # rounding to whole ids


def test_split_sizes_make_the_train_split_whole_batches():
    assert train_scaling.split_sizes(200_000, 8192) == {"train": 155_648, "valid": 20_000, "test": 20_000}
    assert train_scaling.split_sizes(20_000, 1024) == {"train": 15_360, "valid": 2000, "test": 2000}
    with pytest.raises(ValueError, match=r"^--rows 5000: the train split \(80 %\) must hold at least one batch "
                                         r"of --batch-size 8192$"):
        train_scaling.split_sizes(5000, 8192)


def test_generated_rows_have_the_criteo_shape_and_a_learnable_label():
    sizes = {"train": 8000, "valid": 1000, "test": 1000}
    table = train_scaling.generate(sizes, seed=3)
    assert [c for c in train_scaling.spec_dict()["format"]["columns"] if c not in table] == []
    assert {s: int((table["split"] == s).sum()) for s in sizes} == sizes
    for f, vocab in enumerate(train_scaling.VOCAB_SIZES):
        ids = table[f"C{f + 1}"]
        assert ids.shape == (10_000,) and ids.min() >= 0 and ids.max() < vocab
    assert table["C1"].max() == 9 and len(np.unique(table["C1"])) == 10  # a 10-id field: every id seen
    for j in range(13):
        assert table[f"I{j + 1}"].dtype == np.int64 and table[f"I{j + 1}"].min() >= 0
    y, p = table["label"], table["p_true"]
    assert set(np.unique(y)) == {0, 1} and 0.15 < y.mean() < 0.4  # Criteo's click rate is ~0.26
    assert abs(y.mean() - p.mean()) < 0.02  # labels drawn from p_true
    assert p.std() > 0.1  # the ids and counts move the probability: a model has something to learn
    # the same seed, the same rows
    assert np.array_equal(train_scaling.generate(sizes, seed=3)["C26"], table["C26"])


def test_spec_parses_and_matches_the_generator():
    from zoo.spec import FeatureSpec

    spec = FeatureSpec.from_dict(train_scaling.spec_dict())
    assert [f.name for f in spec.inputs] == [f"I{j + 1}" for j in range(13)] + [f"C{f + 1}" for f in range(26)]
    assert [f.vocab_size for f in spec.inputs[13:]] == list(train_scaling.VOCAB_SIZES)
    assert spec.oracle == "p_true" and spec.raw_format.split_column == "split"


def test_summary_speedup_and_efficiency():
    runs = [
        {"distribution": "none", "devices": 1, "examples_per_second": [100, 110, 90]},
        {"distribution": "data_parallel", "devices": 1, "examples_per_second": [80, 80]},
        {"distribution": "data_parallel", "devices": 2, "examples_per_second": [120, 100, 140],
         "train_step_compiles_per_epoch": [2, 1, 0, 1, 0]},
        {"distribution": "model_parallel", "devices": 4, "examples_per_second": [300]},
    ]
    rows = train_scaling.summarize(runs)
    by = {(r["distribution"], r["devices"]): r for r in rows}
    assert by[("none", 1)]["examples_per_second"] == 100 and by[("none", 1)]["range"] == [90, 110]
    assert by[("data_parallel", 2)]["speedup"] == 1.5  # 120 / its own 1-device median 80
    assert by[("data_parallel", 2)]["efficiency"] == 0.75
    assert by[("data_parallel", 2)]["compiles_in_measured_epochs"] == 1  # the warm-up's 3 not counted
    assert by[("model_parallel", 4)]["speedup"] == 3.0  # no 1-device model_parallel row: vs none x 1
    assert by[("model_parallel", 4)]["efficiency"] == 0.75
    text = train_scaling.table(rows)
    assert "| data_parallel | 2 | 120 | 100-140 | 1.50x | 75% |" in text
    assert train_scaling.summarize([{"distribution": "data_parallel", "devices": 2,
                                     "examples_per_second": [5]}])[0]["speedup"] is None


def test_grid_runs_none_on_one_device_only():
    assert train_scaling.grid(["none", "data_parallel"], [1, 2, 4]) == [
        ("none", 1), ("data_parallel", 1), ("data_parallel", 2), ("data_parallel", 4)]
    assert train_scaling.default_devices("gpu", 8) == [1, 2, 4, 8]
    assert train_scaling.default_devices("gpu", 6) == [1, 2, 4, 6]
    assert train_scaling.default_devices("cpu", 1) == [1, 2]


def test_bad_options_are_named():
    with pytest.raises(ValueError, match=r"^--devices: device counts must be >= 1, got '0,2'$"):
        train_scaling.parse_devices("0,2")
    with pytest.raises(ValueError, match=r"^--devices: comma-separated device counts, got 'two'$"):
        train_scaling.parse_devices("two")
    with pytest.raises(ValueError, match=r"^--distributions: must be among \[.*\], got \['pipeline'\]$"):
        train_scaling.check_options(["none", "pipeline"], [1], 8192, None)
    with pytest.raises(ValueError, match=r"^--batch-size 1000: not divisible by --devices \[3\]"):
        train_scaling.check_options(["data_parallel"], [1, 2, 3], 1000, None)
    with pytest.raises(ValueError, match=r"^--devices: 4 requested, 2 GPUs on this machine$"):
        train_scaling.check_options(["data_parallel"], [1, 4], 8192, 2)


def test_cpu_workers_get_n_virtual_jax_devices():
    env = train_scaling.worker_env("cpu", 2)
    assert env["KERAS_BACKEND"] == "jax" and env["JAX_PLATFORMS"] == "cpu"
    assert env["XLA_FLAGS"].split()[-1] == "--xla_force_host_platform_device_count=2"
    assert train_scaling.worker_env("gpu", 3)["CUDA_VISIBLE_DEVICES"] == "0,1,2"


def test_quick_run_writes_one_row_per_distribution_and_device_count(tmp_path):
    output = tmp_path / "scaling.json"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "train_scaling.py"), "--quick",
                           "--devices", "1,2", "--work", str(tmp_path / "work"), "--output", str(output)],
                          cwd=ROOT, env=clean_env(PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    rows = [(r["distribution"], r["devices"]) for r in result["summary"]]
    assert rows == [("none", 1), ("data_parallel", 1), ("data_parallel", 2)]
    assert all(r["examples_per_second"] > 0 for r in result["summary"])
    assert [r["devices"] for r in result["runs"]] == [1, 1, 2]
    assert result["runs"][2]["distribution_repr"].startswith("<DataParallel")
    assert result["environment"]["backend"] == "jax"
    assert result["data"]["rows"]["train"] % result["batch_size"] == 0
    # the same data, seed and global batch: the same losses on 1 and 2 devices
    assert result["runs"][0]["loss"] == pytest.approx(result["runs"][2]["loss"], abs=1e-4)
    assert "| data_parallel | 2 |" in done.stdout


