"""Disentangling multi-embedding experts (Crocodile, Lin et al., arXiv 2405.12706).

``CrossExpertCovariance`` measures (and, while training, adds to the loss) the cross-covariance between
the outputs of different experts; ``PriorElementwiseGate`` combines the experts' outputs with
element-wise gates computed from prior field embeddings (e.g. user / item / domain ids).
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from layers import validation
from layers.blocks import MLP
from layers.embeddings import PACKAGE

GATE_NORMALIZATIONS = ("softmax", "scaled_sigmoid")


@keras.saving.register_keras_serializable(package=PACKAGE)
class CrossExpertCovariance(keras.layers.Layer):
    """Crocodile's cross-expert covariance loss over ``M`` expert outputs ``O^(1..M)``, each ``(B, d)``.

    On ``n`` batch rows (all ``B``, or ``sample_rows`` of them drawn without replacement while
    training), with ``X^(p) = O^(p) - mean_rows(O^(p))`` the centred outputs:

        C_pq  = X^(p)ᵀ X^(q) / n                     (d x d; no 1/n when row_normalization=False)
        L_cov = (1 / d²) Σ_{p<q} ‖ C_pq ‖₁            (‖·‖₁: sum of absolute entries)

    Only pairs ``p < q``: the ``p = q`` blocks are each expert's own covariance, which the method
    does not penalise, and ``(p, q)`` and ``(q, p)`` give the same norm. The division by ``n`` (not
    ``n - 1``) makes ``C_pq`` the batch's cross-covariance, so the value does not grow with the batch
    size or change scale under row sampling; ``row_normalization=False`` is the formula as printed
    in the paper (``n`` times larger). The loss is computed in float32.

    Called with ``training=True`` and ``alpha > 0`` it adds ``alpha · L_cov`` with ``add_loss``, so it
    trains with ``model.fit`` on every backend; it always returns ``L_cov`` (a scalar). Under
    ``training`` false or None every row is used (a deterministic measurement) and no loss is added.

    Args:
      alpha: weight of the loss (``>= 0``; the paper reports ``2e-5`` and above as robust).
      sample_rows: None (every row) or the number ``S`` of rows used while training (``S >= 2``; a
        batch of at most ``S`` rows is used whole). The rows are drawn by a seeded generator.
      seed: integer seed of the row sampling.
      row_normalization: divide ``C_pq`` by the number of rows (default True).

    Call arguments:
      inputs: a list of ``M >= 2`` tensors ``(B, d)`` of the same width.
      training: whether this is a training step.

    Returns:
      ``L_cov``, a float32 scalar.

    Example:

    >>> cov = CrossExpertCovariance(alpha=1.0)
    >>> o1 = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> o2 = np.array([[2.0, 1.0], [-2.0, 1.0]])   # column 0 moves with o1's column 0
    >>> float(cov([o1, o2]))                        # C_12 = [[2, 0], [0, 0]] -> 2 / 2**2
    0.5
    >>> float(cov([o1, o1 * 0.0]))                  # a constant expert shares no covariance
    0.0
    """

    def __init__(self, alpha: float = 2e-5, sample_rows: int | None = None, seed: int = 0,
                 row_normalization: bool = True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise ValueError(f"alpha: must be a number >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.sample_rows = validation.optional_integer(sample_rows, "sample_rows", minimum=2)
        self.seed = validation.integer(seed, "seed", minimum=0)
        self.row_normalization = validation.flag(row_normalization, "row_normalization")
        # Only a sampling layer owns generator state; an explicit seed draws nothing from the global
        # random state, so adding this layer leaves every other layer's initial weights unchanged.
        self._seed_generator = keras.random.SeedGenerator(self.seed) if self.sample_rows else None

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2 or \
                not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in input_shape):
            raise ValueError(f"inputs: expected a list of >= 2 tensors of shape (B, d), got shapes {input_shape}")
        widths = {s[-1] for s in input_shape}
        if len(widths) != 1:
            raise ValueError(f"inputs: every expert output needs the same width d, got {sorted(widths)}")

    def row_indices(self, batch_size):
        """``min(B, S)`` distinct row indices drawn with the layer's generator (advances its state)."""
        if self._seed_generator is None:
            raise ValueError("row_indices: this layer has sample_rows=None (it uses every row)")
        scores = keras.random.uniform((batch_size,), seed=self._seed_generator)
        return ops.argsort(scores)[: self.sample_rows]

    def call(self, inputs, training=None):
        outputs = [ops.cast(x, "float32") for x in inputs]
        if training and self._seed_generator is not None:
            rows = self.row_indices(ops.shape(outputs[0])[0])
            outputs = [ops.take(x, rows, axis=0) for x in outputs]
        n = ops.cast(ops.shape(outputs[0])[0], "float32")
        d = outputs[0].shape[-1]
        centred = [x - ops.mean(x, axis=0, keepdims=True) for x in outputs]
        total = ops.zeros((), "float32")
        for p in range(len(centred)):
            for q in range(p + 1, len(centred)):
                total = total + ops.sum(ops.abs(ops.matmul(ops.transpose(centred[p]), centred[q])))
        if self.row_normalization:
            total = total / n
        value = total / float(d * d)
        if training and self.alpha > 0:
            self.add_loss(self.alpha * value)
        return value

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "sample_rows": self.sample_rows, "seed": self.seed,
                       "row_normalization": self.row_normalization})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class PriorElementwiseGate(keras.layers.Layer):
    """Crocodile's prior-informed element-wise gate (PEG) over ``M`` expert outputs ``O^(m)`` ``(B, d)``.

    From a prior vector ``r`` (e.g. the concatenated user / item / domain id embeddings), a network
    ``g = W · MLP(r) + b`` (``MLP`` omitted when ``units`` is empty) gives ``M · d`` logits, read
    as ``G`` of shape ``(B, M, d)``, one gate per expert *and* per output dimension:

        softmax:         a = softmax_m(G)  (over the experts, per dimension),   t = Σ_m a_m ⊙ O^(m)
        scaled_sigmoid:  a = 2 σ(G),                                            t = (1/M) Σ_m a_m ⊙ O^(m)

    ``softmax`` is the method's gate (a convex, per-dimension mixture of the experts);
    ``scaled_sigmoid`` gates each expert's dimensions independently in ``(0, 2)``. ``W`` and ``b``
    start at zero, so either gate starts as the plain mean ``(1/M) Σ_m O^(m)`` of multi-embedding.

    Args:
      num_experts: ``M`` (``>= 1``).
      units: hidden widths of the gate's MLP (may be empty: a linear gate ``r W + b``).
      activation: activation of the hidden layers.
      normalization: ``"softmax"`` (default) or ``"scaled_sigmoid"``.

    Call arguments:
      inputs: a list ``[r, O^(1), ..., O^(M)]``: ``r`` of shape ``(B, k)``, each ``O^(m)`` ``(B, d)``.
      training: passed to the MLP.

    Returns:
      ``t`` of shape ``(B, d)``.

    Example:

    >>> gate = PriorElementwiseGate(num_experts=2, units=[4])
    >>> r = np.ones((3, 5))
    >>> o1, o2 = np.zeros((3, 2)), np.ones((3, 2))
    >>> keras.ops.convert_to_numpy(gate([r, o1, o2])).tolist()   # zero-initialized: the mean
    [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    >>> gate.count_params()                                      # MLP 5x4+4, output 4x(2*2)+2*2
    44
    """

    def __init__(self, num_experts: int, units: Sequence[int] = (), activation="relu",
                 normalization: str = "softmax", **kwargs):
        super().__init__(**kwargs)
        self.num_experts = validation.integer(num_experts, "num_experts")
        self.units = validation.widths(units, "units")
        try:
            keras.activations.get(activation)
        except (ValueError, TypeError) as err:
            raise ValueError(f"activation: not a Keras activation: {activation!r} ({err})") from None
        self.activation = activation
        self.normalization = validation.choice(normalization, "normalization", GATE_NORMALIZATIONS)
        self.mlp = MLP(self.units, activation=activation, dtype=self.dtype_policy, name="mlp") if self.units else None
        self.logits = None

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != self.num_experts + 1:
            raise ValueError(f"inputs: expected [r, O^(1), ..., O^({self.num_experts})] "
                             f"({self.num_experts + 1} tensors), got {len(input_shape)}")
        widths = {tuple(s)[-1] for s in input_shape[1:]}
        if len(widths) != 1:
            raise ValueError(f"inputs: every expert output needs the same width d, got {sorted(widths)}")
        self.width = int(widths.pop())
        prior = tuple(input_shape[0])
        if self.mlp is not None:
            self.mlp.build(prior)
            prior = prior[:-1] + (self.units[-1],)
        self.logits = keras.layers.Dense(self.num_experts * self.width, kernel_initializer="zeros",
                                         dtype=self.dtype_policy, name="logits")
        self.logits.build(prior)

    def gates(self, prior, training=None):
        """The gates ``a`` of shape ``(B, M, d)`` for prior vectors ``r``."""
        hidden = self.mlp(prior, training=training) if self.mlp is not None else prior
        logits = ops.reshape(self.logits(hidden), (-1, self.num_experts, self.width))
        if self.normalization == "softmax":
            return ops.softmax(logits, axis=1)
        return 2.0 * ops.sigmoid(logits)

    def call(self, inputs, training=None):
        prior, experts = inputs[0], ops.stack(list(inputs[1:]), axis=1)  # (B, M, d)
        mixed = ops.sum(self.gates(prior, training=training) * experts, axis=1)
        return mixed if self.normalization == "softmax" else mixed / float(self.num_experts)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update({"num_experts": self.num_experts, "units": self.units, "activation": self.activation,
                       "normalization": self.normalization})
        return config
