"""Training CLI on small shards: both variants, per-cohort metrics, NE_diff, export."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from helpers import synthetic_rows, write_data_dir  # noqa: E402

from zoo import train  # noqa: E402
from zoo.spec import SpecError, load_spec  # noqa: E402

pytestmark = pytest.mark.tf_only


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data"))
    write_data_dir(load_spec("configs/datasets/synthetic.yaml"), synthetic_rows(6000, seed=1), path)
    return path


def test_train_cli_writes_per_cohort_metrics_and_exports(data_dir, tmp_path):
    out, root = str(tmp_path / "run"), str(tmp_path / "saved_models")
    code = train.main(["--data", data_dir, "--model", "configs/models/dcnv2_test.yaml", "--out", out,
                       "--export-root", root, "--lambda-head", "0.2", "--epochs", "4"])
    assert code == 0
    summary = json.load(open(os.path.join(out, "metrics.json")))
    assert summary["c2al"] == {"axis": "user_value", "head": "p95_100", "tail": "p00_05",
                               "lambda_head": 0.2, "lambda_tail": 0.1}
    for variant in ("baseline", "c2al"):
        result = summary["variants"][variant]
        cohorts = result["cohorts"]["user_value"]
        assert set(cohorts) == {"p00_05", "p05_25", "p25_50", "p50_75", "p75_95", "p95_100"}
        assert sum(c["rows"] for c in cohorts.values()) == result["overall"]["rows"]
        assert set(result["cohorts"]["device"]) <= {"desktop", "ios", "android", "other_device"}
        assert 0.5 < result["overall"]["auc"] < 1.0 and 0 < result["overall"]["ne"] < 5
        assert os.path.exists(os.path.join(out, variant, "model.keras"))
        assert os.listdir(os.path.join(out, variant, "tensorboard"))
    diff = summary["ne_diff_percent"]
    base, c2al = summary["variants"]["baseline"]["overall"]["ne"], summary["variants"]["c2al"]["overall"]["ne"]
    assert diff["overall"] == pytest.approx(100 * (c2al - base) / base)
    assert set(diff["cohorts"]["user_value"]) == set(summary["variants"]["baseline"]["cohorts"]["user_value"])
    assert summary["export"] == {"variant": "c2al", "path": os.path.join(root, "dcnv2_synthetic", "1")}
    # The baseline and the served C2AL model have the same parameter count.
    served_params = summary["variants"]["baseline"]["params"]["total"]
    assert summary["variants"]["c2al"]["params"]["total"] > served_params


def test_c2al_pair_is_validated_against_the_spec(data_dir, tmp_path):
    with pytest.raises(SpecError, match="no cohort named .p99."):
        train.run(data_dir, "configs/models/dcnv2_test.yaml", str(tmp_path), ["c2al"], c2al_overrides={"head": "p99"})
    with pytest.raises(ValueError, match="variants"):
        train.run(data_dir, "configs/models/dcnv2_test.yaml", str(tmp_path), ["mmoe"])
