"""Per-example routing to cohort-specific towers: a cohort axis bucketized in-graph, and the router.

:class:`CohortBucketizer` maps the raw feature an axis is computed from to its cohort (or group)
id inside the graph, with the exact rule the data pipeline uses, so a served model routes from the
same raw feature its clients already send. :class:`CohortRouter` takes the stacked logits of ``G``
towers and keeps, for each example, the one of its own group.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from layers.embeddings import PACKAGE


def _float32_at_least(b: float) -> float:
    """The smallest float32 ``>= b``: ``v >= b`` and ``v >= this`` agree for every float32 ``v``."""
    f = np.float32(b)
    if float(f) < float(b):
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CohortBucketizer(keras.layers.Layer):
    """The cohort (or group) id of each example from the raw value of the axis's feature.

    Ordinal axis (``boundaries`` ``b_0 < b_1 < ...``): ``c(v) = #{j : b_j <= v}`` (``b_{c-1} <= v < b_c``,
    bisect-right, the rule of the feature spec's ``CohortAxis.cohort_id``). The boundaries are kept as
    the smallest float32 ``>= b_j``, so a float32 input falls on the same side of every boundary as the
    float64 comparison of the data pipeline (subnormal inputs may be flushed to zero by a backend's
    kernels first).

    Categorical axis (``values``: one list of ids per listed cohort): ``c(v) = k`` if ``v`` is in
    ``values[k]``, else ``len(values)`` (the axis's ``other`` cohort).

    Optional ``groups`` (one group index per cohort) then maps ``g = groups[c(v)]``, e.g. six quantile
    cohorts onto two activeness groups.

    Args:
      boundaries: strictly increasing numbers (ordinal axis); exclusive with ``values``.
      values: per-cohort lists of integer ids (categorical axis); ids must be distinct.
      groups: optional group index per cohort (``len(boundaries) + 1`` or ``len(values) + 1`` entries).

    Input: ``(B, 1)`` float (ordinal) or integer (categorical) values. Output: ``(B, 1)`` int32 ids.
    Never autocast (a ``mixed_bfloat16`` policy would move values across boundaries).

    Example:

    >>> import numpy as np
    >>> bucket = CohortBucketizer(boundaries=[-1.0, 1.0], groups=[0, 0, 1])
    >>> np.asarray(bucket(np.array([[-2.0], [1.0], [0.5]], "float32"))).ravel().tolist()
    [0, 1, 0]
    >>> cat = CohortBucketizer(values=[[0], [1, 2]])
    >>> np.asarray(cat(np.array([[2], [7], [0]]))).ravel().tolist()
    [1, 2, 0]
    """

    def __init__(self, boundaries: Sequence[float] | None = None, values: Sequence[Sequence[int]] | None = None,
                 groups: Sequence[int] | None = None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if (boundaries is None) == (values is None):
            raise ValueError("boundaries: give exactly one of boundaries (ordinal axis) and values (categorical axis)")
        if boundaries is not None:
            b = [float(x) for x in boundaries]
            if not b or any(x >= y for x, y in zip(b, b[1:])):
                raise ValueError(f"boundaries: must be a non-empty, strictly increasing list, got {list(boundaries)}")
            self.boundaries, self.values = b, None
            self.num_cohorts = len(b) + 1
        else:
            vals = [[int(v) for v in ids] for ids in values]
            flat = [v for ids in vals for v in ids]
            if not vals or len(set(flat)) != len(flat):
                raise ValueError(f"values: must be a non-empty list of per-cohort id lists with distinct ids, "
                                 f"got {list(values)}")
            self.boundaries, self.values = None, vals
            self.num_cohorts = len(vals) + 1
        if groups is not None:
            groups = [int(g) for g in groups]
            if len(groups) != self.num_cohorts or min(groups) < 0:
                raise ValueError(f"groups: must give a non-negative group index for each of the {self.num_cohorts} "
                                 f"cohorts, got {groups}")
        self.groups = groups

    @property
    def num_groups(self) -> int:
        """Number of distinct ids the layer can output."""
        return self.num_cohorts if self.groups is None else max(self.groups) + 1

    def call(self, x):
        if self.boundaries is not None:
            edges = ops.convert_to_tensor([_float32_at_least(b) for b in self.boundaries], dtype="float32")
            ids = ops.sum(ops.cast(ops.cast(x, "float32") >= edges, "int32"), axis=-1, keepdims=True)
        else:
            listed = [v for v_ids in self.values for v in v_ids]
            cohort_of = [k for k, v_ids in enumerate(self.values) for _ in v_ids]
            other = len(self.values)
            dtype = keras.backend.standardize_dtype(x.dtype)  # ids compared in their own integer dtype
            dtype = dtype if "int" in dtype else "int32"
            hit = ops.cast(ops.equal(ops.cast(x, dtype), ops.convert_to_tensor(listed, dtype=dtype)), "int32")
            offsets = ops.convert_to_tensor([k - other for k in cohort_of], dtype="int32")
            ids = other + ops.sum(hit * offsets, axis=-1, keepdims=True)
        if self.groups is not None:
            ids = ops.take(ops.convert_to_tensor(self.groups, dtype="int32"), ids)
        return ops.cast(ids, "int32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (1,)

    def compute_output_spec(self, x):
        return keras.KerasTensor(tuple(x.shape)[:-1] + (1,), dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update({"boundaries": self.boundaries, "values": self.values, "groups": self.groups})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class CohortRouter(keras.layers.Layer):
    """Keeps each example's own group's logit: ``out_i = L[i, g_i]``.

    ``L`` is ``(B, G)``, the stacked logits of ``G`` group towers, and ``g`` ``(B, 1)`` integer group
    ids; ids outside ``[0, G)`` are clipped into it (the bucketizer never produces one). The gradient
    reaches only the selected tower, so training on the routed output trains each tower on its own
    group's examples while everything below the towers is shared.

    Args:
      num_groups: ``G``, the number of towers (checked against the logits' last axis).

    Example:

    >>> import numpy as np
    >>> router = CohortRouter(num_groups=3)
    >>> logits = np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]], "float32")
    >>> np.asarray(router([logits, np.array([[2], [0]])])).ravel().tolist()
    [0.30000001192092896, 1.0]
    """

    def __init__(self, num_groups: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) or num_groups < 1:
            raise ValueError(f"num_groups: must be an integer >= 1, got {num_groups!r}")
        self.num_groups = int(num_groups)

    def build(self, input_shape):
        logits_shape = tuple(input_shape[0])
        if logits_shape[-1] != self.num_groups:
            raise ValueError(f"num_groups: the logits have {logits_shape[-1]} columns, expected {self.num_groups}")

    def call(self, inputs):
        logits, group = inputs
        index = ops.clip(ops.cast(group, "int32"), 0, self.num_groups - 1)
        return ops.take_along_axis(logits, index, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])[:-1] + (1,)

    def get_config(self):
        config = super().get_config()
        config.update({"num_groups": self.num_groups})
        return config
