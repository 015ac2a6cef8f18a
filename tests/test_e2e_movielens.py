"""The main job end to end on MovieLens-100K: adapter -> Beam -> baseline + C2AL -> per-cohort metrics -> export."""

import json
import os
from pathlib import Path

import pytest

from beam_jobs.options import unknown_pipeline_flags
from zoo import pipeline

pytestmark = pytest.mark.tf_only
ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def test_pipeline_on_movielens(tmp_path, capsys):
    if not ML100K.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{ML100K} is absent in CI")
        pytest.skip(f"{ML100K} absent")
    work, root = tmp_path / "work", tmp_path / "saved_models"
    code = pipeline.main(["--dataset", "configs/datasets/movielens100k.yaml", "--source", str(ML100K),
                          "--model", "configs/models/dcnv2_test.yaml", "--output", str(work),
                          "--export-root", str(root), "--direct_running_mode=in_memory"])
    assert code == 0
    stats = json.loads((work / "data" / "stats.json").read_text())
    assert stats["rows"] == 100_000 and stats["positives"] == 55_375
    assert stats["dead_letter"]["total"] == 0
    summary = json.loads((work / "train" / "metrics.json").read_text())
    test_rows = stats["splits"]["test"]["rows"]
    for variant in ("baseline", "c2al"):
        result = summary["variants"][variant]
        assert result["overall"]["rows"] == test_rows
        assert set(result["cohorts"]) == {"age_bucket", "gender", "occupation", "user_activity"}
        for axis, cohorts in result["cohorts"].items():
            assert sum(c["rows"] for c in cohorts.values()) == test_rows, axis
        assert result["overall"]["auc"] > 0.6  # item and user features carry real signal
    assert set(summary["ne_diff_percent"]["cohorts"]["user_activity"]) == set(
        summary["variants"]["baseline"]["cohorts"]["user_activity"])
    assert (root / "dcnv2_movielens100k" / "1" / "saved_model.pb").exists()
    printed = capsys.readouterr().out
    assert "metrics.json:" in printed and "NE_diff overall" in printed


@pytest.mark.parametrize("argv", [
    ["--direct_running_mode=in_memory", "--direct_num_workers", "2", "--runner", "DirectRunner",
     "--temp_location=/tmp/beam", "--experiments=a", "--no_pipeline_type_check"],
    ["--num_shards", "3", "--compression_level=1"],  # the Beam job's own options
])
def test_pipeline_passes_beam_and_beam_job_options_through(argv):
    assert unknown_pipeline_flags([a for a in argv if "shards" not in a and "compression" not in a
                                   and a != "3"]) == []
    assert pipeline.beam_job_args("spec.yaml", "raw/*.csv", "data", argv)[6:] == argv


@pytest.mark.parametrize("argv, flag", [(["--epoks", "1"], "--epoks"), (["--runn=DirectRunner"], "--runn"),
                                        (["--work", "runs/x"], "--work"), (["--epoch", "1"], "--epoch")])
def test_pipeline_rejects_an_unknown_flag_naming_it_before_any_work(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pipeline.main(["--output", str(tmp_path / "run"), *argv])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert f"unknown flag '{flag}'" in error and "\n" not in error
    assert not (tmp_path / "run").exists()
