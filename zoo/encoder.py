"""The feature encoder every backbone starts with: spec inputs -> field embeddings + dense vector."""

from __future__ import annotations

import copy
from typing import Any, Mapping

import keras
from keras import ops

from layers import DistributedMultiFieldEmbedding, MLETEmbedding, MultiEmbedding, MultiFieldEmbedding
from layers.distributed_embedding import PLACEMENTS
from layers.embeddings import PACKAGE
from zoo import crocodile
from zoo.spec import PAD_ID, FeatureSpec

EMBEDDING_TYPES = ("plain", "mlet", "multi", "distributed")


def embedding_options(embedding: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated embedding options with defaults filled in.

    ``{"type": "plain"}`` (default), ``{"type": "mlet", "inner_dim": k}`` (MLET: each table trained
    as rows x k times k x d, k larger than every width; folded to plain tables at export) or
    ``{"type": "multi", "num_sets": M}`` (M independent embedding sets, docs/methods.md#multi-embedding)
    or ``{"type": "distributed", "placement": "auto"}`` (the plain tables as one ``keras_rs``
    table per spec table, looked up by ``keras_rs.layers.DistributedEmbedding``: TPU SparseCore where
    the chip has it, the default device elsewhere; ``placement``: auto | sparsecore | default_device;
    folded to the plain fused table at export).
    ``multi`` also takes Crocodile's ``covariance_loss`` and ``gate`` blocks (:mod:`zoo.crocodile`,
    docs/methods.md#crocodile).

    ``plain``, ``mlet`` and ``multi`` also take ``row_multiple`` (int >= 1, default 1): every fused
    table's rows padded with zero rows to a multiple of it (:class:`layers.MultiFieldEmbedding`), which
    ``zoo.train --distribution model_parallel`` sets to the model-shard count so the tables split evenly.

    Every type also takes ``l2`` (float >= 0, default 0): adds ``l2 * sum(E**2)`` over every whole
    table to the loss each step (``keras.regularizers.L2``; FuxiCTR's ``embedding_regularizer: lam``
    is ``l2 = lam / 2``), and ``initializer`` (a Keras initializer name or config dict, default
    ``"uniform"``) for the tables.
    """
    options = dict(embedding or {"type": "plain"})
    kind = options.setdefault("type", "plain")
    common = {"type", "l2", "initializer"}
    allowed = {"plain": common | {"row_multiple"}, "mlet": common | {"inner_dim", "row_multiple"},
               "multi": common | {"num_sets", "row_multiple", *crocodile.OPTION_KEYS},
               "distributed": common | {"placement"}}
    if kind not in EMBEDDING_TYPES:
        raise ValueError(f"embedding: type must be one of {EMBEDDING_TYPES}, got {kind!r}")
    unknown = set(options) - allowed[kind]
    if unknown:
        raise ValueError(f"embedding: unknown option(s) {sorted(unknown)} for type '{kind}'")
    l2 = options.get("l2", 0.0)
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not l2 >= 0:
        raise ValueError(f"embedding: l2 must be a number >= 0, got {l2!r}")
    if "initializer" in options:
        try:
            keras.initializers.get(copy.deepcopy(options["initializer"]))
        except (ValueError, TypeError) as err:
            raise ValueError(f"embedding: initializer {options['initializer']!r} is not a Keras initializer: "
                             f"{err}") from err
    row_multiple = options.get("row_multiple", 1)
    if isinstance(row_multiple, bool) or not isinstance(row_multiple, int) or row_multiple < 1:
        raise ValueError(f"embedding: row_multiple must be a positive integer, got {row_multiple!r}")
    if kind == "mlet" and not (isinstance(options.get("inner_dim"), int) and options["inner_dim"] > 0):
        raise ValueError(f"embedding: type 'mlet' needs a positive integer inner_dim, got {options.get('inner_dim')!r}")
    if kind == "distributed":
        options.setdefault("placement", "auto")
        if options["placement"] not in PLACEMENTS:
            raise ValueError(f"embedding: placement must be one of {list(PLACEMENTS)}, got {options['placement']!r}")
    if kind == "multi":
        options.setdefault("num_sets", 2)
        if not (isinstance(options["num_sets"], int) and options["num_sets"] >= 1):
            raise ValueError(f"embedding: num_sets must be a positive integer, got {options['num_sets']!r}")
        for key, check in (("covariance_loss", crocodile.covariance_options), ("gate", crocodile.gate_options)):
            block = check(options)
            if block is None:
                options.pop(key, None)
            else:
                options[key] = block
    return options


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureEncoder(keras.layers.Layer):
    """Embeds the spec's id features and gathers its dense features.

    Embedding tables come from the spec: one row block per table (``vocab_size + 1`` rows with an
    explicit OOV row, or ``hash_buckets`` rows), fused into one lookup layer per embedding width, so
    a batch costs one gather per width (per set). Sequence features look up their (own or shared)
    table and are mean-pooled over non-padding positions (``PAD_ID``); an all-padding sequence pools
    to zeros. The lookup layer is :class:`layers.MultiFieldEmbedding` (``plain``),
    :class:`layers.MLETEmbedding` (``mlet``), :class:`layers.MultiEmbedding` (``multi``) or
    :class:`layers.DistributedMultiFieldEmbedding` (``distributed``); see :func:`embedding_options`.

    With ``first_order=True`` the encoder also owns a free first-order weight per id (a width-1
    table over the same tables, rows and OOV rows, FuxiCTR's LR layer) and a weight per dense feature;
    :meth:`first_order_logit` gives ``<w, x> = sum_f w_f[x_f] + sum_k w_k x_k`` (sequence inputs
    mean-pool their ids' weights like their embeddings). The table takes the embedding options'
    initializer and ``l2``; it is a plain table for every embedding type (one set, never MLET).

    Args:
      spec: the resolved spec as a dict (``FeatureSpec.to_dict()``).
      embedding: embedding options (:func:`embedding_options`).
      first_order: also build the free first-order weights (:meth:`first_order_logit`).

    Call arguments:
      features: dict of input tensors keyed by feature name.
      return_sequence_rows: also return each sequence input's looked-up rows before pooling (for
        backbones that pool a sequence themselves, e.g. with target attention; the same one gather).

    Returns:
      ``(token_sets, dense)``: ``token_sets`` has one entry per embedding set (one unless
      ``multi``), each a list of ``(B, d_f)`` embeddings, one per categorical or sequence input in
      spec order (see :attr:`token_names`); ``dense`` is ``(B, m)`` with the dense inputs in spec
      order, or None if the spec has none. With ``return_sequence_rows`` the triple
      ``(token_sets, dense, row_sets)``: per set, ``{sequence name: (B, L, d_f)}`` (padding positions
      hold the OOV row; mask them with ``ids != PAD_ID``).
    """

    def __init__(self, spec: Mapping[str, Any], embedding: Mapping[str, Any] | None = None,
                 first_order: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.first_order = bool(first_order)
        self.spec_config = dict(spec)
        self.spec = FeatureSpec.from_dict(self.spec_config)
        self.embedding = embedding_options(embedding)
        self.num_sets = self.embedding.get("num_sets", 1) if self.embedding["type"] == "multi" else 1
        id_inputs = [f for f in self.spec.inputs if f.kind != "dense"]
        self.token_names = [f.name for f in id_inputs]
        self.dense_names = [f.name for f in self.spec.dense]
        tables = self.spec.tables
        # One fused table per embedding width: (width, owning tables, inputs looking them up).
        groups: dict[int, tuple[list[str], list[str]]] = {}
        for f in id_inputs:
            owner = tables[f.table]
            owned, inputs = groups.setdefault(owner.embedding_dim, ([], []))
            if owner.name not in owned:
                owned.append(owner.name)
            inputs.append(f.name)
        self._group_inputs = [inputs for _, (_, inputs) in sorted(groups.items())]
        self.embedders = []
        for dim, (owned, inputs) in sorted(groups.items()):
            common = self.fused_table_arguments(owned, inputs, dim, f"embedding_{dim}")
            kind = self.embedding["type"]
            if kind == "mlet":
                if self.embedding["inner_dim"] <= dim:
                    raise ValueError(f"embedding: MLET inner_dim {self.embedding['inner_dim']} must exceed "
                                     f"the embedding width {dim} of {owned}")
                self.embedders.append(MLETEmbedding(inner_dim=self.embedding["inner_dim"], **common))
            elif kind == "multi":
                self.embedders.append(MultiEmbedding(num_sets=self.num_sets, **common))
            elif kind == "distributed":
                self.embedders.append(DistributedMultiFieldEmbedding(placement=self.embedding["placement"], **common))
            else:
                self.embedders.append(MultiFieldEmbedding(**common))
        self.first_order_table = self.first_order_dense = None
        if self.first_order and id_inputs:
            owned = list(dict.fromkeys(f.table for f in id_inputs))
            self.first_order_table = MultiFieldEmbedding(
                **self.fused_table_arguments(owned, self.token_names, 1, "first_order_embedding"))
        if self.first_order and self.dense_names:
            self.first_order_dense = keras.layers.Dense(1, use_bias=False, dtype=self.dtype_policy,
                                                        name="first_order_dense")

    def fused_table_arguments(self, owned: list[str], inputs: list[str], dim: int, name: str) -> dict[str, Any]:
        """The arguments of one fused :class:`layers.MultiFieldEmbedding` (or MLET / multi) lookup over the
        spec tables ``owned`` for the spec inputs ``inputs`` at width ``dim``: the tables' rows, OOV rows
        and hashing, with the embedding options' initializer and ``l2``. Also used by backbones that own
        an extra table over some inputs (FinalMLP's gate contexts)."""
        owners = [self.spec.tables[t] for t in owned]
        return dict(
            vocab_sizes=[t.vocab_size if t.vocab_size is not None else t.hash_buckets for t in owners],
            modes=["vocab" if t.vocab_size is not None else "hash" for t in owners],
            input_fields=[owned.index(self.spec.feature(n).table) for n in inputs],
            output_dim=dim, dtype=self.dtype_policy, name=name,
            embeddings_initializer=copy.deepcopy(self.embedding.get("initializer", "uniform")),
            embeddings_regularizer=keras.regularizers.L2(self.embedding["l2"]) if self.embedding.get("l2") else None,
            row_multiple=self.embedding.get("row_multiple", 1),
        )

    def build(self, input_shape):
        for embedder, inputs in zip(self.embedders, self._group_inputs):
            embedder.build([tuple(input_shape[n]) for n in inputs])
        if self.first_order_table is not None:
            self.first_order_table.build([tuple(input_shape[n]) for n in self.token_names])
        if self.first_order_dense is not None:
            self.first_order_dense.build((None, len(self.dense_names)))

    def call(self, features, return_sequence_rows: bool = False):
        by_name = [{} for _ in range(self.num_sets)]
        row_sets = [{} for _ in range(self.num_sets)]
        for embedder, inputs in zip(self.embedders, self._group_inputs):
            looked_up = embedder([features[n] for n in inputs])
            per_set = looked_up if self.embedding["type"] == "multi" else [looked_up]
            for m, outputs in enumerate(per_set):
                for name, emb in zip(inputs, outputs):
                    by_name[m][name] = self.pool(name, emb, features)
                    if self.spec.feature(name).kind == "sequence":
                        row_sets[m][name] = emb
        token_sets = [[names[n] for n in self.token_names] for names in by_name]
        dense = None
        if self.dense_names:
            dense = ops.concatenate([ops.cast(features[n], self.compute_dtype) for n in self.dense_names], axis=-1)
        if return_sequence_rows:
            return token_sets, dense, row_sets
        return token_sets, dense

    def first_order_logit(self, features):
        """``<w, x>`` of shape ``(B, 1)``: the free first-order weights of the ids plus the dense
        features' weights times their values (needs ``first_order=True``)."""
        if not self.first_order:
            raise ValueError("first_order: this encoder was built without first-order weights")
        terms = []
        if self.first_order_table is not None:
            looked_up = self.first_order_table([features[n] for n in self.token_names])
            weights = [self.pool(name, w, features) for name, w in zip(self.token_names, looked_up)]
            terms.append(ops.sum(ops.concatenate(weights, axis=-1), axis=-1, keepdims=True))
        if self.first_order_dense is not None:
            dense = ops.concatenate([ops.cast(features[n], self.compute_dtype) for n in self.dense_names], axis=-1)
            terms.append(self.first_order_dense(dense))
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    def pool(self, name, emb, features):
        """One input's looked-up rows ``(B, L, d)`` as ``(B, d)``: the single row of a categorical input, the
        mean over the non-padding positions of a sequence input (zeros when all are padding)."""
        if self.spec.feature(name).kind != "sequence":
            return emb[:, 0, :]
        mask = ops.cast(ops.not_equal(features[name], PAD_ID), emb.dtype)[..., None]
        return ops.sum(emb * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)

    def get_config(self):
        config = super().get_config()
        config.update({"spec": self.spec_config, "embedding": self.embedding, "first_order": self.first_order})
        return config
