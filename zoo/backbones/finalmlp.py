"""FinalMLP (Mao et al., AAAI 2023, arXiv 2304.00902): two MLP streams with stream-specific feature
selection, fused by a multi-head bilinear aggregation.

With ``x = concat(e_1..e_n, x_dense)`` the flat input (every id embedding, then the dense features)::

    x_1 = 2 sigmoid(Gate_1(c_1)) * x,   x_2 = 2 sigmoid(Gate_2(c_2)) * x     (layers.FeatureGate)
    o_1 = MLP_1(x_1),                   o_2 = MLP_2(x_2)
    s_j = o_{1,j}^T W_j o_{2,j}         for the k heads j (o_1, o_2 split into k chunks; layers.BilinearFusion)
    y   = sigmoid(b + w_1^T o_1 + w_2^T o_2 + sum_j s_j)                    (the paper's fusion)

The backbone returns ``h = concat(o_1, o_2, s_1..s_k)``, so the primary ``Dense(1)`` head computes
``b + w_1^T o_1 + w_2^T o_2 + sum_j c_j s_j``: the paper's fusion with one extra scale ``c_j`` per
head (redundant with ``W_j``; the same function class). C2AL's auxiliary heads on ``h`` thus see both
streams and the bilinear terms.

* **Gate context** ``c_i``: the embeddings of the features in ``fs<i>_context`` (e.g. ``[user]`` for
  stream 1 and ``[item]`` for stream 2: user- and item-specific feature weights), or, with an empty
  list, a learned vector (zeros at start: the gate starts at 1), one global weighting.
  ``fs_context_table: own`` (default, as FuxiCTR) embeds the context features in tables of the gate's
  own (the spec's rows and OOV rows at width ``fs_context_dim``, with the embedding options'
  initializer and ``l2``; sequence inputs mean-pooled); ``shared`` reuses the backbone's embeddings
  (no extra table).
* ``feature_selection=False`` feeds ``x`` to both streams (FuxiCTR's ``use_fs: false``; with no
  gates it is DualMLP plus the bilinear fusion).
* ``num_heads`` must divide the last width of both streams.
* With the ``multi`` embedding option each set has its own gates, context tables, streams and
  fusion; the base class averages the per-set projections.

Defaults are FuxiCTR's ``FinalMLP`` class defaults (streams 64-64-64 with ReLU, no dropout or batch
norm, gates with one hidden layer of 64, no context, one head); the Frappe_x1 BARS configuration is in
``bench/quality_frappe.yaml``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from keras import ops

from layers import MLP, BilinearFusion, FeatureGate, MultiFieldEmbedding
from zoo.backbone import Backbone, HyperParameters
from zoo.backbones._common import (activation, choice, common_field_width, count, feature_names, flag, norm,
                                   optional_count, rate, units)
from zoo.registry import register_backbone

CONTEXT_TABLES = ("own", "shared")


@dataclasses.dataclass(frozen=True)
class FinalMLPHyperParameters(HyperParameters):
    """FinalMLP's hyper-parameters.

    Attributes:
      mlp1_units: widths of stream 1 (at least one).
      mlp1_activation: stream 1's activation.
      mlp1_dropout: stream 1's dropout.
      mlp1_norm: stream 1's normalization (None, ``"batch"``, ``"layer"``).
      mlp2_units, mlp2_activation, mlp2_dropout, mlp2_norm: the same for stream 2.
      feature_selection: gate each stream's input (else both streams see ``x``).
      fs_units: hidden widths of each gate's ReLU MLP (``[]``: one linear layer).
      fs1_context: id features whose embeddings condition stream 1's gate (``[]``: a learned vector).
      fs2_context: the same for stream 2.
      fs_context_table: ``own`` (the gates embed their context in tables of their own, as FuxiCTR) or
        ``shared`` (the backbone's embeddings).
      fs_context_dim: width of the own context tables and of the learned context; None: the spec's
        embedding width (which must then be one width for every id input).
      num_heads: heads ``k`` of the bilinear fusion (dividing both streams' last width).
    """

    mlp1_units: Sequence[int] = units((64, 64, 64), allow_empty=False)
    mlp1_activation: str = activation("relu")
    mlp1_dropout: float = rate(0.0)
    mlp1_norm: str | None = norm(None)
    mlp2_units: Sequence[int] = units((64, 64, 64), allow_empty=False)
    mlp2_activation: str = activation("relu")
    mlp2_dropout: float = rate(0.0)
    mlp2_norm: str | None = norm(None)
    feature_selection: bool = flag(True)
    fs_units: Sequence[int] = units((64,))
    fs1_context: Sequence[str] = feature_names(())
    fs2_context: Sequence[str] = feature_names(())
    fs_context_table: str = choice("own", CONTEXT_TABLES)
    fs_context_dim: int | None = optional_count(None)
    num_heads: int = count(1)

    def validate(self):
        for stream in ("mlp1_units", "mlp2_units"):
            width = getattr(self, stream)[-1]
            if width % self.num_heads:
                raise ValueError(f"num_heads: {self.num_heads} heads must divide the last width of {stream}, "
                                 f"got {width}")
        if not self.feature_selection:
            for context in ("fs1_context", "fs2_context"):
                if getattr(self, context):
                    raise ValueError(f"{context}: a gate context needs feature_selection=True")


@register_backbone("finalmlp")
class FinalMLP(Backbone):
    """FinalMLP backbone producing ``h = concat(o_1, o_2, s_1..s_k)`` (hyper-parameters:
    :class:`FinalMLPHyperParameters`)."""

    Hyperparameters = FinalMLPHyperParameters
    interact_reads_features = True  # the gates' own context tables look up their ids

    def setup(self):
        token_names = self.encoder.token_names
        for context in ("fs1_context", "fs2_context"):
            for name in getattr(self, context):
                if name in self.encoder.dense_names:
                    raise ValueError(f"{context}: '{name}' is a dense feature; a gate context takes id features "
                                     f"{token_names}")
                if name not in token_names:
                    raise ValueError(f"{context}: '{name}' is not an input of the spec; its id features are "
                                     f"{token_names}")
        self.context_width = self.fs_context_dim
        needs_width = self.feature_selection and (
            not (self.fs1_context and self.fs2_context) or self.fs_context_table == "own")
        if self.context_width is None and needs_width:
            try:
                self.context_width = common_field_width(self)
            except ValueError as err:
                raise ValueError(f"fs_context_dim: the spec's id inputs have no one embedding width to default "
                                 f"to; set fs_context_dim ({err})") from None
        self.build_interactions()

    def _stream(self, index, suffix):
        return MLP(getattr(self, f"mlp{index}_units"), activation=getattr(self, f"mlp{index}_activation"),
                   dropout=getattr(self, f"mlp{index}_dropout"), norm=getattr(self, f"mlp{index}_norm"),
                   dtype=self.dtype_policy, name=f"mlp{index}{suffix}")

    def _gate(self, index, suffix):
        context = getattr(self, f"fs{index}_context")
        gate = FeatureGate(self.fs_units, context_dim=None if context else self.context_width,
                           dtype=self.dtype_policy, name=f"fs{index}_gate{suffix}")
        table = None
        if context and self.fs_context_table == "own":
            spec = self.encoder.spec
            owned = list(dict.fromkeys(spec.feature(name).table for name in context))
            table = MultiFieldEmbedding(**self.encoder.fused_table_arguments(
                owned, list(context), self.context_width, f"fs{index}_context_embedding{suffix}"))
        return {"gate": gate, "table": table, "context": list(context)}

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        gates = [self._gate(i, suffix) for i in (1, 2)] if self.feature_selection else None
        return {
            "gates": gates,
            "mlp1": self._stream(1, suffix),
            "mlp2": self._stream(2, suffix),
            "fusion": BilinearFusion(num_heads=self.num_heads, use_linear=False, reduce_heads=False,
                                     dtype=self.dtype_policy, name=f"fusion{suffix}"),
        }

    def _context(self, gate, tokens, features):
        """The gate's context ``c`` ``(B, C)``, or None for the learned vector."""
        names = gate["context"]
        if not names:
            return None
        if gate["table"] is None:  # shared: the backbone's own embeddings of the context features
            index = self.encoder.token_names
            return ops.concatenate([tokens[index.index(name)] for name in names], axis=-1)
        looked_up = gate["table"]([features[name] for name in names])
        return ops.concatenate([self.encoder.pool(name, rows, features) for name, rows in zip(names, looked_up)],
                               axis=-1)

    def interact(self, module, tokens, dense, training=None, features=None):
        x = ops.concatenate(tokens + ([dense] if dense is not None else []), axis=-1)
        streams = [x, x]
        if module["gates"] is not None:
            streams = []
            for gate in module["gates"]:
                context = self._context(gate, tokens, features)
                streams.append(gate["gate"](x if context is None else [x, ops.cast(context, x.dtype)]))
        o1 = module["mlp1"](streams[0], training=training)
        o2 = module["mlp2"](streams[1], training=training)
        return ops.concatenate([o1, o2, module["fusion"]([o1, o2])], axis=-1)
