"""Embedding layers.

``MultiFieldEmbedding`` looks up every categorical field of one width through a single fused table:
one gather per batch instead of one per field.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

PACKAGE = "ctr_zoo"


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiFieldEmbedding(keras.layers.Layer):
    """Embeds several id fields through one fused table with per-field row offsets.

    Field ``f`` owns rows ``[o_f, o_f + R_f)`` of a table ``T`` of shape ``(sum_f R_f, d)``, where
    ``o_f = sum_{g < f} R_g``. For an id ``v`` of field ``f``:

    * ``mode="vocab"`` (``R_f = V_f + 1``): ``row = o_f + v`` if ``0 <= v < V_f``, else the field's
      explicit OOV row ``o_f + V_f``. An out-of-range id never lands in another id's row.
    * ``mode="hash"`` (``R_f = H_f``): ``row = o_f + (v mod H_f)`` (floor modulo, so negative ids
      hash too).

    The output is ``T[row]``. All inputs are concatenated along their second axis, mapped to rows,
    looked up with one ``take`` and split back, so a batch costs one gather however many fields.

    Args:
      vocab_sizes: per field, ``V_f`` (vocab mode) or ``H_f`` (hash mode).
      output_dim: embedding width ``d``.
      modes: per field ``"vocab"`` or ``"hash"``; default all ``"vocab"``.
      input_fields: which field each call input looks up (several inputs may share a field, e.g. a
        behaviour sequence sharing the item table); default input ``i`` uses field ``i``.
      embeddings_initializer: initializer of the fused table.
      embeddings_regularizer: optional regularizer of the fused table.

    Call arguments:
      inputs: a list of int tensors of shape ``(B, k_i)`` (``k_i = 1`` for a scalar field, the
        sequence length for a sequence).

    Returns:
      A list of ``(B, k_i, d)`` tensors in the compute dtype.

    Under JAX without ``JAX_ENABLE_X64`` ids are int32, so hashed ids must stay below 2**31.

    Example:

    >>> import numpy as np
    >>> layer = MultiFieldEmbedding(vocab_sizes=[3, 5], output_dim=4, modes=["vocab", "hash"])
    >>> a, b = layer([np.array([[0], [7]]), np.array([[6], [-1]])])
    >>> tuple(a.shape), tuple(b.shape), layer.num_rows
    ((2, 1, 4), (2, 1, 4), 9)
    >>> rows = layer.rows(0, np.array([0, 2, 3, -1]))  # 3 and -1 are out of vocab -> OOV row 3
    >>> keras.ops.convert_to_numpy(rows).tolist()
    [0, 2, 3, 3]
    """

    def __init__(self, vocab_sizes: Sequence[int], output_dim: int, modes: Sequence[str] | None = None,
                 input_fields: Sequence[int] | None = None, embeddings_initializer="uniform",
                 embeddings_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        modes = list(modes) if modes is not None else ["vocab"] * len(self.vocab_sizes)
        if not self.vocab_sizes:
            raise ValueError("vocab_sizes: needs at least one field")
        if any(v <= 0 for v in self.vocab_sizes):
            raise ValueError(f"vocab_sizes: every size must be positive, got {self.vocab_sizes}")
        if len(modes) != len(self.vocab_sizes) or any(m not in ("vocab", "hash") for m in modes):
            raise ValueError(f"modes: need one of 'vocab'/'hash' per field, got {modes}")
        if int(output_dim) <= 0:
            raise ValueError(f"output_dim: must be positive, got {output_dim}")
        self.modes = modes
        self.output_dim = int(output_dim)
        self.input_fields = (list(input_fields) if input_fields is not None
                             else list(range(len(self.vocab_sizes))))
        if any(not 0 <= f < len(self.vocab_sizes) for f in self.input_fields):
            raise ValueError(f"input_fields: each entry must index a field, got {self.input_fields}")
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)
        self.field_rows = [v + 1 if m == "vocab" else v for v, m in zip(self.vocab_sizes, self.modes)]
        self.offsets = [sum(self.field_rows[:i]) for i in range(len(self.field_rows))]
        self.num_rows = sum(self.field_rows)

    def build(self, input_shape):
        if len(input_shape) != len(self.input_fields):
            raise ValueError(f"inputs: expected {len(self.input_fields)} tensors (one per input_fields entry), "
                             f"got {len(input_shape)}")
        self._widths = [int(s[-1]) for s in input_shape]
        # Per-column constants of the concatenated id matrix.
        cols = [f for f, w in zip(self.input_fields, self._widths) for _ in range(w)]
        self._col_size = [self.vocab_sizes[f] for f in cols]
        self._col_hash = [self.modes[f] == "hash" for f in cols]
        self._col_offset = [self.offsets[f] for f in cols]
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.num_rows, self.output_dim),
            initializer=self.embeddings_initializer, regularizer=self.embeddings_regularizer,
        )

    def rows(self, field: int, ids):
        """Table rows of ``ids`` of one field (the mapping the lookup uses)."""
        size, offset = self.vocab_sizes[field], self.offsets[field]
        ids = ops.convert_to_tensor(ids, "int64")
        if self.modes[field] == "hash":
            return ops.mod(ids, size) + offset
        return ops.where((ids >= 0) & (ids < size), ids, size) + offset

    def call(self, inputs):
        ids = ops.concatenate([ops.cast(x, "int64") for x in inputs], axis=1)  # (B, K)
        size = ops.convert_to_tensor(self._col_size, "int64")
        in_vocab = ops.where((ids >= 0) & (ids < size), ids, size)
        hashed = ops.mod(ids, size)
        rows = ops.where(ops.convert_to_tensor(self._col_hash), hashed, in_vocab)
        rows = rows + ops.convert_to_tensor(self._col_offset, "int64")
        out = ops.take(self.embeddings, rows, axis=0)  # (B, K, d): the one gather
        out = ops.cast(out, self.compute_dtype)
        splits = [sum(self._widths[: i + 1]) for i in range(len(self._widths) - 1)]
        return ops.split(out, splits, axis=1) if splits else [out]

    def compute_output_shape(self, input_shape):
        return [tuple(s[:-1]) + (s[-1], self.output_dim) for s in input_shape]

    def get_config(self):
        config = super().get_config()
        config.update({
            "vocab_sizes": self.vocab_sizes,
            "output_dim": self.output_dim,
            "modes": self.modes,
            "input_fields": self.input_fields,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": keras.regularizers.serialize(self.embeddings_regularizer),
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class DualEmbedding(keras.layers.Layer):
    """DARE's decoupled embeddings: a separate attention table and representation table.

    For every id, two independently initialized and learned lookups (Feng et al., ICLR 2025):

        a(v) = T_att[row(v)] in R^{d_att}      (used only to score attention)
        r(v) = T_rep[row(v)] in R^{d_rep}      (used only as the pooled values)

    ``row`` is the fused, OOV-safe row mapping of :class:`MultiFieldEmbedding`; the two widths may
    differ (a small ``d_att`` makes retrieval cheaper).

    Args:
      vocab_sizes: per field, the vocabulary size (vocab mode) or bucket count (hash mode).
      attention_dim: width ``d_att`` of the attention table.
      representation_dim: width ``d_rep`` of the representation table.
      modes: per field ``"vocab"`` or ``"hash"``.
      input_fields: which field each call input looks up (see :class:`MultiFieldEmbedding`).
      embeddings_initializer: initializer of both tables.

    Call arguments:
      inputs: a list of int tensors ``(B, k_i)``.

    Returns:
      ``(attention, representation)``: two lists of ``(B, k_i, d_att)`` / ``(B, k_i, d_rep)`` tensors.

    Example:

    >>> dual = DualEmbedding(vocab_sizes=[10], attention_dim=4, representation_dim=8)
    >>> att, rep = dual([np.array([[1, 2, 3]])])
    >>> tuple(att[0].shape), tuple(rep[0].shape), dual.count_params()
    ((1, 3, 4), (1, 3, 8), 132)
    """

    def __init__(self, vocab_sizes: Sequence[int], attention_dim: int, representation_dim: int,
                 modes: Sequence[str] | None = None, input_fields: Sequence[int] | None = None,
                 embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        common = dict(vocab_sizes=vocab_sizes, modes=modes, input_fields=input_fields,
                      embeddings_initializer=embeddings_initializer, dtype=self.dtype_policy)
        try:
            self.attention = MultiFieldEmbedding(output_dim=attention_dim, name="attention", **common)
        except ValueError as err:
            raise ValueError(str(err).replace("output_dim", "attention_dim")) from None
        try:
            self.representation = MultiFieldEmbedding(output_dim=representation_dim, name="representation", **common)
        except ValueError as err:
            raise ValueError(str(err).replace("output_dim", "representation_dim")) from None

    def build(self, input_shape):
        self.attention.build(input_shape)
        self.representation.build(input_shape)

    def call(self, inputs):
        return self.attention(inputs), self.representation(inputs)

    def compute_output_shape(self, input_shape):
        return (self.attention.compute_output_shape(input_shape),
                self.representation.compute_output_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        att = self.attention.get_config()
        config.update({
            "vocab_sizes": att["vocab_sizes"], "modes": att["modes"], "input_fields": att["input_fields"],
            "attention_dim": self.attention.output_dim, "representation_dim": self.representation.output_dim,
            "embeddings_initializer": att["embeddings_initializer"],
        })
        return config
