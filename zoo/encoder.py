"""The feature encoder every backbone starts with: spec inputs -> field embeddings + dense vector."""

from __future__ import annotations

from typing import Any, Mapping

import keras
from keras import ops

from layers import MultiFieldEmbedding
from layers.embeddings import PACKAGE
from zoo.spec import PAD_ID, FeatureSpec


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureEncoder(keras.layers.Layer):
    """Embeds the spec's id features and gathers its dense features.

    Embedding tables come from the spec: one row block per table (``vocab_size + 1`` rows with an
    explicit OOV row, or ``hash_buckets`` rows), fused into one :class:`MultiFieldEmbedding` per
    embedding width, so a batch costs one gather per width. Sequence features look up their (own or
    shared) table and are mean-pooled over non-padding positions (``PAD_ID``); an all-padding
    sequence pools to zeros.

    Args:
      spec: the resolved spec as a dict (``FeatureSpec.to_dict()``).

    Call arguments:
      features: dict of input tensors keyed by feature name.

    Returns:
      ``(tokens, dense)``: ``tokens`` is a list of ``(B, d_f)`` embeddings, one per categorical or
      sequence input in spec order (see :attr:`token_names`); ``dense`` is ``(B, m)`` with the dense
      inputs in spec order, or None if the spec has none.
    """

    def __init__(self, spec: Mapping[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.spec_config = dict(spec)
        self.spec = FeatureSpec.from_dict(self.spec_config)
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
            owners = [tables[t] for t in owned]
            self.embedders.append(MultiFieldEmbedding(
                vocab_sizes=[t.vocab_size if t.vocab_size is not None else t.hash_buckets for t in owners],
                modes=["vocab" if t.vocab_size is not None else "hash" for t in owners],
                input_fields=[owned.index(self.spec.feature(n).table) for n in inputs],
                output_dim=dim, dtype=self.dtype_policy, name=f"embedding_{dim}",
            ))

    def build(self, input_shape):
        for embedder, inputs in zip(self.embedders, self._group_inputs):
            embedder.build([tuple(input_shape[n]) for n in inputs])

    def call(self, features):
        by_name = {}
        for embedder, inputs in zip(self.embedders, self._group_inputs):
            looked_up = embedder([features[n] for n in inputs])
            for name, emb in zip(inputs, looked_up):
                if self.spec.feature(name).kind == "sequence":
                    mask = ops.cast(ops.not_equal(features[name], PAD_ID), emb.dtype)[..., None]
                    total = ops.sum(emb * mask, axis=1)
                    count = ops.maximum(ops.sum(mask, axis=1), 1.0)
                    by_name[name] = total / count
                else:
                    by_name[name] = emb[:, 0, :]
        tokens = [by_name[n] for n in self.token_names]
        dense = None
        if self.dense_names:
            dense = ops.concatenate([ops.cast(features[n], self.compute_dtype) for n in self.dense_names], axis=-1)
        return tokens, dense

    def get_config(self):
        config = super().get_config()
        config["spec"] = self.spec_config
        return config
