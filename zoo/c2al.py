"""C2AL: cohort-contrastive auxiliary heads on the shared representation (docs/methods.md#c2al; arXiv 2510.02215).

Two light heads read the same ``h`` that feeds the primary head and learn

    y_head = y * 1[x in C_head]      y_tail = y * 1[x in C_tail]

with the loss ``BCE(primary) + lambda_head * BCE(aux_head) + lambda_tail * BCE(aux_tail)``; the
auxiliary BCE is averaged over the whole batch. The labels come from the data pipeline
(:func:`zoo.data.model_batches`), never from a model input. Serving drops both heads:
:func:`zoo.model.primary_model` of the wrapped model is the baseline graph with the same weights.

Options (the model YAML's ``c2al:`` block, checked by :func:`c2al_options`):

* ``head_units``: hidden widths of each auxiliary head before its ``Dense(1)`` logit; ``[]`` is a
  single ``Dense(1)``. Either one list for both heads or a mapping ``{head: [...], tail: [...]}``
  (a missing role gets ``[]``).
* ``tap``: where the heads read from. ``primary_head_input`` (default, the paper's): ``h``, the
  backbone output that feeds the primary head. ``interaction_output``: ``z``, the backbone's
  interaction output before its over-arch (for multi-embedding, the mean of the projected sets; see
  :class:`zoo.backbone.Backbone`). Where the over-arch is the identity (AFM, AutoInt+, DeepFM,
  DCNv2 parallel, DHEN/Wukong without ``head_units``, DLRM without ``top_units``) ``z`` is ``h``
  and both taps are the same. For PLE/MMoE ``z`` is the experts' input ``x_0``. (docs/methods.md#taps:
  ``over_arch_output`` is ``primary_head_input`` here: the primary head is one ``Dense(1)`` on ``h``.)
* ``ablation`` (docs/methods.md#ablations), one of :data:`ABLATIONS`:

  - ``none``: C2AL as published (both heads, labels ``y * 1[x in C]``).
  - ``reweight``: no auxiliary head; the primary BCE gets per-example sample weights
    ``w = 1 + (lambda_head / pi_head) 1[x in C_head] + (lambda_tail / pi_tail) 1[x in C_tail]``
    with ``pi_C`` the cohort's fraction of the training split (:func:`reweight_coefficients`).
    "Same effective weight" as C2AL means: each cohort's extra loss mass equals its lambda, i.e.
    the training loss is, in expectation, ``E[BCE] + lambda_head E[BCE | C_head] + lambda_tail
    E[BCE | C_tail]``, just as C2AL adds ``lambda * (mean auxiliary BCE)`` per head. The weights
    are not renormalised: their mean over the training data is ``1 + lambda_head + lambda_tail``,
    the total loss mass of C2AL. With both lambdas 0 it is the baseline.
  - ``membership``: both heads, labels ``1[x in C]`` instead of ``y * 1[x in C]``.
  - ``single_head`` / ``single_tail``: one auxiliary head only (the other lambda is ignored).
  - ``ple_towers``: PLE/MMoE only: the two auxiliary tasks are PLE tasks 1 and 2 with their own
    gates, specific experts and towers (``num_tasks = 3``; task 0 is primary), see :func:`ple_towers`.

Every ablation serves the baseline graph (:func:`zoo.model.primary_model`). Random and
least-divergent cohort pairs (:func:`zoo.cohorts.choose_pair`) are ordinary ``c2al`` data configs.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras

from layers import MLP, validation
from zoo.model import (BACKBONE_LAYER, PRIMARY, build, interaction_output, primary_head, shared_representation,
                       task_output_names)
from zoo.losses import primary_loss
from zoo.protocol import adam
from zoo.registry import get_backbone
from zoo.spec import TASK_PREFIX

AUX_HEAD, AUX_TAIL = "aux_head", "aux_tail"
ROLES = {"head": AUX_HEAD, "tail": AUX_TAIL}
DEFAULT_TAP = "primary_head_input"
TAPS = (DEFAULT_TAP, "interaction_output")
ABLATIONS = ("none", "reweight", "membership", "single_head", "single_tail", "ple_towers")
OPTION_KEYS = ("head_units", "tap", "ablation")
_AUX_OUTPUTS = {"reweight": (), "single_head": (AUX_HEAD,), "single_tail": (AUX_TAIL,)}


def aux_outputs(ablation: str = "none") -> tuple[str, ...]:
    """The auxiliary outputs (and label keys) of an ablation: both heads, one, or none (``reweight``)."""
    _check_ablation(ablation)
    return _AUX_OUTPUTS.get(ablation, (AUX_HEAD, AUX_TAIL))


def aux_labels(ablation: str = "none") -> str:
    """The ``labels`` argument of :func:`zoo.data.model_batches` for an ablation."""
    _check_ablation(ablation)
    return "membership" if ablation == "membership" else "y_times_membership"


def _check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise ValueError(f"c2al ablation: must be one of {ABLATIONS}, got {ablation!r}")


def head_units_of(head_units: Any, role: str, where: str = "head_units") -> list[int]:
    """The hidden widths of the ``role`` (``"head"`` or ``"tail"``) auxiliary head."""
    if isinstance(head_units, Mapping):
        unknown = sorted(set(head_units) - set(ROLES))
        if unknown:
            raise ValueError(f"{where}: unknown key '{unknown[0]}'; keys are {sorted(ROLES)}")
        return validation.widths(head_units.get(role, []), f"{where}.{role}")
    return validation.widths(head_units, where)


def c2al_options(block: Mapping[str, Any] | None, where: str = "c2al") -> dict[str, Any]:
    """The model YAML's ``c2al`` block with defaults filled in and checked (errors name the key)."""
    block = dict(block or {})
    unknown = sorted(set(block) - set(OPTION_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key '{unknown[0]}'; keys are {list(OPTION_KEYS)}")
    options = {"head_units": [], "tap": DEFAULT_TAP, "ablation": "none", **block}
    head_units = options["head_units"]
    per_role = {role: head_units_of(head_units, role, f"{where}.head_units") for role in ROLES}
    options["head_units"] = per_role if isinstance(head_units, Mapping) else per_role["head"]
    if options["tap"] not in TAPS:
        raise ValueError(f"{where}.tap: must be one of {TAPS}, got {options['tap']!r}")
    if options["ablation"] not in ABLATIONS:
        raise ValueError(f"{where}.ablation: must be one of {ABLATIONS}, got {options['ablation']!r}")
    if options["ablation"] == "ple_towers" and options["tap"] != DEFAULT_TAP:
        raise ValueError(f"{where}.tap: ablation 'ple_towers' puts the auxiliary heads on PLE towers 1 and 2; "
                         f"tap must be {DEFAULT_TAP!r}, got {options['tap']!r}")
    return options


def _aux_head(x, output: str, units: Sequence[int]):
    if units:
        x = MLP(list(units), name=f"{output}_mlp")(x)
    logit = keras.layers.Dense(1, name=f"{output}_logit")(x)
    return keras.layers.Activation("sigmoid", dtype="float32", name=output)(logit)


def _role(output: str) -> str:
    return next(role for role, name in ROLES.items() if name == output)


def C2AL(model: keras.Model, head_units: Any = (), tap: str = DEFAULT_TAP,
         heads: Sequence[str] = (AUX_HEAD, AUX_TAIL)) -> keras.Model:
    """Wraps a ranking model with auxiliary heads.

    Args:
      model: a model from :func:`zoo.model.build`.
      head_units: hidden widths of each auxiliary head before its logit: one list for both heads
        or ``{"head": [...], "tail": [...]}``; ``()`` is a single ``Dense(1)``, the lightest head.
      tap: where the heads read from, one of :data:`TAPS` (see the module docstring).
      heads: the auxiliary outputs, a non-empty subset of ``("aux_head", "aux_tail")``.

    Returns:
      A model with outputs ``{"primary", *heads}`` (and, for a multi-task model, every
      ``task_<label>`` output beside them) sharing every baseline layer. Compile it with
      :func:`loss_weights`.
    """
    if tap not in TAPS:
        raise ValueError(f"tap: must be one of {TAPS}, got {tap!r}")
    heads = tuple(heads)
    if not heads or len(set(heads)) != len(heads) or not set(heads) <= set(ROLES.values()):
        raise ValueError(f"heads: must be a non-empty subset of {tuple(ROLES.values())}, got {heads}")
    x = shared_representation(model) if tap == DEFAULT_TAP else interaction_output(model)
    outputs = {name: model.get_layer(name).output for name in task_output_names(model)}
    for output in heads:
        outputs[output] = _aux_head(x, output, head_units_of(head_units, _role(output)))
    return keras.Model(model.inputs, outputs, name=f"c2al_{model.name}")


def ple_towers(name: str, spec, head_units: Any = (), **hparams: Any) -> keras.Model:
    """The ``ple_towers`` ablation: the auxiliary tasks as PLE/MMoE tasks 1 and 2 (``num_tasks = 3``).

    Task 0 feeds the primary head exactly as in :func:`zoo.model.build`; the auxiliary heads (MLP of
    ``head_units`` + ``Dense(1)``) read the towers of tasks 1 (``aux_head``) and 2 (``aux_tail``),
    which have their own gates and task-specific experts and share the shared experts with task 0.

    "The exported model is the baseline graph" means here: :func:`zoo.model.primary_model` is the
    single-task backbone (``num_tasks = 1``, otherwise the same hyper-parameters) holding the
    trained primary path (embeddings, shared experts, task 0's specific experts and gate, tower 0,
    primary head): the baseline's layers, weight names and parameter count, and the training
    model's primary output. Only initial weights differ from a baseline built with the same seed
    (the extra experts are created in between). This needs a primary path that reads no other
    task's weights: any MMoE, and PLE with ``num_levels = 1`` (a lower PLE level's shared gate
    mixes every task's specific experts); other settings raise ValueError.
    """
    cls = get_backbone(name)
    if len(getattr(spec, "labels", ())) > 1:
        raise ValueError(f"c2al ablation 'ple_towers': spec '{spec.name}' has several labels {list(spec.labels)}; "
                         "the auxiliary tasks as PLE towers need a single-label spec (use ablation 'none')")
    if not hasattr(cls, "task_representations"):
        raise ValueError(f"c2al ablation 'ple_towers': needs a gated-experts backbone (ple, mmoe), got '{name}'")
    num_tasks = hparams.pop("num_tasks", 1)
    if num_tasks not in (1, 3):
        raise ValueError(f"c2al ablation 'ple_towers': builds num_tasks=3 (primary + 2 auxiliary); "
                         f"hparams num_tasks must be 1 or 3, got {num_tasks}")
    inputs = spec.keras_inputs()
    backbone = cls(spec.to_dict(), name=BACKBONE_LAYER, num_tasks=3, **hparams)
    if not backbone.primary_path_is_separable():
        raise ValueError(f"c2al ablation 'ple_towers': num_levels must be 1 so that the served primary path "
                         f"is the single-task baseline (got num_levels={backbone.num_levels})")
    tasks, _ = backbone(inputs, all_tasks=True, return_interaction=True)
    outputs = {PRIMARY: primary_head(tasks[0])}
    for task, output in ((1, AUX_HEAD), (2, AUX_TAIL)):
        outputs[output] = _aux_head(tasks[task], output, head_units_of(head_units, _role(output)))
    return keras.Model(inputs, outputs, name=f"c2al_{name}_ranking_model")


def build_c2al(name: str, spec, options: Mapping[str, Any] | None = None, **hparams: Any) -> keras.Model:
    """The training model of a C2AL variant: backbone ``name`` with the :func:`c2al_options` ``options``.

    ``reweight`` is the baseline graph (its cohort weights come from the data pipeline);
    ``ple_towers`` is :func:`ple_towers`; every other ablation is :func:`C2AL` on
    :func:`zoo.model.build` with the ablation's :func:`aux_outputs`.
    """
    options = c2al_options(options)
    ablation = options["ablation"]
    if ablation == "ple_towers":
        return ple_towers(name, spec, head_units=options["head_units"], **hparams)
    model = build(name, spec, **hparams)
    if ablation == "reweight":
        return model
    return C2AL(model, head_units=options["head_units"], tap=options["tap"], heads=aux_outputs(ablation))


def loss_weights(lambda_head: float, lambda_tail: float,
                 outputs: Sequence[str] = (AUX_HEAD, AUX_TAIL)) -> dict[str, float]:
    """``loss_weights`` for compiling a :func:`C2AL` model with auxiliary ``outputs``."""
    if lambda_head < 0 or lambda_tail < 0:
        raise ValueError(f"lambda_head/lambda_tail: must be >= 0, got {lambda_head}, {lambda_tail}")
    lambdas = {AUX_HEAD: float(lambda_head), AUX_TAIL: float(lambda_tail)}
    return {PRIMARY: 1.0, **{output: lambdas[output] for output in outputs}}


def reweight_coefficients(lambda_head: float, lambda_tail: float, head_fraction: float,
                          tail_fraction: float) -> dict[str, float]:
    """``{"head": a_head, "tail": a_tail}`` of the ``reweight`` ablation: ``a_C = lambda_C / pi_C``.

    The sample weight is ``w = 1 + a_head 1[x in C_head] + a_tail 1[x in C_tail]``, so each cohort's
    extra loss mass (mean over the training data of its extra weight) is its lambda.
    """
    loss_weights(lambda_head, lambda_tail)  # checks the lambdas
    out = {}
    for role, lam, fraction in (("head", lambda_head, head_fraction), ("tail", lambda_tail, tail_fraction)):
        if not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"reweight: the {role} cohort's training fraction must be in (0, 1], got {fraction}")
        out[role] = float(lam) / float(fraction)
    return out


def _output_names(model: keras.Model) -> list[str]:
    names = {layer.name for layer in model.layers}
    return task_output_names(model) + [n for n in (AUX_HEAD, AUX_TAIL) if n in names]


def task_loss_weights(model: keras.Model, task_weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """``{output: weight}`` of the model's task outputs: 1.0 each unless ``task_weights`` (by label:
    ``primary``'s label or the ``<label>`` of ``task_<label>``) says otherwise; errors name the label."""
    tasks = task_output_names(model)
    by_label = {PRIMARY: PRIMARY, **{n[len(TASK_PREFIX):]: n for n in tasks if n != PRIMARY}}
    weights = {n: 1.0 for n in tasks}
    for label, weight in (task_weights or {}).items():
        output = by_label.get(label)
        if output is None and label not in by_label:
            raise ValueError(f"task_weights: '{label}' is not a task of model '{model.name}' "
                             f"(tasks: {[k for k in by_label if k != PRIMARY]})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"task_weights.{label}: must be a number >= 0, got {weight!r}")
        weights[output] = float(weight)
    return weights


def compile_model(model: keras.Model, learning_rate: float, c2al: Mapping[str, Any] | None,
                  auc_metric: bool = True, task_weights: Mapping[str, float] | None = None,
                  primary_label: str | None = None, loss: Mapping[str, Any] | str | None = None) -> None:
    """Adam (:func:`zoo.protocol.adam`), BCE on every output (the primary one: ``loss``,
    :func:`zoo.losses.primary_loss`, default BCE), the C2AL ``loss_weights`` of the model's auxiliary
    outputs, and the primary head's AUC. ``c2al`` (the lambdas) is None for the baseline.
    ``auc_metric=False`` leaves the per-step ``keras.metrics.AUC`` out (its 1,000 thresholds cost time; :mod:`zoo.protocol` computes
    the exact validation metrics each epoch).

    A multi-task model (outputs ``task_<label>``) gets a BCE per task, weighted 1.0 each or by
    ``task_weights`` (``{label: weight}``; the primary task by its label ``primary_label`` or ``"primary"``)."""
    names = _output_names(model)
    tasks = task_output_names(model)
    aux = [n for n in names if n not in tasks]
    tw = dict(task_weights or {})
    if primary_label is not None and primary_label in tw:
        tw[PRIMARY] = tw.pop(primary_label)
    weights = task_loss_weights(model, tw)
    with_aux = c2al is not None and bool(aux)
    losses = {name: keras.losses.BinaryCrossentropy() for name in (tasks + aux if with_aux else tasks)}
    losses[PRIMARY] = primary_loss(loss)
    if with_aux:
        weights.update({k: v for k, v in loss_weights(c2al["lambda_head"], c2al["lambda_tail"], aux).items()
                        if k != PRIMARY})
    if set(weights.values()) == {1.0} and len(weights) == 1:
        weights = None
    model.compile(
        optimizer=adam(learning_rate),
        loss=losses,
        loss_weights=weights,
        metrics={PRIMARY: [keras.metrics.AUC(name="auc", num_thresholds=1000)]} if auc_metric else None,
    )
