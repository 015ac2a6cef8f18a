"""The backbone contract: :class:`Backbone` (features -> shared representation ``h``) and
:class:`HyperParameters`, the one declaration of a backbone's hyper-parameters.

A backbone declares its hyper-parameters once, as a frozen dataclass subclassing
:class:`HyperParameters` whose fields carry their default and their check
(``zoo/backbones/_common.py`` has a field constructor per kind: widths, counts, rates, choices).
That one declaration gives the constructor's keyword arguments, the validation (every error starts
with the argument's name), the attributes the backbone reads, ``get_config`` and the listing of
``python -m zoo.backbones``; they cannot drift apart. A keyword that is no field is an error naming
it; a renamed one (``RENAMED``) says its new name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import keras
from keras import ops

from zoo import compat, crocodile
from zoo.encoder import FeatureEncoder

# Keras' own Layer arguments (what Layer.get_config stores); every other keyword is a hyper-parameter.
LAYER_ARGUMENTS = ("name", "dtype", "trainable", "autocast", "activity_regularizer")


@dataclasses.dataclass(frozen=True)
class HyperParameters:
    """Base of every backbone's hyper-parameter dataclass.

    Each field's ``metadata["check"]`` (set by the ``zoo.backbones._common`` field constructors) is
    called as ``check(value, field_name)`` after construction and returns the normalized value
    (e.g. a tuple of widths becomes a list of ints). :meth:`validate` holds checks across fields.
    ``RENAMED`` maps a former argument name to its current one.
    """

    RENAMED: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check = field.metadata.get("check")
            if check is not None:
                object.__setattr__(self, field.name, check(getattr(self, field.name), field.name))
        self.validate()

    def validate(self) -> None:
        """Checks that involve several fields (raise ValueError naming the argument); none by default."""

    @classmethod
    def names(cls) -> list[str]:
        """The hyper-parameter names, in declaration order."""
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every hyper-parameter's default, normalized as the backbone stores it."""
        return cls().to_config()

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], owner: str) -> "HyperParameters":
        """The hyper-parameters from keyword arguments; an unknown or renamed keyword raises ValueError."""
        known = cls.names()
        for key in kwargs:
            if key in cls.RENAMED:
                raise ValueError(f"{key}: {owner} calls this hyper-parameter '{cls.RENAMED[key]}' now")
            if key not in known:
                raise ValueError(f"{key}: not a hyper-parameter of {owner}; its hyper-parameters are {known}")
        return cls(**kwargs)

    def to_config(self) -> dict[str, Any]:
        """``{name: value}`` for every field (lists copied), as ``get_config`` stores them."""
        return {name: (list(value) if isinstance(value, list) else value)
                for name, value in ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))}


class Backbone(keras.layers.Layer):
    """Maps the feature dict to the shared representation ``h`` of shape ``(B, H)``.

    A backbone is embeddings -> interaction -> over-arch. A subclass declares ``Hyperparameters``
    (a :class:`HyperParameters` dataclass; each value is also set as an attribute of the same name)
    and implements four hooks:

    * ``setup()``: creates the backbone's layers from its (already checked) hyper-parameters and
      calls :meth:`build_interactions`;
    * ``make_interaction(index)``: creates the interaction module(s) of one embedding set (called
      once per set and stored in ``self.interactions``);
    * ``interact(module, tokens, dense, training)``: that set's interaction output ``(B, D)`` from
      its token embeddings (a list of ``(B, d_f)``) and the dense features (``(B, m)`` or None);
    * ``over_arch(z, training)``: ``z -> h`` (default: identity).

    A backbone that looks up tables of its own (e.g. FinalMLP's gate-context embeddings) sets
    ``interact_reads_features = True``; ``interact`` is then also given ``features=``, the input dict.
    A backbone that pools behaviour sequences itself (DIN's target attention) sets
    ``interact_reads_sequence_rows = True``; ``interact`` is then also given ``sequence_rows=``, that
    set's ``{sequence name: (B, L, d)}`` rows before the encoder's mean pooling (the same gather).

    With the ``multi`` embedding option (M independent embedding sets; docs/methods.md) the base class
    runs each set through its own interaction module, applies a per-set projection
    ``P_m = ReLU(Dense(D))`` and averages: ``h = over_arch(mean_m P_m(I_m(E_m(x))))``. With one set,
    ``h = over_arch(I(E(x)))``. So every backbone supports every embedding option without code of
    its own. Crocodile's options of ``multi`` (:mod:`zoo.crocodile`) add, in training steps, the
    cross-expert covariance loss of the ``M`` experts ``P_m(I_m(E_m(x)))`` and/or replace the mean by
    the prior-informed element-wise gate.

    ``call(features, return_interaction=True)`` returns ``(h, z)``: ``z`` is the interaction output
    (for multi-embedding, the mean of the projected sets) that the over-arch maps to ``h``.
    :func:`zoo.model.build` calls the backbone this way, so both are symbolic tensors of the model
    (``z`` is computed on the way to ``h`` anyway: no extra layer, weight or computation). Where the
    over-arch is the identity (AFM, AutoInt+, DeepFM, DCNv2 parallel, DHEN/Wukong without head
    units, DLRM without top units), ``z`` is ``h``.

    ``get_config`` stores the spec, the embedding options and every hyper-parameter.

    Args:
      spec: the resolved feature spec dict (``FeatureSpec.to_dict()``).
      embedding: embedding options (``zoo.encoder.embedding_options``): plain, mlet or multi.
      **kwargs: the hyper-parameters (fields of ``Hyperparameters``) and Keras' layer arguments
        (``name``, ``dtype``, ``trainable``).
    """

    Hyperparameters: ClassVar[type[HyperParameters]] = HyperParameters
    registered_name: ClassVar[str] = "backbone"
    interact_reads_features: ClassVar[bool] = False
    interact_reads_sequence_rows: ClassVar[bool] = False

    def __init__(self, spec: Mapping[str, Any], embedding: Mapping[str, Any] | None = None, **kwargs):
        layer_kwargs = {key: kwargs.pop(key) for key in LAYER_ARGUMENTS if key in kwargs}
        super().__init__(**layer_kwargs)
        self.hp = self.Hyperparameters.from_kwargs(kwargs, owner=self.registered_name)
        for name, value in self.hp.to_config().items():
            setattr(self, name, value)
        self.spec_config = dict(spec)
        self.encoder = FeatureEncoder(self.spec_config, embedding, first_order=self.wants_first_order_table(),
                                      dtype=self.dtype_policy, name="encoder")
        self.covariance, self.gate, self._prior_index = crocodile.make_layers(
            self.encoder.embedding, self.encoder.token_names, dtype=self.dtype_policy)
        self.setup()

    @property
    def num_sets(self) -> int:
        return self.encoder.num_sets

    def setup(self) -> None:
        raise NotImplementedError

    @classmethod
    def unsupported_reason(cls, spec) -> str | None:
        """Why this backbone cannot be built on ``spec`` (a ``FeatureSpec``), or None when it can; e.g. DIN
        on a spec without a sequence input. Benchmarks that run every registered backbone on one dataset
        skip (and name) the backbones that give a reason (:func:`zoo.registry.backbones_for`)."""
        return None

    def wants_first_order_table(self) -> bool:
        """True to append the free first-order logit ``<w, x>`` (``FeatureEncoder.first_order_logit``)
        as the last column of ``z``; read once, before ``setup``, from the hyper-parameters. Default False."""
        return False

    def make_interaction(self, index: int) -> Any:
        raise NotImplementedError

    def interact(self, module: Any, tokens: list, dense, training=None):
        raise NotImplementedError

    def over_arch(self, z, training=None):
        return z

    def _interact(self, module, tokens, dense, features, training=None, sequence_rows=None):
        extra = {}
        if self.interact_reads_features:
            extra["features"] = features
        if self.interact_reads_sequence_rows:
            extra["sequence_rows"] = sequence_rows
        return self.interact(module, tokens, dense, training=training, **extra)

    def _encode(self, features):
        """``(token_sets, dense, row_sets)``; ``row_sets`` only when the backbone reads sequence rows."""
        if self.interact_reads_sequence_rows:
            return self.encoder(features, return_sequence_rows=True)
        token_sets, dense = self.encoder(features)
        return token_sets, dense, [None] * self.num_sets

    def build_interactions(self) -> None:
        """``setup`` calls this once the attributes ``make_interaction`` reads are set."""
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
            token_sets, dense, row_sets = compat.compute_output_spec(self._encode, symbolic)
            width = compat.compute_output_spec(
                lambda t, d, f, r: self._interact(self.interactions[0], t, d, f, sequence_rows=r), token_sets[0],
                dense, symbolic, row_sets[0]).shape[-1]
            self.set_projections = [
                keras.layers.Dense(width, activation="relu", dtype=self.dtype_policy, name=f"set_projection_{m}")
                for m in range(self.num_sets)
            ]
        compat.compute_output_spec(self.call, symbolic)

    def compute_interaction(self, features, training=None):
        """The interaction output ``z`` (before the over-arch); with M sets, ``mean_m P_m(I_m(E_m(x)))``;
        with a first-order table, ``concat(z, <w, x>)``."""
        z = self._interaction(features, training=training)
        if self.encoder.first_order:
            z = ops.concatenate([z, ops.cast(self.encoder.first_order_logit(features), z.dtype)], axis=-1)
        return z

    def _interaction(self, features, training=None):
        if self.num_sets == 1:
            token_sets, dense, row_sets = self._encode(features)
            return self._interact(self.interactions[0], token_sets[0], dense, features, training=training,
                                  sequence_rows=row_sets[0])
        token_sets, projected = self.expert_outputs(features, training=training)
        if self.covariance is not None and training:  # training steps only: never in the served graph
            target = self.encoder.embedding["covariance_loss"]["target"]
            self.covariance(crocodile.covariance_inputs(target, projected, token_sets), training=training)
        if self.gate is not None:
            return self.gate([crocodile.prior(token_sets, self._prior_index), *projected], training=training)
        return ops.mean(ops.stack(projected, axis=0), axis=0)

    def expert_outputs(self, features, training=None):
        """``(token_sets, [P_m(I_m(E_m(x))) for m in 1..M])``: each set's embeddings and expert output ``(B, D)``.

        Only for ``M >= 2`` sets (with one set there is no projection).
        """
        token_sets, dense, row_sets = self._encode(features)
        projected = [
            projection(self._interact(module, tokens, dense, features, training=training, sequence_rows=rows))
            for module, projection, tokens, rows in zip(self.interactions, self.set_projections, token_sets, row_sets)
        ]
        return token_sets, projected

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
        """Every hyper-parameter's value (``Hyperparameters`` fields)."""
        return self.hp.to_config()

    def get_config(self):
        config = super().get_config()
        config.update({"spec": self.spec_config, "embedding": self.encoder.embedding, **self.hparams()})
        return config
