"""Folding embedding tables for serving: a model with every MLET table replaced by its plain product
and every ``keras_rs`` distributed table by the fused plain table of the same rows.

:func:`fold_tables` is used by the export (the served graph) and by :func:`zoo.model.fold_embeddings`.
"""

from __future__ import annotations

import keras

from layers import DistributedMultiFieldEmbedding, MLETEmbedding
from zoo import compat


# The embedding layers with a ``fold()`` to a plain :class:`layers.MultiFieldEmbedding` of equal outputs.
FOLDABLE = (MLETEmbedding, DistributedMultiFieldEmbedding)


def _contains_foldable(layer) -> bool:
    return any(isinstance(sub, FOLDABLE) for sub in compat.sublayers(layer, include_self=True))


def fold_tables(model: keras.Model) -> keras.Model:
    """``model`` with every :data:`FOLDABLE` table (:class:`layers.MLETEmbedding`,
    :class:`layers.DistributedMultiFieldEmbedding`) replaced by its ``fold()`` (a plain table).

    The functional graph is rebuilt with ``keras.models.clone_model``: a top-level foldable layer is
    swapped for its fold; layers without one inside are reused as they are (weights shared); nested
    functional models are folded recursively; any other layer holding a foldable layer somewhere inside
    (e.g. a backbone's feature encoder) is rebuilt from its config, given the original's weights on
    its first (symbolic) call and has its foldable sub-layers swapped for their folds. The input model
    is left untouched; a model without foldable layers is returned as is. The outputs are unchanged for
    every id (OOV and hashed ids included).
    """
    if not _contains_foldable(model):
        return model
    pending = {}

    def clone(layer):
        if isinstance(layer, FOLDABLE):
            return layer.fold()
        if not _contains_foldable(layer):
            return layer  # shared, weights and all
        if isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph"):  # nested functional
            return fold_tables(layer)
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
        raise ValueError(f"fold_tables: layers {[src.name for src, _ in pending.values()]} were never called")
    return folded


def _copy_and_fold(source, copy) -> None:
    src_weights, dst_weights = source.weights, copy.weights
    if len(src_weights) != len(dst_weights) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(src_weights, dst_weights)):
        raise ValueError(f"fold_tables: layer '{source.name}' rebuilt from its config does not match the "
                         f"original's weights; cannot fold its tables")
    for a, b in zip(src_weights, dst_weights):
        b.assign(a)
    src_tables = [x for x in compat.sublayers(source) if isinstance(x, FOLDABLE)]
    dst_tables = [x for x in compat.sublayers(copy) if isinstance(x, FOLDABLE)]
    for src, dst in zip(src_tables, dst_tables):
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
        raise ValueError(f"fold_tables: cannot find the attribute holding the foldable layer '{old.name}' in '{root.name}'")
