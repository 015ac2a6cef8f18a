"""bench/peer_fuxictr.py's translation of the BARS settings in bench/quality_frappe.yaml to FuxiCTR's
keyword arguments (pure Python: FuxiCTR itself is never installed here)."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import peer_fuxictr  # noqa: E402


@pytest.fixture(scope="module")
def config():
    return peer_fuxictr.load_yaml(peer_fuxictr.CONFIG)


def test_afm_translation_matches_the_bars_experiment(config):
    # BARS AFM_frappe_x1_011: attention_dim 128, attention_dropout [0.1, 0.1], embedding_regularizer 1e-5.
    params = peer_fuxictr.fuxictr_params("afm", config, "/tmp/unused")
    assert params["attention_dim"] == 128
    assert params["attention_dropout"] == [0.1, 0.1]
    assert params["use_attention"] is True
    assert params["embedding_regularizer"] == pytest.approx(1e-5)
    assert params["embedding_dim"] == 10 and params["learning_rate"] == 1e-3


def test_every_peer_model_translates(config):
    for name in peer_fuxictr.FUXICTR_MODELS:
        params = peer_fuxictr.fuxictr_params(name, config, "/tmp/unused")
        assert params["model_id"].startswith(peer_fuxictr.FUXICTR_MODELS[name][0])
    assert set(peer_fuxictr.THROUGHPUT_MODELS) <= set(peer_fuxictr.FUXICTR_MODELS)


def test_untranslatable_settings_stop_the_script():
    with pytest.raises(peer_fuxictr.Untranslated, match="first_order"):
        peer_fuxictr.translate("afm", {"attention_dim": 10, "attention_dropout": 0.0, "pooled_dropout": 0.0,
                                       "first_order": "tied"})
    with pytest.raises(peer_fuxictr.Untranslated, match="without a FuxiCTR translation"):
        peer_fuxictr.translate("afm", {"attention_dim": 10, "attention_dropout": 0.0, "pooled_dropout": 0.0,
                                       "first_order": "table", "extra": 1})


def test_peer_summary_against_the_single_run_and_the_bars_run_mean(config):
    import peer_quality

    runs = [{"seed": 0, "test_auc": 0.9840, "test_logloss": 0.1530, "hit_cap": False, "epochs_run": 15},
            {"seed": 1, "test_auc": 0.9844, "test_logloss": 0.1510, "hit_cap": False, "epochs_run": 16}]
    row = peer_quality.summarize("deepfm", runs, config)
    assert row["fuxictr_model"] == "DeepFM" and row["seeds"] == 2 and row["runs_at_epoch_cap"] == 0
    assert row["auc_mean"] == pytest.approx(0.9842) and row["logloss_mean"] == pytest.approx(0.1520)
    assert row["auc_minus_published"] == pytest.approx(0.0) and row["logloss_minus_published"] == pytest.approx(0.0038)
    # BARS' 5-run mean of DeepFM_frappe_x1_001: 0.983947 / 0.149462.
    assert row["auc_minus_published_mean"] == pytest.approx(0.000253)
    assert row["logloss_minus_published_mean"] == pytest.approx(0.002538)
    env = {"fuxictr": "2.3.10", "torch": "2", "cpu": "c", "cpu_count": 2, "torch_threads": 2, "wall_seconds": 60,
           "date": "d", "output": "/x/peer.json"}
    table = peer_quality.format_table({"deepfm": row}, {"deepfm": runs}, env).splitlines()
    assert table[4] == ("| deepfm | 0.9842 ± 0.0003 | 0.1520 ± 0.0014 | 0.9842 / 0.1482 | +0.0000 / +0.0038 | "
                        "5 runs: 0.9839 / 0.1495 | +0.0003 / +0.0025 | 0.9840 / 0.1530, 0.9844 / 0.1510 | 15, 16 |")


def test_finalmlp_translation_matches_the_bars_experiment(config):
    # BARS FinalMLP_frappe_x1_004: mlp1 [400] / mlp2 [100], dropout 0.4, batch norm, gates [400] on
    # user / item, 5 heads, embedding_regularizer 0.05.
    params = peer_fuxictr.fuxictr_params("finalmlp", config, "/tmp/unused")
    assert params["mlp1_hidden_units"] == [400] and params["mlp2_hidden_units"] == [100]
    assert params["mlp1_dropout"] == params["mlp2_dropout"] == 0.4
    assert params["mlp1_batch_norm"] is True and params["mlp2_batch_norm"] is True
    assert params["use_fs"] is True and params["fs_hidden_units"] == [400]
    assert params["fs1_context"] == ["user"] and params["fs2_context"] == ["item"]
    assert params["num_heads"] == 5 and params["embedding_regularizer"] == pytest.approx(0.05)
    with pytest.raises(peer_fuxictr.Untranslated, match="fs_context_table"):
        peer_fuxictr.translate("finalmlp", {"fs_context_table": "shared"})
