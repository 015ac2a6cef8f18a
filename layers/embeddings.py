"""Embedding layers.

``MultiFieldEmbedding`` looks up every categorical field of one width through a single fused table:
one gather per batch instead of one per field.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from layers.initializers import fresh_initializer

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
      row_multiple: the table's row count is rounded up to a multiple of this (default 1: no
        padding), so that a table row-sharded over ``m`` devices splits evenly (``zoo.distribution``'s
        ``model_parallel``; JAX shards only whole blocks). The ``table_rows - num_rows`` padding rows
        start at zero and no id maps to them, so they get no gradient and stay zero (an L2
        regularizer adds nothing for them); the first ``num_rows`` rows are drawn exactly as without
        padding.

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
    >>> padded = MultiFieldEmbedding(vocab_sizes=[3, 5], output_dim=4, modes=["vocab", "hash"], row_multiple=4)
    >>> _ = padded([np.array([[0]]), np.array([[6]])])
    >>> padded.num_rows, tuple(padded.embeddings.shape)  # 9 rows padded to 12; rows 9-11 stay zero
    (9, (12, 4))
    """

    def __init__(self, vocab_sizes: Sequence[int], output_dim: int, modes: Sequence[str] | None = None,
                 input_fields: Sequence[int] | None = None, embeddings_initializer="uniform",
                 embeddings_regularizer=None, row_multiple: int = 1, **kwargs):
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
        if isinstance(row_multiple, bool) or not isinstance(row_multiple, int) or row_multiple < 1:
            raise ValueError(f"row_multiple: must be a positive int, got {row_multiple!r}")
        self.row_multiple = row_multiple
        self.table_rows = -(-self.num_rows // row_multiple) * row_multiple

    def _check_inputs(self, input_shape) -> None:
        """One input per ``input_fields`` entry; records each input's width ``k_i``."""
        if len(input_shape) != len(self.input_fields):
            raise ValueError(f"inputs: expected {len(self.input_fields)} tensors (one per input_fields entry), "
                             f"got {len(input_shape)}")
        self._widths = [int(s[-1]) for s in input_shape]

    def build(self, input_shape):
        self._check_inputs(input_shape)
        # Per-column constants of the concatenated id matrix.
        cols = [f for f, w in zip(self.input_fields, self._widths) for _ in range(w)]
        self._col_size = [self.vocab_sizes[f] for f in cols]
        self._col_hash = [self.modes[f] == "hash" for f in cols]
        self._col_offset = [self.offsets[f] for f in cols]
        initializer = self.embeddings_initializer
        if self.table_rows > self.num_rows:  # the real rows as unpadded, then zero rows
            initializer = _zero_padded(initializer, self.num_rows)
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.table_rows, self.output_dim),
            initializer=initializer, regularizer=self.embeddings_regularizer,
        )

    def rows(self, field: int, ids):
        """Table rows of ``ids`` of one field (the mapping the lookup uses)."""
        return self.local_rows(field, ids) + self.offsets[field]

    def local_rows(self, field: int, ids):
        """Rows of ``ids`` within their field's own block: ``v`` or the OOV row ``V_f`` (vocab), ``v mod H_f``
        (hash)."""
        size = self.vocab_sizes[field]
        ids = ops.convert_to_tensor(ids, "int64")
        if self.modes[field] == "hash":
            return ops.mod(ids, size)
        return ops.where((ids >= 0) & (ids < size), ids, size)

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
            "row_multiple": self.row_multiple,
        })
        return config


def _zero_padded(initializer, rows: int):
    """An initializer of shape ``(R, d)`` whose first ``rows`` rows are ``initializer((rows, d))`` and
    the rest zeros (the padding rows of ``MultiFieldEmbedding(row_multiple=...)``)."""
    def initialize(shape, dtype=None):
        real = initializer((rows, shape[1]), dtype=dtype)
        return ops.concatenate([real, ops.zeros((shape[0] - rows, shape[1]), dtype=real.dtype)], axis=0)
    return initialize


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
        common = dict(vocab_sizes=vocab_sizes, modes=modes, input_fields=input_fields, dtype=self.dtype_policy)
        try:  # each table gets its own initializer instance, so the two never start identical
            self.attention = MultiFieldEmbedding(
                output_dim=attention_dim, name="attention",
                embeddings_initializer=fresh_initializer(embeddings_initializer, 0), **common)
        except ValueError as err:
            raise ValueError(str(err).replace("output_dim", "attention_dim")) from None
        try:
            self.representation = MultiFieldEmbedding(
                output_dim=representation_dim, name="representation",
                embeddings_initializer=fresh_initializer(embeddings_initializer, 1), **common)
        except ValueError as err:
            raise ValueError(str(err).replace("output_dim", "representation_dim")) from None
        self._embeddings_initializer = keras.initializers.get(embeddings_initializer)

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
            "embeddings_initializer": keras.initializers.serialize(self._embeddings_initializer),
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MLETEmbedding(keras.layers.Layer):
    """MLET: every field's table is trained as a factorisation ``A_f B_f`` with inner width ``k > d``.

    With ``row`` the fused, OOV-safe row mapping of :class:`MultiFieldEmbedding` (vocab/hash modes,
    per-field offsets), field ``f``'s id ``v`` is embedded as

        e(v) = A[row(v)] · B_f,     A ∈ R^{rows×k} (fused over fields),  B_f ∈ R^{k×d},  k > d

    Because every row's gradient passes through the dense ``B_f`` (and ``Aᵀ``), updates are shared
    across the categories of a field, which helps rare ids most (Deng et al., MLET, ACML 2023). After
    training, :meth:`fold` returns a plain ``d``-wide :class:`MultiFieldEmbedding` whose table is
    ``T[o_f : o_f + R_f] = A[o_f : o_f + R_f] · B_f``: serving costs exactly a ``d``-dim lookup. Fold
    after the optimizer's final step.

    One projection ``B_f`` per field, not one shared by all fields: the method factorises each
    embedding table on its own (``Embedding(V, k)`` then ``Dense(d, use_bias=False)`` per table) and
    its "cross-category" effect is within a field. A shared ``B`` would couple unrelated fields'
    updates and force them into one ``d``-dim subspace of ``R^k``. The extra ``F·k·d`` parameters are
    training-only and vanish in the fold. Inputs that share a field (``input_fields``) share its
    ``A`` rows and its ``B_f``.

    ``A`` (``inner``) is a :class:`MultiFieldEmbedding` of width ``k``; each ``B_f`` is a bias-free
    ``Dense`` (``projections[f]``). Defaults follow the method: uniform ``A``, Glorot ``B``.

    Args:
      vocab_sizes: per field, ``V_f`` (vocab mode) or ``H_f`` (hash mode).
      output_dim: embedding width ``d`` (also the width of the folded table).
      inner_dim: inner width ``k``; must exceed ``output_dim`` (the method's default is ``8 d``).
      modes: per field ``"vocab"`` or ``"hash"``; default all ``"vocab"``.
      input_fields: which field each call input looks up (see :class:`MultiFieldEmbedding`).
      embeddings_initializer: initializer of ``A``.
      embeddings_regularizer: optional regularizer of ``A``.
      projection_initializer: initializer of every ``B_f`` (each field's starts independent).
      row_multiple: pads ``A``'s rows to a multiple of this (see :class:`MultiFieldEmbedding`); the
        folded table is never padded.

    Call arguments:
      inputs: a list of int tensors of shape ``(B, k_i)``.

    Returns:
      A list of ``(B, k_i, d)`` tensors in the compute dtype.

    Example:

    >>> layer = MLETEmbedding(vocab_sizes=[3, 5], output_dim=2, inner_dim=8, modes=["vocab", "hash"])
    >>> ids = [np.array([[0], [7]]), np.array([[6], [-1]])]
    >>> a, b = layer(ids)
    >>> tuple(a.shape), layer.count_params()  # A: 9 x 8, B: 2 fields x 8 x 2
    ((2, 1, 2), 104)
    >>> folded = layer.fold()
    >>> folded.count_params(), type(folded).__name__
    (18, 'MultiFieldEmbedding')
    >>> bool(np.allclose(folded(ids)[1], b, atol=1e-6))
    True
    """

    def __init__(self, vocab_sizes: Sequence[int], output_dim: int, inner_dim: int,
                 modes: Sequence[str] | None = None, input_fields: Sequence[int] | None = None,
                 embeddings_initializer="uniform", embeddings_regularizer=None,
                 projection_initializer="glorot_uniform", row_multiple: int = 1, **kwargs):
        super().__init__(**kwargs)
        if int(output_dim) <= 0:
            raise ValueError(f"output_dim: must be positive, got {output_dim}")
        if int(inner_dim) <= int(output_dim):
            raise ValueError(f"inner_dim: must exceed output_dim={output_dim} (MLET needs k > d), got {inner_dim}")
        self.output_dim = int(output_dim)
        self.inner_dim = int(inner_dim)
        self.inner = MultiFieldEmbedding(
            vocab_sizes=vocab_sizes, output_dim=self.inner_dim, modes=modes, input_fields=input_fields,
            embeddings_initializer=embeddings_initializer, embeddings_regularizer=embeddings_regularizer,
            row_multiple=row_multiple, dtype=self.dtype_policy, name="inner",
        )
        self.projection_initializer = keras.initializers.get(projection_initializer)
        self.projections = [
            keras.layers.Dense(self.output_dim, use_bias=False, dtype=self.dtype_policy, name=f"projection_{f}",
                               kernel_initializer=fresh_initializer(self.projection_initializer, f))
            for f in range(len(self.inner.vocab_sizes))
        ]

    @property
    def num_rows(self) -> int:
        return self.inner.num_rows

    def rows(self, field: int, ids):
        """Rows of ``A`` (and of the folded table) for ``ids`` of one field."""
        return self.inner.rows(field, ids)

    def build(self, input_shape):
        self.inner.build(input_shape)
        for projection in self.projections:
            projection.build((None, self.inner_dim))

    def call(self, inputs):
        inner = self.inner(inputs)  # (B, k_i, k) each
        return [self.projections[f](a) for f, a in zip(self.inner.input_fields, inner)]

    def fold(self) -> MultiFieldEmbedding:
        """A plain ``d``-wide :class:`MultiFieldEmbedding` (same fields, modes, name) with table ``A·B``.

        Its outputs equal this layer's for every id, OOV and hashed ids included.
        """
        if not self.built:
            raise ValueError("fold: the layer has no weights yet; build or call it first")
        a = ops.convert_to_tensor(self.inner.embeddings)
        blocks = [ops.matmul(a[o:o + r], ops.convert_to_tensor(p.kernel))
                  for o, r, p in zip(self.inner.offsets, self.inner.field_rows, self.projections)]
        folded = MultiFieldEmbedding(
            vocab_sizes=self.inner.vocab_sizes, output_dim=self.output_dim, modes=self.inner.modes,
            input_fields=self.inner.input_fields, embeddings_initializer=self.inner.embeddings_initializer,
            embeddings_regularizer=self.inner.embeddings_regularizer, dtype=self.dtype_policy, name=self.name,
        )
        folded.build([(None, w) for w in self.inner._widths])
        folded.embeddings.assign(ops.cast(ops.concatenate(blocks, axis=0), folded.embeddings.dtype))  # real rows only
        return folded

    def compute_output_shape(self, input_shape):
        return [tuple(s[:-1]) + (s[-1], self.output_dim) for s in input_shape]

    def get_config(self):
        config = super().get_config()
        inner = self.inner.get_config()
        config.update({
            "vocab_sizes": inner["vocab_sizes"],
            "output_dim": self.output_dim,
            "inner_dim": self.inner_dim,
            "modes": inner["modes"],
            "input_fields": inner["input_fields"],
            "embeddings_initializer": inner["embeddings_initializer"],
            "embeddings_regularizer": inner["embeddings_regularizer"],
            "projection_initializer": keras.initializers.serialize(self.projection_initializer),
            "row_multiple": inner["row_multiple"],
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiEmbedding(keras.layers.Layer):
    """``M`` independent embedding sets, the remedy for embedding collapse (Guo et al., ICML 2024).

    Set ``m`` is its own fused table ``E^(m)`` of shape ``(rows, d)``, separately initialized, looked
    up with the row mapping of :class:`MultiFieldEmbedding`:

        e^(m)(v) = E^(m)[row(v)],    m = 1..M        (parameters: M · rows · d)

    The paper scales the *number* of sets, not the width: each set feeds its own interaction module
    ``I^(m)`` and the per-set results are combined (averaged after a per-set projection):
    ``ŷ = σ(F((1/M) Σ_m P^(m)(I^(m)(E^(m)(x)))))``.

    The output is therefore a list *per set*: ``outputs[m]`` is exactly what a single
    :class:`MultiFieldEmbedding` returns (a list of ``(B, k_i, d)``), so set ``m`` is handed unchanged
    to the ``m``-th instance of any backbone written for one embedding set, and the combine step is a
    plain loop ``mean([I[m](outputs[m]) for m in range(M)])``. (A stacked ``(B, M, k_i, d)`` layout
    would only have to be sliced apart again, since the interaction modules are distinct per set.)

    An integer seed ``s`` in ``embeddings_initializer`` becomes ``s + m`` for set ``m``, so sets never
    start identical.

    Args:
      num_sets: number of embedding sets ``M`` (``>= 1``; the paper uses 2-10).
      vocab_sizes: per field, ``V_f`` (vocab mode) or ``H_f`` (hash mode).
      output_dim: width ``d`` of every set (the paper's base width ``K``).
      modes: per field ``"vocab"`` or ``"hash"``; default all ``"vocab"``.
      input_fields: which field each call input looks up (see :class:`MultiFieldEmbedding`).
      embeddings_initializer: initializer of every set's table (each set drawn independently).
      embeddings_regularizer: optional regularizer of every set's table.
      row_multiple: pads every set's rows to a multiple of this (see :class:`MultiFieldEmbedding`).

    Call arguments:
      inputs: a list of int tensors of shape ``(B, k_i)``.

    Returns:
      A list of ``M`` lists; ``outputs[m][i]`` is input ``i`` embedded by set ``m``, shape
      ``(B, k_i, d)`` in the compute dtype.

    Example:

    >>> me = MultiEmbedding(num_sets=3, vocab_sizes=[3, 5], output_dim=4, modes=["vocab", "hash"])
    >>> out = me([np.array([[0], [7]]), np.array([[6, 1, -1], [2, 0, 4]])])
    >>> len(out), [tuple(x.shape) for x in out[0]], me.count_params()  # 3 sets x 9 rows x 4
    (3, [(2, 1, 4), (2, 3, 4)], 108)
    """

    def __init__(self, num_sets: int, vocab_sizes: Sequence[int], output_dim: int,
                 modes: Sequence[str] | None = None, input_fields: Sequence[int] | None = None,
                 embeddings_initializer="uniform", embeddings_regularizer=None, row_multiple: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_sets, bool) or int(num_sets) != num_sets or int(num_sets) < 1:
            raise ValueError(f"num_sets: must be a positive integer, got {num_sets}")
        self.num_sets = int(num_sets)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.sets = [
            MultiFieldEmbedding(
                vocab_sizes=vocab_sizes, output_dim=output_dim, modes=modes, input_fields=input_fields,
                embeddings_initializer=fresh_initializer(self.embeddings_initializer, m),
                embeddings_regularizer=embeddings_regularizer, row_multiple=row_multiple,
                dtype=self.dtype_policy, name=f"set_{m}",
            )
            for m in range(self.num_sets)
        ]

    @property
    def num_rows(self) -> int:
        return self.sets[0].num_rows

    def rows(self, field: int, ids):
        """Rows of every set's table for ``ids`` of one field."""
        return self.sets[0].rows(field, ids)

    def build(self, input_shape):
        for embedding in self.sets:
            embedding.build(input_shape)

    def call(self, inputs):
        return [embedding(inputs) for embedding in self.sets]

    def compute_output_shape(self, input_shape):
        return [embedding.compute_output_shape(input_shape) for embedding in self.sets]

    def get_config(self):
        config = super().get_config()
        first = self.sets[0].get_config()
        config.update({
            "num_sets": self.num_sets,
            "vocab_sizes": first["vocab_sizes"],
            "output_dim": first["output_dim"],
            "modes": first["modes"],
            "input_fields": first["input_fields"],
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": first["embeddings_regularizer"],
            "row_multiple": first["row_multiple"],
        })
        return config
