"""PLE (Tang et al., RecSys 2020) and MMoE (Ma et al., KDD 2018): gated mixtures of expert MLPs.

Input: ``x_0 = concat(e_1, .., e_F, x_dense)``, every field embedding and the dense features. With
``T = num_tasks`` tasks, the experts produce one gated representation per task::

    PLE  (layers.PLE):  [f^1, .., f^T] = CGC_L( .. CGC_1(x_0) .. )   task gate over its S specific + H shared
                                                                      experts; a shared gate between levels
    MMoE (layers.MMoE): f^t = sum_e softmax(W_g^t h_g^t(x_0))_e Expert_e(x_0)

    u^t = Tower^t(f^t)    (an MLP of widths tower_units; the identity when empty)
    h   = u^1             (the primary task's representation, which feeds the primary head)

``mmoe`` is the single-level case without task-specific experts (``PLE(num_levels=1,
num_specific_experts=0, num_shared_experts=E)`` computes the same function).

Every task's representation is available for multi-task variants (e.g. C2AL's "auxiliary tasks as
extra PLE towers" ablation, docs/methods.md#ablations): ``backbone(features, all_tasks=True)`` returns the list
``[u^1, .., u^T]`` (``u^1`` is ``h``); ``backbone.towers`` and ``backbone.experts`` are the layers.
In a functional graph, call a backbone with ``all_tasks=True`` first and take ``h`` as element 0
(Keras checks a functional graph's connectivity with the output structure of a layer's first call).
In the single-head model of :func:`zoo.model.build`, the towers, gates and specific experts of
tasks ``2..T`` get no gradient; ``num_tasks > 1`` is only useful with heads on those tasks, as in
:func:`zoo.c2al.ple_towers`. Serving drops them: :meth:`serving_copy` is the single-task backbone
with the primary path's weights (MMoE and single-level PLE; see :meth:`primary_path_is_separable`).

The interaction output ``z`` (``return_interaction=True``, the C2AL ``interaction_output`` tap) is
the concatenated (set-averaged) input ``x_0`` of the experts.

The experts and towers are the shared over-arch; the per-set interaction is the concatenation, so
with the ``multi`` embedding option each set's ``x_0`` goes through the base class's per-set
projection ``ReLU(Dense(|x_0|))`` and the sets are averaged before the experts.

Defaults are FuxiCTR's (docs/methods.md#ablations): PLE 1 level, 8 shared experts, 1 specific expert per task;
MMoE 8 experts; experts [512, 256, 128], gates [128, 64], towers [128, 64]. ``configs/models/
{ple,mmoe}.yaml`` scale them for CPU training on the synthetic data: 4 shared experts (PLE: plus 1
specific), experts [256, 128], gates [64], towers [64].
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from keras import ops

from layers import MLP, MMoE, PLE
from zoo.backbone import Backbone, HyperParameters
from zoo.backbones._common import activation, count, norm, rate, units
from zoo.registry import register_backbone


@dataclasses.dataclass(frozen=True)
class GatedExpertsHyperParameters(HyperParameters):
    """The hyper-parameters PLE and MMoE share.

    Attributes:
      num_tasks: number of tasks ``T`` (>= 1); task 0 is the primary task, whose output is ``h``.
      expert_units: widths of every expert MLP.
      gate_units: hidden widths of every gate (empty: linear gates).
      tower_units: widths of every task tower MLP (empty: ``h`` is the gated expert output).
      activation: activation of the experts, gates and towers.
      dropout: dropout of the experts, gates and towers.
      norm: normalization of the experts, gates and towers (None, ``"batch"``, ``"layer"``).
    """

    num_tasks: int = count(1)
    expert_units: Sequence[int] = units((512, 256, 128), allow_empty=False)
    gate_units: Sequence[int] = units((128, 64))
    tower_units: Sequence[int] = units((128, 64))
    activation: str = activation("relu")
    dropout: float = rate(0.0)
    norm: str | None = norm(None)


@dataclasses.dataclass(frozen=True)
class PLEHyperParameters(GatedExpertsHyperParameters):
    """PLE's hyper-parameters (plus :class:`GatedExpertsHyperParameters`).

    Attributes:
      num_levels: number of CGC levels (>= 1).
      num_specific_experts: task-specific experts per task and level (>= 0).
      num_shared_experts: shared experts per level (>= 0; specific + shared >= 1).
    """

    num_levels: int = count(1)
    num_specific_experts: int = count(1, minimum=0)
    num_shared_experts: int = count(8, minimum=0)

    def validate(self):
        if self.num_specific_experts + self.num_shared_experts < 1:
            raise ValueError("num_shared_experts: each task gate needs at least one expert "
                             "(num_specific_experts + num_shared_experts >= 1), got 0 + 0")


@dataclasses.dataclass(frozen=True)
class MMoEHyperParameters(GatedExpertsHyperParameters):
    """MMoE's hyper-parameters (plus :class:`GatedExpertsHyperParameters`).

    Attributes:
      num_experts: number of shared experts ``E`` (>= 1).
    """

    num_experts: int = count(8)


class _GatedExperts(Backbone):
    """Shared code of the PLE and MMoE backbones: concatenated input, experts, towers, task selection."""

    def setup(self):
        self.experts = self.make_experts()
        self.towers = [
            MLP(self.tower_units, activation=self.activation, dropout=self.dropout, norm=self.norm,
                dtype=self.dtype_policy, name=f"tower_{t}")
            for t in range(self.num_tasks)
        ] if self.tower_units else []
        self._all_tasks = False
        self.build_interactions()

    def make_experts(self):
        raise NotImplementedError

    def _expert_kwargs(self) -> dict[str, Any]:
        return dict(expert_units=self.expert_units, gate_units=self.gate_units, activation=self.activation,
                    dropout=self.dropout, norm=self.norm, dtype=self.dtype_policy, name="experts")

    def make_interaction(self, index):
        return None  # the interaction is the concatenation; the experts are the shared over-arch

    def interact(self, module, tokens, dense, training=None):
        return ops.concatenate(tokens + ([dense] if dense is not None else []), axis=-1)

    def task_representations(self, z, training=None) -> list:
        """``[u^1, .., u^T]`` from the (set-averaged) interaction output ``z``."""
        outputs = self.experts(z, training=training)
        if self.towers:
            outputs = [tower(f, training=training) for tower, f in zip(self.towers, outputs)]
        return list(outputs)

    def over_arch(self, z, training=None):
        tasks = self.task_representations(z, training=training)
        return tasks if self._all_tasks else tasks[0]

    def call(self, features, training=None, all_tasks=False, return_interaction=False):
        """``h`` (the primary task's ``u^1``), or with ``all_tasks=True`` the list ``[u^1, .., u^T]``;
        with ``return_interaction=True`` the pair ``(that, z)`` (see :meth:`Backbone.call`)."""
        if not all_tasks:
            return super().call(features, training=training, return_interaction=return_interaction)
        self._all_tasks = True  # read by over_arch during this (synchronous) call only
        try:
            return super().call(features, training=training, return_interaction=return_interaction)
        finally:
            self._all_tasks = False

    def primary_path_is_separable(self) -> bool:
        """Whether task 0's output reads none of the other tasks' weights.

        True for MMoE (task 0 = the shared experts and gate 0) and for single-level PLE (shared
        experts, task 0's specific experts and gate). In a PLE level below the last, the shared gate
        mixes every task's specific experts into the next level's shared input, so it is False there.
        """
        return getattr(self, "num_levels", 1) == 1

    def serving_copy(self, input_shape):
        """For ``num_tasks > 1`` with a separable primary path: the single-task backbone (``num_tasks=1``,
        same name and hyper-parameters) holding this one's primary-path weights (matched by weight path:
        embeddings, shared experts, task 0's specific experts and gate, tower 0). It computes the same
        ``h`` and has the parameter count of the single-task baseline. Else None."""
        if self.num_tasks == 1 or not self.primary_path_is_separable():
            return None
        copy = self.__class__.from_config({**self.get_config(), "num_tasks": 1})
        copy.build(input_shape)
        source = {w.path: w for w in self.weights}
        for weight in copy.weights:
            match = source.get(weight.path)
            if match is None or tuple(match.shape) != tuple(weight.shape):
                raise ValueError(f"serving_copy: no weight '{weight.path}' of shape {tuple(weight.shape)} in "
                                 f"backbone '{self.name}'")
            weight.assign(ops.convert_to_numpy(match))  # a copy: no buffer shared with training
        return copy


@register_backbone("ple")
class PLEBackbone(_GatedExperts):
    """PLE backbone: ``h`` is the primary task's (tower) output of a :class:`layers.PLE` stack
    (hyper-parameters: :class:`PLEHyperParameters`)."""

    Hyperparameters = PLEHyperParameters

    def make_experts(self):
        return PLE(num_levels=self.num_levels, num_tasks=self.num_tasks,
                   num_specific_experts=self.num_specific_experts, num_shared_experts=self.num_shared_experts,
                   **self._expert_kwargs())


@register_backbone("mmoe")
class MMoEBackbone(_GatedExperts):
    """MMoE backbone: ``h`` is the primary task's (tower) output of a :class:`layers.MMoE`
    (hyper-parameters: :class:`MMoEHyperParameters`)."""

    Hyperparameters = MMoEHyperParameters

    def make_experts(self):
        return MMoE(num_experts=self.num_experts, num_tasks=self.num_tasks, **self._expert_kwargs())
