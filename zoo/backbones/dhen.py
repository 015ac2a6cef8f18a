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
``Dense`` ``P_l`` (METHODS 7.1 "concatenate then Dense"); the shortcut is the identity (every layer
keeps ``(n, d)``); ``LN`` is a LayerNormalization over the last (``d``) axis of each row. Note that,
the ensemble being linear in its inputs, the linear module is a direct linear path from ``X_l`` into
``P_l`` (a field recombination, ``n^2`` weights). Then ``h = MLP_head(flatten(X_L))`` (``h =
flatten(X_L)`` with empty ``head_units``).

The attention matrices are reachable for the C2AL diagnostics (METHODS 1.5): ``backbone.attention_fms``
lists the AttentionFM layers (set by set, layer by layer) and ``backbone.attention_matrices(features)``
returns their ``Y`` for a batch (``(B, n, k)`` dynamic, ``(n, k)`` static).

With the ``multi`` embedding option each embedding set gets its own dense-token projection and layer
stack; the head MLP is the shared over-arch.

Defaults. DHEN's paper gives no layer counts or widths [METHODS 7.1: NF]; the library defaults are
METHODS' choice: 2 layers of {AttentionFM(k=32, dynamic, one hidden attention layer of 64), DCN
(rank 64), linear}, head MLP [512, 256]. ``configs/models/dhen.yaml`` scales these to the synthetic
data (``n d = 128``): k = 16, rank 32 (= n d / 4, keras-rs's advice), head [256, 128].
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras
import keras_rs
from keras import ops

from layers import MLP, AttentionFM, LinearCompression
from zoo.backbones.deepfm import check_norm, check_rate  # the shared validators
from zoo.backbones.deepfm import check_positive_int as positive_int
from zoo.registry import Backbone, register_backbone

MODULES = ("attention_fm", "cross", "linear", "mlp")
_ATTENTION_MODES = ("dynamic", "static")


def widths(value, argument: str, allow_empty: bool = True) -> list[int]:
    """A list of positive layer widths; ValueError naming ``argument`` otherwise."""
    units = list(value or [])
    if not allow_empty and not units:
        raise ValueError(f"{argument}: needs one or more positive widths, got {units}")
    for u in units:
        positive_int(u, argument)
    return [int(u) for u in units]


def common_token_width(backbone: Backbone, model: str) -> int:
    """The single embedding width ``d`` of every id input; ValueError naming ``embedding_dim`` otherwise."""
    spec = backbone.encoder.spec
    by_name = {n: spec.tables[spec.feature(n).table].embedding_dim for n in backbone.encoder.token_names}
    if not by_name:
        raise ValueError(f"spec: {model} needs at least one categorical or sequence input feature")
    if len(set(by_name.values())) != 1:
        raise ValueError(f"embedding_dim: {model} stacks the field embeddings into one (n, d) matrix, so every "
                         f"id input needs the same embedding_dim; got {by_name}")
    return next(iter(by_name.values()))

def init_token_stack(backbone, name: str, num_dense_tokens, dense_units, head_units, activation, dropout,
                     norm) -> None:
    """The shared tail of DHEN's and Wukong's ``__init__``: checks and sets the token and head
    hyper-parameters, the common token width ``d`` and token count ``n``, builds the per-set
    interactions (the caller's own hyper-parameters must be set first) and the optional head MLP."""
    backbone.num_dense_tokens = positive_int(num_dense_tokens, "num_dense_tokens")
    backbone.dense_units = widths(dense_units, "dense_units")
    backbone.head_units = widths(head_units, "head_units")
    backbone.activation = activation
    backbone.dropout = check_rate(dropout, "dropout")
    backbone.norm = check_norm(norm)
    backbone.embedding_dim = common_token_width(backbone, name)
    backbone.num_tokens = len(backbone.encoder.token_names) + (
        backbone.num_dense_tokens if backbone.encoder.dense_names else 0)
    backbone.build_interactions()
    backbone.head = (MLP(backbone.head_units, activation=activation, dropout=backbone.dropout, norm=backbone.norm,
                         dtype=backbone.dtype_policy, name="head") if backbone.head_units else None)



def dense_token_projection(backbone: Backbone, num_dense_tokens: int, dense_units: Sequence[int], width: int,
                           suffix: str) -> list | None:
    """The layers mapping the dense features ``(B, m)`` to ``num_dense_tokens`` rows of width ``width``.

    ``[MLP(dense_units)?, Dense(num_dense_tokens * width)]``, or None when the spec has no dense input.
    """
    if not backbone.encoder.dense_names:
        return None
    policy = backbone.dtype_policy
    stack = [MLP(dense_units, dtype=policy, name=f"dense_mlp{suffix}")] if dense_units else []
    return stack + [keras.layers.Dense(num_dense_tokens * width, dtype=policy, name=f"dense_tokens{suffix}")]


def stack_tokens(tokens: list, dense, projection: list | None, num_dense_tokens: int, width: int, training=None):
    """``X_0`` of shape ``(B, n, width)``: the id embeddings, then the projected dense tokens."""
    rows = [ops.stack(tokens, axis=1)]
    if projection is not None and dense is not None:
        t = dense
        for layer in projection:
            t = layer(t, training=training) if isinstance(layer, MLP) else layer(t)
        rows.append(ops.reshape(t, (-1, num_dense_tokens, width)))
    return ops.concatenate(rows, axis=1) if len(rows) > 1 else rows[0]


@register_backbone("dhen")
class DHEN(Backbone):
    """DHEN backbone producing the shared representation ``h`` (see the module docstring).

    Args:
      spec: resolved feature spec dict; every id input must share one ``embedding_dim``.
      num_layers: number of DHEN layers ``L`` (>= 1).
      modules: the ensemble's interaction modules, a non-empty subset of
        ``("attention_fm", "cross", "linear", "mlp")`` (in this order in the concatenation).
      attention_k: columns ``k`` of each AttentionFM's ``Y``.
      attention_mode: ``"dynamic"`` (``Y`` from an attention MLP per example) or ``"static"``.
      attention_units: hidden widths of the dynamic attention MLP (may be empty).
      attention_normalize: None or ``"softmax"`` (each column of ``Y`` soft-maxed over the n rows).
      cross_rank: rank of the cross module's ``W = U V^T``; None for full rank.
      mlp_units: widths of the ``"mlp"`` module (needed only when it is in ``modules``).
      num_dense_tokens: rows made from the dense features (>= 1; unused without dense features).
      dense_units: hidden widths of the dense-token MLP (empty: a linear projection).
      head_units: widths of the head MLP producing ``h`` (empty: ``h = flatten(X_L)``).
      activation: activation of the head, ``"mlp"`` module and dense-token MLPs.
      dropout: dropout of the head MLP.
      norm: normalization of the head MLP (None, ``"batch"``, ``"layer"``).
      embedding: embedding options (``zoo.encoder.embedding_options``): plain, mlet or multi.
    """

    def __init__(self, spec: Mapping[str, Any], num_layers: int = 2,
                 modules: Sequence[str] = ("attention_fm", "cross", "linear"), attention_k: int = 32,
                 attention_mode: str = "dynamic", attention_units: Sequence[int] = (64,),
                 attention_normalize: str | None = None, cross_rank: int | None = 64,
                 mlp_units: Sequence[int] = (256,), num_dense_tokens: int = 1, dense_units: Sequence[int] = (),
                 head_units: Sequence[int] = (512, 256), activation: str = "relu", dropout: float = 0.0,
                 norm: str | None = None, **kwargs):
        super().__init__(spec, **kwargs)
        self.num_layers = positive_int(num_layers, "num_layers")
        modules = [modules] if isinstance(modules, str) else list(modules or [])
        if not modules or any(m not in MODULES for m in modules) or len(set(modules)) != len(modules):
            raise ValueError(f"modules: must be a non-empty subset of {MODULES} without repeats, got {modules}")
        self.ensemble_modules = [m for m in MODULES if m in modules]
        self.attention_k = positive_int(attention_k, "attention_k")
        if attention_mode not in _ATTENTION_MODES:
            raise ValueError(f"attention_mode: must be one of {_ATTENTION_MODES}, got {attention_mode!r}")
        self.attention_mode = attention_mode
        self.attention_units = widths(attention_units, "attention_units")
        if attention_normalize == "softmax_n":
            attention_normalize = "softmax"
        if attention_normalize not in (None, "softmax"):
            raise ValueError(f"attention_normalize: must be None or 'softmax', got {attention_normalize!r}")
        self.attention_normalize = attention_normalize
        self.cross_rank = None if cross_rank is None else positive_int(cross_rank, "cross_rank")
        self.mlp_units = widths(mlp_units, "mlp_units", allow_empty="mlp" not in self.ensemble_modules)
        init_token_stack(self, "dhen", num_dense_tokens, dense_units, head_units, activation, dropout, norm)

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
                    self.attention_k, mode=self.attention_mode, normalize=self.attention_normalize,
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
        return self.head(z, training=training) if self.head is not None else z

    def hparams(self):
        return {
            "num_layers": self.num_layers, "modules": self.ensemble_modules, "attention_k": self.attention_k,
            "attention_mode": self.attention_mode, "attention_units": self.attention_units,
            "attention_normalize": self.attention_normalize, "cross_rank": self.cross_rank,
            "mlp_units": self.mlp_units, "num_dense_tokens": self.num_dense_tokens,
            "dense_units": self.dense_units, "head_units": self.head_units, "activation": self.activation,
            "dropout": self.dropout, "norm": self.norm,
        }
