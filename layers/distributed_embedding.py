"""``MultiFieldEmbedding``'s contract on ``keras_rs.layers.DistributedEmbedding`` (TPU SparseCore).

keras-rs' ``DistributedEmbedding`` places its tables on a TPU's SparseCores when the chip has them
and otherwise (CPUs, GPUs, TPUs without SparseCore) looks them up on the default device with plain
Keras embeddings. :class:`DistributedMultiFieldEmbedding` gives the zoo's encoder that path behind
the interface of :class:`layers.MultiFieldEmbedding`, so any backbone can use it.
"""

from __future__ import annotations

from typing import Sequence

import keras
import keras_rs
from keras import ops

from layers.embeddings import PACKAGE, MultiFieldEmbedding
from layers.initializers import fresh_initializer

PLACEMENTS = ("auto", "sparsecore", "default_device")


@keras.saving.register_keras_serializable(package=PACKAGE)
class DistributedMultiFieldEmbedding(MultiFieldEmbedding):
    """:class:`MultiFieldEmbedding` with one ``keras_rs`` table per field, looked up by a
    ``keras_rs.layers.DistributedEmbedding``.

    The row mapping is :class:`MultiFieldEmbedding`'s, per field: for an id ``v`` of field ``f``,

        local_f(v) = v if 0 <= v < V_f else V_f      (vocab mode: the field's OOV row)
        local_f(v) = v mod H_f                        (hash mode)
        out = T_f[local_f(v)]

    where field ``f``'s table ``T_f`` has ``R_f`` rows (``V_f + 1`` or ``H_f``). Stacking the
    ``T_f`` in field order gives the fused table ``T`` of :class:`MultiFieldEmbedding` with rows
    ``o_f + local_f(v)``, so with ``T = concat_f(T_f)`` both layers return the same vectors for
    every id (:attr:`embeddings` is that concatenation; :meth:`fold` returns the plain layer).

    Every call input ``(B, k)`` is looked up as ``B * k`` single-id features (no combiner: a
    sequence's positions keep their own vectors, pooled by the caller as with the plain layer) and
    reshaped back to ``(B, k, d)``. ``embeddings_regularizer`` is set on every table, so the loss
    term ``sum_f r(T_f)`` equals ``r(T)`` for an L2 (or L1) regularizer.

    Args:
      vocab_sizes, output_dim, modes, input_fields, embeddings_initializer, embeddings_regularizer:
        as :class:`MultiFieldEmbedding` (each table gets its own instance of the initializer).
      placement: the tables' ``keras_rs`` placement: ``"auto"`` (SparseCore where the TPU has it,
        else the default device), ``"sparsecore"`` or ``"default_device"``.

    Call arguments:
      inputs: a list of int tensors of shape ``(B, k_i)``.

    Returns:
      A list of ``(B, k_i, d)`` tensors in the compute dtype.

    Example:

    >>> import numpy as np
    >>> layer = DistributedMultiFieldEmbedding(vocab_sizes=[3, 5], output_dim=4, modes=["vocab", "hash"])
    >>> ids = [np.array([[0], [7]]), np.array([[6, -1], [2, 3]])]  # 7: OOV of field 0; field 1 hashes
    >>> a, b = layer(ids)
    >>> tuple(a.shape), tuple(b.shape), [tuple(t.shape) for t in layer.tables], tuple(layer.embeddings.shape)
    ((2, 1, 4), (2, 2, 4), [(4, 4), (5, 4)], (9, 4))
    >>> plain = layer.fold()  # the same lookups through one fused MultiFieldEmbedding table
    >>> same = plain(ids)
    >>> all(bool(np.array_equal(keras.ops.convert_to_numpy(p), keras.ops.convert_to_numpy(q)))
    ...     for p, q in zip(same, (a, b)))
    True
    """

    def __init__(self, vocab_sizes: Sequence[int], output_dim: int, modes: Sequence[str] | None = None,
                 input_fields: Sequence[int] | None = None, embeddings_initializer="uniform",
                 embeddings_regularizer=None, placement: str = "auto", **kwargs):
        if kwargs.pop("row_multiple", 1) != 1:  # keras_rs sizes its tables (and shards them on SparseCore)
            raise ValueError("row_multiple: DistributedMultiFieldEmbedding does not pad its tables; "
                             "keras_rs places and shards them itself")
        super().__init__(vocab_sizes, output_dim, modes=modes, input_fields=input_fields,
                         embeddings_initializer=embeddings_initializer,
                         embeddings_regularizer=embeddings_regularizer, **kwargs)
        if placement not in PLACEMENTS:
            raise ValueError(f"placement: must be one of {list(PLACEMENTS)}, got {placement!r}")
        self.placement = placement
        tables = [keras_rs.layers.TableConfig(
            name=f"{self.name}_field_{f}", vocabulary_size=rows, embedding_dim=self.output_dim,
            initializer=fresh_initializer(self.embeddings_initializer, f), placement=placement)
            for f, rows in enumerate(self.field_rows)]
        self._feature_names = [f"input_{i}" for i in range(len(self.input_fields))]
        features = {name: keras_rs.layers.FeatureConfig(
            name=name, table=tables[field], input_shape=(None, 1), output_shape=(None, self.output_dim))
            for name, field in zip(self._feature_names, self.input_fields)}
        self.distributed = keras_rs.layers.DistributedEmbedding(features, dtype=self.dtype_policy,
                                                                name="distributed_embedding")

    def build(self, input_shape):
        self._check_inputs(input_shape)
        self.distributed.build({name: (None, 1) for name in self._feature_names})
        for table in self.tables:
            table.regularizer = self.embeddings_regularizer

    @property
    def tables(self) -> list:
        """The per-field table variables ``T_f``, in field order (a built layer only)."""
        by_name = {w.path.split("/")[-2]: w for w in self.distributed.weights}
        return [by_name[f"{self.name}_field_{f}"] for f in range(len(self.field_rows))]

    @property
    def embeddings(self):
        """The fused table ``concat_f(T_f)`` of shape ``(num_rows, d)`` (a tensor, read-only)."""
        return ops.concatenate([ops.convert_to_tensor(t) for t in self.tables], axis=0)

    def call(self, inputs):
        looked_up = self.distributed({
            name: ops.reshape(self.local_rows(field, x), (-1, 1))
            for name, field, x in zip(self._feature_names, self.input_fields, inputs)})
        return [ops.cast(ops.reshape(looked_up[name], (-1, width, self.output_dim)), self.compute_dtype)
                for name, width in zip(self._feature_names, self._widths)]

    def fold(self) -> MultiFieldEmbedding:
        """A plain :class:`MultiFieldEmbedding` (same fields, modes, name) whose fused table is
        :attr:`embeddings`; its outputs equal this layer's for every id."""
        if not self.built:
            raise ValueError("fold: the layer has no weights yet; build or call it first")
        folded = MultiFieldEmbedding(
            vocab_sizes=self.vocab_sizes, output_dim=self.output_dim, modes=self.modes,
            input_fields=self.input_fields, embeddings_initializer=self.embeddings_initializer,
            embeddings_regularizer=self.embeddings_regularizer, dtype=self.dtype_policy, name=self.name)
        folded.build([(None, w) for w in self._widths])
        folded.embeddings.assign(ops.cast(self.embeddings, folded.embeddings.dtype))
        return folded

    def get_config(self):
        config = super().get_config()
        config["placement"] = self.placement
        return config
