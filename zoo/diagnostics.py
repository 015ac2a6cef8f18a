"""C2AL training diagnostics: attention density, dead over-arch units and embedding collapse (METHODS 1.5-1.6, 5).

The C2AL paper shows its mechanism (the FM attention weights ``Y`` of ``G = E E^T Y`` collapse into a
sparse, light-tailed distribution under the single-task objective, and C2AL's auxiliary heads widen them)
with histograms only. This module turns it into numbers logged during training:

1. **Statistics** (pure NumPy, backend-free), each documented with its formula:
   :func:`near_zero_fraction`, :func:`normalized_entropy`, :func:`excess_kurtosis` and
   :func:`participation_ratio` of an attention matrix ``Y``; :func:`dead_relu_fraction` of a batch of
   ReLU activations; :func:`information_abundance` of an embedding table.
2. :func:`collect` runs one inference forward pass of a model's backbone on a probe batch and gathers

   * per :class:`layers.AttentionFM` layer (DHEN, Wukong, any backbone using it): the four ``Y``
     statistics and the ``|Y|`` values (for histograms). Static mode: ``Y`` is the layer's
     ``attention_matrix`` (after the configured normalization, i.e. exactly what the layer multiplies
     with; with ``normalize=None`` the weight itself). Dynamic mode: ``Y`` is ``(B, n, k)`` per example,
     computed on the probe batch from the embeddings that actually reach the layer; each statistic is
     computed **per example** on that example's ``(n, k)`` matrix and then **averaged over the probe
     batch** (the ``|Y|`` values of every example are kept for the histograms);
   * the dead-ReLU fraction of the **over-arch**: every ReLU :class:`layers.MLP` that the backbone's
     ``over_arch(z)`` hook runs (see :func:`collect` for what that is per backbone);
   * the information abundance of every embedding table (every spec table's row block of the fused
     lookup tables; per set for multi-embedding; the folded ``A_f B_f`` table for MLET).

   :func:`flatten_stats` turns that into ``{"attention/<layer>/<stat>": float, ...}`` scalars.
3. :class:`C2ALDiagnostics`, a ``keras.callbacks.Callback`` that calls :func:`collect` at train begin,
   every ``every_n_steps`` optimizer steps and at train end, keeps every record in ``history`` and
   writes it as it goes to TensorBoard (scalars, plus histograms of ``|Y|``) and/or a JSON-lines file.
4. Plots (matplotlib, Agg, no pyplot state): :func:`plot_ne_diff` (per-cohort NE_diff bars with error
   bars) and :func:`plot_attention_histograms` (``|Y|`` histograms, baseline against C2AL, at several
   points of training). :func:`load_records` reads a JSON-lines file back.

Everything runs on the TensorFlow and JAX backends: model values are taken with
``keras.ops.convert_to_numpy`` and every statistic is NumPy (float64).

How the forward pass is observed. Keras layers have no forward hooks, so during :func:`collect` (and only
then; restored in a ``finally``) three *instance* attributes are wrapped: each AttentionFM's
``attention`` method (records ``Y``), the backbone's ``over_arch`` method (marks the over-arch part of
the pass) and each MLP's ``activation`` function (records its post-activation outputs, layer by layer,
while inside the over-arch). Nothing is recomputed by hand, so the recorded values are exactly those of
the model's own ``backbone(probe_x, training=False)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from typing import Any, Iterable, Mapping, Sequence

import keras
import numpy as np

from layers import MLP, AttentionFM, MLETEmbedding, MultiEmbedding, MultiFieldEmbedding

BACKBONE_LAYER = "backbone"  # zoo.model.BACKBONE_LAYER (not imported: keeps this module import-light)
Y_STATS = ("near_zero_fraction", "normalized_entropy", "excess_kurtosis", "participation_ratio")

__all__ = [
    "near_zero_fraction", "normalized_entropy", "excess_kurtosis", "participation_ratio",
    "dead_relu_fraction", "information_abundance", "attention_stats", "find_backbone", "embedding_tables",
    "collect", "flatten_stats",
    "C2ALDiagnostics", "load_records", "plot_ne_diff", "plot_attention_histograms",
]


# ---------------------------------------------------------------------------------------------------
# Statistics. Each public function is the row-wise private one applied to all entries as one row, so
# the per-example (dynamic Y) statistics use exactly the same formulas.
# ---------------------------------------------------------------------------------------------------

def _as_rows(y) -> np.ndarray:
    a = np.asarray(y, dtype=np.float64)
    if a.size == 0:
        raise ValueError("y: needs at least one entry, got an empty array")
    return a.reshape(1, -1)


def _near_zero_rows(r: np.ndarray, rel_eps: float) -> np.ndarray:
    a = np.abs(r)
    return np.mean(a <= rel_eps * a.max(axis=1, keepdims=True), axis=1)  # all-zero row: 0 <= 0 -> 1.0


def _entropy_rows(r: np.ndarray) -> np.ndarray:
    a = np.abs(r)
    total = a.sum(axis=1, keepdims=True)
    n = r.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(total > 0, a / np.where(total > 0, total, 1.0), 0.0)
        h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    if n == 1:
        return np.where(total[:, 0] > 0, 1.0, 0.0)
    return np.where(total[:, 0] > 0, h / math.log(n), 0.0)


def _kurtosis_rows(r: np.ndarray) -> np.ndarray:
    c = r - r.mean(axis=1, keepdims=True)
    m2 = np.mean(c ** 2, axis=1)
    m4 = np.mean(c ** 4, axis=1)
    scale = np.abs(r).max(axis=1)
    degenerate = m2 <= (1e-12 * scale) ** 2          # constant row (up to rounding): undefined
    with np.errstate(divide="ignore", invalid="ignore"):
        k = m4 / np.where(degenerate, 1.0, m2) ** 2 - 3.0
    return np.where(degenerate, np.nan, k)


def _participation_rows(r: np.ndarray, power: float) -> np.ndarray:
    w = np.abs(r) ** power
    num = w.sum(axis=1) ** 2
    den = r.shape[1] * np.sum(w ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def near_zero_fraction(y, rel_eps: float = 1e-3) -> float:
    """Fraction of the entries of ``y`` that are near zero relative to its largest magnitude.

        near_zero(y) = (1 / N) * #{ i : |y_i| <= rel_eps * max_j |y_j| }

    over all ``N`` entries of ``y`` (any shape). METHODS 1.6 metric 1 (``near_zero_frac(Y,
    eps = 1e-3 max|Y|)``). An all-zero ``y`` returns 1.0 (every entry is ``<= 0``).

    Args:
      y: array of any shape, at least one entry.
      rel_eps: threshold relative to ``max |y|``, >= 0.

    Returns:
      A float in ``[0, 1]``.
    """
    if rel_eps < 0:
        raise ValueError(f"rel_eps: must be >= 0, got {rel_eps}")
    return float(_near_zero_rows(_as_rows(y), float(rel_eps))[0])


def normalized_entropy(y, axis: int | None = None) -> float:
    """Shannon entropy of the magnitude distribution of ``y``, divided by its maximum.

    With ``axis=None`` (the default; used by :func:`collect`), over all ``N`` entries::

        p_i = |y_i| / sum_j |y_j|,      H = - sum_i p_i log p_i   (0 log 0 = 0),      NE = H / log N

    1 means uniform magnitudes, 0 means a single non-zero entry. With ``axis`` set, the same is
    computed for each 1-D slice along ``axis`` (e.g. ``axis=0`` of an ``(n, k)`` ``Y``: each column
    normalized over the ``n`` fields, ``H / log n``, METHODS 1.6 metric 2) and averaged over the slices.

    Conventions: an all-zero slice (no mass) gives 0.0 (treated as fully collapsed); a single-entry
    slice gives 1.0 if non-zero.

    Args:
      y: array of any shape, at least one entry.
      axis: None (all entries) or the axis whose slices are normalized separately.

    Returns:
      A float in ``[0, 1]``.
    """
    if axis is None:
        return float(_entropy_rows(_as_rows(y))[0])
    a = np.asarray(y, dtype=np.float64)
    slices = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
    if slices.size == 0:
        raise ValueError("y: needs at least one entry, got an empty array")
    return float(np.mean(_entropy_rows(slices)))


def excess_kurtosis(y) -> float:
    """Fisher's (excess) kurtosis of the entries of ``y``, a heavy-tail indicator (METHODS 1.6 metric 3).

    Over all ``N`` entries, with central moments ``m_r = (1/N) sum_i (y_i - mean(y))^r``::

        kurt(y) = m_4 / m_2^2 - 3

    (the biased, population estimator: no small-sample correction). 0 for a Gaussian, -1.2 for a
    uniform distribution, -2 for a symmetric two-point distribution, large and positive for a few
    spikes among many near-equal entries. A constant ``y`` (``m_2 = 0``, up to rounding: ``m_2 <=
    (1e-12 max|y|)^2``) has no kurtosis: NaN.

    Args:
      y: array of any shape, at least one entry.

    Returns:
      A float ``>= -2``, or NaN for a constant array.
    """
    return float(_kurtosis_rows(_as_rows(y))[0])


def participation_ratio(y, power: float = 2.0) -> float:
    """Participation ratio of the entries of ``y``: the fraction of entries that effectively carry weight.

    Over all ``N`` entries, with weights ``w_i = |y_i|^power``::

        PR(y) = (sum_i w_i)^2 / (N * sum_i w_i^2)

    The default ``power=2`` is the physics (inverse participation ratio) definition
    ``PR = (sum y^2)^2 / (N sum y^4)``, which treats ``y_i^2`` as the weight of entry ``i``, so it is
    invariant to the sign and the scale of ``y`` and it matches "energy" rather than magnitude.
    ``power=1`` gives METHODS 1.6 metric 4, ``(sum |y|)^2 / (N sum y^2)``. Either way PR is in
    ``(0, 1]``: 1 when all ``|y_i|`` are equal, ``1/N`` when a single entry is non-zero, ``m/N`` for
    ``m`` equal non-zero entries. An all-zero ``y`` returns 0.0 (no entry participates).

    Args:
      y: array of any shape, at least one entry.
      power: exponent of the weights, > 0.

    Returns:
      A float in ``[1/N, 1]`` (0.0 for all zeros).
    """
    if power <= 0:
        raise ValueError(f"power: must be > 0, got {power}")
    return float(_participation_rows(_as_rows(y), float(power))[0])


def dead_relu_fraction(activations, min_dead_fraction: float = 1.0) -> float:
    """Fraction of units that are dead on a probe batch (METHODS 1.6 metric 5).

    ``activations`` is ``(B, U)`` (or ``(..., U)``, flattened to ``(B', U)``): the post-ReLU outputs
    of ``U`` units on ``B`` examples. Unit ``u`` is dead when it is inactive (``a_bu <= 0``) on at
    least ``min_dead_fraction`` of the examples::

        dead(u)  = [ (1/B) #{ b : a_bu <= 0 } >= min_dead_fraction ]
        fraction = (1/U) sum_u dead(u)

    With the default ``min_dead_fraction=1.0`` a unit is dead when it is ``<= 0`` for **every**
    example; METHODS 1.6 suggests ``0.99``.

    Args:
      activations: array of shape ``(B, U)`` or ``(..., U)``, ``B >= 1``.
      min_dead_fraction: in ``(0, 1]``.

    Returns:
      A float in ``[0, 1]``.
    """
    if not 0.0 < min_dead_fraction <= 1.0:
        raise ValueError(f"min_dead_fraction: must be in (0, 1], got {min_dead_fraction}")
    a = np.asarray(activations, dtype=np.float64)
    if a.ndim < 1 or a.size == 0:
        raise ValueError(f"activations: needs shape (B, U) with entries, got {a.shape}")
    a = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(1, -1)
    inactive = np.mean(a <= 0.0, axis=0)
    return float(np.mean(inactive >= min_dead_fraction - 1e-12))


def information_abundance(table) -> float:
    """Information abundance of an embedding table (Guo et al., ICML 2024, Def. 1; METHODS 5).

    For ``E in R^{V x d}`` with singular values ``sigma_1 >= .. >= sigma_r``::

        IA(E) = ||sigma||_1 / ||sigma||_inf = (sum_j sigma_j) / max_j sigma_j

    In ``[1, rank(E)]``: 1 for a rank-1 (fully collapsed) table, ``d`` when all singular values are
    equal (e.g. orthogonal columns of equal norm). An all-zero table returns 0.0.

    Args:
      table: a 2-D array ``(V, d)``.

    Returns:
      A float.
    """
    e = np.asarray(table, dtype=np.float64)
    if e.ndim != 2 or e.size == 0:
        raise ValueError(f"table: needs a non-empty 2-D array, got shape {e.shape}")
    s = np.linalg.svd(e, compute_uv=False)
    return float(s.sum() / s.max()) if s.max() > 0 else 0.0


def attention_stats(y, per_example: bool = False) -> dict[str, float]:
    """The four ``Y`` statistics (:data:`Y_STATS`) of an attention matrix, at their defaults.

    Args:
      y: ``(n, k)`` (one matrix) or, with ``per_example=True``, ``(B, n, k)``: the statistics of each
        example's ``(n, k)`` matrix, averaged over the ``B`` examples (NaN kurtoses are left out of
        the mean; NaN if every one is NaN).
      per_example: see ``y``.
    """
    a = np.asarray(y, dtype=np.float64)
    rows = a.reshape(a.shape[0], -1) if per_example else _as_rows(a)
    if rows.size == 0:
        raise ValueError("y: needs at least one entry, got an empty array")
    kurt = _kurtosis_rows(rows)
    return {
        "near_zero_fraction": float(np.mean(_near_zero_rows(rows, 1e-3))),
        "normalized_entropy": float(np.mean(_entropy_rows(rows))),
        "excess_kurtosis": float(np.nanmean(kurt)) if np.any(np.isfinite(kurt)) else float("nan"),
        "participation_ratio": float(np.mean(_participation_rows(rows, 2.0))),
    }


# ---------------------------------------------------------------------------------------------------
# collect
# ---------------------------------------------------------------------------------------------------

def _npy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _sublayers(layer) -> list:
    """Every layer nested in ``layer`` (depth first, without ``layer`` itself)."""
    return list(layer._flatten_layers(include_self=False, recursive=True))


def find_backbone(model):
    """The backbone of a model: its layer ``"backbone"``, else the first registry Backbone inside it.

    ``model`` may also be a backbone itself. Returns None when there is none.
    """
    from zoo.registry import Backbone

    if isinstance(model, Backbone):
        return model
    if isinstance(model, keras.Model):
        try:
            layer = model.get_layer(BACKBONE_LAYER)
            if isinstance(layer, Backbone):
                return layer
        except ValueError:
            pass
    return next((layer for layer in _sublayers(model) if isinstance(layer, Backbone)), None)


def _attention_layers(root) -> list:
    ordered = list(getattr(root, "attention_fms", None) or [])
    walked = [layer for layer in _sublayers(root) if isinstance(layer, AttentionFM)]
    return ordered + [layer for layer in walked if all(layer is not o for o in ordered)]


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name] - 1}")
    return out


@contextlib.contextmanager
def _wrapped(obj, attribute: str, make_wrapper):
    """Temporarily shadows ``obj.attribute`` by an instance attribute ``make_wrapper(original)``."""
    had_own = attribute in vars(obj)
    own = vars(obj).get(attribute)
    object.__setattr__(obj, attribute, make_wrapper(getattr(obj, attribute)))
    try:
        yield
    finally:
        if had_own:
            object.__setattr__(obj, attribute, own)
        else:
            object.__delattr__(obj, attribute)


def _mlp_name(mlp, root) -> str:
    """The MLP's place in the backbone, e.g. ``"head"`` or ``"experts/level_0/gate_task0/hidden"``.

    Taken from its first kernel's variable path (Keras layers have no path of their own), without the
    backbone's prefix and the trailing ``dense_0/kernel``; the layer name when there is no weight.
    """
    try:
        parts = mlp.weights[0].path.split("/")[:-2]
    except (IndexError, AttributeError):
        return mlp.name
    prefix = getattr(root, "name", None)
    if parts and parts[0] == prefix and len(parts) > 1:
        parts = parts[1:]
    return "/".join(parts) or mlp.name


def _is_relu(activation) -> bool:
    try:
        return keras.activations.serialize(activation) == "relu"
    except (ValueError, TypeError):
        return False


def _table_names(encoder) -> list[list[str]] | None:
    """Per embedder (sorted by width), the spec table of each of its fields, as FeatureEncoder fuses them."""
    try:
        spec = encoder.spec
        groups: dict[int, list[str]] = {}
        for name in encoder.token_names:
            table = spec.feature(name).table
            owned = groups.setdefault(spec.tables[table].embedding_dim, [])
            if table not in owned:
                owned.append(table)
        return [groups[d] for d in sorted(groups)]
    except (AttributeError, KeyError, TypeError):
        return None


def _blocks(layer: MultiFieldEmbedding, table) -> list[np.ndarray]:
    return [table[o:o + r] for o, r in zip(layer.offsets, layer.field_rows)]


def embedding_tables(backbone) -> dict[str, np.ndarray]:
    """Every embedding table of a backbone's encoder as a NumPy ``(rows, d)`` array.

    Keys are the spec table names (``"set_<m>/<table>"`` for the sets of a multi-embedding); each value
    is that table's row block of the fused lookup table (OOV row included). MLET tables are folded:
    ``A[o_f : o_f + R_f] @ B_f``, the table served after :meth:`layers.MLETEmbedding.fold`. A table whose
    owner cannot be matched to the spec is named ``"<embedder>/field_<f>"``.
    """
    encoder = getattr(backbone, "encoder", None)
    if encoder is None:
        return {}
    names = _table_names(encoder)
    out: dict[str, np.ndarray] = {}
    for j, embedder in enumerate(getattr(encoder, "embedders", [])):
        if isinstance(embedder, MultiEmbedding):
            sets = [(f"set_{m}/", s, _blocks(s, _npy(s.embeddings))) for m, s in enumerate(embedder.sets)]
        elif isinstance(embedder, MLETEmbedding):
            a = _npy(embedder.inner.embeddings).astype(np.float64)
            blocks = [block @ _npy(p.kernel).astype(np.float64)
                      for block, p in zip(_blocks(embedder.inner, a), embedder.projections)]
            sets = [("", embedder.inner, blocks)]
        elif isinstance(embedder, MultiFieldEmbedding):
            sets = [("", embedder, _blocks(embedder, _npy(embedder.embeddings)))]
        else:
            continue
        for prefix, layer, blocks in sets:
            owners = names[j] if names is not None and j < len(names) else None
            if owners is None or len(owners) != len(blocks):
                owners = [f"{embedder.name}/field_{f}" for f in range(len(blocks))]
            for owner, block in zip(owners, blocks):
                out[prefix + owner] = np.asarray(block)
    return out


def collect(model, probe_x: Mapping[str, Any], max_abs_y: int | None = None) -> dict[str, Any]:
    """Runs ``backbone(probe_x, training=False)`` once and returns the C2AL diagnostics.

    What is measured (see the module docstring for how the pass is observed):

    * ``"attention"``: one record per :class:`layers.AttentionFM` in the backbone (``attention_fms``
      order when the backbone lists them, i.e. set by set, layer by layer; then any other found by
      walking the layers): ``name``, ``mode``, ``shape`` (of ``Y``), the four :data:`Y_STATS`
      (:func:`attention_stats`; static: of ``Y``; dynamic: per example, averaged over the batch) and
      ``abs_y``, the flattened ``|Y|`` (every example's for dynamic mode; evenly subsampled to at most
      ``max_abs_y`` values when given).
    * ``"over_arch"``: the dead-ReLU fraction (:func:`dead_relu_fraction`, default threshold) of the
      over-arch, i.e. of every ReLU :class:`layers.MLP` run by the backbone's ``over_arch(z)`` hook:
      ``{"dead_relu_fraction": dead units / all units, "units": U, "layers": [{"name":
      "<mlp>/dense_<i>", "units", "dead_relu_fraction"}, ...]}`` (``<mlp>`` is the MLP's place in the
      backbone, e.g. ``head`` or ``experts/level_0/gate_task0/hidden``). Per backbone that is: DHEN and Wukong
      the head MLP (``head_units``); DCNv2 (stacked) the deep MLP; DLRM the top MLP; PLE and MMoE the
      experts, their gate MLPs and the towers that its ``over_arch`` runs. Backbones whose
      ``over_arch`` is the identity have none, and the value is None: AFM, AutoInt, DeepFM, DCNv2
      (parallel) and DHEN/Wukong/DCNv2/DLRM with empty head/deep/top widths. (Their MLPs, if any, are
      part of the interaction.) Non-ReLU MLPs are skipped.
    * ``"information_abundance"``: :func:`information_abundance` of every table of
      :func:`embedding_tables` (all rows of the table, not only the rows seen in training).

    Args:
      model: a model of :func:`zoo.model.build` (C2AL-wrapped or not), or a backbone layer.
      probe_x: a batch of model inputs, a dict keyed by feature name (extra keys are ignored).
      max_abs_y: cap on the ``|Y|`` values kept per layer (None: all).

    Returns:
      ``{"attention": [...], "over_arch": {...} or None, "information_abundance": {...}}``.
    """
    backbone = find_backbone(model)
    root = backbone if backbone is not None else model
    encoder = getattr(backbone, "encoder", None)
    if encoder is not None and hasattr(encoder, "spec"):
        missing = [f.name for f in encoder.spec.inputs if f.name not in probe_x]
        if missing:
            raise ValueError(f"probe_x: missing model input(s) {missing}")
        features = {f.name: probe_x[f.name] for f in encoder.spec.inputs}
    else:
        features = dict(probe_x)

    fms = _attention_layers(root)
    captured_y: dict[int, list] = {id(fm): [] for fm in fms}
    mlps = [layer for layer in _sublayers(root) if isinstance(layer, MLP) and _is_relu(layer.activation)]
    captured_act: dict[int, list] = {id(m): [] for m in mlps}
    state = {"over_arch": 0}

    def attention_wrapper(fm):
        def make(original):
            def attention(*args, **kwargs):
                y = original(*args, **kwargs)
                captured_y[id(fm)].append(_npy(y))
                return y
            return attention
        return make

    def activation_wrapper(mlp):
        def make(original):
            def activation(x):
                out = original(x)
                if state["over_arch"]:
                    captured_act[id(mlp)].append(_npy(out))
                return out
            return activation
        return make

    def over_arch_wrapper(original):
        def over_arch(*args, **kwargs):
            state["over_arch"] += 1
            try:
                return original(*args, **kwargs)
            finally:
                state["over_arch"] -= 1
        return over_arch

    with contextlib.ExitStack() as stack:
        for fm in fms:
            stack.enter_context(_wrapped(fm, "attention", attention_wrapper(fm)))
        for mlp in mlps:
            stack.enter_context(_wrapped(mlp, "activation", activation_wrapper(mlp)))
        if backbone is not None and hasattr(backbone, "over_arch"):
            stack.enter_context(_wrapped(backbone, "over_arch", over_arch_wrapper))
        (backbone if backbone is not None else model)(features, training=False)

    attention = []
    for fm, name in zip(fms, _unique(fm.name for fm in fms)):
        ys = captured_y[id(fm)]
        if not ys:
            if fm.mode != "static" or not fm.built:
                warnings.warn(f"collect: AttentionFM '{fm.name}' did not run on the probe batch; skipped")
                continue
            ys = [_npy(fm.attention(None))]
        dynamic = fm.mode == "dynamic"
        y = np.concatenate(ys, axis=0) if dynamic else ys[-1]
        abs_y = np.abs(y.astype(np.float64)).ravel()
        if max_abs_y is not None and abs_y.size > max_abs_y:
            abs_y = abs_y[np.linspace(0, abs_y.size - 1, int(max_abs_y)).round().astype(int)]
        attention.append({"name": name, "mode": fm.mode, "shape": list(y.shape),
                          **attention_stats(y, per_example=dynamic), "abs_y": abs_y})

    over_arch = None
    ran = [m for m in mlps if captured_act[id(m)]]
    if ran:
        layers_out, dead_units, units = [], 0, 0
        for mlp, name in zip(ran, _unique(_mlp_name(m, root) for m in ran)):
            outs = captured_act[id(mlp)]
            depth = len(mlp.units)
            for i in range(depth):  # one activation per dense layer and call, in order
                a = np.concatenate([o.reshape(-1, o.shape[-1]) for o in outs[i::depth]], axis=0)
                frac = dead_relu_fraction(a)
                layers_out.append({"name": f"{name}/dense_{i}", "units": int(a.shape[-1]),
                                   "dead_relu_fraction": frac})
                dead_units += int(round(frac * a.shape[-1]))
                units += int(a.shape[-1])
        over_arch = {"dead_relu_fraction": dead_units / units, "units": units, "layers": layers_out}

    abundance = {name: information_abundance(t) for name, t in embedding_tables(backbone).items()} \
        if backbone is not None else {}
    return {"attention": attention, "over_arch": over_arch, "information_abundance": abundance}


def flatten_stats(stats: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of a :func:`collect` result, keyed for TensorBoard and JSON.

    Keys: ``attention/<layer>/<stat>`` for each :data:`Y_STATS`, ``over_arch/dead_relu_fraction`` and
    ``over_arch/<mlp>/dense_<i>/dead_relu_fraction``, ``information_abundance/<table>``.
    """
    out: dict[str, float] = {}
    for rec in stats.get("attention", []):
        for key in Y_STATS:
            out[f"attention/{rec['name']}/{key}"] = float(rec[key])
    if stats.get("over_arch"):
        out["over_arch/dead_relu_fraction"] = float(stats["over_arch"]["dead_relu_fraction"])
        for rec in stats["over_arch"]["layers"]:
            out[f"over_arch/{rec['name']}/dead_relu_fraction"] = float(rec["dead_relu_fraction"])
    for name, value in stats.get("information_abundance", {}).items():
        out[f"information_abundance/{name}"] = float(value)
    return out


# ---------------------------------------------------------------------------------------------------
# Callback
# ---------------------------------------------------------------------------------------------------

def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class C2ALDiagnostics(keras.callbacks.Callback):
    """Logs :func:`collect` on a fixed probe batch at train begin, every N optimizer steps and at train end.

    Each record is ``{"step": s, "epoch": e, "event": "train_begin" | "step" | "train_end",
    <flatten_stats scalars>, "abs_y": {<layer>: [|Y| values]}}``; ``step`` is the optimizer step count
    (``model.optimizer.iterations`` at train begin, then advanced by the batches seen, so a resumed run
    keeps counting), ``epoch`` the 0-based epoch in progress (at train end: the last one). A step
    record is taken whenever the step count crosses a multiple of ``every_n_steps`` (once per
    crossing, also with ``steps_per_execution > 1``); the train-end record is skipped when a record of
    that step was just taken. Records are kept in :attr:`history` and written as they are taken:

    * ``log_dir``: TensorBoard event files (``tf.summary``): every scalar at its step and a histogram
      ``attention/<layer>/abs_y`` of every layer's (full) ``|Y|``. Needs TensorFlow (installed with
      the TF backend; also used under JAX when importable); without it a warning is given once and
      only the JSON/history are kept.
    * ``json_path``: JSON lines, one record per line (the file is started afresh by the first record of
      this callback). NaN/inf are written as null. ``abs_y`` is evenly subsampled to at most
      ``max_abs_y`` values per layer (also in :attr:`history`).

    Under JAX, reading the model syncs the training state (Keras does it when ``self.model`` is
    accessed), which happens only on record steps.

    Args:
      probe_x: a dict batch of model inputs (same for every record; a few hundred rows is plenty).
      every_n_steps: record period in optimizer steps (>= 1).
      log_dir: TensorBoard log directory, or None.
      json_path: JSON-lines output file, or None.
      max_abs_y: cap on the ``|Y|`` values per layer kept in a record.

    Example::

        diag = C2ALDiagnostics(probe_x, every_n_steps=200, log_dir="runs/tb/diag",
                               json_path="runs/diag.jsonl")
        model.fit(dataset, epochs=3, callbacks=[diag])
        plot_attention_histograms(base_diag.history, diag.history, "attention.png")
    """

    def __init__(self, probe_x: Mapping[str, Any], every_n_steps: int = 100, log_dir: str | None = None,
                 json_path: str | None = None, max_abs_y: int = 4096):
        super().__init__()
        if isinstance(every_n_steps, bool) or int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ValueError(f"every_n_steps: must be a positive integer, got {every_n_steps}")
        if not isinstance(probe_x, Mapping):
            raise ValueError(f"probe_x: must be a dict of model inputs, got {type(probe_x).__name__}")
        self.probe_x = {k: np.asarray(v) for k, v in probe_x.items()}
        self.every_n_steps = int(every_n_steps)
        self.log_dir = log_dir
        self.json_path = json_path
        self.max_abs_y = int(max_abs_y)
        self.history: list[dict[str, Any]] = []
        self._step = 0
        self._epoch = 0
        self._epoch_base = 0
        self._writer = None
        self._tf_warned = False
        self._json_started = False

    # -- Keras hooks --------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        try:
            self._step = int(_npy(self.model.optimizer.iterations))
        except (AttributeError, TypeError, ValueError):
            pass
        self._epoch_base = self._step
        self._record("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._epoch_base = self._step

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch_base + int(batch) + 1
        crossed = step // self.every_n_steps > self._step // self.every_n_steps
        self._step = max(step, self._step)
        if crossed:
            self._record("step")

    def on_train_end(self, logs=None):
        if not (self.history and self.history[-1]["step"] == self._step):
            self._record("train_end")
        if self._writer is not None:
            self._writer.flush()

    # -- recording ----------------------------------------------------------------------------------
    def _record(self, event: str) -> dict[str, Any]:
        stats = collect(self.model, self.probe_x)
        record: dict[str, Any] = {"step": self._step, "epoch": self._epoch, "event": event,
                                  **flatten_stats(stats)}
        full_abs_y = {rec["name"]: rec["abs_y"] for rec in stats["attention"]}
        record["abs_y"] = {}
        for name, values in full_abs_y.items():
            if values.size > self.max_abs_y:
                values = values[np.linspace(0, values.size - 1, self.max_abs_y).round().astype(int)]
            record["abs_y"][name] = [float(v) for v in values]
        self.history.append(record)
        if self.log_dir is not None:
            self._write_tensorboard(record, full_abs_y)
        if self.json_path is not None:
            self._write_json(record)
        return record

    def _write_tensorboard(self, record: Mapping[str, Any], abs_y: Mapping[str, np.ndarray]) -> None:
        if self._writer is None:
            try:
                import tensorflow as tf
            except ImportError:
                if not self._tf_warned:
                    warnings.warn("C2ALDiagnostics: TensorFlow is not importable; TensorBoard logging is "
                                  "skipped (history and JSON are still written)")
                    self._tf_warned = True
                return
            self._tf = tf
            self._writer = tf.summary.create_file_writer(self.log_dir)
        tf = self._tf
        with self._writer.as_default(step=int(record["step"])):
            for key, value in record.items():
                if key in ("step", "epoch", "event", "abs_y") or not math.isfinite(value):
                    continue
                tf.summary.scalar(key, value)
            for name, values in abs_y.items():
                tf.summary.histogram(f"attention/{name}/abs_y", values.astype(np.float32))
        self._writer.flush()

    def _write_json(self, record: Mapping[str, Any]) -> None:
        directory = os.path.dirname(os.path.abspath(self.json_path))
        os.makedirs(directory, exist_ok=True)
        with open(self.json_path, "a" if self._json_started else "w") as fh:
            fh.write(json.dumps(_json_safe(dict(record))) + "\n")
        self._json_started = True

    def close(self) -> None:
        """Closes the TensorBoard writer (a later record opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def load_records(path: str) -> list[dict[str, Any]]:
    """The records of a :class:`C2ALDiagnostics` JSON-lines file (null scalars read back as NaN)."""
    records = []
    with open(path) as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                records.append({k: (float("nan") if v is None else v) for k, v in rec.items()})
    return records


# ---------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------

def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _flatten_cohorts(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flatten_cohorts(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def plot_ne_diff(per_cohort_ne_diff: Mapping[str, Any], path: str, title: str | None = None) -> str:
    """Bar chart of per-cohort NE_diff (%), with error bars when several runs are given.

    Args:
      per_cohort_ne_diff: ``{cohort: NE_diff}`` in percent (``100 (NE_C2AL - NE_base) / NE_base``,
        negative is better, :func:`zoo.metrics.ne_diff`), or ``{cohort: [NE_diff of each run/seed]}``:
        the bar is the mean and the error bar the sample standard deviation (``ddof=1``; none for a
        single run). Nested dicts (``{axis: {cohort: ...}}``, the ``"cohorts"`` part of
        :func:`zoo.metrics.ne_diff`) are shown as ``axis/cohort``. NaN values are drawn as empty bars.
      path: output image file (the format follows the extension, e.g. ``.png``).
      title: figure title.

    Returns:
      ``path``.
    """
    flat = _flatten_cohorts(per_cohort_ne_diff)
    if not flat:
        raise ValueError("per_cohort_ne_diff: needs at least one cohort")
    names, means, stds = [], [], []
    for name, value in flat.items():
        runs = np.atleast_1d(np.asarray(value, dtype=np.float64))
        runs = runs[np.isfinite(runs)]
        names.append(str(name))
        means.append(float(runs.mean()) if runs.size else 0.0)
        stds.append(float(runs.std(ddof=1)) if runs.size > 1 else 0.0)
    fig = _figure(max(4.0, 0.7 * len(names) + 2.0), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    colors = ["tab:green" if m < 0 else "tab:red" for m in means]
    ax.bar(range(len(names)), means, yerr=stds if any(stds) else None, color=colors, capsize=4)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("NE_diff (%)  (negative is better)")
    ax.set_title(title or "C2AL vs baseline: NE_diff per cohort")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _points(n: int, points: int) -> list[int]:
    return sorted(set(int(i) for i in np.linspace(0, n - 1, max(1, min(points, n))).round()))


def plot_attention_histograms(records_baseline: Sequence[Mapping[str, Any]],
                              records_c2al: Sequence[Mapping[str, Any]], path: str, points: int = 3,
                              layers: Sequence[str] | None = None, bins: int = 40) -> str:
    """``|Y|`` histograms, baseline against C2AL, at several points of training (the paper's Fig. 5 view).

    ``points`` records are taken from each run, evenly spaced over its records (first, ..., last;
    e.g. 3: first, middle, last), pairing the i-th baseline point with the i-th C2AL point. The grid
    has one row per attention layer and one column per point; each panel overlays the two ``|Y|``
    histograms (densities, shared bins from 0 to the panel's largest value), titled with both steps.

    Args:
      records_baseline: records of the baseline run (:attr:`C2ALDiagnostics.history` or
        :func:`load_records`), in training order, each with an ``"abs_y"`` dict.
      records_c2al: the same for the C2AL run.
      path: output image file.
      points: number of training points (columns).
      layers: attention layer names to show (default: every layer present in both runs' first record).
      bins: histogram bins.

    Returns:
      ``path``.
    """
    if not records_baseline or not records_c2al:
        raise ValueError("records_baseline/records_c2al: need at least one record each")
    if layers is None:
        layers = [n for n in records_baseline[0].get("abs_y", {}) if n in records_c2al[0].get("abs_y", {})]
    layers = list(layers)
    if not layers:
        raise ValueError("layers: no attention layer (abs_y) common to both runs")
    base_idx = _points(len(records_baseline), points)
    c2al_idx = _points(len(records_c2al), points)
    cols = min(len(base_idx), len(c2al_idx))
    base_idx = [base_idx[int(i)] for i in np.linspace(0, len(base_idx) - 1, cols).round()]
    c2al_idx = [c2al_idx[int(i)] for i in np.linspace(0, len(c2al_idx) - 1, cols).round()]
    fig = _figure(3.4 * cols, 2.6 * len(layers))
    for r, layer in enumerate(layers):
        for c, (ib, ic) in enumerate(zip(base_idx, c2al_idx)):
            ax = fig.add_subplot(len(layers), cols, r * cols + c + 1)
            base = np.asarray(records_baseline[ib]["abs_y"].get(layer, []), dtype=np.float64)
            c2al = np.asarray(records_c2al[ic]["abs_y"].get(layer, []), dtype=np.float64)
            top = max([float(v.max()) for v in (base, c2al) if v.size] + [1e-12])
            edges = np.linspace(0.0, top, bins + 1)
            for values, label, color in ((base, "baseline", "tab:blue"), (c2al, "C2AL", "tab:orange")):
                if values.size:
                    ax.hist(values, bins=edges, density=True, alpha=0.5, label=label, color=color)
            ax.set_title(f"{layer}\nstep {records_baseline[ib].get('step')} / {records_c2al[ic].get('step')}",
                         fontsize=8)
            ax.set_xlabel("|Y|", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
