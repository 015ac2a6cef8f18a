"""Wukong (Zhang et al., 2024): stacked factorization-machine and linear-compression blocks.

Tokens. ``X_0 in R^{n x d}`` stacks one row per id input (categorical, or a mean-pooled sequence) in
spec order, all at the common embedding width ``d`` (a spec mixing widths raises ValueError naming
``embedding_dim``), followed by ``num_dense_tokens`` rows projected from the dense features
(``reshape(Dense_{t d}(MLP_dense(x_dense)), (t, d))``, ``MLP_dense`` of widths ``dense_units``, the
identity by default), as in DHEN (:mod:`zoo.backbones.dhen`).

Layer ``l = 0..L-1`` runs two blocks on ``X_l`` (``n_l`` rows; ``n_0 = n``, later ``n_F + n_L``)::

    FMB(X_l) = reshape( MLP_F( LN( flatten( X_l (X_l^T Y_l) ) ) ), (n_F, d) )      Y_l in R^{n_l x k}
    LCB(X_l) = W_l X_l                                                             W_l in R^{n_L x n_l}
    X_{l+1}  = LN( concat_rows(FMB(X_l), LCB(X_l)) + R_l(X_l) )

* ``X (X^T Y)`` is :class:`layers.AttentionFM` in ``mode="static"`` (Wukong's "optimized FM", computed
  right to left in O(n k d)); ``Y_l`` is its trainable ``attention_matrix``.
* ``MLP_F`` is an MLP of hidden widths ``fmb_units`` (activation on each) followed by a linear
  ``Dense(n_F d)``; the inner LN normalizes the flattened ``n_l k`` interactions.
* ``LCB`` is :class:`layers.LinearCompression`.
* ``R_l`` is the identity when ``n_l = n_F + n_L``, else a learned row projection
  (``LinearCompression(n_F + n_L)``, the reference implementation's residual projection).
* The outer LN normalizes each row over ``d``.

Then ``h = MLP_head(flatten(X_L))`` (``h = flatten(X_L)`` with empty ``head_units``).

The static ``Y`` matrices are reachable for the C2AL diagnostics: ``backbone.attention_fms[l]
.attention_matrix`` (``(n_l, k)``), or ``backbone.attention_matrices()``. With the ``multi``
embedding option each set gets its own dense-token projection and layer stack; the head MLP is the
shared over-arch.

Defaults are the paper's as listed by the reference Keras implementation (clabrugere/
wukong-recommendation; docs/methods.md#wukong; arXiv 2403.02545): 3 layers, ``n_F = n_L = 16``, ``k = 24``, FMB MLP 2 x 512, head
MLP 2 x 512. ``configs/models/wukong.yaml`` scales them to the synthetic data (n = 8 tokens of d = 16):
``n_F = n_L = 8``, ``k = 16``, FMB MLP 2 x 256, head [256, 128].
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import keras
from keras import ops

from layers import MLP, AttentionFM, LinearCompression
from zoo.backbone import Backbone
from zoo.backbones._common import (TokenStackHyperParameters, count, dense_token_projection, head_or_identity,
                                   setup_token_stack, stack_tokens, units)
from zoo.registry import register_backbone


@dataclasses.dataclass(frozen=True)
class WukongHyperParameters(TokenStackHyperParameters):
    """Wukong's hyper-parameters (plus the token/head ones of :class:`TokenStackHyperParameters`;
    here ``dropout`` applies to the FMB MLPs too).

    Attributes:
      num_layers: number of Wukong layers ``L`` (>= 1).
      num_fmb_tokens: rows ``n_F`` produced by each FMB (>= 1).
      num_lcb_tokens: rows ``n_L`` produced by each LCB (>= 1).
      fm_rank: columns ``k`` of each FMB's static ``Y``.
      fmb_units: hidden widths of each FMB's MLP (empty: only the linear ``Dense(n_F d)``).
    """

    num_layers: int = count(3)
    num_fmb_tokens: int = count(16)
    num_lcb_tokens: int = count(16)
    fm_rank: int = count(24)
    fmb_units: Sequence[int] = units((512, 512))
    head_units: Sequence[int] = units((512, 512))


@register_backbone("wukong")
class Wukong(Backbone):
    """Wukong backbone producing the shared representation ``h`` (see the module docstring;
    hyper-parameters: :class:`WukongHyperParameters`; every id input must share one ``embedding_dim``)."""

    Hyperparameters = WukongHyperParameters

    def setup(self):
        setup_token_stack(self)

    @property
    def output_tokens(self) -> int:
        """``n_F + n_L``: the rows of every layer's output."""
        return self.num_fmb_tokens + self.num_lcb_tokens

    @property
    def attention_fms(self) -> list:
        """Every FMB's AttentionFM layer (static ``Y``): set 0's layers 0..L-1, then set 1's, ..."""
        return [fm for module in self.interactions for fm in module["attention_fm"]]

    def make_interaction(self, index):
        suffix = f"_{index}" if index else ""  # set 0 keeps the single-set layer names
        policy, d = self.dtype_policy, self.embedding_dim
        module = {
            "dense": dense_token_projection(self, self.num_dense_tokens, self.dense_units, d, suffix),
            "attention_fm": [], "fmb_norm": [], "fmb_mlp": [], "fmb_out": [], "lcb": [], "residual": [],
            "norm": [],
        }
        rows = self.num_tokens
        for i in range(self.num_layers):
            module["attention_fm"].append(AttentionFM(self.fm_rank, mode="static", dtype=policy,
                                                      name=f"fmb_attention_fm_{i}{suffix}"))
            module["fmb_norm"].append(keras.layers.LayerNormalization(dtype=policy, name=f"fmb_norm_{i}{suffix}"))
            module["fmb_mlp"].append(
                MLP(self.fmb_units, activation=self.activation, dropout=self.dropout, dtype=policy,
                    name=f"fmb_mlp_{i}{suffix}") if self.fmb_units else None)
            module["fmb_out"].append(keras.layers.Dense(self.num_fmb_tokens * d, dtype=policy,
                                                        name=f"fmb_output_{i}{suffix}"))
            module["lcb"].append(LinearCompression(self.num_lcb_tokens, dtype=policy, name=f"lcb_{i}{suffix}"))
            module["residual"].append(
                LinearCompression(self.output_tokens, dtype=policy, name=f"residual_projection_{i}{suffix}")
                if rows != self.output_tokens else None)
            module["norm"].append(keras.layers.LayerNormalization(dtype=policy, name=f"norm_{i}{suffix}"))
            rows = self.output_tokens
        return module

    def _forward(self, module, tokens, dense, training=None):
        """``flatten(X_L)`` for one embedding set."""
        d = self.embedding_dim
        x = stack_tokens(tokens, dense, module["dense"], self.num_dense_tokens, d, training=training)
        for i in range(self.num_layers):
            f = module["fmb_norm"][i](module["attention_fm"][i](x))           # LN(flatten(X (X^T Y)))
            if module["fmb_mlp"][i] is not None:
                f = module["fmb_mlp"][i](f, training=training)
            fmb = ops.reshape(module["fmb_out"][i](f), (-1, self.num_fmb_tokens, d))
            lcb = module["lcb"][i](x)
            residual = module["residual"][i](x) if module["residual"][i] is not None else x
            x = module["norm"][i](ops.concatenate([fmb, lcb], axis=1) + residual)
        return ops.reshape(x, (-1, self.output_tokens * d))

    def interact(self, module, tokens, dense, training=None):
        return self._forward(module, tokens, dense, training=training)

    def attention_matrices(self, features=None, training=False) -> list:
        """The static ``Y`` of every FMB, in :attr:`attention_fms` order: ``(n_l, k)`` each.

        ``features`` is accepted (and ignored) for the same call as :meth:`DHEN.attention_matrices`.
        """
        return [fm.attention(None) for fm in self.attention_fms]

    def over_arch(self, z, training=None):
        return head_or_identity(self, z, training=training)
