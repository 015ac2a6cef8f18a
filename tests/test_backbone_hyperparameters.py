"""Hyper-parameter checks of every backbone: a bad value, an unknown or renamed keyword each raise a
one-line ValueError that starts with the argument's name. The checks are plain Python, raised before
any tensor exists, so they run under the default backend only."""

import pytest

from zoo.model import build

from helpers import SPEC, UNIFORM, tiny_hparams  # noqa: E402  (tests/ is on sys.path under pytest)

# (backbone, spec, overrides of its tiny hyper-parameters, the argument the error must name)
BAD = [
    ("dcnv2", UNIFORM, dict(num_cross_layers=2.7), "num_cross_layers"),
    ("dcnv2", UNIFORM, dict(num_cross_layers=None), "num_cross_layers"),
    ("dcnv2", UNIFORM, dict(num_cross_layers=0), "num_cross_layers"),
    ("dcnv2", UNIFORM, dict(cross_rank=0), "cross_rank"),
    ("dcnv2", UNIFORM, dict(structure="tower"), "structure"),
    ("dcnv2", UNIFORM, dict(structure="parallel", dnn_units=[]), "dnn_units"),
    ("dcnv2", UNIFORM, dict(dnn_units=[8, 0]), "dnn_units"),
    ("dcnv2", UNIFORM, dict(dropout=1.0), "dropout"),
    ("dcnv2", UNIFORM, dict(norm="group"), "norm"),
    ("dcnv2", UNIFORM, dict(activation="sparkle"), "activation"),
    ("deepfm", UNIFORM, dict(first_order="yes"), "first_order"),
    ("dlrm", SPEC, {}, "embedding_dim"),
    ("afm", SPEC, {}, "embedding_dim"),
    ("dlrm", UNIFORM, dict(bottom_units=[8, 0]), "bottom_units"),
    ("dlrm", UNIFORM, dict(top_units="wide"), "top_units"),
    ("dlrm", UNIFORM, dict(dropout=1.0), "dropout"),
    ("dlrm", UNIFORM, dict(norm="group"), "norm"),
    ("dlrm", UNIFORM, dict(interaction="sum"), "interaction"),
    ("dlrm", UNIFORM, dict(interaction="cat", self_interaction=True), "self_interaction"),
    ("deepfm", UNIFORM, dict(dnn_units=[-4]), "dnn_units"),
    ("deepfm", UNIFORM, dict(dropout=-0.1), "dropout"),
    ("deepfm", UNIFORM, dict(norm="instance"), "norm"),
    ("afm", UNIFORM, dict(attention_dim=0), "attention_dim"),
    ("afm", UNIFORM, dict(attention_dropout=1.5), "attention_dropout"),
    ("autoint", UNIFORM, dict(num_attention_layers=0), "num_attention_layers"),
    ("autoint", UNIFORM, dict(num_heads=1.5), "num_heads"),
    ("autoint", UNIFORM, dict(attention_dim=-1), "attention_dim"),
    ("autoint", UNIFORM, dict(dnn_units=[8, None]), "dnn_units"),
    ("autoint", UNIFORM, dict(dropout=2), "dropout"),
    ("dhen", SPEC, {}, "embedding_dim"),
    ("dhen", UNIFORM, dict(num_layers=0), "num_layers"),
    ("dhen", UNIFORM, dict(modules=["attention_fm", "fm"]), "modules"),
    ("dhen", UNIFORM, dict(modules=[]), "modules"),
    ("dhen", UNIFORM, dict(attention_mode="global"), "attention_mode"),
    ("dhen", UNIFORM, dict(fm_rank=0), "fm_rank"),
    ("dhen", UNIFORM, dict(attention_normalize="sigmoid"), "attention_normalize"),
    ("dhen", UNIFORM, dict(cross_rank=0), "cross_rank"),
    ("dhen", UNIFORM, dict(modules=["mlp"], mlp_units=[]), "mlp_units"),
    ("dhen", UNIFORM, dict(num_dense_tokens=0), "num_dense_tokens"),
    ("dhen", UNIFORM, dict(head_units=[8, 0]), "head_units"),
    ("dhen", UNIFORM, dict(norm="group"), "norm"),
    ("wukong", SPEC, {}, "embedding_dim"),
    ("wukong", UNIFORM, dict(num_layers=0), "num_layers"),
    ("wukong", UNIFORM, dict(num_fmb_tokens=0), "num_fmb_tokens"),
    ("wukong", UNIFORM, dict(num_lcb_tokens=-1), "num_lcb_tokens"),
    ("wukong", UNIFORM, dict(fm_rank=1.5), "fm_rank"),
    ("wukong", UNIFORM, dict(fmb_units=[-2]), "fmb_units"),
    ("wukong", UNIFORM, dict(dropout=1.0), "dropout"),
    ("ple", SPEC, dict(num_tasks=0), "num_tasks"),
    ("ple", SPEC, dict(num_levels=0), "num_levels"),
    ("ple", SPEC, dict(num_specific_experts=-1), "num_specific_experts"),
    ("ple", SPEC, dict(num_specific_experts=0, num_shared_experts=0), "num_shared_experts"),
    ("ple", SPEC, dict(expert_units=[]), "expert_units"),
    ("ple", SPEC, dict(tower_units=[0]), "tower_units"),
    ("mmoe", SPEC, dict(num_experts=0), "num_experts"),
    ("mmoe", SPEC, dict(num_tasks=0), "num_tasks"),
    ("mmoe", SPEC, dict(gate_units=[-1]), "gate_units"),
]


@pytest.mark.parametrize("name, spec, overrides, argument", BAD,
                         ids=[f"{n}-{a}-{i}" for i, (n, _, _, a) in enumerate(BAD)])
def test_a_bad_value_names_the_argument(name, spec, overrides, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        build(name, spec, **{**tiny_hparams(name), **overrides})


@pytest.mark.parametrize("name, old, new", [
    ("dcnv2", "projection_dim", "cross_rank"),
    ("dcnv2", "deep_units", "dnn_units"),
    ("dhen", "attention_k", "fm_rank"),
])
def test_a_renamed_hyper_parameter_names_its_new_name(name, old, new):
    with pytest.raises(ValueError, match=rf"^{old}: {name} calls this hyper-parameter '{new}' now$"):
        build(name, UNIFORM, **{old: 4})


def test_values_are_normalized_once():
    backbone = build("dcnv2", UNIFORM, num_cross_layers=2.0, dnn_units=(8, 4.0)).get_layer("backbone")
    assert backbone.num_cross_layers == 2 and type(backbone.num_cross_layers) is int
    assert backbone.get_config()["dnn_units"] == [8, 4]
