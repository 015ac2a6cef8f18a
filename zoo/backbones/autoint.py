"""AutoInt+ (Song et al., CIKM 2019): multi-head self-attention across fields plus a parallel DNN.

Each interacting layer (``layers.FieldSelfAttention``), for field ``m`` and head ``h``::

    alpha^h_{m,j} = softmax_j( <W_Q^h e_m, W_K^h e_j> )          (optional 1/sqrt(d_h) scaling)
    out_m         = ReLU( [sum_j alpha^h_{m,j} W_V^h e_j]_h + W_res e_m )

stacked ``num_attention_layers`` times. AutoInt's logit is ``w^T flatten(out) + b``; AutoInt+ adds a
DNN logit over the concatenated embeddings. The backbone returns

    h = concat(flatten(out_L), DNN(flatten(E)))        (width n * num_heads * attention_dim + dnn_units[-1])

so the primary ``Dense(1)`` head on ``h`` is exactly the AutoInt+ sum of the two logits (its bias is
the shared bias). With ``dnn_units=[]`` it is plain AutoInt (``h = flatten(out_L)``).

* **Dense features** become field tokens ``t_k = x_k v_k`` (a learned ``d``-vector per dense
  feature times its value, FuxiCTR's numeric embedding) appended after the id fields, so they take
  part in the attention and feed the DNN.
* Every id feature must share one embedding width; mixed widths raise ValueError naming
  ``embedding_dim``.

With the ``multi`` embedding option each set has its own dense tokens, attention stack and DNN; the
over-arch is the identity.

Defaults follow FuxiCTR's AutoInt+: 2 attention layers, 1 head, attention_dim 8, residual on,
scaling off, no layer norm, DNN [64, 64, 64] (the paper: 3 layers, 2 heads, attention size 32).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from keras import ops

from layers import MLP, FieldSelfAttention
from zoo.backbone import Backbone, HyperParameters
from zoo.backbones._common import (activation, common_field_width, count, dense_token_layer, field_matrix, flag,
                                   flatten_fields, norm, rate, units)
from zoo.registry import register_backbone


@dataclasses.dataclass(frozen=True)
class AutoIntHyperParameters(HyperParameters):
    """AutoInt(+)'s hyper-parameters.

    Attributes:
      num_attention_layers: number of stacked interacting layers (>= 1).
      num_heads: attention heads per layer.
      attention_dim: width of each head; a layer outputs ``num_heads * attention_dim`` per field.
      use_residual: residual connection in every interacting layer (projected when widths differ).
      use_scale: scale the attention logits by ``1/sqrt(attention_dim)``.
      use_layer_norm: LayerNormalization after every interacting layer.
      dnn_units: widths of the parallel DNN (AutoInt+); ``[]`` for plain AutoInt.
      activation: DNN activation.
      dropout: DNN dropout.
      norm: DNN normalization (None, ``"batch"``, ``"layer"``).
    """

    num_attention_layers: int = count(2)
    num_heads: int = count(1)
    attention_dim: int = count(8)
    use_residual: bool = flag(True)
    use_scale: bool = flag(False)
    use_layer_norm: bool = flag(False)
    dnn_units: Sequence[int] = units((64, 64, 64))
    activation: str = activation("relu")
    dropout: float = rate(0.0)
    norm: str | None = norm(None)


@register_backbone("autoint")
class AutoInt(Backbone):
    """AutoInt(+) backbone producing ``h = concat(flatten(self-attention output), DNN(flatten(E)))``
    (hyper-parameters: :class:`AutoIntHyperParameters`; one embedding width for every id input)."""

    Hyperparameters = AutoIntHyperParameters

    def setup(self):
        self.field_dim = common_field_width(self)
        self.build_interactions()

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        attention = [
            FieldSelfAttention(num_heads=self.num_heads, attention_dim=self.attention_dim,
                               use_residual=self.use_residual, use_scale=self.use_scale,
                               use_layer_norm=self.use_layer_norm, dtype=self.dtype_policy,
                               name=f"attention_{i}{suffix}")
            for i in range(self.num_attention_layers)
        ]
        dnn = (MLP(self.dnn_units, activation=self.activation, dropout=self.dropout, norm=self.norm,
                   dtype=self.dtype_policy, name=f"dnn{suffix}") if self.dnn_units else None)
        return {"dense_tokens": dense_token_layer(self, self.field_dim, f"dense_tokens{suffix}"),
                "attention": attention, "dnn": dnn}

    def interact(self, module, tokens, dense, training=None):
        fields = field_matrix(tokens, dense, module["dense_tokens"])
        x = fields
        for layer in module["attention"]:
            x = layer(x)
        attended = flatten_fields(x)                                # (B, n * H * d_h)
        if module["dnn"] is None:
            return attended
        return ops.concatenate([attended, module["dnn"](flatten_fields(fields), training=training)], axis=-1)
