"""Multi-task expert layers: MMoE and PLE (stacked CGC levels).

Both mix the outputs of expert MLPs with per-task softmax gates computed from the input. ``MMoE``
shares every expert between all tasks; ``CGCLevel`` adds task-specific experts and ``PLE`` stacks
levels, each level's outputs being the next level's inputs. MMoE is exactly the single-level PLE with
no task-specific experts (same experts, same gates, same mixing).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from layers.blocks import MLP
from layers.embeddings import PACKAGE
from layers import validation
from layers.initializers import fresh_initializer


def _mix(gate, experts):
    """``sum_e gate[..., e] * experts[e]``: a ``(..., E)`` gate and ``E`` tensors ``(..., d)`` -> ``(..., d)``."""
    stacked = ops.stack(experts, axis=-2)  # (..., E, d)
    return ops.sum(ops.expand_dims(gate, -1) * stacked, axis=-2)


def _is_shape_list(input_shape) -> bool:
    """True for a list of shapes (a list input), False for one shape."""
    return isinstance(input_shape, (list, tuple)) and len(input_shape) > 0 and \
        isinstance(input_shape[0], (list, tuple))


class _SoftmaxGate(keras.layers.Layer):
    """``softmax(W h(x) + b)`` over ``num_outputs`` experts; ``h`` is an MLP, or the identity if no widths."""

    def __init__(self, num_outputs: int, hidden_units: Sequence[int], mlp_kwargs: dict, logits_initializer,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_outputs = int(num_outputs)
        self.hidden = (MLP(hidden_units, dtype=self.dtype_policy, name="hidden", **mlp_kwargs)
                       if hidden_units else None)
        self.logits = keras.layers.Dense(
            self.num_outputs, kernel_initializer=logits_initializer,
            kernel_regularizer=mlp_kwargs["kernel_regularizer"], dtype=self.dtype_policy, name="logits")

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.hidden is not None:
            self.hidden.build(shape)
            shape = self.hidden.compute_output_shape(shape)
        self.logits.build(shape)

    def call(self, x, training=None):
        if self.hidden is not None:
            x = self.hidden(x, training=training)
        return ops.softmax(self.logits(x), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.num_outputs,)


class _ExpertLayer(keras.layers.Layer):
    """Shared argument handling of the expert layers: the expert/gate MLP settings and their factories."""

    def __init__(self, expert_units, gate_units, activation, dropout, norm, kernel_initializer, kernel_regularizer,
                 **kwargs):
        super().__init__(**kwargs)
        self.expert_units = validation.widths(expert_units, "expert_units", allow_empty=False)
        self.gate_units = validation.widths(gate_units, "gate_units", allow_empty=True)
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.norm = norm
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        MLP(self.expert_units, dropout=self.dropout, norm=self.norm)  # validates dropout and norm (same names)
        self._num_sublayers = 0

    def _mlp_kwargs(self) -> dict:
        """MLP settings for the next sublayer, with its own initializer instance."""
        self._num_sublayers += 1
        return dict(activation=self.activation, dropout=self.dropout, norm=self.norm,
                    kernel_initializer=fresh_initializer(self.kernel_initializer, self._num_sublayers),
                    kernel_regularizer=self.kernel_regularizer)

    def _expert(self, name: str) -> MLP:
        return MLP(self.expert_units, dtype=self.dtype_policy, name=name, **self._mlp_kwargs())

    def _gate(self, name: str, num_outputs: int) -> _SoftmaxGate:
        mlp_kwargs = self._mlp_kwargs()
        logits_initializer = fresh_initializer(self.kernel_initializer, 1000 + self._num_sublayers)
        return _SoftmaxGate(num_outputs, self.gate_units, mlp_kwargs, logits_initializer,
                            dtype=self.dtype_policy, name=name)

    def get_config(self):
        config = super().get_config()
        config.update({
            "expert_units": self.expert_units,
            "gate_units": self.gate_units,
            "activation": keras.activations.serialize(self.activation),
            "dropout": self.dropout,
            "norm": self.norm,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class MMoE(_ExpertLayer):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018): ``E`` shared experts, one softmax gate per task.

    For tasks ``t = 1..T`` and experts ``e = 1..E``:

        g^t(x) = softmax(W_g^t h_g^t(x) + b_g^t)         in R^E
        f^t(x) = sum_e g^t(x)_e * Expert_e(x)            in R^{expert_units[-1]}

    ``Expert_e`` is an :class:`~layers.blocks.MLP` of widths ``expert_units`` (activation on every
    layer, FuxiCTR's expert) and ``h_g^t`` the gate's hidden MLP of widths ``gate_units`` (the
    identity when empty, i.e. the linear gate ``softmax(W_g^t x + b_g^t)``). The towers
    ``y^t = Tower^t(f^t(x))`` belong to the model. This is exactly
    ``PLE(num_levels=1, num_specific_experts=0, num_shared_experts=E)``.

    Args:
      num_experts: number of experts ``E`` (shared by all tasks), ``>= 1``.
      expert_units: widths of every expert MLP, e.g. ``[512, 256, 128]``.
      num_tasks: number of tasks ``T`` (one gate each), ``>= 1``.
      gate_units: widths of every gate's hidden MLP, e.g. ``[128, 64]``; default ``()`` (linear gate).
      activation: activation of the expert and gate hidden layers.
      dropout: dropout rate after each expert and gate hidden layer, in ``[0, 1)``.
      norm: ``None``, ``"batch"`` or ``"layer"`` normalization in the expert and gate hidden layers.
      kernel_initializer: initializer of every dense kernel.
      kernel_regularizer: optional regularizer of every dense kernel.

    Call arguments:
      inputs: a ``(B, D)`` tensor (any leading dims ``(..., D)`` work).
      return_gates: also return the gate weights.
      training: Python bool for dropout / batch normalization.

    Returns:
      A list of ``T`` tensors ``(B, expert_units[-1])``; with ``return_gates=True`` the pair
      ``(outputs, gates)``, ``gates`` a list of ``T`` tensors ``(B, E)`` (non-negative, rows sum to 1).

    Example:

    >>> mmoe = MMoE(num_experts=3, expert_units=[6, 4], num_tasks=2, gate_units=[3])
    >>> outputs, gates = mmoe(np.ones((6, 5), "float32"), return_gates=True)
    >>> [tuple(o.shape) for o in outputs], [tuple(g.shape) for g in gates]
    ([(6, 4), (6, 4)], [(6, 3), (6, 3)])
    >>> mmoe.count_params()  # 3 experts * (5*6+6 + 6*4+4) + 2 gates * (5*3+3 + 3*3+3)
    252
    """

    def __init__(self, num_experts: int, expert_units: Sequence[int], num_tasks: int, gate_units: Sequence[int] = (),
                 activation="relu", dropout: float = 0.0, norm: str | None = None,
                 kernel_initializer="glorot_uniform", kernel_regularizer=None, **kwargs):
        super().__init__(expert_units, gate_units, activation, dropout, norm, kernel_initializer,
                         kernel_regularizer, **kwargs)
        self.num_experts = validation.integer(num_experts, "num_experts", 1)
        self.num_tasks = validation.integer(num_tasks, "num_tasks", 1)
        self.experts = [self._expert(f"expert_{e}") for e in range(self.num_experts)]
        self.gates = [self._gate(f"gate_{t}", self.num_experts) for t in range(self.num_tasks)]

    def build(self, input_shape):
        for layer in self.experts + self.gates:
            layer.build(tuple(input_shape))

    def call(self, inputs, return_gates=False, training=None):
        experts = [expert(inputs, training=training) for expert in self.experts]
        gates = [gate(inputs, training=training) for gate in self.gates]
        outputs = [_mix(g, experts) for g in gates]
        return (outputs, gates) if return_gates else outputs

    def get_config(self):
        config = super().get_config()
        config.update({"num_experts": self.num_experts, "num_tasks": self.num_tasks})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class CGCLevel(_ExpertLayer):
    """One Customized Gate Control level of PLE (Tang et al., RecSys 2020), stackable.

    Task ``t = 1..T`` owns ``S`` specific experts ``E^t_1..E^t_S`` fed by its input ``x_t``; ``H``
    shared experts ``E^0_1..E^0_H`` are fed by the shared input ``x_0``. Each task mixes its own
    and the shared experts with a softmax gate over ``S + H`` experts:

        f^t = sum_j softmax(W^t h^t(x_t) + b^t)_j * [E^t_1(x_t), .., E^t_S(x_t), E^0_1(x_0), .., E^0_H(x_0)]_j

    With ``output_shared=True`` (every level but the last in a stack) a shared gate over all
    ``T*S + H`` experts, ordered ``[E^1_*, .., E^T_*, E^0_*]``, produces the next level's shared input:

        f^0 = sum_j softmax(W^0 h^0(x_0) + b^0)_j * [E^1_1(x_1), .., E^T_S(x_T), E^0_1(x_0), .., E^0_H(x_0)]_j

    Experts are :class:`~layers.blocks.MLP` of widths ``expert_units``; ``h`` is a gate's hidden MLP
    of widths ``gate_units`` (identity when empty). The expert order and the input each gate sees
    follow FuxiCTR's ``CGC_Layer``.

    Args:
      num_tasks: number of tasks ``T``, ``>= 1``.
      num_specific_experts: experts per task ``S``, ``>= 0``.
      num_shared_experts: shared experts ``H``, ``>= 0``; ``S + H >= 1``.
      expert_units: widths of every expert MLP.
      gate_units: widths of every gate's hidden MLP; default ``()`` (linear gates).
      output_shared: also compute the shared gate and return ``f^0`` (for a following level).
      activation, dropout, norm, kernel_initializer, kernel_regularizer: as in :class:`MMoE`.

    Call arguments:
      inputs: either one ``(B, D)`` tensor, used as every ``x_t`` and as ``x_0`` (the first level),
        or a list of ``T + 1`` tensors ``[x_1, .., x_T, x_0]`` (a previous level's output).
      return_gates: also return the gate weights.
      training: Python bool for dropout / batch normalization.

    Returns:
      A list ``[f^1, .., f^T]`` of ``(B, expert_units[-1])`` tensors, followed by ``f^0`` when
      ``output_shared`` (so the list feeds the next level as is). With ``return_gates=True`` the pair
      ``(outputs, gates)``: ``T`` task gates ``(B, S + H)``, then the shared gate ``(B, T*S + H)``
      when ``output_shared``.

    Example:

    >>> level = CGCLevel(num_tasks=2, num_specific_experts=1, num_shared_experts=2, expert_units=[6, 4],
    ...                  output_shared=True)
    >>> outputs, gates = level(np.ones((6, 5), "float32"), return_gates=True)
    >>> [tuple(o.shape) for o in outputs], [tuple(g.shape) for g in gates]
    ([(6, 4), (6, 4), (6, 4)], [(6, 3), (6, 3), (6, 4)])
    >>> [tuple(o.shape) for o in CGCLevel(2, 1, 2, [6, 3])(outputs)]  # stacked on the previous level
    [(6, 3), (6, 3)]
    """

    def __init__(self, num_tasks: int, num_specific_experts: int, num_shared_experts: int,
                 expert_units: Sequence[int], gate_units: Sequence[int] = (), output_shared: bool = False,
                 activation="relu", dropout: float = 0.0, norm: str | None = None,
                 kernel_initializer="glorot_uniform", kernel_regularizer=None, **kwargs):
        super().__init__(expert_units, gate_units, activation, dropout, norm, kernel_initializer,
                         kernel_regularizer, **kwargs)
        self.num_tasks = validation.integer(num_tasks, "num_tasks", 1)
        self.num_specific_experts = validation.integer(num_specific_experts, "num_specific_experts", 0)
        self.num_shared_experts = validation.integer(num_shared_experts, "num_shared_experts", 0)
        if self.num_specific_experts + self.num_shared_experts < 1:
            raise ValueError("num_specific_experts, num_shared_experts: each task gate needs at least one expert, "
                             "got 0 + 0")
        self.output_shared = bool(output_shared)
        s, h = self.num_specific_experts, self.num_shared_experts
        # Flat list: task t's experts are specific_experts[t*S:(t+1)*S].
        self.specific_experts = [self._expert(f"expert_task{t}_{i}") for t in range(self.num_tasks) for i in range(s)]
        self.shared_experts = [self._expert(f"expert_shared_{i}") for i in range(h)]
        self.task_gates = [self._gate(f"gate_task{t}", s + h) for t in range(self.num_tasks)]
        self.shared_gate = self._gate("gate_shared", self.num_tasks * s + h) if self.output_shared else None

    def _shapes(self, input_shape) -> list[tuple]:
        if not _is_shape_list(input_shape):
            return [tuple(input_shape)] * (self.num_tasks + 1)
        if len(input_shape) != self.num_tasks + 1:
            raise ValueError(f"inputs: expected one tensor or a list of num_tasks + 1 = {self.num_tasks + 1} tensors "
                             f"[task inputs..., shared input], got {len(input_shape)}")
        return [tuple(s) for s in input_shape]

    def build(self, input_shape):
        shapes = self._shapes(input_shape)
        s = self.num_specific_experts
        for t in range(self.num_tasks):
            for expert in self.specific_experts[t * s:(t + 1) * s]:
                expert.build(shapes[t])
            self.task_gates[t].build(shapes[t])
        for expert in self.shared_experts:
            expert.build(shapes[-1])
        if self.shared_gate is not None:
            self.shared_gate.build(shapes[-1])

    def call(self, inputs, return_gates=False, training=None):
        xs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs] * (self.num_tasks + 1)
        if len(xs) != self.num_tasks + 1:
            raise ValueError(f"inputs: expected one tensor or a list of num_tasks + 1 = {self.num_tasks + 1} tensors, "
                             f"got {len(xs)}")
        s = self.num_specific_experts
        specific = [expert(xs[i // s], training=training) for i, expert in enumerate(self.specific_experts)] \
            if s else []
        shared = [expert(xs[-1], training=training) for expert in self.shared_experts]
        outputs, gates = [], []
        for t, gate in enumerate(self.task_gates):
            gates.append(gate(xs[t], training=training))
            outputs.append(_mix(gates[-1], specific[t * s:(t + 1) * s] + shared))
        if self.shared_gate is not None:
            gates.append(self.shared_gate(xs[-1], training=training))
            outputs.append(_mix(gates[-1], specific + shared))
        return (outputs, gates) if return_gates else outputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_tasks": self.num_tasks,
            "num_specific_experts": self.num_specific_experts,
            "num_shared_experts": self.num_shared_experts,
            "output_shared": self.output_shared,
        })
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class PLE(_ExpertLayer):
    """Progressive Layered Extraction (Tang et al., RecSys 2020): ``num_levels`` stacked :class:`CGCLevel`.

    Level ``l`` maps ``[x_1, .., x_T, x_0]`` to ``[f^1, .., f^T, f^0]`` (see :class:`CGCLevel`); its
    outputs are level ``l + 1``'s inputs. Every level but the last has the shared gate
    (``output_shared=True``); the last returns the task outputs only. The first level sees the same
    input ``x`` as every ``x_t`` and as ``x_0``. All levels share ``expert_units`` and ``gate_units``
    (FuxiCTR's PLE). The towers ``y^t = Tower^t(f^t)`` belong to the model. With ``num_levels=1``
    and ``num_specific_experts=0`` this is :class:`MMoE` with ``num_shared_experts`` experts.

    Args:
      num_levels: number of CGC levels ``L``, ``>= 1``.
      num_tasks: number of tasks ``T``, ``>= 1``.
      num_specific_experts: task-specific experts per task and level ``S``, ``>= 0``.
      num_shared_experts: shared experts per level ``H``, ``>= 0``; ``S + H >= 1``.
      expert_units: widths of every expert MLP, e.g. ``[512, 256, 128]``.
      gate_units: widths of every gate's hidden MLP, e.g. ``[128, 64]``; default ``()`` (linear gates).
      activation, dropout, norm, kernel_initializer, kernel_regularizer: as in :class:`MMoE`.

    Call arguments:
      inputs: a ``(B, D)`` tensor, or a list of ``T + 1`` tensors ``[x_1, .., x_T, x_0]``.
      return_gates: also return the gate weights.
      training: Python bool for dropout / batch normalization.

    Returns:
      A list of ``T`` tensors ``(B, expert_units[-1])``; with ``return_gates=True`` the pair
      ``(outputs, gates)``, ``gates[l]`` being level ``l``'s gate list (see :class:`CGCLevel`).

    Example:

    >>> ple = PLE(num_levels=2, num_tasks=2, num_specific_experts=1, num_shared_experts=2,
    ...           expert_units=[6, 4], gate_units=[3])
    >>> outputs, gates = ple(np.ones((6, 5), "float32"), return_gates=True)
    >>> [tuple(o.shape) for o in outputs]
    [(6, 4), (6, 4)]
    >>> [[tuple(g.shape) for g in level] for level in gates]
    [[(6, 3), (6, 3), (6, 4)], [(6, 3), (6, 3)]]
    """

    def __init__(self, num_levels: int, num_tasks: int, num_specific_experts: int, num_shared_experts: int,
                 expert_units: Sequence[int], gate_units: Sequence[int] = (), activation="relu",
                 dropout: float = 0.0, norm: str | None = None, kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(expert_units, gate_units, activation, dropout, norm, kernel_initializer,
                         kernel_regularizer, **kwargs)
        self.num_levels = validation.integer(num_levels, "num_levels", 1)
        self.levels = [
            CGCLevel(num_tasks, num_specific_experts, num_shared_experts, self.expert_units, self.gate_units,
                     output_shared=i < self.num_levels - 1, activation=self.activation, dropout=self.dropout,
                     norm=self.norm, kernel_initializer=fresh_initializer(self.kernel_initializer, 100_000 * i),
                     kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy, name=f"level_{i}")
            for i in range(self.num_levels)
        ]
        self.num_tasks = self.levels[0].num_tasks
        self.num_specific_experts = self.levels[0].num_specific_experts
        self.num_shared_experts = self.levels[0].num_shared_experts

    def build(self, input_shape):
        shape = input_shape
        for level in self.levels:
            level.build(shape)
            shapes = level._shapes(shape)
            shape = [s[:-1] + (self.expert_units[-1],) for s in shapes]

    def call(self, inputs, return_gates=False, training=None):
        x, gates = inputs, []
        for level in self.levels:
            x, level_gates = level(x, return_gates=True, training=training)
            gates.append(level_gates)
        return (x, gates) if return_gates else x

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_levels": self.num_levels,
            "num_tasks": self.num_tasks,
            "num_specific_experts": self.num_specific_experts,
            "num_shared_experts": self.num_shared_experts,
        })
        return config
