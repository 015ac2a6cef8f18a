"""Collecting the diagnostics from a model: one inference pass of its backbone on a probe batch.

How the pass is observed, with the backbone's public hooks (:class:`zoo.backbone.Backbone`): the
interaction output is ``z = backbone.compute_interaction(x, training=False)`` and the over-arch is
``backbone.over_arch(z, training=False)``, the two halves of ``backbone(x, training=False)``.

* ``Y`` of every :class:`layers.AttentionFM`: ``backbone.attention_matrices(x)`` (DHEN, Wukong: the
  ``Y`` the layers compute on ``x``, in ``attention_fms`` order); a static layer the backbone does not
  list is read from its weight (``fm.attention(None)``).
* The over-arch's ReLU outputs: while ``over_arch(z)`` runs, and only then, each ReLU
  :class:`layers.MLP`'s activation function records what it returns
  (:func:`zoo.compat.recording_calls`; Keras layers have no forward hooks). So the values are those
  of the model's own pass, and only the MLPs the over-arch runs are measured.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterable, Mapping

import keras
import numpy as np

from layers import MLP, AttentionFM, MLETEmbedding, MultiEmbedding, MultiFieldEmbedding
from zoo import compat
from zoo.diagnostics.statistics import Y_STATS, attention_stats, dead_relu_fraction, information_abundance

BACKBONE_LAYER = "backbone"  # zoo.model.BACKBONE_LAYER (not imported: keeps this module import-light)


def to_numpy(x) -> np.ndarray:
    """A backend tensor (or variable) as a NumPy array."""
    return np.asarray(keras.ops.convert_to_numpy(x))


def find_backbone(model):
    """The backbone of a model: its layer ``"backbone"``, else the first registry Backbone inside it.

    ``model`` may also be a backbone itself. Returns None when there is none.
    """
    from zoo.backbone import Backbone

    if isinstance(model, Backbone):
        return model
    if isinstance(model, keras.Model):
        try:
            layer = model.get_layer(BACKBONE_LAYER)
            if isinstance(layer, Backbone):
                return layer
        except ValueError:
            pass
    return next((layer for layer in compat.sublayers(model) if isinstance(layer, Backbone)), None)


def _attention_layers(root) -> list:
    ordered = list(getattr(root, "attention_fms", None) or [])
    walked = [layer for layer in compat.sublayers(root) if isinstance(layer, AttentionFM)]
    return ordered + [layer for layer in walked if all(layer is not o for o in ordered)]


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name] - 1}")
    return out


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
            sets = [(f"set_{m}/", s, _blocks(s, to_numpy(s.embeddings))) for m, s in enumerate(embedder.sets)]
        elif isinstance(embedder, MLETEmbedding):
            a = to_numpy(embedder.inner.embeddings).astype(np.float64)
            blocks = [block @ to_numpy(p.kernel).astype(np.float64)
                      for block, p in zip(_blocks(embedder.inner, a), embedder.projections)]
            sets = [("", embedder.inner, blocks)]
        elif isinstance(embedder, MultiFieldEmbedding):
            sets = [("", embedder, _blocks(embedder, to_numpy(embedder.embeddings)))]
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
    """Runs the backbone on ``probe_x`` for inference and returns the C2AL diagnostics.

    What is measured (see the module docstring for how the pass is observed; a model without a
    backbone gives the static ``Y`` of its AttentionFM layers only):

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
    listed = list(getattr(backbone, "attention_fms", None) or [])
    captured_y: dict[int, list] = {id(fm): [] for fm in fms}
    if listed and hasattr(backbone, "attention_matrices"):
        for fm, y in zip(listed, backbone.attention_matrices(features, training=False)):
            captured_y[id(fm)].append(to_numpy(y))
    mlps = [layer for layer in compat.sublayers(root) if isinstance(layer, MLP) and _is_relu(layer.activation)]
    captured_act: dict[int, list] = {id(m): [] for m in mlps}

    if backbone is not None:
        z = backbone.compute_interaction(features, training=False)
        with contextlib.ExitStack() as stack:  # record the MLP activations of the over-arch only
            for mlp in mlps:
                stack.enter_context(compat.recording_calls(
                    mlp, "activation", lambda out, key=id(mlp): captured_act[key].append(to_numpy(out))))
            backbone.over_arch(z, training=False)

    attention = []
    for fm, name in zip(fms, _unique(fm.name for fm in fms)):
        ys = captured_y[id(fm)]
        if not ys:
            if fm.mode != "static" or not fm.built:
                warnings.warn(f"collect: AttentionFM '{fm.name}' did not run on the probe batch; skipped")
                continue
            ys = [to_numpy(fm.attention(None))]
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

