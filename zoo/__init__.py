"""ctr-zoo: feature spec, backbones, C2AL, training and export.

The common entry points are importable from the package; they load lazily, so importing
``zoo.spec`` (as Beam workers do) does not import Keras::

    spec = zoo.load_spec("configs/datasets/synthetic.yaml")
    model = zoo.C2AL(zoo.build("dcnv2", spec))
"""

import importlib

from zoo.cli import quiet_entry_point

quiet_entry_point("zoo")  # `python -m zoo.<entry point>`: silence TensorFlow's start-up before it loads

_EXPORTS = {
    "load_spec": "zoo.spec",
    "FeatureSpec": "zoo.spec",
    "build": "zoo.model",
    "primary_model": "zoo.model",
    "C2AL": "zoo.c2al",
    "build_c2al": "zoo.c2al",
    "discover": "zoo.cohorts",
    "Backbone": "zoo.backbone",
    "HyperParameters": "zoo.backbone",
    "load_model": "zoo.model",
    "load_model_config": "zoo.config",
    "register_backbone": "zoo.registry",
    "backbone_names": "zoo.registry",
    "export_saved_model": "zoo.export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute '{name}'")
