"""The backbone registry: registration checks, lookup errors and the listing ``python -m zoo.backbones``
(plain Python: the default backend only)."""

import dataclasses
import os
import json

import pytest

from zoo.backbone import Backbone, HyperParameters
from zoo.backbones import __main__ as listing
from zoo.registry import backbone_names, backbones_for, get_backbone, register_backbone


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_lookup_of_an_unknown_backbone_lists_the_registered_ones():
    with pytest.raises(KeyError, match=r"backbone 'nope': unknown; registered backbones are \['afm', "):
        get_backbone("nope")


def test_registration_needs_a_backbone_with_a_hyper_parameter_dataclass():
    with pytest.raises(TypeError, match=r"^backbone 'x': .* is not a zoo.backbone.Backbone subclass"):
        register_backbone("x")(dict)

    class NoDataclass(Backbone):
        Hyperparameters = dict

    with pytest.raises(TypeError, match=r"NoDataclass.Hyperparameters must be a dataclass subclassing"):
        register_backbone("x")(NoDataclass)


def test_a_hyper_parameter_may_not_shadow_a_keras_layer_attribute():
    @dataclasses.dataclass(frozen=True)
    class Params(HyperParameters):
        weights: int = 3

    class Shadowing(Backbone):
        Hyperparameters = Params

    with pytest.raises(TypeError, match=r"^backbone 'x': hyper-parameter 'weights' is a Keras Layer attribute"):
        register_backbone("x")(Shadowing)


def test_a_name_is_registered_once():
    @dataclasses.dataclass(frozen=True)
    class Params(HyperParameters):
        pass

    class Other(Backbone):
        Hyperparameters = Params

    with pytest.raises(ValueError, match=r"^backbone 'dcnv2': already registered by DCNv2$"):
        register_backbone("dcnv2")(Other)
    assert get_backbone("dcnv2").__name__ == "DCNv2"


def test_listing_names_every_backbone_and_its_hyper_parameters(capsys):
    assert listing.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == backbone_names()
    assert listing.main(["dcnv2", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["class"] == "zoo.backbones.dcnv2.DCNv2" and row["tiny_yaml"].endswith("configs/models/dcnv2_test.yaml")
    assert row["hyperparameters"] == get_backbone("dcnv2").Hyperparameters.defaults()
    assert row["hyperparameters"]["cross_rank"] is None and row["hyperparameters"]["dnn_units"] == [256, 128, 64]


def test_listing_refuses_an_unknown_name(capsys):
    with pytest.raises(SystemExit) as raised:
        listing.main(["dcnv3"])
    assert raised.value.code == 2
    assert "unknown backbone 'dcnv3'; registered backbones are" in capsys.readouterr().err


def test_backbones_for_a_spec_names_the_ones_it_cannot_build():
    from zoo.spec import load_spec

    frappe = load_spec(os.path.join(ROOT, "configs", "datasets", "frappe_x1.yaml"))  # no sequence input
    usable, skipped = backbones_for(frappe)
    assert skipped == {"din": "needs a sequence input (a behaviour sequence), the spec has none"}
    assert sorted(usable + list(skipped)) == backbone_names()
    synthetic = load_spec(os.path.join(ROOT, "configs", "datasets", "synthetic.yaml"))  # recent_categories
    assert backbones_for(synthetic) == (backbone_names(), {})
