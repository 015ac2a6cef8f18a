"""bench/quality_frappe.py's model entries: the key check and the summary against BARS' published single
run and repeated-run mean (pure Python: no model is trained)."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import quality_frappe  # noqa: E402


@pytest.fixture(scope="module")
def config():
    return quality_frappe.load_config()


def test_every_entry_of_the_committed_yaml_passes_the_check(config):
    for name, entry in config["models"].items():
        quality_frappe.check_entry(name, entry)
    # BARS' 5-run tables of DeepFM_frappe_x1_001 and DCNv2_frappe_x1_007: run 1 is the published number.
    assert config["models"]["deepfm"]["published_runs"]["logloss_mean"] == pytest.approx(0.149462)
    assert config["models"]["dcnv2"]["published_runs"]["auc_mean"] == pytest.approx(0.983824)
    # AutoInt+ carries the page's number after FuxiCTR's bug fix, not the deprecated 0.9831 / 0.1637.
    assert config["models"]["autoint"]["published"] == {"auc": 0.9848, "logloss": 0.1490}


@pytest.mark.parametrize("entry, message", [
    ({"source": "x", "publishd": {"auc": 0.9, "logloss": 0.1}}, r"models\.m: unknown keys \['publishd'\]"),
    ({"published": {"auc": 0.9}}, r"models\.m\.published: needs exactly the keys \['auc', 'logloss'\]"),
    ({"published_runs": {"runs": 5, "auc_mean": 0.9, "auc_std": 0.1, "logloss_mean": "0.1", "logloss_std": 0.0}},
     r"models\.m\.published_runs\.logloss_mean: must be a number, got '0\.1'"),
    ({"published_runs": [0.9, 0.1]}, r"models\.m\.published_runs: needs exactly the keys"),
])
def test_bad_entries_are_named(entry, message):
    with pytest.raises(ValueError, match=message):
        quality_frappe.check_entry("m", entry)


def test_check_models_stops_on_a_bad_entry(config):
    bad = {**config, "models": {**config["models"], "deepfm": {**config["models"]["deepfm"], "tolerance": 1}}}
    with pytest.raises(SystemExit, match=r"quality_frappe\.yaml: models\.deepfm: unknown keys \['tolerance'\]"):
        quality_frappe.check_models(["deepfm"], bad, quality_frappe.CONFIG)


def test_summary_differences_against_the_single_run_and_the_run_mean():
    config = {"protocol": {"tolerance_auc": 0.002}, "models": {
        "m": {"source": "s", "published": {"auc": 0.98, "logloss": 0.15},
              "published_runs": {"runs": 5, "auc_mean": 0.979, "auc_std": 0.001, "logloss_mean": 0.152,
                                 "logloss_std": 0.002}},
        "n": {"source": "t", "published": {"auc": 0.99, "logloss": 0.10}}}}
    runs = {"m": [{"test_auc": 0.981, "test_logloss": 0.155}, {"test_auc": 0.983, "test_logloss": 0.157}],
            "n": [{"test_auc": 0.985, "test_logloss": 0.12}]}
    table = quality_frappe.summarize(runs, config)
    m, n = table["m"], table["n"]
    assert m["auc_mean"] == pytest.approx(0.982) and m["auc_std"] == pytest.approx(0.0014142, abs=1e-6)
    assert m["auc_minus_published"] == pytest.approx(0.002) and m["auc_within_tolerance"]
    assert m["logloss_minus_published"] == pytest.approx(0.006)
    assert m["auc_minus_published_mean"] == pytest.approx(0.003)
    assert m["logloss_minus_published_mean"] == pytest.approx(0.004)
    assert n["auc_minus_published"] == pytest.approx(-0.005) and not n["auc_within_tolerance"]
    assert "auc_minus_published_mean" not in n and n["published_runs"] is None
    lines = quality_frappe.format_table(table, 0.002).splitlines()
    assert lines[2] == ("| m | 0.9820 ± 0.0014 | 0.1560 ± 0.0014 | 0.9800 / 0.1500 | +0.0020 | yes | "
                        "5 runs: 0.9790 ± 0.0010 / 0.1520 ± 0.0020 | +0.0030 / +0.0040 |")
    assert lines[3] == "| n | 0.9850 ± 0.0000 | 0.1200 ± 0.0000 | 0.9900 / 0.1000 | -0.0050 | NO |  |  |"
