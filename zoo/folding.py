"""Folding MLET tables for serving: a model with every factorized table replaced by its plain product.

:func:`fold_mlet` is used by the export (the served graph) and by :func:`zoo.model.fold_embeddings`.
"""

from __future__ import annotations

import keras

from layers import MLETEmbedding
from zoo import compat


def _contains_mlet(layer) -> bool:
    return any(isinstance(sub, MLETEmbedding) for sub in compat.sublayers(layer, include_self=True))


def fold_mlet(model: keras.Model) -> keras.Model:
    """``model`` with every :class:`layers.MLETEmbedding` replaced by its :meth:`fold` (a plain table).

    The functional graph is rebuilt with ``keras.models.clone_model``: a top-level MLET layer is
    swapped for its fold; layers without MLET inside are reused as they are (weights shared); nested
    functional models are folded recursively; any other layer holding an MLET layer somewhere inside
    (e.g. a backbone's feature encoder) is rebuilt from its config, given the original's weights on
    its first (symbolic) call and has its MLET sub-layers swapped for their folds. The input model is
    left untouched; a model without MLET layers is returned as is. The outputs are unchanged for
    every id (OOV and hashed ids included).
    """
    if not _contains_mlet(model):
        return model
    pending = {}

    def clone(layer):
        if isinstance(layer, MLETEmbedding):
            return layer.fold()
        if not _contains_mlet(layer):
            return layer  # shared, weights and all
        if isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph"):  # nested functional
            return fold_mlet(layer)
        copy = layer.__class__.from_config(layer.get_config())
        pending[id(copy)] = (layer, copy)
        return copy

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)  # builds a fresh copy
        entry = pending.pop(id(layer), None)
        if entry is not None:
            _copy_and_fold(*entry)
        return out

    folded = keras.models.clone_model(model, clone_function=clone, call_function=call)
    if pending:
        raise ValueError(f"fold_mlet: layers {[src.name for src, _ in pending.values()]} were never called")
    return folded


def _copy_and_fold(source, copy) -> None:
    src_weights, dst_weights = source.weights, copy.weights
    if len(src_weights) != len(dst_weights) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(src_weights, dst_weights)):
        raise ValueError(f"fold_mlet: layer '{source.name}' rebuilt from its config does not match the "
                         f"original's weights; cannot fold its MLET tables")
    for a, b in zip(src_weights, dst_weights):
        b.assign(a)
    src_mlet = [x for x in compat.sublayers(source) if isinstance(x, MLETEmbedding)]
    dst_mlet = [x for x in compat.sublayers(copy) if isinstance(x, MLETEmbedding)]
    for src, dst in zip(src_mlet, dst_mlet):
        _replace_sublayer(copy, dst, src.fold())


def _replace_sublayer(root, old, new) -> None:
    """Points every reference to ``old`` inside ``root`` (attributes, lists, dicts) at ``new``."""
    replaced = False
    for parent in compat.sublayers(root, include_self=True):
        if not any(child is old for child in compat.direct_sublayers(parent)):
            continue
        compat.replace_tracked_layer(parent, old, new)
        for key, value in list(vars(parent).items()):
            if value is old:
                object.__setattr__(parent, key, new)
                replaced = True
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        list.__setitem__(value, i, new)
                        replaced = True
            elif isinstance(value, dict):
                for k, item in list(value.items()):
                    if item is old:
                        dict.__setitem__(value, k, new)
                        replaced = True
    if not replaced:
        raise ValueError(f"fold_mlet: cannot find the attribute holding MLET layer '{old.name}' in '{root.name}'")
