"""DCNv2 (Wang et al., 2021): explicit cross layers plus a deep network.

Cross layer (``keras_rs.layers.FeatureCross``; low-rank when ``projection_dim`` is set)::

    x_{l+1} = x_0 * (W_l x_l + b_l) + x_l

``x_0`` is the concatenation of every field embedding and the dense features.

* ``structure="stacked"``: ``h = MLP(x_L)`` (cross network, then the deep network; with empty
  ``deep_units`` it is the cross network alone, ``h = x_L``).
* ``structure="parallel"``: ``h = concat(x_L, MLP(x_0))``.

With the ``multi`` embedding option each embedding set gets its own cross network (and, in the
parallel structure, its own deep network); the stacked deep network is the shared over-arch.

Defaults follow FuxiCTR's DCNv2 (3 cross layers, full rank) with a 3-layer deep network.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras_rs
from keras import ops

from layers import MLP
from zoo.registry import Backbone, register_backbone

_STRUCTURES = ("stacked", "parallel")


@register_backbone("dcnv2")
class DCNv2(Backbone):
    """DCNv2 backbone producing the shared representation ``h``.

    Args:
      spec: resolved feature spec dict.
      num_cross_layers: number of cross layers ``L`` (>= 1).
      projection_dim: rank of the low-rank cross ``W = U V^T``; None for full rank.
      structure: ``"stacked"`` or ``"parallel"``.
      deep_units: widths of the deep network.
      activation: deep network activation.
      dropout: deep network dropout.
      norm: deep network normalization (None, ``"batch"``, ``"layer"``).
      embedding: embedding options (``zoo.encoder.embedding_options``): plain, mlet or multi.
    """

    def __init__(self, spec: Mapping[str, Any], num_cross_layers: int = 3, projection_dim: int | None = None,
                 structure: str = "stacked", deep_units: Sequence[int] = (256, 128, 64),
                 activation: str = "relu", dropout: float = 0.0, norm: str | None = None, **kwargs):
        super().__init__(spec, **kwargs)
        if int(num_cross_layers) < 1:
            raise ValueError(f"num_cross_layers: must be >= 1, got {num_cross_layers}")
        if structure not in _STRUCTURES:
            raise ValueError(f"structure: must be one of {_STRUCTURES}, got {structure!r}")
        if structure == "parallel" and not deep_units:
            raise ValueError("deep_units: the parallel structure needs a deep network")
        self.num_cross_layers = int(num_cross_layers)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.structure = structure
        self.deep_units = [int(u) for u in deep_units]
        self.activation = activation
        self.dropout = float(dropout)
        self.norm = norm
        self.build_interactions()
        # Stacked: the deep network is the shared over-arch on top of the cross network(s).
        self.deep = (self._mlp("deep") if structure == "stacked" and self.deep_units else None)

    def _mlp(self, name):
        return MLP(self.deep_units, activation=self.activation, dropout=self.dropout, norm=self.norm,
                   dtype=self.dtype_policy, name=name)

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        cross = [
            keras_rs.layers.FeatureCross(projection_dim=self.projection_dim, dtype=self.dtype_policy,
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

    def hparams(self):
        return {
            "num_cross_layers": self.num_cross_layers, "projection_dim": self.projection_dim,
            "structure": self.structure, "deep_units": self.deep_units, "activation": self.activation,
            "dropout": self.dropout, "norm": self.norm,
        }
