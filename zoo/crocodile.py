"""Crocodile options of the multi-embedding option (Lin et al., arXiv 2405.12706; docs/methods.md#crocodile).

``embedding: {type: multi, num_sets: M, covariance_loss: {...}, gate: {...}}`` turns the ``M``
embedding sets, each with its own interaction module and projection (an *expert*,
:class:`zoo.backbone.Backbone`), into Crocodile: a cross-expert covariance loss
(:class:`layers.CrossExpertCovariance`) added to the training loss, and/or a prior-informed
element-wise gate (:class:`layers.PriorElementwiseGate`) in place of the plain mean of the experts.
Both need ``M >= 2``. Training-only: the loss is computed only in training steps, so the served graph
never computes it (the gate is part of the model and is served).

``covariance_loss`` keys (defaults in :data:`COVARIANCE_DEFAULTS`): ``alpha``, ``sample_rows``,
``seed``, ``row_normalization`` (see :class:`layers.CrossExpertCovariance`) and ``target``: what the
experts' outputs ``O^(m)`` are, ``"experts"`` (the projected interaction outputs
``P_m(I_m(E_m(x)))``, ``(B, D)``, the tensors the sets' mean is taken of; default) or
``"embeddings"`` (set ``m``'s field embeddings concatenated, ``(B, sum_f d_f)``).

``gate`` keys (:data:`GATE_DEFAULTS`): ``prior_fields`` (required: id inputs of the spec whose
embeddings, from every set, concatenated, form the prior ``r``), ``units``, ``activation``,
``normalization`` (see :class:`layers.PriorElementwiseGate`).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

from keras import ops

from layers import CrossExpertCovariance, PriorElementwiseGate, validation

COVARIANCE_TARGETS = ("experts", "embeddings")
COVARIANCE_DEFAULTS: dict[str, Any] = {"alpha": 2e-5, "sample_rows": None, "seed": 0, "row_normalization": True,
                                       "target": "experts"}
GATE_DEFAULTS: dict[str, Any] = {"prior_fields": None, "units": [], "activation": "relu", "normalization": "softmax"}
OPTION_KEYS = ("covariance_loss", "gate")


def _block(options: Mapping[str, Any], key: str, defaults: Mapping[str, Any]) -> dict[str, Any] | None:
    block = options.get(key)
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise ValueError(f"embedding: {key}: must be a mapping of {list(defaults)}, got {block!r}")
    unknown = [k for k in block if k not in defaults]
    if unknown:
        raise ValueError(f"embedding: {key}: unknown key '{unknown[0]}'; keys are {list(defaults)}")
    if options.get("num_sets", 1) < 2:
        raise ValueError(f"embedding: {key} needs num_sets >= 2 (one expert per set), got {options.get('num_sets')}")
    return {**copy.deepcopy(dict(defaults)), **copy.deepcopy(dict(block))}


def covariance_options(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``covariance_loss`` block of multi-embedding options, defaults filled in and checked (or None)."""
    block = _block(options, "covariance_loss", COVARIANCE_DEFAULTS)
    if block is None:
        return None
    if block["target"] not in COVARIANCE_TARGETS:
        raise ValueError(f"embedding: covariance_loss.target: must be one of {COVARIANCE_TARGETS}, "
                         f"got {block['target']!r}")
    try:  # the layer's own checks (without sample_rows: a sampling layer would create generator state)
        layer = covariance_layer({**block, "sample_rows": None})
        block["sample_rows"] = validation.optional_integer(block["sample_rows"], "sample_rows", minimum=2)
    except ValueError as err:
        raise ValueError(f"embedding: covariance_loss.{err}") from None
    block.update(alpha=layer.alpha, seed=layer.seed)
    return block


def gate_options(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``gate`` block of multi-embedding options, defaults filled in and checked (or None)."""
    block = _block(options, "gate", GATE_DEFAULTS)
    if block is None:
        return None
    fields = block["prior_fields"]
    if isinstance(fields, str) or not isinstance(fields, Sequence) or not fields or \
            not all(isinstance(f, str) for f in fields) or len(set(fields)) != len(fields):
        raise ValueError(f"embedding: gate.prior_fields: must be a non-empty list of distinct feature names, "
                         f"got {fields!r}")
    block["prior_fields"] = list(fields)
    try:
        layer = PriorElementwiseGate(options["num_sets"], units=block["units"], activation=block["activation"],
                                     normalization=block["normalization"])
    except ValueError as err:
        raise ValueError(f"embedding: gate.{err}") from None
    block["units"] = layer.units
    return block


def covariance_layer(block: Mapping[str, Any], **kwargs) -> CrossExpertCovariance:
    return CrossExpertCovariance(alpha=block["alpha"], sample_rows=block["sample_rows"], seed=block["seed"],
                                 row_normalization=block["row_normalization"], **kwargs)


def make_layers(embedding: Mapping[str, Any], token_names: Sequence[str], dtype=None):
    """``(covariance, gate, prior_index)`` for checked embedding options (None where not configured).

    ``prior_index`` lists the positions of the gate's prior fields among ``token_names`` (the
    encoder's id inputs); a prior field that is no id input is an error naming it.
    """
    if embedding.get("type") != "multi":
        return None, None, []
    cov_block, gate_block = embedding.get("covariance_loss"), embedding.get("gate")
    covariance = covariance_layer(cov_block, name="covariance_loss") if cov_block else None
    gate, prior_index = None, []
    if gate_block:
        missing = [f for f in gate_block["prior_fields"] if f not in token_names]
        if missing:
            raise ValueError(f"embedding: gate.prior_fields: '{missing[0]}' is not a categorical or sequence input "
                             f"of the spec; those are {list(token_names)}")
        prior_index = [list(token_names).index(f) for f in gate_block["prior_fields"]]
        gate = PriorElementwiseGate(embedding["num_sets"], units=gate_block["units"],
                                    activation=gate_block["activation"], normalization=gate_block["normalization"],
                                    dtype=dtype, name="prior_gate")
    return covariance, gate, prior_index


def covariance_inputs(target: str, experts: list, token_sets: list) -> list:
    """The tensors the covariance loss reads: the experts' outputs or each set's concatenated embeddings."""
    if target == "experts":
        return experts
    return [ops.concatenate(tokens, axis=-1) for tokens in token_sets]


def prior(token_sets: list, prior_index: Sequence[int]):
    """The gate's prior ``r``: the prior fields' embeddings from every set, concatenated ``(B, M sum d_f)``."""
    return ops.concatenate([tokens[i] for tokens in token_sets for i in prior_index], axis=-1)


def study_embedding(embedding: Mapping[str, Any], prior_fields: Sequence[str] = (),
                    num_sets: int = 2) -> dict[str, Any]:
    """The Crocodile embedding options of the study's ``crocodile`` variant for a model YAML's block.

    Keeps ``num_sets`` of an existing ``multi`` block (else ``num_sets`` sets), adds the covariance
    loss with its defaults (unless the block has one) and, with ``prior_fields``, the softmax gate.
    The table initializer and ``l2`` of the block are kept.
    """
    base = {k: v for k, v in embedding.items() if k in ("l2", "initializer")}
    if embedding.get("type") == "multi":
        base.update({k: v for k, v in embedding.items() if k != "type"})
    options = {**base, "type": "multi", "num_sets": base.get("num_sets", num_sets)}
    options.setdefault("covariance_loss", {})
    if prior_fields and not options.get("gate"):
        options["gate"] = {"prior_fields": list(prior_fields)}
    return options
