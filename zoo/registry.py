"""Backbones by name: a new backbone is one module that subclasses :class:`Backbone` and registers."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

import keras

from layers.embeddings import PACKAGE
from zoo.encoder import FeatureEncoder

_BACKBONES: dict[str, type] = {}
# Modules imported on first lookup so that `zoo.build("name", ...)` finds every shipped backbone.
_BUILTIN_MODULES = ("zoo.backbones.dcnv2",)


def register_backbone(name: str) -> Callable[[type], type]:
    """Class decorator: registers a :class:`Backbone` under ``name`` and for Keras serialization."""

    def wrap(cls: type) -> type:
        if name in _BACKBONES and _BACKBONES[name] is not cls:
            raise ValueError(f"backbone '{name}': already registered by {_BACKBONES[name].__qualname__}")
        _BACKBONES[name] = cls
        cls.registered_name = name
        return keras.saving.register_keras_serializable(package=PACKAGE)(cls)

    return wrap


def get_backbone(name: str) -> type:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    if name not in _BACKBONES:
        raise KeyError(f"backbone '{name}': unknown; registered backbones are {sorted(_BACKBONES)}")
    return _BACKBONES[name]


def backbone_names() -> list[str]:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    return sorted(_BACKBONES)


class Backbone(keras.layers.Layer):
    """Maps the feature dict to the shared representation ``h`` of shape ``(B, H)``.

    Subclasses receive the resolved spec dict plus their own hyper-parameters, create
    ``self.encoder = FeatureEncoder(spec)`` (done here) and implement ``call(features) -> h``.
    ``get_config`` stores the spec and every hyper-parameter named in ``hparams``.
    """

    def __init__(self, spec: Mapping[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.spec_config = dict(spec)
        self.encoder = FeatureEncoder(self.spec_config, dtype=self.dtype_policy, name="encoder")

    def build(self, input_shape):
        """Builds every sublayer by tracing ``call`` on symbolic inputs of the spec's dtypes."""
        spec = self.encoder.spec
        symbolic = {
            f.name: keras.KerasTensor(tuple(input_shape[f.name]), dtype=spec.input_dtype(f))
            for f in spec.inputs
        }
        keras.src.backend.compute_output_spec(self.call, symbolic)

    def hparams(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update({"spec": self.spec_config, **self.hparams()})
        return config
