"""DLRM (Naumov et al., 2019): bottom MLP on the dense features, pairwise dot products, top MLP.

With dense features ``x`` and id-field embeddings ``e_1..e_m`` (one width ``d``)::

    z = BottomMLP(x)                                  (ReLU layers bottom_units + [d], so z in R^d)
    I = { <u_i, u_j> : i > j },  u = (z, e_1, ..., e_m)   (keras_rs.layers.DotInteraction: strict
                                                           lower triangle, (m+1)m/2 values; the
                                                           diagonal too with self_interaction)
    h = TopMLP(concat(z, I))

``interaction="cat"`` is the reference code's other interaction operator
(``--arch-interaction-op cat``): ``I = concat(z, e_1, ..., e_m)``, so the top MLP sees the vectors
themselves (on data without dense features this is a plain DNN over the embeddings, the DLRM of
the BARS Frappe_x1 benchmark).

The paper's top MLP ends in a 1-unit sigmoid layer; here that last layer is the primary
``Dense(1)`` head on ``h``, so ``h`` is the top MLP's last hidden layer (with ``top_units=[]``,
``h = concat(z, I)``). The bottom MLP always ends in ``d`` ReLU units (as in the reference code, the
bottom MLP is ReLU throughout); ``bottom_units`` lists the hidden widths before it. ``dropout`` and
``norm`` apply to the top MLP only. Without dense features in the spec there is no ``z``: the
interaction runs over the embeddings alone and ``h = TopMLP(I)``.

Every id feature must share one embedding width (the dot products need it); mixed widths raise
ValueError naming ``embedding_dim``.

With the ``multi`` embedding option each set has its own bottom MLP and dot interaction (``z`` is the
dense features' vector in that set); the top MLP is the shared over-arch.

Defaults scale the original Criteo-Kaggle sizes (embedding 16, bottom 512-256-64-16, top
512-256-1; built for 13 dense features and 26 tables) to the zoo's datasets (one to three dense
features, a handful of fields): bottom ``[64]`` then ``d`` (64-16 for ``d = 16``), top ``[256, 128]``
then the primary head.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import keras_rs
from keras import ops

from layers import MLP
from zoo.backbone import Backbone, HyperParameters
from zoo.backbones._common import activation, choice, common_field_width, flag, norm, rate, units
from zoo.registry import register_backbone

INTERACTIONS = ("dot", "cat")


@dataclasses.dataclass(frozen=True)
class DLRMHyperParameters(HyperParameters):
    """DLRM's hyper-parameters.

    Attributes:
      bottom_units: hidden widths of the bottom MLP before its final ``d``-wide layer (may be empty).
      top_units: widths of the top MLP (its last width is the width of ``h``); ``[]`` for none.
      activation: activation of both MLPs.
      dropout: top MLP dropout.
      norm: top MLP normalization (None, ``"batch"``, ``"layer"``).
      self_interaction: also keep the diagonal ``<u_i, u_i>`` of the interaction matrix (``dot`` only).
      interaction: ``"dot"`` (pairwise dot products, the default) or ``"cat"`` (concatenation).
    """

    bottom_units: Sequence[int] = units((64,))
    top_units: Sequence[int] = units((256, 128))
    activation: str = activation("relu")
    dropout: float = rate(0.0)
    norm: str | None = norm(None)
    self_interaction: bool = flag(False)
    interaction: str = choice("dot", INTERACTIONS)

    def validate(self):
        if self.interaction == "cat" and self.self_interaction:
            raise ValueError("self_interaction: only applies to interaction='dot'")


@register_backbone("dlrm")
class DLRM(Backbone):
    """DLRM backbone producing ``h = TopMLP(concat(z, DotInteraction(z, e_1..e_m)))`` (hyper-parameters:
    :class:`DLRMHyperParameters`; one embedding width for every id input)."""

    Hyperparameters = DLRMHyperParameters

    def setup(self):
        self.field_dim = common_field_width(self)
        self.has_dense = bool(self.encoder.dense_names)
        num_vectors = len(self.encoder.token_names) + int(self.has_dense)
        if num_vectors < 2 and not self.self_interaction and self.interaction == "dot":
            raise ValueError(f"spec: dlrm needs at least two vectors to interact (id inputs plus the bottom "
                             f"MLP output), got {num_vectors}")
        self.build_interactions()
        self.top = (MLP(self.top_units, activation=self.activation, dropout=self.dropout, norm=self.norm,
                        dtype=self.dtype_policy, name="top_mlp") if self.top_units else None)

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        bottom = (MLP(self.bottom_units + [self.field_dim], activation=self.activation, dtype=self.dtype_policy,
                      name=f"bottom_mlp{suffix}") if self.has_dense else None)
        dot = (keras_rs.layers.DotInteraction(self_interaction=self.self_interaction, dtype=self.dtype_policy,
                                              name=f"dot_interaction{suffix}") if self.interaction == "dot" else None)
        return {"bottom": bottom, "dot": dot}

    def interact(self, module, tokens, dense, training=None):
        vectors = list(tokens)
        if module["bottom"] is not None and dense is not None:
            vectors = [module["bottom"](dense, training=training)] + vectors   # z: (B, d) first
        if module["dot"] is None:                                             # cat: concat(z, e_1..e_m)
            return ops.concatenate(vectors, axis=-1)
        if len(vectors) == len(tokens):                                       # no dense features: no z
            return module["dot"](vectors)
        return ops.concatenate([vectors[0], module["dot"](vectors)], axis=-1)

    def over_arch(self, z, training=None):
        return self.top(z, training=training) if self.top is not None else z
