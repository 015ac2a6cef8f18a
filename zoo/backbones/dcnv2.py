"""DCNv2 (Wang et al., 2021): explicit cross layers plus a deep network.

Cross layer (``keras_rs.layers.FeatureCross``; low-rank ``W_l = U_l V_l^T`` when ``cross_rank`` is set)::

    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l

``x_0`` is the concatenation of every field embedding and the dense features.

* ``structure="stacked"``: ``h = MLP(x_L)`` (cross network, then the deep network; with empty
  ``dnn_units`` it is the cross network alone, ``h = x_L``).
* ``structure="parallel"``: ``h = concat(x_L, MLP(x_0))``.

With the ``multi`` embedding option each embedding set gets its own cross network (and, in the
parallel structure, its own deep network); the stacked deep network is the shared over-arch.

Defaults follow FuxiCTR's DCNv2 (3 cross layers, full rank) with a 3-layer deep network.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import keras_rs
from keras import ops

from layers import MLP
from zoo.backbone import Backbone, HyperParameters
from zoo.backbones._common import activation, choice, count, norm, optional_count, rate, units
from zoo.registry import register_backbone

STRUCTURES = ("stacked", "parallel")


@dataclasses.dataclass(frozen=True)
class DCNv2HyperParameters(HyperParameters):
    """DCNv2's hyper-parameters.

    Attributes:
      num_cross_layers: number of cross layers ``L`` (>= 1).
      cross_rank: rank of the low-rank cross ``W = U V^T``; None for full rank.
      structure: ``"stacked"`` or ``"parallel"``.
      dnn_units: widths of the deep network (the parallel structure needs one).
      activation: deep network activation.
      dropout: deep network dropout.
      norm: deep network normalization (None, ``"batch"``, ``"layer"``).
    """

    RENAMED = {"projection_dim": "cross_rank", "deep_units": "dnn_units"}

    num_cross_layers: int = count(3)
    cross_rank: int | None = optional_count(None)
    structure: str = choice("stacked", STRUCTURES)
    dnn_units: Sequence[int] = units((256, 128, 64))
    activation: str = activation("relu")
    dropout: float = rate(0.0)
    norm: str | None = norm(None)

    def validate(self):
        if self.structure == "parallel" and not self.dnn_units:
            raise ValueError("dnn_units: the parallel structure needs a deep network")


@register_backbone("dcnv2")
class DCNv2(Backbone):
    """DCNv2 backbone producing the shared representation ``h`` (hyper-parameters:
    :class:`DCNv2HyperParameters`)."""

    Hyperparameters = DCNv2HyperParameters

    def setup(self):
        self.build_interactions()
        # Stacked: the deep network is the shared over-arch on top of the cross network(s).
        self.deep = (self._mlp("deep") if self.structure == "stacked" and self.dnn_units else None)

    def _mlp(self, name):
        return MLP(self.dnn_units, activation=self.activation, dropout=self.dropout, norm=self.norm,
                   dtype=self.dtype_policy, name=name)

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        cross = [
            keras_rs.layers.FeatureCross(projection_dim=self.cross_rank, dtype=self.dtype_policy,
                                         name=f"cross_{i}{suffix}")
            for i in range(self.num_cross_layers)
        ]
        return {"cross": cross, "deep": self._mlp(f"parallel_deep{suffix}") if self.structure == "parallel" else None}

    def interact(self, module, tokens, dense, training=None):
        x0 = ops.concatenate(tokens + ([dense] if dense is not None else []), axis=-1)
        x = x0
        for layer in module["cross"]:
            x = layer(x0, x)
        if module["deep"] is not None:
            return ops.concatenate([x, module["deep"](x0, training=training)], axis=-1)
        return x

    def over_arch(self, z, training=None):
        return self.deep(z, training=training) if self.deep is not None else z
