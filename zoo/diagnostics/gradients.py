"""Gradient alignment of C2AL's auxiliary losses with the primary loss at the tapped representation
(docs/methods.md#gradient-alignment).

C2AL's auxiliary heads change the backbone only through the gradient they send into the tap ``t``
(``h``, or ``z`` with ``tap: interaction_output``). This module measures, on a probe batch, how that
gradient lines up with the primary loss's gradient at the same tensor.

**What is measured.** The losses are the training objective's terms, each a batch mean::

    L_p = w_p * mean_i BCE(y_i, p_i)          L_k = lambda_k * mean_i BCE(y_k,i, p_k,i)

(``w_p`` the primary loss weight, 1 unless given; BCE on the heads' logits, i.e. without Keras'
1e-7 probability clipping). ``G = dL / dT`` is the ``(B, d)`` matrix of the gradients of the batch
loss with respect to the batch ``T`` of tap rows (row ``i`` is ``dL / dt_i``), with the model in
inference mode (no dropout, batch-norm moving statistics). For each auxiliary head ``k``, over a
set of rows ``R`` (all rows, or a cohort's), with ``<A, B>`` the Frobenius inner product of the
rows in ``R``:

* ``cosine = <G_p, G_k> / (||G_p|| ||G_k||)``;
* the decomposition ``G_k = c G_p + G_perp`` with ``c = <G_k, G_p> / ||G_p||^2``
  (``parallel_coef``), ``parallel_norm = |c| ||G_p||``, ``orthogonal_norm = ||G_perp||``,
  ``sign = sign(c)``: +1 when the auxiliary loss pushes ``t`` the primary's way (descending
  ``L_k`` also descends ``L_p`` to first order), -1 for conflict;
* ``aux_norm = ||G_k||`` and ``primary_norm = ||G_p||``.

Undefined values (a zero gradient, an empty row set) are NaN. ``G`` keeps the full batch's
``1 / B`` on every row, so the restricted norms are each row set's share of the batch gradient.

**How ``G`` is computed.**

* Closed form (NumPy, ``method="closed_form"``; the default heads): when the primary head is
  ``sigmoid(Dense(1))`` on ``h`` (:func:`zoo.model.primary_head`) and an auxiliary head is
  ``sigmoid(Dense(1))`` on the same ``h`` (C2AL ``head_units: []``, tap ``primary_head_input``),
  ``dBCE(y, sigmoid(w.t + b)) / dt = (sigmoid(w.t + b) - y) w``, so row ``i`` of ``G`` is
  ``weight * (p_i - y_i) w^T / B`` (``w`` the head's ``(d, 1)`` kernel). So
  ``cosine = cos(w_p, w_k) * cos(r_p, r_k)`` with ``r = p - y`` the residual vectors: the
  primary and auxiliary heads agree where their kernels point the same way *and* their residuals
  are correlated. The probabilities come from one inference pass of the model.
* Autodiff (``method="autodiff"``; every other C2AL head): MLP heads (``head_units``), and the
  ``interaction_output`` tap, where the primary gradient at ``z`` runs through the backbone's
  ``over_arch``. The tap is computed once (``backbone(x)`` for ``h``,
  ``backbone.compute_interaction(x)`` for ``z``), then the heads' own layers (``<aux>_mlp``,
  ``<aux>_logit``, ``primary_logit``, and ``backbone.over_arch`` for ``z``) are called on it inside
  ``tf.GradientTape`` (TensorFlow) or ``jax.vjp`` (JAX). Other backends raise NotImplementedError.
* ``method="auto"`` (default) takes the closed form wherever it applies.

**Not covered** (NotImplementedError, naming the case): heads that read neither ``h`` nor ``z`` of
the backbone (the ``ple_towers`` ablation reads PLE towers 1 and 2), heads on different taps, a
model without the C2AL layer names, and backends other than TensorFlow and JAX for autodiff.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from zoo.c2al import AUX_HEAD, AUX_TAIL, DEFAULT_TAP, TAPS
from zoo.diagnostics.collection import find_backbone, to_numpy
from zoo.model import PRIMARY, PRIMARY_LOGIT, interaction_output, shared_representation

GRADIENT_STATS = ("cosine", "parallel_coef", "parallel_norm", "orthogonal_norm", "aux_norm", "primary_norm",
                  "sign")
METHODS = ("auto", "closed_form", "autodiff")
ALL_ROWS = "all"


# ---------------------------------------------------------------------------------------------------
# Statistics of two gradient matrices (NumPy)
# ---------------------------------------------------------------------------------------------------

def alignment_stats(g_primary, g_aux) -> dict[str, float]:
    """The :data:`GRADIENT_STATS` of an auxiliary gradient ``g_aux`` against ``g_primary`` (same shape).

    Both are flattened (Frobenius inner product); see the module docstring for the definitions.
    """
    gp = np.asarray(g_primary, np.float64).ravel()
    ga = np.asarray(g_aux, np.float64).ravel()
    if gp.shape != ga.shape:
        raise ValueError(f"g_primary and g_aux: need the same size, got {gp.size} and {ga.size}")
    nan = float("nan")
    norm_p, norm_a = float(np.linalg.norm(gp)), float(np.linalg.norm(ga))
    out = {"cosine": nan, "parallel_coef": nan, "parallel_norm": nan, "orthogonal_norm": nan,
           "aux_norm": norm_a if gp.size else nan, "primary_norm": norm_p if gp.size else nan, "sign": nan}
    if norm_p > 0.0:
        dot = float(gp @ ga)
        coef = dot / norm_p ** 2
        out.update(parallel_coef=coef, parallel_norm=abs(coef) * norm_p,
                   orthogonal_norm=float(np.linalg.norm(ga - coef * gp)), sign=float(np.sign(coef)))
        if norm_a > 0.0:
            out["cosine"] = float(np.clip(dot / (norm_p * norm_a), -1.0, 1.0))
    return out


# ---------------------------------------------------------------------------------------------------
# The gradients
# ---------------------------------------------------------------------------------------------------

def _layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _aux_outputs(model) -> list[str]:
    return [name for name in (AUX_HEAD, AUX_TAIL) if _layer(model, name) is not None]


def _is_linear_unit(layer) -> bool:
    try:
        linear = keras.activations.serialize(layer.activation) == "linear"
    except (ValueError, TypeError, AttributeError):
        return False
    return isinstance(layer, keras.layers.Dense) and layer.units == 1 and linear


def _is_sigmoid(layer) -> bool:
    try:
        return isinstance(layer, keras.layers.Activation) and keras.activations.serialize(layer.activation) == "sigmoid"
    except (ValueError, TypeError):
        return False


def _head_layers(model, output: str) -> tuple[Any, Any]:
    """(``<output>_mlp`` or None, ``<output>_logit``) of an auxiliary head, as :func:`zoo.c2al.C2AL` names them."""
    logit = _layer(model, f"{output}_logit")
    if logit is None or not _is_linear_unit(logit) or not _is_sigmoid(_layer(model, output)):
        raise NotImplementedError(f"gradient_alignment: output '{output}' is not a C2AL head "
                                  f"(sigmoid of a Dense(1) layer '{output}_logit')")
    return _layer(model, f"{output}_mlp"), logit


def _tap_of(model, aux: Sequence[str]) -> str:
    """The tap every auxiliary head reads: ``"primary_head_input"`` (h) or ``"interaction_output"`` (z)."""
    primary_logit = _layer(model, PRIMARY_LOGIT)
    if primary_logit is None or not _is_linear_unit(primary_logit) or not _is_sigmoid(_layer(model, PRIMARY)):
        raise NotImplementedError("gradient_alignment: needs the primary head of zoo.model.primary_head "
                                  f"(sigmoid of the Dense(1) layer '{PRIMARY_LOGIT}')")
    if find_backbone(model) is None:
        raise NotImplementedError("gradient_alignment: the model has no backbone layer")
    h = shared_representation(model)
    try:
        z = interaction_output(model)
    except ValueError:
        z = None
    if primary_logit.input is not h:
        raise NotImplementedError("gradient_alignment: the primary head does not read the backbone's h")
    taps = {}
    for output in aux:
        mlp, logit = _head_layers(model, output)
        source = (mlp or logit).input
        if source is h:
            taps[output] = DEFAULT_TAP
        elif z is not None and source is z:
            taps[output] = TAPS[1]
        else:
            raise NotImplementedError(
                f"gradient_alignment: head '{output}' reads neither h nor the interaction output z of the "
                "backbone (e.g. the ple_towers ablation, whose heads read PLE towers 1 and 2)")
    if len(set(taps.values())) > 1:
        raise NotImplementedError(f"gradient_alignment: the auxiliary heads read different taps {taps}")
    return next(iter(taps.values()))


def _closed_form_applies(model, aux: Sequence[str], tap: str) -> bool:
    return tap == DEFAULT_TAP and all(_head_layers(model, output)[0] is None for output in aux)


def _flat_labels(y, batch_size: int, where: str) -> np.ndarray:
    y = np.asarray(y, np.float64).reshape(-1)
    if y.shape != (batch_size,):
        raise ValueError(f"{where}: needs one label per probe row ({batch_size}), got {y.size}")
    return y


def _closed_form(model, features, labels, weights) -> dict[str, np.ndarray]:
    outputs = model(features, training=False)
    grads = {}
    for name, y in labels.items():
        p = to_numpy(outputs[name]).astype(np.float64).reshape(-1)
        w = to_numpy(model.get_layer(f"{name}_logit").kernel).astype(np.float64).reshape(-1)
        grads[name] = weights[name] * (p - y)[:, None] * w[None, :] / y.size
    return grads


def _backend_gradients(fn: Callable, t, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{name: d fn(t)[name] / dt}`` for a function of one tensor returning a dict of scalars."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.convert_to_tensor(t)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(t)
            losses = fn(t)
        grads = {name: tape.gradient(losses[name], t) for name in names}
        del tape
        return {name: (np.zeros(t.shape) if g is None else to_numpy(g)) for name, g in grads.items()}
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        losses, pullback = jax.vjp(fn, jnp.asarray(t))
        out = {}
        for name in names:
            cotangent = {k: jnp.ones_like(v) if k == name else jnp.zeros_like(v) for k, v in losses.items()}
            out[name] = np.asarray(pullback(cotangent)[0])
        return out
    raise NotImplementedError(f"gradient_alignment: autodiff supports the TensorFlow and JAX backends, "
                              f"not '{backend}' (the closed form needs none: single Dense(1) heads on h)")


def _autodiff(model, features, labels, weights, tap: str) -> dict[str, np.ndarray]:
    ops = keras.ops
    backbone = find_backbone(model)
    primary_logit = model.get_layer(PRIMARY_LOGIT)
    heads = {name: _head_layers(model, name) for name in labels if name != PRIMARY}
    on_h = tap == DEFAULT_TAP
    t = backbone(features, training=False) if on_h else backbone.compute_interaction(features, training=False)
    if isinstance(t, (tuple, list)):
        t = t[0]
    targets = {name: ops.convert_to_tensor(y.reshape(-1, 1), "float32") for name, y in labels.items()}

    def losses(t):
        h = t if on_h else backbone.over_arch(t, training=False)
        logits = {PRIMARY: primary_logit(h)}
        for name, (mlp, logit) in heads.items():
            logits[name] = logit(t if mlp is None else mlp(t, training=False))
        return {name: weights[name] * ops.mean(ops.binary_crossentropy(
            targets[name], ops.cast(logit, "float32"), from_logits=True)) for name, logit in logits.items()}

    return _backend_gradients(losses, t, list(labels))


def representation_gradients(model, x: Mapping[str, Any], y_targets: Mapping[str, Any],
                             lambdas: Mapping[str, float], method: str = "auto") -> dict[str, Any]:
    """The ``(B, d)`` gradient matrices ``G`` of the primary and each auxiliary loss at the tap.

    Args:
      model: a :func:`zoo.c2al.C2AL` model (outputs ``primary`` and ``aux_head`` and/or ``aux_tail``).
      x: the probe batch, a dict of model inputs.
      y_targets: ``{"primary": y, "aux_head": y_head, "aux_tail": y_tail}`` (shape ``(B,)`` or ``(B, 1)``),
        the fit targets; every auxiliary output of the model needs its labels.
      lambdas: the auxiliary loss weights ``{"aux_head": lambda_head, "aux_tail": lambda_tail}``, e.g.
        :func:`zoo.c2al.loss_weights` (its ``"primary"`` weight, 1 when absent, scales ``G_p``).
      method: ``"auto"``, ``"closed_form"`` or ``"autodiff"`` (module docstring).

    Returns:
      ``{"tap": <TAPS entry>, "method": "closed_form" | "autodiff", "gradients": {output: (B, d) float64}}``.
    """
    if method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {method!r}")
    aux = _aux_outputs(model)
    if not aux:
        raise NotImplementedError("gradient_alignment: the model has no auxiliary head (aux_head, aux_tail)")
    tap = _tap_of(model, aux)
    missing = [name for name in (PRIMARY, *aux) if name not in y_targets]
    if missing:
        raise ValueError(f"y_targets: missing the labels of output(s) {missing}")
    missing = [name for name in aux if name not in lambdas]
    if missing:
        raise ValueError(f"lambdas: missing the loss weight of output(s) {missing}")
    weights = {PRIMARY: float(lambdas.get(PRIMARY, 1.0)), **{name: float(lambdas[name]) for name in aux}}
    backbone = find_backbone(model)
    spec = getattr(getattr(backbone, "encoder", None), "spec", None)
    features = {f.name: x[f.name] for f in spec.inputs} if spec is not None else dict(x)
    batch_size = len(np.asarray(next(iter(features.values()))))
    labels = {name: _flat_labels(y_targets[name], batch_size, f"y_targets['{name}']") for name in (PRIMARY, *aux)}
    closed = _closed_form_applies(model, aux, tap)
    if method == "closed_form" and not closed:
        raise NotImplementedError(
            "gradient_alignment: the closed form needs single Dense(1) auxiliary heads on h (c2al head_units [] "
            f"and tap {DEFAULT_TAP!r}); this model has tap {tap!r} and head_units "
            f"{ {name: getattr(_head_layers(model, name)[0], 'units', []) for name in aux} }; use method='autodiff'")
    use_closed = closed and method != "autodiff"
    grads = (_closed_form(model, features, labels, weights) if use_closed
             else _autodiff(model, features, labels, weights, tap))
    return {"tap": tap, "method": "closed_form" if use_closed else "autodiff",
            "gradients": {name: np.asarray(g, np.float64) for name, g in grads.items()}}


def gradient_alignment(model, x: Mapping[str, Any], y_targets: Mapping[str, Any], lambdas: Mapping[str, float],
                       cohort_masks: Mapping[str, Any] | None = None, method: str = "auto") -> dict[str, Any]:
    """The alignment of each auxiliary loss's gradient with the primary loss's at the tapped representation.

    See the module docstring for the statistics, the closed form and what autodiff covers.

    Args:
      model, x, y_targets, lambdas, method: as in :func:`representation_gradients`.
      cohort_masks: row subsets to report besides all rows, ``{name: bool (B,)}``; pass the cohorts
        themselves, ``{"head": x in C_head, "tail": x in C_tail}`` (most rows belong to neither).
        None: ``{"head_nonzero": y_head != 0, "tail_nonzero": y_tail != 0}``, the rows whose
        auxiliary label is non-zero: with labels ``y * 1[x in C]`` those are the cohort's
        *positives* only (a cohort negative looks like a row outside the cohort); with the
        ``membership`` ablation's labels they are the cohort.

    Returns:
      ``{"tap", "method", "batch_size": B, "dim": d, "rows": {"all": B, <mask>: count, ...},
      "heads": {<aux output>: {"all": stats, <mask>: stats, ...}}}`` with the
      :data:`GRADIENT_STATS` of :func:`alignment_stats` as ``stats``.
    """
    result = representation_gradients(model, x, y_targets, lambdas, method=method)
    grads = result["gradients"]
    g_primary = grads[PRIMARY]
    batch_size, dim = g_primary.shape
    aux = [name for name in grads if name != PRIMARY]
    if cohort_masks is None:
        cohort_masks = {f"{name[len('aux_'):]}_nonzero": np.asarray(y_targets[name]).reshape(-1) != 0
                        for name in aux}
    rows = {ALL_ROWS: np.ones(batch_size, bool)}
    for name, mask in cohort_masks.items():
        if name == ALL_ROWS:
            raise ValueError(f"cohort_masks: '{ALL_ROWS}' is reserved for every row")
        mask = np.asarray(mask).reshape(-1)
        if mask.shape != (batch_size,):
            raise ValueError(f"cohort_masks['{name}']: needs one entry per probe row ({batch_size}), got {mask.size}")
        rows[str(name)] = mask.astype(bool)
    heads = {name: {key: alignment_stats(g_primary[mask], grads[name][mask]) for key, mask in rows.items()}
             for name in aux}
    return {"tap": result["tap"], "method": result["method"], "batch_size": int(batch_size), "dim": int(dim),
            "rows": {key: int(mask.sum()) for key, mask in rows.items()}, "heads": heads}


def flatten_gradients(result: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of a :func:`gradient_alignment` result, keyed for TensorBoard and JSON.

    Keys: ``gradients/<aux>/<stat>`` (all rows), ``gradients/<aux>/<rows>/<stat>`` (each mask) for
    each :data:`GRADIENT_STATS`, and ``gradients/rows/<rows>`` (the row counts of the masks).
    """
    out: dict[str, float] = {}
    for name, per_rows in result["heads"].items():
        for rows, stats in per_rows.items():
            prefix = f"gradients/{name}" if rows == ALL_ROWS else f"gradients/{name}/{rows}"
            for key in GRADIENT_STATS:
                out[f"{prefix}/{key}"] = float(stats[key])
    for rows, count in result["rows"].items():
        if rows != ALL_ROWS:
            out[f"gradients/rows/{rows}"] = float(count)
    return out
