"""Model YAMLs (zoo.config): bases merged key by key, every block's unknown keys and bad values named."""

import glob
import os

import pytest
import yaml

from zoo.config import TRAINING_DEFAULTS, ConfigError, load_model_config, training_options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "configs", "models")


def write(directory, name, cfg):
    path = os.path.join(directory, name)
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return path


def test_dcnv2_resolves_to_its_values_before_the_bases():
    assert load_model_config(os.path.join(MODELS, "dcnv2.yaml")) == {
        "backbone": "dcnv2",
        "embedding": {"type": "plain"},
        "hparams": {"num_cross_layers": 3, "cross_rank": None, "structure": "stacked",
                    "dnn_units": [256, 128, 64], "dropout": 0.0, "norm": None},
        "training": {"batch_size": 1024, "learning_rate": 0.001, "reader": "auto", "loss": {"type": "bce"},
                     "dtype_policy": "float32", "checkpoint_every_steps": 0,
                     "max_epochs": 30,
                     "early_stopping_patience": 2,
                     "reduce_lr_factor": 0.1, "reduce_lr_patience": 1, "min_learning_rate": 1e-6,
                     "min_delta": 1e-6, "monitor": "logloss"},
        "c2al": {"head_units": [], "tap": "primary_head_input", "ablation": "none"},
        "cohort_heads": {"method": "cohort_heads", "axis": None, "groups": None, "head_units": [],
                         "prior": "user_share"},
    }
    tiny = load_model_config(os.path.join(MODELS, "dcnv2_test.yaml"))
    assert tiny["training"] == {**TRAINING_DEFAULTS, "batch_size": 256, "max_epochs": 1, "learning_rate": 0.003,
                                "early_stopping_patience": 0}
    assert tiny["hparams"] == {"num_cross_layers": 2, "cross_rank": 4, "structure": "stacked",
                               "dnn_units": [16, 8]}


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(os.path.join(MODELS, "*.yaml"))
                                        if not os.path.basename(p).startswith("_")))
def test_every_shipped_model_yaml_loads_from_a_base(path):
    cfg = load_model_config(path)
    assert set(cfg) == {"backbone", "embedding", "hparams", "training", "c2al", "cohort_heads"} and cfg["hparams"]
    with open(path) as fh:
        own = yaml.safe_load(fh)
    assert "base" in own and "training" not in own  # nothing repeated: the shared blocks live in the base


def test_a_child_overrides_single_keys_through_a_chain(tmp_path):
    os.makedirs(tmp_path / "bases")
    write(tmp_path / "bases", "root.yaml", {"training": {"max_epochs": 5, "batch_size": 64},
                                            "c2al": {"tap": "interaction_output"},
                                            "hparams": {"num_cross_layers": 1, "dnn_units": [8]}})
    write(tmp_path, "mid.yaml", {"base": "bases/root.yaml", "backbone": "dcnv2", "hparams": {"dnn_units": [4]}})
    path = write(tmp_path, "child.yaml", {"base": "mid.yaml", "training": {"max_epochs": 1}, "hparams": {"cross_rank": 2}})
    cfg = load_model_config(path)
    assert cfg["backbone"] == "dcnv2"
    assert cfg["training"] == {**TRAINING_DEFAULTS, "max_epochs": 1, "batch_size": 64}
    assert cfg["hparams"] == {"num_cross_layers": 1, "dnn_units": [4], "cross_rank": 2}
    assert cfg["c2al"]["tap"] == "interaction_output"


def test_an_embedding_of_another_type_replaces_the_base_block(tmp_path):
    write(tmp_path, "base.yaml", {"backbone": "dcnv2", "embedding": {"type": "multi", "num_sets": 2, "l2": 0.1}})
    path = write(tmp_path, "m.yaml", {"base": "base.yaml", "embedding": {"type": "mlet", "inner_dim": 8}})
    assert load_model_config(path)["embedding"] == {"type": "mlet", "inner_dim": 8}


@pytest.mark.parametrize("cfg, key", [
    ({"backbone": "dcnv2", "trainning": {}}, "'trainning'"),
    ({"backbone": "dcnv2", "training": {"epoch": 1}}, "training: unknown key 'epoch'"),
    ({"backbone": "dcnv2", "c2al": {"taps": "interaction_output"}}, "c2al: unknown key 'taps'"),
    ({"backbone": "dcnv2", "embedding": {"type": "plain", "dim": 8}}, "'dim'"),
])
def test_an_unknown_key_in_any_block_names_the_key_and_the_file(cfg, key, tmp_path):
    path = write(tmp_path, "typo.yaml", cfg)
    with pytest.raises(ConfigError, match=key) as err:
        load_model_config(path)
    assert "typo.yaml" in str(err.value) and "\n" not in str(err.value)


def test_a_typo_in_a_base_names_the_base(tmp_path):
    write(tmp_path, "_base.yaml", {"training": {"epoks": 1}})
    path = write(tmp_path, "m.yaml", {"base": "_base.yaml", "backbone": "dcnv2"})
    with pytest.raises(ConfigError, match=r"_base\.yaml: training: unknown key 'epoks'"):
        load_model_config(path)


@pytest.mark.parametrize("block, key", [
    ({"max_epochs": 0}, "training.max_epochs"),
    ({"max_epochs": 1.5}, "training.max_epochs"),
    ({"monitor": "auc_roc"}, "training.monitor"),
    ({"reduce_lr_factor": 0}, "training.reduce_lr_factor"),
    ({"min_learning_rate": "1e-6"}, "training.min_learning_rate"),
    ({"batch_size": "256"}, "training.batch_size"),
    ({"batch_size": True}, "training.batch_size"),
    ({"learning_rate": 0}, "training.learning_rate"),
    ({"learning_rate": -1e-3}, "training.learning_rate"),
    ({"early_stopping_patience": -1}, "training.early_stopping_patience"),
    ({"checkpoint_every_steps": -1}, r"training.checkpoint_every_steps: must be an int >= 0, got -1"),
    ({"checkpoint_every_steps": 2.5}, "training.checkpoint_every_steps"),
    ({"reader": "disk"}, r"training.reader: must be one of \['auto', 'memory', 'stream'\], got 'disk'"),
])
def test_training_values_are_type_checked(block, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        training_options(block)
    path = write(tmp_path, "bad.yaml", {"backbone": "dcnv2", "training": block})
    with pytest.raises(ConfigError, match=f"bad.yaml: {key}"):
        load_model_config(path)
    assert training_options({"learning_rate": 1, "early_stopping_patience": 0}) == {
        **TRAINING_DEFAULTS, "learning_rate": 1.0, "early_stopping_patience": 0}


def test_missing_and_circular_bases_name_the_file(tmp_path):
    path = write(tmp_path, "m.yaml", {"base": "nowhere.yaml", "backbone": "dcnv2"})
    with pytest.raises(ConfigError, match=r"m\.yaml: base .*nowhere\.yaml. does not exist"):
        load_model_config(path)
    write(tmp_path, "a.yaml", {"base": "b.yaml", "backbone": "dcnv2"})
    write(tmp_path, "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match=r"a\.yaml: circular base chain"):
        load_model_config(os.path.join(tmp_path, "a.yaml"))
    with pytest.raises(ConfigError, match="'backbone' is not set"):
        load_model_config(write(tmp_path, "no_backbone.yaml", {"hparams": {"a": 1}}))


@pytest.mark.parametrize("hparams, message", [
    ({"projction_dim": 4}, r"m.yaml: hparams.projction_dim: not a hyper-parameter of dcnv2; its hyper-parameters are \["),
    ({"deep_units": [4]}, r"m.yaml: hparams.deep_units: dcnv2 calls this hyper-parameter 'dnn_units' now$"),
    ({"num_cross_layers": 2.7}, r"m.yaml: hparams.num_cross_layers: must be an integer >= 1, got 2.7$"),
])
def test_hparams_are_checked_against_the_backbone_naming_the_file(tmp_path, hparams, message):
    path = write(tmp_path, "m.yaml", {"backbone": "dcnv2", "hparams": hparams})
    with pytest.raises(ConfigError, match=message):
        load_model_config(path)


def test_an_unknown_backbone_names_the_file(tmp_path):
    path = write(tmp_path, "m.yaml", {"backbone": "dcnv3"})
    with pytest.raises(ConfigError, match=r"m.yaml: backbone 'dcnv3': unknown; registered backbones are \["):
        load_model_config(path)


def test_cohort_heads_block_is_checked_and_merged(tmp_path):
    write(tmp_path, "root.yaml", {"cohort_heads": {"method": "d_train", "head_units": [4]}})
    path = write(tmp_path, "m.yaml", {"base": "root.yaml", "backbone": "dcnv2", "cohort_heads": {"prior": "uniform"}})
    assert load_model_config(path)["cohort_heads"] == {"method": "d_train", "axis": None, "groups": None,
                                                       "head_units": [4], "prior": "uniform"}
    bad = write(tmp_path, "bad.yaml", {"base": "root.yaml", "backbone": "dcnv2", "cohort_heads": {"tower": 1}})
    with pytest.raises(ConfigError, match=r"bad.yaml: cohort_heads: unknown key 'tower'"):
        load_model_config(bad)
    bad = write(tmp_path, "bad2.yaml", {"base": "root.yaml", "backbone": "dcnv2", "cohort_heads": {"method": "x"}})
    with pytest.raises(ConfigError, match=r"bad2.yaml: cohort_heads.method: must be one of"):
        load_model_config(bad)
