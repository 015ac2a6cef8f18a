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
    code = train.main(["--data", data_dir, "--model", "configs/models/dcnv2_test.yaml", "--output", out,
                       "--export-root", root, "--lambda-head", "0.2", "--max-epochs", "4"])
    assert code == 0
    summary = json.load(open(os.path.join(out, "metrics.json")))
    assert summary["c2al"] == {"axis": "user_value", "head": "p95_100", "tail": "p00_05",
                               "lambda_head": 0.2, "lambda_tail": 0.03}
    for variant in ("baseline", "c2al"):
        result = summary["variants"][variant]
        cohorts = result["cohorts"]["user_value"]
        assert set(cohorts) == {"p00_05", "p05_25", "p25_50", "p50_75", "p75_95", "p95_100"}
        assert sum(c["rows"] for c in cohorts.values()) == result["overall"]["rows"]
        assert set(result["cohorts"]["device"]) <= {"desktop", "ios", "android", "other_device"}
        assert 0.5 < result["overall"]["auc"] < 1.0 and 0 < result["overall"]["ne"] < 5
        assert os.path.exists(os.path.join(out, variant, "model.keras"))
        assert os.listdir(os.path.join(out, variant, "tensorboard"))
        # the protocol's record: the tiny config trains every epoch up to the cap (no early stopping)
        fit = result["training"]
        assert (fit["epochs_run"], fit["best_epoch"], fit["hit_cap"], fit["stopped_early"]) == (4, 4, True, False)
        assert len(fit["history"]["val_logloss_exact"]) == 4 and 0.5 < fit["history"]["val_auc_exact"][-1] < 1
    diff = summary["ne_diff_percent"]
    base, c2al = summary["variants"]["baseline"]["overall"]["ne"], summary["variants"]["c2al"]["overall"]["ne"]
    assert diff["overall"] == pytest.approx(100 * (c2al - base) / base)
    assert set(diff["cohorts"]["user_value"]) == set(summary["variants"]["baseline"]["cohorts"]["user_value"])
    assert summary["export"] == {"variant": "c2al", "path": os.path.join(root, "dcnv2_synthetic", "1")}
    # C2AL serves exactly the baseline's parameters (the auxiliary heads are dropped); it trains more.
    baseline, c2al = summary["variants"]["baseline"]["params"], summary["variants"]["c2al"]["params"]
    assert baseline["served"] == baseline["total"]
    assert c2al["served"] == baseline["total"]
    assert c2al["total"] > c2al["served"]


def test_c2al_pair_is_validated_against_the_spec(data_dir, tmp_path):
    with pytest.raises(SpecError, match="no cohort named .p99."):
        train.run(data_dir, "configs/models/dcnv2_test.yaml", str(tmp_path), ["c2al"], c2al_overrides={"head": "p99"})
    with pytest.raises(ValueError, match="variants"):
        train.run(data_dir, "configs/models/dcnv2_test.yaml", str(tmp_path), ["mmoe"])


def test_discovery_picks_the_pair_that_c2al_then_trains_on(data_dir, tmp_path):
    """baseline -> discovery -> C2AL in one run: the C2AL variant uses the discovered pair, not the spec's."""
    out = str(tmp_path / "run")
    code = train.main(["--data", data_dir, "--model", "configs/models/dcnv2_test.yaml", "--output", out,
                       "--max-epochs", "2", "--discover", "--discover-metric", "w1", "--discover-bins", "20",
                       "--discover-min-fraction", "0.1", "--diagnostics-every", "5"])
    assert code == 0
    summary = json.load(open(os.path.join(out, "metrics.json")))
    found = json.load(open(os.path.join(out, "discovery", "cohort_divergence.json")))
    assert open(os.path.join(out, "discovery", "cohort_divergence.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # min_fraction 0.1 leaves only the four middle user_value cohorts (20-25 % each): the planted
    # 5 % cohorts are excluded, so the pair must differ from the spec's p95_100 / p00_05.
    assert set(found["excluded"]) == {"p00_05", "p95_100"}
    assert {found["head"], found["tail"]} <= {"p05_25", "p25_50", "p50_75", "p75_95"}
    assert summary["discovery"]["head"] == found["head"] and summary["discovery"]["tail"] == found["tail"]
    assert summary["c2al"] == {"axis": "user_value", "head": found["head"], "tail": found["tail"],
                               "lambda_head": 0.03, "lambda_tail": 0.03}
    # The chosen pair is the most divergent eligible one in the saved matrix.
    names, matrix = found["cohorts"], found["matrix"]
    eligible = [names.index(c) for c in found["eligible"]]
    best = max(max(matrix[i][j], matrix[j][i]) for a, i in enumerate(eligible) for j in eligible[a + 1:])
    assert found["divergence"] == pytest.approx(best)
    # Plots and diagnostics: NE_diff bars always; diagnostics records every 5 steps per variant (dcnv2
    # has no AttentionFM, so no |Y| histograms, but dead-ReLU and information abundance are logged).
    assert open(summary["plots"]["ne_diff"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "attention_histograms" not in summary["plots"]
    for variant in ("baseline", "c2al"):
        records = [json.loads(line) for line in open(os.path.join(out, variant, "diagnostics.jsonl"))]
        steps = [r["step"] for r in records]
        assert len(records) >= 3 and steps == sorted(steps) and steps[1] - steps[0] == 5
        # Information abundance of each table lies in [1, its width] (16 in the synthetic spec).
        abundance = [v for r in records for k, v in r.items() if k.startswith("information_abundance/")]
        assert len(abundance) >= len(records) and all(1.0 <= v <= 16.0 for v in abundance)
        assert all("over_arch/dead_relu_fraction" in r for r in records)

    # The least-divergent pair ablation: same discovery, the eligible pair with the smallest score.
    least = train.run(data_dir, "configs/models/dcnv2_test.yaml", str(tmp_path / "least"), max_epochs=1,
                      discover={"metric": "w1", "bins": 20, "min_fraction": 0.1, "strategy": "least"})
    found = json.load(open(os.path.join(tmp_path, "least", "discovery", "cohort_divergence.json")))
    names, matrix = found["cohorts"], found["matrix"]
    eligible = [names.index(c) for c in found["eligible"]]
    score = {frozenset((names[i], names[j])): max(matrix[i][j], matrix[j][i])
             for a, i in enumerate(eligible) for j in eligible[a + 1:]}
    assert frozenset((least["c2al"]["head"], least["c2al"]["tail"])) == min(score, key=score.get)
    assert least["discovery"]["strategy"] == "least"
    with pytest.raises(ValueError, match="discover: needs variants"):
        train.run(data_dir, "configs/models/dcnv2_test.yaml", str(tmp_path / "x"), ["c2al"], discover={})


def test_unknown_flags_and_bad_overrides_are_errors_naming_them(data_dir, tmp_path, capsys):
    for flag in ("--out", "--epoch"):  # the old spelling and an abbreviation are not accepted
        with pytest.raises(SystemExit):
            train.main(["--data", data_dir, "--output", str(tmp_path), flag, "x"])
        assert f"unrecognized arguments: {flag}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="training.max_epochs: must be a positive int, got 0"):
        train.run(data_dir, "configs/models/dcnv2_test.yaml", str(tmp_path), max_epochs=0)
