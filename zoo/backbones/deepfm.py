"""DeepFM (Guo et al., IJCAI 2017): a factorization machine and a DNN sharing the field embeddings.

Paper form, with field embeddings ``e_1..e_n`` (one width ``d``)::

    y_hat = sigmoid(y_FM + y_DNN)
    y_FM  = <w, x> + sum_{i<j} <e_i, e_j>            (first order + second order, ``layers.FM``)
    y_DNN = w_out^T a_L + b_out,   a_L = DNN(concat(e_1..e_n))

The backbone returns ``h = concat(y_FM, a_L)`` (width ``1 + dnn_units[-1]``), so the primary
``Dense(1)`` head computes ``c * y_FM + w_out^T a_L + b``: the paper's sum of logits, with the FM
logit carrying one learned scale ``c`` (the paper fixes ``c = 1``) and the head's bias as the global
bias ``w_0``. With ``dnn_units=[]`` it is the FM alone (``h = y_FM``).

* **First order** (``use_first_order``): ``<w, x> = Dense(1, no bias)(flatten(E))``, i.e. the
  first-order weight of id ``v`` in field ``i`` is ``<u_i, e_v>``, tied to the shared embedding (no
  extra width-1 table, so every embedding option applies to it unchanged); for a dense feature it
  is ``<u_k, v_k> x_k``, a learned weight times the value.
* **Dense features** become field tokens ``t_k = x_k v_k`` (a learned ``d``-vector ``v_k`` per
  dense feature times its value, FuxiCTR's numeric embedding; one ``EinsumDense("bm,md->bmd")``
  layer), appended after the id fields, so the FM, the first-order term and the DNN all see them.
* Every id feature must share one embedding width (the FM's inner products need it); a spec with
  mixed widths raises ValueError naming ``embedding_dim``.

With the ``multi`` embedding option each set has its own dense tokens, first-order weights, FM and
DNN (the whole model is the per-set interaction; the over-arch is the identity), and the base class
averages the per-set projections.

Defaults follow the paper: DNN 400-400-400 with dropout 0.5 (embedding width from the spec; the
paper used 10).

This module also holds the small helpers the other field-token backbones (AFM, AutoInt, DLRM) share.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras
from keras import ops

from layers import FM, MLP
from zoo.registry import Backbone, register_backbone


# ---------------------------------------------------------------------------------------------------
# Helpers shared by the field-token backbones (deepfm, afm, autoint, dlrm)
# ---------------------------------------------------------------------------------------------------
def shared_field_width(backbone: Backbone, model: str) -> int:
    """The one embedding width of every id (categorical or sequence) input of the backbone's spec.

    Raises ValueError naming ``embedding_dim`` if the widths differ, or naming ``spec`` if the spec
    has no id input.
    """
    spec = backbone.encoder.spec
    widths = {f.name: spec.tables[f.table].embedding_dim for f in spec.inputs if f.kind != "dense"}
    if not widths:
        raise ValueError(f"spec: {model} needs at least one categorical or sequence input")
    if len(set(widths.values())) > 1:
        raise ValueError(f"embedding_dim: {model} needs one embedding width for every categorical and "
                         f"sequence input, got {widths}")
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


def check_units(value, argument: str, allow_empty: bool = True) -> list[int]:
    """A list of positive layer widths; raises ValueError naming ``argument`` otherwise."""
    try:
        units = list(value)
        ok = all(not isinstance(u, bool) and int(u) == u and int(u) > 0 for u in units)
    except (TypeError, ValueError):
        ok = False
    if not ok or (not allow_empty and not units):
        need = "one or more" if not allow_empty else "zero or more"
        raise ValueError(f"{argument}: needs {need} positive integer widths, got {value!r}")
    return [int(u) for u in units]


def check_positive_int(value, argument: str, minimum: int = 1) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{argument}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_rate(value, argument: str) -> float:
    try:
        ok = 0.0 <= float(value) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{argument}: must be in [0, 1), got {value!r}")
    return float(value)


_NORMS = (None, "batch", "layer")


def check_norm(value, argument: str = "norm"):
    if value not in _NORMS:
        raise ValueError(f"{argument}: must be one of {_NORMS}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------
# DeepFM
# ---------------------------------------------------------------------------------------------------
@register_backbone("deepfm")
class DeepFM(Backbone):
    """DeepFM backbone producing ``h = concat(y_FM, DNN(flatten(E)))``.

    Args:
      spec: resolved feature spec dict (one embedding width for every id input).
      dnn_units: widths of the DNN; ``[]`` for the FM alone.
      activation: DNN activation.
      dropout: DNN dropout.
      norm: DNN normalization (None, ``"batch"``, ``"layer"``).
      use_first_order: add the first-order term ``<w, x>`` to the FM logit.
      embedding: embedding options (``zoo.encoder.embedding_options``): plain, mlet or multi.
    """

    def __init__(self, spec: Mapping[str, Any], dnn_units: Sequence[int] = (400, 400, 400),
                 activation: str = "relu", dropout: float = 0.5, norm: str | None = None,
                 use_first_order: bool = True, **kwargs):
        super().__init__(spec, **kwargs)
        self.dnn_units = check_units(dnn_units, "dnn_units")
        self.activation = activation
        self.dropout = check_rate(dropout, "dropout")
        self.norm = check_norm(norm)
        self.use_first_order = bool(use_first_order)
        self.field_dim = shared_field_width(self, "deepfm")
        self.build_interactions()

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        dnn = (MLP(self.dnn_units, activation=self.activation, dropout=self.dropout, norm=self.norm,
                   dtype=self.dtype_policy, name=f"dnn{suffix}") if self.dnn_units else None)
        first_order = (keras.layers.Dense(1, use_bias=False, dtype=self.dtype_policy, name=f"first_order{suffix}")
                       if self.use_first_order else None)
        return {
            "dense_tokens": dense_token_layer(self, self.field_dim, f"dense_tokens{suffix}"),
            "fm": FM(dtype=self.dtype_policy, name=f"fm{suffix}"),
            "first_order": first_order,
            "dnn": dnn,
        }

    def interact(self, module, tokens, dense, training=None):
        fields = field_matrix(tokens, dense, module["dense_tokens"])
        flat = flatten_fields(fields)
        y_fm = module["fm"](fields)                                   # (B, 1): sum_{i<j} <e_i, e_j>
        if module["first_order"] is not None:
            y_fm = y_fm + module["first_order"](flat)                 # + <w, x>
        if module["dnn"] is None:
            return y_fm
        return ops.concatenate([y_fm, module["dnn"](flat, training=training)], axis=-1)

    def hparams(self):
        return {
            "dnn_units": self.dnn_units, "activation": self.activation, "dropout": self.dropout,
            "norm": self.norm, "use_first_order": self.use_first_order,
        }
