"""DHEN (Zhang et al., 2022): a stack of layers, each an ensemble of heterogeneous interaction modules.

Tokens. ``X_0 in R^{n x d}`` stacks one row per id input (categorical, or a mean-pooled sequence) in
spec order, all at the common embedding width ``d`` (a spec mixing widths raises ValueError naming
``embedding_dim``), followed by ``num_dense_tokens`` rows made from the dense features ``x_dense``
(``(B, m)``) by a learned projection (:func:`dense_token_projection`)::

    T = reshape(Dense_{t d}(MLP_dense(x_dense)), (t, d))        t = num_dense_tokens

(``MLP_dense`` of widths ``dense_units``; the identity by default). ``n = #id inputs + t`` (``+ 0``
when the spec has no dense feature).

Layer ``l = 0..L-1`` (``x_l = flatten(X_l)`` in ``R^{n d}``)::

    A_l = flatten(X_l (X_l^T Y_l))            attention_fm: layers.AttentionFM, (B, n k); Y_l in R^{n x k}
                                               per example from an attention MLP (dynamic, default) or a
                                               learned matrix (static)
    C_l = x_l * (W_l x_l + b_l) + x_l         cross: one DCN cross layer on x_l (keras_rs FeatureCross;
                                               W_l = U_l V_l^T of rank cross_rank), (B, n d)
    R_l = flatten(W_L X_l)                    linear: layers.LinearCompression to n rows, (B, n d)
    M_l = MLP(x_l)                            mlp (optional module): widths mlp_units
    X_{l+1} = LN( reshape(P_l concat(A_l, C_l, R_l[, M_l]), (n, d)) + X_l )

The ensemble is the concatenation of the module outputs projected back to ``n d`` by a linear
``Dense`` ``P_l`` (docs/methods.md#dhen, "concatenation projected back"); the shortcut is the identity (every layer
keeps ``(n, d)``); ``LN`` is a LayerNormalization over the last (``d``) axis of each row. Note that,
the ensemble being linear in its inputs, the linear module is a direct linear path from ``X_l`` into
``P_l`` (a field recombination, ``n^2`` weights). Then ``h = MLP_head(flatten(X_L))`` (``h =
flatten(X_L)`` with empty ``head_units``).

The attention matrices are reachable for the C2AL diagnostics (docs/methods.md#attention-fm): ``backbone.attention_fms``
lists the AttentionFM layers (set by set, layer by layer) and ``backbone.attention_matrices(features)``
returns their ``Y`` for a batch (``(B, n, k)`` dynamic, ``(n, k)`` static).

With the ``multi`` embedding option each embedding set gets its own dense-token projection and layer
stack; the head MLP is the shared over-arch.

Defaults. DHEN's paper gives no layer counts or widths (docs/methods.md#dhen; arXiv 2203.11014); the library defaults are
this project's choice (docs/methods.md#dhen): 2 layers of {AttentionFM(fm_rank k=32, dynamic, one hidden attention layer of 64), DCN
(rank 64), linear}, head MLP [512, 256]. ``configs/models/dhen.yaml`` scales these to the synthetic
data (``n d = 128``): fm_rank = 16, cross_rank 32 (= n d / 4, keras-rs's advice), head [256, 128].
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import keras
import keras_rs
from keras import ops

from layers import MLP, AttentionFM, LinearCompression, validation
from zoo.backbones._common import (TokenStackHyperParameters, choice, count, dense_token_projection,
                                   head_or_identity, optional_count, setup_token_stack, stack_tokens, units)
from zoo.backbone import Backbone
from zoo.registry import register_backbone

MODULES = ("attention_fm", "cross", "linear", "mlp")
ATTENTION_MODES = ("dynamic", "static")
ATTENTION_NORMALIZATIONS = (None, "softmax")


def _modules(value, name: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}: must be a non-empty subset of {MODULES} without repeats, got {value!r}")
    modules = list(value)
    if not modules or any(m not in MODULES for m in modules) or len(set(modules)) != len(modules):
        raise ValueError(f"{name}: must be a non-empty subset of {MODULES} without repeats, got {modules}")
    return [m for m in MODULES if m in modules]


def _attention_normalization(value, name: str):
    value = "softmax" if value == "softmax_n" else value  # the former spelling
    return validation.choice(value, name, ATTENTION_NORMALIZATIONS)


@dataclasses.dataclass(frozen=True)
class DHENHyperParameters(TokenStackHyperParameters):
    """DHEN's hyper-parameters (plus the token/head ones of :class:`TokenStackHyperParameters`).

    Attributes:
      num_layers: number of DHEN layers ``L`` (>= 1).
      modules: the ensemble's interaction modules, a non-empty subset of
        ``("attention_fm", "cross", "linear", "mlp")`` (in this order in the concatenation).
      fm_rank: columns ``k`` of each AttentionFM's ``Y``.
      attention_mode: ``"dynamic"`` (``Y`` from an attention MLP per example) or ``"static"``.
      attention_units: hidden widths of the dynamic attention MLP (may be empty).
      attention_normalize: None or ``"softmax"`` (each column of ``Y`` soft-maxed over the n rows).
      cross_rank: rank of the cross module's ``W = U V^T``; None for full rank.
      mlp_units: widths of the ``"mlp"`` module (needed only when it is in ``modules``).
    """

    RENAMED = {"attention_k": "fm_rank"}

    num_layers: int = count(2)
    modules: Sequence[str] = dataclasses.field(default=("attention_fm", "cross", "linear"),
                                               metadata={"check": _modules})
    fm_rank: int = count(32)
    attention_mode: str = choice("dynamic", ATTENTION_MODES)
    attention_units: Sequence[int] = units((64,))
    attention_normalize: str | None = dataclasses.field(default=None, metadata={"check": _attention_normalization})
    cross_rank: int | None = optional_count(64)
    mlp_units: Sequence[int] = units((256,))

    def validate(self):
        if "mlp" in self.modules and not self.mlp_units:
            raise ValueError("mlp_units: the 'mlp' module needs one or more positive integer widths, got []")


@register_backbone("dhen")
class DHEN(Backbone):
    """DHEN backbone producing the shared representation ``h`` (see the module docstring;
    hyper-parameters: :class:`DHENHyperParameters`; every id input must share one ``embedding_dim``)."""

    Hyperparameters = DHENHyperParameters

    def setup(self):
        self.ensemble_modules = list(self.modules)
        setup_token_stack(self)

    @property
    def attention_fms(self) -> list:
        """Every AttentionFM layer: set 0's layers 0..L-1, then set 1's, ..."""
        return [fm for module in self.interactions for fm in module["attention_fm"]]

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        policy, width = self.dtype_policy, self.num_tokens * self.embedding_dim
        module = {
            "dense": dense_token_projection(self, self.num_dense_tokens, self.dense_units, self.embedding_dim, suffix),
            "attention_fm": [], "cross": [], "linear": [], "mlp": [], "ensemble": [], "norm": [],
        }
        for i in range(self.num_layers):
            if "attention_fm" in self.ensemble_modules:
                module["attention_fm"].append(AttentionFM(
                    self.fm_rank, mode=self.attention_mode, normalize=self.attention_normalize,
                    hidden_units=self.attention_units, dtype=policy, name=f"attention_fm_{i}{suffix}"))
            if "cross" in self.ensemble_modules:
                module["cross"].append(keras_rs.layers.FeatureCross(
                    projection_dim=self.cross_rank, dtype=policy, name=f"cross_{i}{suffix}"))
            if "linear" in self.ensemble_modules:
                module["linear"].append(LinearCompression(self.num_tokens, dtype=policy, name=f"linear_{i}{suffix}"))
            if "mlp" in self.ensemble_modules:
                module["mlp"].append(MLP(self.mlp_units, activation=self.activation, dtype=policy,
                                         name=f"mlp_{i}{suffix}"))
            module["ensemble"].append(keras.layers.Dense(width, dtype=policy, name=f"ensemble_{i}{suffix}"))
            module["norm"].append(keras.layers.LayerNormalization(dtype=policy, name=f"norm_{i}{suffix}"))
        return module

    def _forward(self, module, tokens, dense, training=None):
        """``(flatten(X_L), [Y_0, .., Y_{L-1}])`` for one embedding set."""
        n, d = self.num_tokens, self.embedding_dim
        x = stack_tokens(tokens, dense, module["dense"], self.num_dense_tokens, d, training=training)
        attentions = []
        for i in range(self.num_layers):
            flat = ops.reshape(x, (-1, n * d))
            parts = []
            if module["attention_fm"]:
                g, y = module["attention_fm"][i](x, return_attention=True, training=training)
                parts.append(g)
                attentions.append(y)
            if module["cross"]:
                parts.append(module["cross"][i](flat, flat))
            if module["linear"]:
                parts.append(ops.reshape(module["linear"][i](x), (-1, n * d)))
            if module["mlp"]:
                parts.append(module["mlp"][i](flat, training=training))
            mixed = module["ensemble"][i](ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0])
            x = module["norm"][i](ops.reshape(mixed, (-1, n, d)) + x)
        return ops.reshape(x, (-1, n * d)), attentions

    def interact(self, module, tokens, dense, training=None):
        return self._forward(module, tokens, dense, training=training)[0]

    def attention_matrices(self, features, training=False) -> list:
        """``Y`` of every layer in :attr:`attention_fms` order for a batch of ``features``.

        Each is ``(B, n, k)`` (dynamic) or ``(n, k)`` (static), after the configured normalization.
        """
        token_sets, dense = self.encoder(features)
        return [y for module, tokens in zip(self.interactions, token_sets)
                for y in self._forward(module, tokens, dense, training=training)[1]]

    def over_arch(self, z, training=None):
        return head_or_identity(self, z, training=training)
