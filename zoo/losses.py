"""The primary head's training loss: binary cross-entropy, or BCE combined with a pairwise ranking loss.

``training.loss`` in a model YAML (and the ``loss`` of a ``bench/quality_frappe.yaml`` entry) takes
``bce`` (the default) or ``{type: bce_ranking, alpha: 0.7, pairs_per_row: 256}``
(:func:`loss_options`); :func:`primary_loss` makes the Keras loss. Auxiliary heads (C2AL) and the other
tasks of a multi-task model keep plain BCE.
"""

from __future__ import annotations

from typing import Any, Mapping

import keras
import keras_rs
from keras import ops

from layers.embeddings import PACKAGE

LOSS_TYPES = ("bce", "bce_ranking")
RANKING_DEFAULTS = {"alpha": 0.7, "pairs_per_row": 256}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BCEWithPairwiseRanking(keras.losses.Loss):
    """``alpha * BCE + (1 - alpha) * mean over the batch's (positive, negative) pairs of
    -log sigmoid(z_pos - z_neg)`` (arXiv 2403.14144, the combined-pair loss).

    With the batch's labels ``y_b in {0, 1}``, predicted probabilities ``p_b`` and logits
    ``z_b = log p_b - log(1 - p_b)`` (``p`` clipped to ``[eps, 1 - eps]`` as Keras' BCE clips it)::

        L = alpha * mean_b BCE(y_b, p_b) + (1 - alpha) * (1 / |P|) sum_{(i, j) in P} log(1 + exp(-(z_i - z_j)))

    ``P`` holds pairs with ``y_i = 1`` and ``y_j = 0``. A batch without any such pair (no positive or
    no negative) has ``L = BCE``.

    * ``pairs_per_row=None``: ``P`` is every (positive, negative) pair of the batch; the sum over pairs
      is ``keras_rs.losses.PairwiseLogisticLoss`` with the batch as one list (``O(B^2)`` memory).
    * ``pairs_per_row=k``: each row ``b`` is compared with the next ``k`` rows of the batch,
      ``b + 1 .. b + k`` (cyclically), and ``P`` keeps the compared pairs whose labels differ, oriented
      positive first: at most ``B * k`` pairs at ``O(B k)`` cost. With shuffled training batches this is
      a uniform sample of the batch's pairs without replacement; no pair is counted twice (an offset
      ``t`` with ``2t > B`` is left out, ``2t = B`` counted at weight 1/2), so ``k >= (B - 1) / 2``
      compares every pair once and equals ``pairs_per_row=None``.

    Args:
      alpha: weight of the BCE term, in ``[0, 1]`` (1: BCE alone; 0: the ranking loss alone).
      pairs_per_row: the cap ``k`` of compared rows per row, or None for all pairs.

    Example:

    >>> loss = BCEWithPairwiseRanking(alpha=0.5, pairs_per_row=None)
    >>> y = np.array([[1.], [0.], [0.]], "float32")
    >>> p = np.array([[0.5], [0.5], [0.5]], "float32")  # equal logits: each pair costs log 2
    >>> round(float(loss(y, p)), 4)  # 0.5 * log 2 (BCE) + 0.5 * log 2 (ranking)
    0.6931
    >>> round(float(loss(np.ones((3, 1), "float32"), p)), 4)  # no negative: BCE alone
    0.6931
    """

    def __init__(self, alpha: float = 0.7, pairs_per_row: int | None = 256, name: str = "bce_ranking", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha: must be a number in [0, 1], got {alpha!r}")
        if pairs_per_row is not None and (isinstance(pairs_per_row, bool) or not isinstance(pairs_per_row, int)
                                          or pairs_per_row < 1):
            raise ValueError(f"pairs_per_row: must be a positive integer or None (all pairs), got {pairs_per_row!r}")
        self.alpha = float(alpha)
        self.pairs_per_row = pairs_per_row
        self._all_pairs = keras_rs.losses.PairwiseLogisticLoss(reduction="sum")

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:  # one value per batch: a per-row weight has nothing to scale
            raise ValueError("sample_weight: BCEWithPairwiseRanking is a loss of the whole batch and takes no "
                             "per-row sample weights")
        return super().__call__(y_true, y_pred)

    def call(self, y_true, y_pred):
        y = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        p = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
        bce = ops.mean(keras.losses.binary_crossentropy(y[:, None], p[:, None]))
        eps = keras.config.epsilon()
        p = ops.clip(p, eps, 1.0 - eps)
        z = ops.log(p) - ops.log1p(-p)
        positive = ops.cast(y > 0.5, "float32")
        if self.pairs_per_row is None:
            total = self._all_pairs(positive[None, :], z[None, :])
            count = ops.sum(positive) * ops.sum(1.0 - positive)
        else:
            total, count = self._sampled_pairs(positive, z)
        ranking = total / ops.maximum(count, 1.0)
        loss = ops.where(count > 0, self.alpha * bce + (1.0 - self.alpha) * ranking, bce)
        return ops.cast(loss, self.dtype)

    def _sampled_pairs(self, positive, z):
        """Sum and count of the pair losses of each row against its next ``k`` rows (cyclically)."""
        rows = ops.shape(z)[0]
        offsets = ops.arange(1, self.pairs_per_row + 1, dtype="int32")                  # t = 1..k
        index = ops.mod(ops.arange(rows, dtype="int32")[:, None] + offsets[None, :], rows)   # (B, k): b + t
        sign = positive[:, None] - ops.take(positive, index, axis=0)                   # +1, -1, or 0 (same label)
        margin = sign * (z[:, None] - ops.take(z, index, axis=0))                     # z_pos - z_neg
        twice = 2 * offsets
        weight = ops.where(twice < rows, 1.0, ops.where(twice == rows, 0.5, 0.0))      # each pair once
        weight = ops.abs(sign) * ops.cast(weight, "float32")[None, :]
        return ops.sum(weight * ops.softplus(-margin)), ops.sum(weight)

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "pairs_per_row": self.pairs_per_row})
        return config


def loss_options(value: Any, where: str = "training.loss") -> dict[str, Any]:
    """``training.loss`` normalized: ``{"type": "bce"}`` or ``{"type": "bce_ranking", "alpha",
    "pairs_per_row"}`` with :data:`RANKING_DEFAULTS` filled in.

    Accepts a type name or a mapping with ``type``; raises ValueError naming ``where`` and the key for
    an unknown type or key or a bad value.
    """
    options = {"type": value} if isinstance(value, str) else dict(value) if isinstance(value, Mapping) else None
    if options is None or options.get("type") not in LOSS_TYPES:
        raise ValueError(f"{where}: must be one of {list(LOSS_TYPES)} or a mapping with such a type, got {value!r}")
    allowed = {"type"} | (set(RANKING_DEFAULTS) if options["type"] == "bce_ranking" else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for type '{options['type']}'; allowed: {sorted(allowed)}")
    if options["type"] == "bce_ranking":
        options = {**RANKING_DEFAULTS, **options}
        try:
            BCEWithPairwiseRanking(options["alpha"], options["pairs_per_row"])
        except ValueError as err:
            raise ValueError(f"{where}.{err}") from None
    return options


def primary_loss(options: Mapping[str, Any] | str | None = None) -> keras.losses.Loss:
    """The Keras loss of the primary head for ``training.loss`` options (None: BCE)."""
    options = loss_options(options if options is not None else "bce")
    if options["type"] == "bce":
        return keras.losses.BinaryCrossentropy()
    return BCEWithPairwiseRanking(alpha=options["alpha"], pairs_per_row=options["pairs_per_row"])
