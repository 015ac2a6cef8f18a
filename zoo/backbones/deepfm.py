"""DeepFM (Guo et al., IJCAI 2017): a factorization machine and a DNN sharing the field embeddings.

Paper form, with field embeddings ``e_1..e_n`` (one width ``d``)::

    y_hat = sigmoid(y_FM + y_DNN)
    y_FM  = <w, x> + sum_{i<j} <e_i, e_j>            (first order + second order, ``layers.FM``)
    y_DNN = w_out^T a_L + b_out,   a_L = DNN(concat(e_1..e_n))

The backbone returns ``h = concat(y_FM, a_L)`` (width ``1 + dnn_units[-1]``, plus one column for
the ``table`` first order), so the primary ``Dense(1)`` head computes ``c * y_FM + w_out^T a_L + b``:
the paper's sum of logits, with the FM logit carrying one learned scale ``c`` (the paper fixes
``c = 1``) and the head's bias as the global bias ``w_0``. With ``dnn_units=[]`` it is the FM alone.

* **First order** (``first_order``, :func:`zoo.backbones._common.first_order`): ``table``
  (default, as FuxiCTR's FactorizationMachine): a free weight per id and per dense feature,
  ``<w, x> = sum_f w_f[x_f] + sum_k w_k x_k``, appended to ``h`` as its last column (so
  ``h = concat(y_FM2, a_L, <w, x>)`` and the head learns the first order's scale too); ``tied``:
  ``<w, x> = Dense(1, no bias)(flatten(E))`` added to ``y_FM``, i.e. the weight of id ``v`` in field
  ``i`` is ``<u_i, e_v>``, tied to the shared embedding (no extra table); for a dense feature it is
  ``<u_k, v_k> x_k``; ``none``: no first-order term.
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
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import keras
from keras import ops

from layers import FM, MLP
from zoo.backbone import Backbone, HyperParameters
from zoo.backbones._common import (activation, common_field_width, dense_token_layer, field_matrix,
                                   flatten_fields, norm, rate, units)
from zoo.backbones._common import first_order as first_order_field
from zoo.registry import register_backbone


@dataclasses.dataclass(frozen=True)
class DeepFMHyperParameters(HyperParameters):
    """DeepFM's hyper-parameters.

    Attributes:
      dnn_units: widths of the DNN; ``[]`` for the FM alone.
      activation: DNN activation.
      dropout: DNN dropout.
      norm: DNN normalization (None, ``"batch"``, ``"layer"``).
      first_order: the first-order term ``<w, x>``: ``table`` (a free weight per id, appended to
        ``h``), ``tied`` (tied to the embeddings, added to the FM logit) or ``none``.
    """

    RENAMED = {"use_first_order": "first_order"}

    dnn_units: Sequence[int] = units((400, 400, 400))
    activation: str = activation("relu")
    dropout: float = rate(0.5)
    norm: str | None = norm(None)
    first_order: str = first_order_field("table")


@register_backbone("deepfm")
class DeepFM(Backbone):
    """DeepFM backbone producing ``h = concat(y_FM, DNN(flatten(E)))``, then ``<w, x>`` with the
    ``table`` first order (hyper-parameters:
    :class:`DeepFMHyperParameters`; one embedding width for every id input)."""

    Hyperparameters = DeepFMHyperParameters

    def setup(self):
        self.field_dim = common_field_width(self)
        self.build_interactions()

    def wants_first_order_table(self):
        return self.first_order == "table"

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        dnn = (MLP(self.dnn_units, activation=self.activation, dropout=self.dropout, norm=self.norm,
                   dtype=self.dtype_policy, name=f"dnn{suffix}") if self.dnn_units else None)
        first_order = (keras.layers.Dense(1, use_bias=False, dtype=self.dtype_policy, name=f"first_order{suffix}")
                       if self.first_order == "tied" else None)
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
