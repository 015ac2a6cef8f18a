"""Gradient Aggregation with head/tail plug-ins (PIN, arXiv 2208.09130): OUR interpretation.

The paper's algorithm is not public (docs/methods.md#gradient-aggregation); this
module implements the library's reading of its abstract:

* activeness groups ``z`` are the groups of a cohort axis (:func:`zoo.cohort_heads.axis_groups`,
  e.g. ``{head: [p80_100], tail: [p00_20, ...]}``);
* the backbone is trained on the backdoor-adjusted objective ``sum_z P(z) E[loss | z]`` (user
  activeness as the confounder), estimated per batch as

      L_batch = sum_{z in batch} pi~_z * mean_{i in batch, z(i) = z} BCE_i,
      pi~_z = pi_z / sum_{z' in batch} pi_z'

  i.e. each example has weight ``w_i = pi~_{z(i)} / n_{z(i)}`` (``n_z`` the group's count in the
  batch) and the backbone's gradient is ``g = sum_z pi~_z gbar_z``, ``gbar_z`` the group's mean
  gradient. When every group is in the batch ``pi~ = pi`` and this is exactly the interpretation's ``sum_z pi_z
  gbar_z``; a group absent from a batch has no estimate there, and its prior mass is shared by the
  present groups (renormalised), so the weights always sum to 1;
* ``prior``: ``user_share`` (default): ``pi_z`` = the share of distinct training USERS in group ``z``
  (a user with rows in several groups counts in each, then the shares are renormalised), not the
  share of rows, which is what lets active users dominate plain training; ``uniform``: ``1 / Z``;
* the plug-ins are one tower per group on ``h`` (:func:`zoo.cohort_heads.CohortHeads`), each trained
  on its own group through the routed output and used at serving. Backbone and plug-ins train
  jointly in one phase (the paper's schedule is not public); a tower's gradient is its group's mean
  gradient scaled by ``pi~_z``.

Keras form: the primary target is the pair ``[y, z]`` (:func:`targets`, float32 ``(N, 2)``) and the
loss is :class:`BackdoorAdjustedBCE`, which counts the groups of each batch with ``keras.ops``; it
works with ``model.fit`` on every backend, with no custom train step.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from zoo.cohort_heads import PRIORS, build_cohort_heads, cohort_heads_options
from zoo.model import PRIMARY
from zoo.protocol import adam

PACKAGE = "ctr_zoo"


def user_share_prior(users: np.ndarray, groups: np.ndarray, num_groups: int) -> list[float]:
    """``pi_z``: the share of distinct users with rows in group ``z`` (renormalised to sum to 1).

    Args:
      users: user id of each training row, shape ``(N,)`` or ``(N, 1)``.
      groups: group id of each row, same length.
      num_groups: ``Z``; a group without users gets 0.
    """
    users = np.asarray(users).reshape(-1)
    groups = np.asarray(groups).reshape(-1).astype("int64")
    if users.shape != groups.shape or not len(users):
        raise ValueError(f"users: needs one user id per row of groups, got {users.shape} and {groups.shape}")
    pairs = np.unique(np.stack([groups, users.astype("int64")], axis=1), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=num_groups).astype("float64")
    return (counts / counts.sum()).tolist()


def prior(kind: str, num_groups: int, users: np.ndarray | None = None,
          groups: np.ndarray | None = None) -> list[float]:
    """``P(z)`` of ``kind`` (``user_share`` needs the training rows' ``users`` and ``groups``)."""
    if kind not in PRIORS:
        raise ValueError(f"prior: must be one of {PRIORS}, got {kind!r}")
    if kind == "uniform":
        return [1.0 / num_groups] * num_groups
    if users is None or groups is None:
        raise ValueError("prior: 'user_share' needs the training rows' users and groups")
    return user_share_prior(users, groups, num_groups)


def targets(y: np.ndarray, group: np.ndarray) -> np.ndarray:
    """The primary target of :class:`BackdoorAdjustedBCE`: float32 ``(N, 2)`` columns ``[y, z]``."""
    y = np.asarray(y, dtype="float32").reshape(-1, 1)
    group = np.asarray(group).reshape(-1, 1)
    if len(y) != len(group):
        raise ValueError(f"group: needs one group id per label, got {len(group)} for {len(y)}")
    return np.concatenate([y, group.astype("float32")], axis=1)


def batch_weights(group, prior_):
    """``w_i = pi~_{z(i)} / n_{z(i)}`` for a batch of group ids ``(B,)`` (keras.ops; sums to 1)."""
    prior_ = ops.convert_to_tensor(prior_, dtype="float32")
    one_hot = ops.one_hot(ops.cast(group, "int32"), ops.shape(prior_)[0], dtype="float32")  # (B, Z)
    counts = ops.sum(one_hot, axis=0)                                                        # n_z
    present = ops.cast(counts > 0, "float32")
    mixed = prior_ * present
    mixed = mixed / ops.maximum(ops.sum(mixed), 1e-12)                                      # pi~_z
    per_group = mixed / ops.maximum(counts, 1.0)
    return ops.sum(one_hot * per_group, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BackdoorAdjustedBCE(keras.losses.Loss):
    """Group-balanced BCE: ``L = sum_i w_i BCE(y_i, p_i)``, ``w_i = pi~_{z(i)} / n_{z(i)}`` per batch.

    ``y_true`` is ``(B, 2)``: the label and the group id (:func:`targets`); ``y_pred`` ``(B, 1)``
    probabilities. ``pi~`` is the prior renormalised over the groups present in the batch, so
    ``L = sum_{z in batch} pi~_z mean_{z(i) = z} BCE_i`` (see the module docstring). A Keras
    ``sample_weight`` multiplies ``w_i``.

    Args:
      prior: ``P(z)`` per group (non-negative, summing to a positive number; normalised here).

    Example:

    >>> import numpy as np
    >>> loss = BackdoorAdjustedBCE(prior=[0.5, 0.5])
    >>> y = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], "float32")
    >>> p = np.array([[0.5], [0.5], [0.5], [0.5]], "float32")
    >>> round(float(loss(y, p)), 4)   # every BCE is log 2 and the weights sum to 1
    0.6931
    """

    def __init__(self, prior: Sequence[float], name: str = "backdoor_adjusted_bce", **kwargs):
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", **kwargs)
        values = [float(v) for v in prior]
        if not values or min(values) < 0 or sum(values) <= 0:
            raise ValueError(f"prior: must be non-negative numbers with a positive sum, got {list(prior)}")
        self.prior = [v / sum(values) for v in values]

    def call(self, y_true, y_pred):
        y_true = ops.convert_to_tensor(y_true, dtype="float32")
        y_pred = ops.reshape(ops.cast(y_pred, "float32"), (-1, 1))
        label, group = y_true[:, :1], y_true[:, 1]
        bce = keras.losses.binary_crossentropy(label, y_pred)  # (B,), clipped like keras' BCE
        return bce * batch_weights(group, self.prior)

    def get_config(self):
        return {"name": self.name, "prior": self.prior}


def build_gradient_aggregation(name: str, spec, options: Mapping[str, Any] | None = None,
                               **hparams: Any) -> keras.Model:
    """The training and served model: backbone ``name`` with one routed plug-in tower per group."""
    options = cohort_heads_options({**(options or {}), "method": "gradient_aggregation"})
    return build_cohort_heads(name, spec, options, **hparams)


def compile_gradient_aggregation(model: keras.Model, learning_rate: float, prior_: Sequence[float]) -> None:
    """Adam and :class:`BackdoorAdjustedBCE` on the primary (routed) output; targets from :func:`targets`."""
    model.compile(optimizer=adam(learning_rate), loss={PRIMARY: BackdoorAdjustedBCE(prior_)})
