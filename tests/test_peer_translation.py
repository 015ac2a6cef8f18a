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
