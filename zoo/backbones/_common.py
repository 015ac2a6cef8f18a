"""The backbone toolkit: hyper-parameter field constructors and the helpers several backbones share.

Every backbone module imports what it shares from here, never from a sibling backbone.

* Field constructors for :class:`zoo.backbone.HyperParameters` dataclasses: :func:`units`,
  :func:`count`, :func:`optional_count`, :func:`rate`, :func:`choice`, :func:`norm`, :func:`flag`,
  :func:`activation`, :func:`first_order`, :func:`feature_names`. Each returns a
  ``dataclasses.field`` with the default and the check (the checks are :mod:`layers.validation`'s,
  so layers and backbones reject bad values alike).
* Field tokens (DeepFM, AFM, AutoInt+): :func:`common_field_width`, :func:`dense_token_layer`,
  :func:`field_matrix`, :func:`flatten_fields`.
* Token stacks (DHEN, Wukong): :class:`TokenStackHyperParameters`, :func:`setup_token_stack`,
  :func:`dense_token_projection`, :func:`stack_tokens`, :func:`head_or_identity`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import keras
from keras import ops

from layers import MLP, validation
from zoo.backbone import Backbone, HyperParameters


# ---------------------------------------------------------------------------------------------------
# Hyper-parameter fields
# ---------------------------------------------------------------------------------------------------
def _field(default: Any, check) -> Any:
    return dataclasses.field(default=default, metadata={"check": check})


def units(default: Sequence[int] = (), allow_empty: bool = True) -> Any:
    """A list of positive layer widths (``allow_empty=False``: at least one)."""
    return _field(tuple(default), lambda value, name: validation.widths(value, name, allow_empty=allow_empty))


def count(default: int, minimum: int = 1) -> Any:
    """An integer ``>= minimum`` (a layer, head, token or expert count)."""
    return _field(default, lambda value, name: validation.integer(value, name, minimum))


def optional_count(default: int | None, minimum: int = 1) -> Any:
    """None or an integer ``>= minimum`` (e.g. a low rank; None for full rank)."""
    return _field(default, lambda value, name: validation.optional_integer(value, name, minimum))


def rate(default: float = 0.0) -> Any:
    """A number in ``[0, 1)`` (a dropout rate)."""
    return _field(default, validation.rate)


def choice(default: Any, choices: Sequence[Any]) -> Any:
    """One of ``choices``."""
    return _field(default, lambda value, name: validation.choice(value, name, choices))


def norm(default: str | None = None) -> Any:
    """A normalization: None, ``"batch"`` or ``"layer"``."""
    return _field(default, validation.norm)


FIRST_ORDER = ("table", "tied", "none")


def first_order(default: str = "table") -> Any:
    """The first-order term ``<w, x>`` of the FM-family backbones, one of :data:`FIRST_ORDER`:
    ``table``, a free weight per id (``FeatureEncoder(first_order=True)``, FuxiCTR's LR layer) and per
    dense feature, appended to ``z``; ``tied``, the weight of id ``v`` in field ``i`` tied to its
    embedding as ``<u_i, e_v>`` (``Dense(1, no bias)`` on the flattened fields, no extra table); or ``none``."""
    return choice(default, FIRST_ORDER)


def flag(default: bool) -> Any:
    """A bool."""
    return _field(default, validation.flag)


def _feature_names(value: Any, name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name}: must be a list of feature names, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name}: lists a feature twice: {list(value)}")
    return list(value)


def feature_names(default: Sequence[str] = ()) -> Any:
    """A list of distinct feature names (checked against the spec by the backbone's ``setup``)."""
    return _field(tuple(default), _feature_names)


def _activation(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be the name of a Keras activation, got {value!r}")
    try:
        keras.activations.get(value)
    except ValueError:
        raise ValueError(f"{name}: unknown Keras activation {value!r}") from None
    return value


def activation(default: str = "relu") -> Any:
    """The name of a Keras activation (``keras.activations.get`` knows it)."""
    return _field(default, _activation)


# ---------------------------------------------------------------------------------------------------
# Field tokens: one (B, d) row per id input, dense features as learned d-vectors times their value
# ---------------------------------------------------------------------------------------------------
def common_field_width(backbone: Backbone) -> int:
    """The one embedding width ``d`` of every id (categorical or sequence) input of the backbone.

    Raises ValueError naming ``embedding_dim`` if the widths differ, or naming ``spec`` if the spec
    has no id input.
    """
    spec = backbone.encoder.spec
    widths = {name: spec.tables[spec.feature(name).table].embedding_dim for name in backbone.encoder.token_names}
    if not widths:
        raise ValueError(f"spec: {backbone.registered_name} needs at least one categorical or sequence input")
    if len(set(widths.values())) > 1:
        raise ValueError(f"embedding_dim: {backbone.registered_name} stacks the field embeddings, so every "
                         f"categorical and sequence input needs one embedding width; got {widths}")
    return next(iter(widths.values()))


def dense_token_layer(backbone: Backbone, width: int, name: str):
    """``x (B, m) -> (B, m, width)``, ``t_k = x_k v_k``: one learned vector per dense feature (None if m = 0)."""
    m = len(backbone.encoder.dense_names)
    if not m:
        return None
    return keras.layers.EinsumDense("bm,md->bmd", output_shape=(m, width), bias_axes=None,
                                    dtype=backbone.dtype_policy, name=name)


def field_matrix(tokens: list, dense, dense_tokens):
    """``E (B, n, d)``: the id-field embeddings in spec order, then the dense-feature tokens."""
    fields = ops.stack(tokens, axis=1)
    if dense_tokens is not None and dense is not None:
        fields = ops.concatenate([fields, ops.cast(dense_tokens(dense), fields.dtype)], axis=1)
    return fields


def flatten_fields(fields):
    """``(B, n, d) -> (B, n * d)`` with static ``n`` and ``d``."""
    return ops.reshape(fields, (-1, int(fields.shape[1]) * int(fields.shape[2])))


# ---------------------------------------------------------------------------------------------------
# Token stacks: X_0 (B, n, d) = id embeddings + projected dense tokens, layers keeping (n, d), a head
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TokenStackHyperParameters(HyperParameters):
    """The token and head hyper-parameters DHEN and Wukong share.

    Attributes:
      num_dense_tokens: rows made from the dense features (>= 1; unused without dense features).
      dense_units: hidden widths of the dense-token MLP (empty: a linear projection).
      head_units: widths of the head MLP producing ``h`` (empty: ``h = flatten(X_L)``).
      activation: activation of the MLPs.
      dropout: dropout of the head MLP.
      norm: normalization of the head MLP (None, ``"batch"``, ``"layer"``).
    """

    num_dense_tokens: int = count(1)
    dense_units: Sequence[int] = units(())
    head_units: Sequence[int] = units((512, 256))
    activation: str = activation("relu")
    dropout: float = rate(0.0)
    norm: str | None = norm(None)


def setup_token_stack(backbone: Backbone) -> None:
    """The shared part of DHEN's and Wukong's ``setup``: the common token width ``embedding_dim``,
    the token count ``num_tokens``, the per-set interactions (the caller's own attributes must be
    set first) and the optional head MLP ``head``."""
    backbone.embedding_dim = common_field_width(backbone)
    backbone.num_tokens = len(backbone.encoder.token_names) + (
        backbone.num_dense_tokens if backbone.encoder.dense_names else 0)
    backbone.build_interactions()
    backbone.head = (MLP(backbone.head_units, activation=backbone.activation, dropout=backbone.dropout,
                         norm=backbone.norm, dtype=backbone.dtype_policy, name="head")
                     if backbone.head_units else None)


def head_or_identity(backbone: Backbone, z, training=None):
    """``MLP_head(z)``, or ``z`` when the backbone has no head."""
    return backbone.head(z, training=training) if backbone.head is not None else z


def dense_token_projection(backbone: Backbone, num_dense_tokens: int, dense_units: Sequence[int], width: int,
                           suffix: str) -> list | None:
    """The layers mapping the dense features ``(B, m)`` to ``num_dense_tokens`` rows of width ``width``.

    ``[MLP(dense_units)?, Dense(num_dense_tokens * width)]``, or None when the spec has no dense input.
    """
    if not backbone.encoder.dense_names:
        return None
    policy = backbone.dtype_policy
    stack = [MLP(dense_units, dtype=policy, name=f"dense_mlp{suffix}")] if dense_units else []
    return stack + [keras.layers.Dense(num_dense_tokens * width, dtype=policy, name=f"dense_tokens{suffix}")]


def stack_tokens(tokens: list, dense, projection: list | None, num_dense_tokens: int, width: int, training=None):
    """``X_0`` of shape ``(B, n, width)``: the id embeddings, then the projected dense tokens."""
    rows = [ops.stack(tokens, axis=1)]
    if projection is not None and dense is not None:
        t = dense
        for layer in projection:
            t = layer(t, training=training) if isinstance(layer, MLP) else layer(t)
        rows.append(ops.reshape(t, (-1, num_dense_tokens, width)))
    return ops.concatenate(rows, axis=1) if len(rows) > 1 else rows[0]
