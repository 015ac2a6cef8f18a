"""AFM (Xiao et al., IJCAI 2017): attention-pooled pairwise interactions (``layers.AFM``).

Paper form, with field embeddings ``e_1..e_n`` (one width ``d``)::

    y_hat = w_0 + <w, x> + p^T sum_{i<j} a_ij (e_i * e_j)
    a_ij  = softmax_{(i,j)}( h^T ReLU(W (e_i * e_j) + b) )

The backbone returns ``h = concat(v, <w, x>)`` with the pooled attention vector
``v = sum_{i<j} a_ij (e_i * e_j)`` (``layers.AFM(reduce_sum=False)``, width ``d``) and the
first-order scalar (width ``d + 1``; ``d`` with ``first_order: none``). The primary ``Dense(1)``
head on ``h`` is then exactly the paper's logit: its kernel on ``v`` is ``p``, its bias is ``w_0``,
and its weight on the first-order column a (redundant) scale of ``<w, x>``.

* **First order** (``first_order``, :func:`zoo.backbones._common.first_order`): ``table``
  (default; the paper's and FuxiCTR's free weight ``w_v`` per id, plus a weight per dense feature),
  ``tied`` (``<w, x> = Dense(1, no bias)(flatten(E))``: the weight of id ``v`` in field ``i`` tied to
  its embedding as ``<u_i, e_v>``, no extra table) or ``none``. On Frappe_x1 the tied form cost
  0.035 test AUC against BARS' AFM (bench/results/quality_frappe.md).
* **Dense features** become field tokens ``t_k = x_k v_k`` (a learned ``d``-vector per dense
  feature times its value) appended after the id fields, so they take part in the pairs.
* Every id feature must share one embedding width; mixed widths raise ValueError naming
  ``embedding_dim``. AFM needs at least two fields (id inputs plus dense features).

With the ``multi`` embedding option each set has its own dense tokens, AFM layer and tied
first-order weights (the ``table`` weights are one table, appended after the sets' mean); the
over-arch is the identity.

Defaults follow FuxiCTR's AFM: attention_dim 10, no attention or pooled dropout (FuxiCTR's
``attention_dropout: [0, 0]``; embedding width from the spec; FuxiCTR uses 10).
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from layers import AFM as AFMLayer
from zoo.backbone import Backbone, HyperParameters
from zoo.backbones._common import common_field_width, count, dense_token_layer, field_matrix, flatten_fields, rate
from zoo.backbones._common import first_order as first_order_field
from zoo.registry import register_backbone


@dataclasses.dataclass(frozen=True)
class AFMHyperParameters(HyperParameters):
    """AFM's hyper-parameters.

    Attributes:
      attention_dim: width ``A`` of the attention network ``W``.
      attention_dropout: dropout on the attention weights ``a`` when training.
      pooled_dropout: dropout on the pooled vector ``v`` when training (FuxiCTR's second AFM dropout).
      first_order: the first-order scalar ``<w, x>`` appended to ``h``: ``table`` (a free weight per
        id), ``tied`` (tied to the embeddings) or ``none``.
    """

    RENAMED = {"use_first_order": "first_order"}

    attention_dim: int = count(10)
    attention_dropout: float = rate(0.0)
    pooled_dropout: float = rate(0.0)
    first_order: str = first_order_field("table")


@register_backbone("afm")
class AFM(Backbone):
    """AFM backbone producing ``h = concat(sum_{i<j} a_ij (e_i * e_j), <w, x>)`` (hyper-parameters:
    :class:`AFMHyperParameters`; one embedding width for every id input)."""

    Hyperparameters = AFMHyperParameters

    def setup(self):
        self.field_dim = common_field_width(self)
        num_fields = len(self.encoder.token_names) + len(self.encoder.dense_names)
        if num_fields < 2:
            raise ValueError(f"spec: afm needs at least two fields (id inputs plus dense features), got {num_fields}")
        self.build_interactions()

    def wants_first_order_table(self):
        return self.first_order == "table"

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        first_order = (keras.layers.Dense(1, use_bias=False, dtype=self.dtype_policy, name=f"first_order{suffix}")
                       if self.first_order == "tied" else None)
        return {
            "dense_tokens": dense_token_layer(self, self.field_dim, f"dense_tokens{suffix}"),
            "afm": AFMLayer(attention_dim=self.attention_dim, reduce_sum=False,
                            attention_dropout=self.attention_dropout, pooled_dropout=self.pooled_dropout,
                            dtype=self.dtype_policy, name=f"afm{suffix}"),
            "first_order": first_order,
        }

    def interact(self, module, tokens, dense, training=None):
        fields = field_matrix(tokens, dense, module["dense_tokens"])
        pooled = module["afm"](fields, training=training)           # (B, d)
        if module["first_order"] is None:
            return pooled
        return ops.concatenate([pooled, module["first_order"](flatten_fields(fields))], axis=-1)
