"""DIN (Zhou et al., KDD 2018, arXiv 1706.06978): a user's behaviour sequence pooled by the attention
of the target item, with DARE's decoupled attention table (Feng et al., arXiv 2410.02604) and a top-k
search stage (SIM / TWIN style) as options.

For each (sequence ``s``, target ``t``) pair, with ``x_1..x_L`` the ids of ``s`` (padding masked out):

    shared tables:    s_j = score(e(t), e(x_j)),          u = sum_j softmax_j(s_j) e(x_j)
    decoupled (DARE): s_j = score(a(t), a(x_j)),          u = sum_j softmax_j(s_j) e(x_j)
    score(q, k) = <q, k> / sqrt(d)                        (score="dot", use_scale)
                = MLP([q, k, q - k, q * k])                (score="mlp": DIN's activation unit)

``e`` is the backbone's embedding of the sequence's table (the target's own table: a sequence
shares its target's table, e.g. ``share_embedding: item_id``); ``a`` is an attention table of the
backbone's own over the same ids (width ``attention_dim``), so the gradient reaches ``a`` only
through the scores and ``e`` only through the pooled values (DARE's decoupling). ``top_k`` keeps the
``top_k`` highest-scoring positions before the softmax (:class:`layers.TargetAttention`). With
``target_product`` the interest ``u * e(t)`` (DARE's target-aware representation) is added beside ``u``.

    z = concat(e_f for the other id inputs (targets included), u_1 (, u_1 * e(t_1)), ..., x_dense)
    h = MLP(z)

``sequence_pooling`` picks what the sequences contribute: ``attention`` (above), ``mean`` (the
encoder's mean over the valid positions, as every other backbone sees a sequence) or ``none`` (the
sequences are left out of ``z``: the no-sequence baseline on the same inputs).

``sequence_features`` defaults to every sequence input of the spec and ``target_features`` to, for
each, the categorical input owning the table it shares. The DIN paper's softmax-free weights and Dice
activation are not used: the weights are a masked softmax (as DARE and FuxiCTR's ``din_use_softmax``)
and the activations are Keras activations.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from keras import ops

from layers import MLP, MultiFieldEmbedding, TargetAttention
from zoo.backbone import Backbone, HyperParameters
from zoo.backbones._common import (activation, choice, feature_names, flag, norm, optional_count, rate,
                                   units)
from zoo.registry import register_backbone
from zoo.spec import PAD_ID

POOLINGS = ("attention", "mean", "none")
ATTENTION_TABLES = ("shared", "decoupled")
SCORES = ("dot", "mlp")


@dataclasses.dataclass(frozen=True)
class DINHyperParameters(HyperParameters):
    """DIN's hyper-parameters.

    Attributes:
      sequence_features: the behaviour sequences (``[]``: every sequence input of the spec).
      target_features: each sequence's target, pairwise (``[]``: the categorical input owning the
        sequence's table).
      sequence_pooling: ``attention``, ``mean`` or ``none`` (the sequences left out).
      attention_tables: ``shared`` (scores from the embeddings) or ``decoupled`` (DARE: an attention
        table of the backbone's own).
      attention_dim: width of the decoupled attention table; None: the sequence's embedding width.
      score: ``dot`` or ``mlp`` (DIN's activation unit).
      attention_units: hidden widths of the ``mlp`` scorer.
      attention_activation: its activation.
      use_scale: divide ``dot`` scores by ``sqrt(width)``.
      top_k: keep the ``top_k`` best-scoring positions (None: all valid positions).
      target_product: also add ``u * e(t)`` to ``z`` (DARE's target-aware representation).
      units: widths of the MLP producing ``h`` (at least one).
      activation: the MLP's activation.
      dropout: the MLP's dropout.
      norm: the MLP's normalization (None, ``"batch"``, ``"layer"``).
    """

    sequence_features: Sequence[str] = feature_names(())
    target_features: Sequence[str] = feature_names(())
    sequence_pooling: str = choice("attention", POOLINGS)
    attention_tables: str = choice("shared", ATTENTION_TABLES)
    attention_dim: int | None = optional_count(None)
    score: str = choice("mlp", SCORES)
    attention_units: Sequence[int] = units((80, 40), allow_empty=False)
    attention_activation: str = activation("relu")
    use_scale: bool = flag(True)
    top_k: int | None = optional_count(None)
    target_product: bool = flag(False)
    units: Sequence[int] = units((200, 80), allow_empty=False)
    activation: str = activation("relu")
    dropout: float = rate(0.0)
    norm: str | None = norm(None)

    def validate(self):
        if self.target_features and len(self.target_features) != len(self.sequence_features):
            raise ValueError(f"target_features: one target per sequence, got {list(self.target_features)} for "
                             f"sequence_features {list(self.sequence_features)}")
        if self.sequence_pooling != "attention":
            if self.target_product:
                raise ValueError(f"target_product: applies to sequence_pooling 'attention' only, "
                                 f"got sequence_pooling {self.sequence_pooling!r}")
            for name in ("attention_dim", "top_k"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: applies to sequence_pooling 'attention' only, "
                                     f"got sequence_pooling {self.sequence_pooling!r}")
        if self.attention_dim is not None and self.attention_tables != "decoupled":
            raise ValueError("attention_dim: sets the width of the decoupled attention table; "
                             "needs attention_tables 'decoupled'")


@register_backbone("din")
class DIN(Backbone):
    """DIN / DARE backbone producing ``h = MLP(z)`` (hyper-parameters: :class:`DINHyperParameters`)."""

    Hyperparameters = DINHyperParameters
    interact_reads_features = True       # the padding mask and the decoupled table's lookups read the ids
    interact_reads_sequence_rows = True  # the sequences' rows before the encoder's mean pooling

    @classmethod
    def unsupported_reason(cls, spec):
        return None if spec.sequence else "needs a sequence input (a behaviour sequence), the spec has none"

    def setup(self):
        spec, token_names = self.encoder.spec, self.encoder.token_names
        sequences = list(self.sequence_features) or [f.name for f in spec.sequence]
        if not sequences:
            raise ValueError("sequence_features: the spec has no sequence input for DIN to pool")
        for name in sequences:
            if name not in token_names or spec.feature(name).kind != "sequence":
                raise ValueError(f"sequence_features: '{name}' is not a sequence input of the spec; its sequence "
                                 f"inputs are {[f.name for f in spec.sequence]}")
        targets = list(self.target_features) or [self._owner_of(name) for name in sequences]
        for sequence, target in zip(sequences, targets):
            if target not in token_names or spec.feature(target).kind != "categorical":
                raise ValueError(f"target_features: '{target}' is not a categorical input of the spec")
            if spec.feature(target).table != spec.feature(sequence).table:
                raise ValueError(f"target_features: '{target}' must share the embedding table of the sequence "
                                 f"'{sequence}' (table '{spec.feature(sequence).table}'), e.g. with "
                                 f"share_embedding: {spec.feature(sequence).table}")
        self.pairs = list(zip(sequences, targets))
        self.mlp = MLP(self.units, activation=self.activation, dropout=self.dropout, norm=self.norm,
                       dtype=self.dtype_policy, name="mlp")
        self.build_interactions()

    def _owner_of(self, sequence: str) -> str:
        spec = self.encoder.spec
        table = spec.feature(sequence).table
        owners = [f.name for f in spec.categorical if f.table == table]
        if not owners:
            raise ValueError(f"target_features: no categorical input shares the table '{table}' of the sequence "
                             f"'{sequence}'; name its target")
        return owners[0]

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        module = {"attention": [], "tables": []}
        if self.sequence_pooling != "attention":
            return module
        for j, (sequence, target) in enumerate(self.pairs):
            module["attention"].append(TargetAttention(
                top_k=self.top_k, use_scale=self.use_scale, score=self.score, mlp_units=self.attention_units,
                mlp_activation=self.attention_activation, dtype=self.dtype_policy,
                name=f"target_attention_{j}{suffix}"))
            table = None
            if self.attention_tables == "decoupled":
                spec = self.encoder.spec
                width = self.attention_dim or spec.tables[spec.feature(sequence).table].embedding_dim
                table = MultiFieldEmbedding(**self.encoder.fused_table_arguments(
                    [spec.feature(sequence).table], [target, sequence], width,
                    f"attention_embedding_{j}{suffix}"))
            module["tables"].append(table)
        return module

    def interact(self, module, tokens, dense, training=None, features=None, sequence_rows=None):
        names = self.encoder.token_names
        pooled = {sequence for sequence, _ in self.pairs} if self.sequence_pooling != "mean" else set()
        parts = [token for name, token in zip(names, tokens) if name not in pooled]
        for j, (sequence, target) in enumerate(self.pairs if self.sequence_pooling == "attention" else ()):
            values = sequence_rows[sequence]
            target_embedding = tokens[names.index(target)]
            if module["tables"][j] is None:
                query, keys = target_embedding, values
            else:
                a_target, keys = module["tables"][j]([features[target], features[sequence]])
                query = a_target[:, 0, :]
            mask = ops.not_equal(features[sequence], PAD_ID)
            interest = module["attention"][j]({"query": query, "keys": keys, "values": values, "mask": mask})
            parts.append(interest)
            if self.target_product:
                parts.append(interest * target_embedding)
        if dense is not None:
            parts.append(ops.cast(dense, parts[0].dtype))
        return ops.concatenate(parts, axis=-1)

    def over_arch(self, z, training=None):
        return self.mlp(z, training=training)
