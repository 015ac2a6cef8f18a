"""Backbones by name: a new backbone is one module that subclasses :class:`Backbone` and registers."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

import keras
from keras import ops

from layers.embeddings import PACKAGE
from zoo import compat
from zoo.encoder import FeatureEncoder

_BACKBONES: dict[str, type] = {}
BACKBONE_PACKAGE = f"{PACKAGE}.backbones"


def _import_backbones() -> None:
    """Imports every module of ``zoo.backbones`` once: a new backbone is one file there, nothing else.

    Python's ``random`` state is restored afterwards: importing ``keras_rs`` draws from it, and the
    first :func:`get_backbone` usually runs right after ``keras.utils.set_random_seed``, so without
    this the first model built in a process would start from other weights than every later model
    with the same seed (e.g. a baseline and its C2AL variant).
    """
    import pkgutil
    import random

    import zoo.backbones

    state = random.getstate()
    try:
        for info in pkgutil.iter_modules(zoo.backbones.__path__):
            importlib.import_module(f"zoo.backbones.{info.name}")
    finally:
        random.setstate(state)


def register_backbone(name: str) -> Callable[[type], type]:
    """Class decorator: registers a :class:`Backbone` under ``name`` and for Keras serialization."""

    def wrap(cls: type) -> type:
        if name in _BACKBONES and _BACKBONES[name] is not cls:
            raise ValueError(f"backbone '{name}': already registered by {_BACKBONES[name].__qualname__}")
        _BACKBONES[name] = cls
        cls.registered_name = name
        # A package of their own: backbone class names (AFM, PLE, MMoE) repeat layer names.
        return keras.saving.register_keras_serializable(package=BACKBONE_PACKAGE)(cls)

    return wrap


def get_backbone(name: str) -> type:
    _import_backbones()
    if name not in _BACKBONES:
        raise KeyError(f"backbone '{name}': unknown; registered backbones are {sorted(_BACKBONES)}")
    return _BACKBONES[name]


def backbone_names() -> list[str]:
    _import_backbones()
    return sorted(_BACKBONES)


class Backbone(keras.layers.Layer):
    """Maps the feature dict to the shared representation ``h`` of shape ``(B, H)``.

    A backbone is embeddings -> interaction -> over-arch. Subclasses implement three hooks:

    * ``make_interaction(index)``: creates the interaction module(s) of one embedding set (called
      once per set and stored in ``self.interactions``);
    * ``interact(module, tokens, dense, training)``: that set's interaction output ``(B, D)`` from
      its token embeddings (a list of ``(B, d_f)``) and the dense features (``(B, m)`` or None);
    * ``over_arch(z, training)``: ``z -> h`` (default: identity).

    With the ``multi`` embedding option (M sets, METHODS section 5) the base class runs each set
    through its own interaction module, applies a per-set projection ``P_m = ReLU(Dense(D))`` and
    averages: ``h = over_arch(mean_m P_m(I_m(E_m(x))))``. With one set, ``h = over_arch(I(E(x)))``.
    So every backbone supports every embedding option without code of its own.

    ``call(features, return_interaction=True)`` returns ``(h, z)``: ``z`` is the interaction output
    (for multi-embedding, the mean of the projected sets) that the over-arch maps to ``h``.
    :func:`zoo.model.build` calls the backbone this way, so both are symbolic tensors of the model
    (``z`` is computed on the way to ``h`` anyway: no extra layer, weight or computation). Where the
    over-arch is the identity (AFM, AutoInt+, DeepFM, DCNv2 parallel, DHEN/Wukong without head
    units, DLRM without top units), ``z`` is ``h``.

    ``get_config`` stores the spec, the embedding options and every hyper-parameter in ``hparams()``.
    """

    def __init__(self, spec: Mapping[str, Any], embedding: Mapping[str, Any] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.spec_config = dict(spec)
        self.encoder = FeatureEncoder(self.spec_config, embedding, dtype=self.dtype_policy, name="encoder")

    @property
    def num_sets(self) -> int:
        return self.encoder.num_sets

    def make_interaction(self, index: int) -> Any:
        raise NotImplementedError

    def interact(self, module: Any, tokens: list, dense, training=None):
        raise NotImplementedError

    def over_arch(self, z, training=None):
        return z

    def build_interactions(self) -> None:
        """Subclasses call this at the end of ``__init__``, once their hyper-parameters are set."""
        self.interactions = [self.make_interaction(m) for m in range(self.num_sets)]
        self.set_projections = []

    def build(self, input_shape):
        """Builds every sublayer by tracing ``call`` on symbolic inputs of the spec's dtypes."""
        spec = self.encoder.spec
        symbolic = {
            f.name: keras.KerasTensor(tuple(input_shape[f.name]), dtype=spec.input_dtype(f))
            for f in spec.inputs
        }
        if self.num_sets > 1 and not self.set_projections:
            token_sets, dense = compat.compute_output_spec(self.encoder, symbolic)
            width = compat.compute_output_spec(
                lambda t, d: self.interact(self.interactions[0], t, d), token_sets[0], dense).shape[-1]
            self.set_projections = [
                keras.layers.Dense(width, activation="relu", dtype=self.dtype_policy, name=f"set_projection_{m}")
                for m in range(self.num_sets)
            ]
        compat.compute_output_spec(self.call, symbolic)

    def compute_interaction(self, features, training=None):
        """The interaction output ``z`` (before the over-arch); with M sets, ``mean_m P_m(I_m(E_m(x)))``."""
        token_sets, dense = self.encoder(features)
        if self.num_sets == 1:
            return self.interact(self.interactions[0], token_sets[0], dense, training=training)
        projected = [
            projection(self.interact(module, tokens, dense, training=training))
            for module, projection, tokens in zip(self.interactions, self.set_projections, token_sets)
        ]
        return ops.mean(ops.stack(projected, axis=0), axis=0)

    def call(self, features, training=None, return_interaction=False):
        """``h``, or with ``return_interaction=True`` the pair ``(h, z)`` (``z`` costs nothing extra)."""
        z = self.compute_interaction(features, training=training)
        h = self.over_arch(z, training=training)
        return (h, z) if return_interaction else h

    def serving_copy(self, input_shape) -> "Backbone | None":
        """A smaller backbone computing the same ``h`` for serving, or None (serve this one as is).

        :func:`zoo.model.primary_model` calls it; the default has nothing to drop. Multi-task
        backbones (PLE/MMoE with ``num_tasks > 1``) return a single-task copy with the primary
        path's weights.
        """
        return None

    def hparams(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update({"spec": self.spec_config, "embedding": self.encoder.embedding, **self.hparams()})
        return config
