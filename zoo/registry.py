"""Backbones by name: a new backbone is one module of ``zoo/backbones/`` that subclasses
:class:`zoo.backbone.Backbone` and registers itself with :func:`register_backbone`.

``python -m zoo.backbones`` lists the registered backbones and their hyper-parameters."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

import keras

from layers.embeddings import PACKAGE
from zoo.backbone import LAYER_ARGUMENTS, Backbone, HyperParameters

_BACKBONES: dict[str, type] = {}
BACKBONE_PACKAGE = f"{PACKAGE}.backbones"


BACKBONE_MODULES = "zoo.backbones"


def _import_backbones() -> None:
    """Imports every module of the :data:`BACKBONE_MODULES` package: a new backbone is one file there.

    The backbones depend on this registry (they call :func:`register_backbone`); the registry
    depends on no backbone: it finds them by scanning the package, named by a string, so there is
    no import cycle (import-linter's ``no-cycles`` contract checks it).

    Python's ``random`` state is restored afterwards: importing ``keras_rs`` draws from it, and the
    first :func:`get_backbone` usually runs right after ``keras.utils.set_random_seed``, so without
    this the first model built in a process would start from other weights than every later model
    with the same seed (e.g. a baseline and its C2AL variant).
    """
    import pkgutil
    import random

    package = importlib.import_module(BACKBONE_MODULES)
    state = random.getstate()
    try:
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):  # _common (the toolkit) and __main__ (the listing) register nothing
                importlib.import_module(f"{BACKBONE_MODULES}.{info.name}")
    finally:
        random.setstate(state)


def register_backbone(name: str) -> Callable[[type], type]:
    """Class decorator: registers a :class:`Backbone` under ``name`` and for Keras serialization."""

    def wrap(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Backbone)):
            raise TypeError(f"backbone '{name}': {cls!r} is not a zoo.backbone.Backbone subclass")
        params = getattr(cls, "Hyperparameters", None)
        if not (dataclasses.is_dataclass(params) and issubclass(params, HyperParameters)):
            raise TypeError(f"backbone '{name}': {cls.__qualname__}.Hyperparameters must be a dataclass "
                            "subclassing zoo.backbone.HyperParameters")
        clash = [field for field in params.names() if field in LAYER_ARGUMENTS or hasattr(keras.layers.Layer, field)]
        if clash:  # each hyper-parameter becomes an attribute of the layer: it must not shadow Keras' own
            raise TypeError(f"backbone '{name}': hyper-parameter '{clash[0]}' is a Keras Layer attribute; rename it")
        if name in _BACKBONES and _BACKBONES[name] is not cls:
            raise ValueError(f"backbone '{name}': already registered by {_BACKBONES[name].__qualname__}")
        _BACKBONES[name] = cls
        cls.registered_name = name
        # A package of their own: backbone class names (AFM, PLE, MMoE) repeat layer names.
        return keras.saving.register_keras_serializable(package=BACKBONE_PACKAGE)(cls)

    return wrap


def get_backbone(name: str) -> type:
    """The registered :class:`~zoo.backbone.Backbone` class of ``name``; KeyError listing the names otherwise."""
    _import_backbones()
    if name not in _BACKBONES:
        raise KeyError(f"backbone '{name}': unknown; registered backbones are {sorted(_BACKBONES)}")
    return _BACKBONES[name]


def backbone_names() -> list[str]:
    """Every registered backbone name, sorted."""
    _import_backbones()
    return sorted(_BACKBONES)


def backbones_for(spec) -> tuple[list[str], dict[str, str]]:
    """The registered backbones that can be built on ``spec`` (sorted), and ``{name: reason}`` for the
    others (``Backbone.unsupported_reason``)."""
    usable, skipped = [], {}
    for name in backbone_names():
        reason = _BACKBONES[name].unsupported_reason(spec)
        if reason is None:
            usable.append(name)
        else:
            skipped[name] = reason
    return usable, skipped

