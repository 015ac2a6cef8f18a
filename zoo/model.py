"""The ranking model: a registered backbone producing ``h`` plus a primary head.

``build(name, spec, **hparams)`` returns a functional ``keras.Model`` with one named input per spec
input feature and one output ``{"primary": P(y=1 | x)}``. Its layer ``"backbone"`` is called with
``return_interaction=True`` and outputs the pair ``(h, z)``: ``h`` feeds the primary head
(:func:`shared_representation`, C2AL's default tap) and ``z`` is the backbone's interaction output
before the over-arch (:func:`interaction_output`, the ``interaction_output`` tap). ``z`` is an
intermediate of ``h`` in every backbone, so exposing it adds no layer, weight or computation, and
the serving graph (:func:`primary_model`) is the same function with the same parameters.

Multi-task (a spec with ``labels: [y_0, y_1, ..]``, see :mod:`zoo.spec`): ``build`` then puts one
head per task, output ``"primary"`` for the primary task ``y_0`` and ``"task_<label>"`` for each other
label (:func:`task_output`; layers ``task_<label>_logit`` and ``task_<label>``). PLE/MMoE build
``num_tasks = len(labels)`` gated tasks, task ``t``'s head on its tower ``u^t`` (``h = u^0`` as
before); every other backbone puts each task's ``Dense(1)`` head on the shared ``h``.
:func:`served_model` is the serving graph of every task head (auxiliary heads dropped);
:func:`primary_model` stays the primary task's path alone.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras

import layers  # noqa: F401  (registers the shipped layers for deserialization)
import zoo.optimizers  # noqa: F401  (registers the zoo's optimizer for compile=True loads)
from zoo.folding import fold_tables
from zoo.registry import backbone_names, get_backbone
from zoo.spec import TASK_PREFIX, FeatureSpec

BACKBONE_LAYER = "backbone"
PRIMARY = "primary"
PRIMARY_LOGIT = "primary_logit"


def task_output(label: str, spec: FeatureSpec) -> str:
    """The model output of a label's task: ``"primary"`` for the spec's primary label, else ``"task_<label>"``."""
    if label not in spec.labels:
        raise ValueError(f"task '{label}': not a label of spec '{spec.name}' (labels: {list(spec.labels)})")
    return PRIMARY if label == spec.label else TASK_PREFIX + label


def task_outputs(spec: FeatureSpec, tasks: Sequence[str] | None = None) -> dict[str, str]:
    """``{label: model output name}`` of the tasks (default every label of the spec), primary first."""
    return {label: task_output(label, spec) for label in resolve_tasks(spec, tasks)}


def resolve_tasks(spec: FeatureSpec, tasks: Sequence[str] | None = None) -> tuple[str, ...]:
    """The task labels of a model: ``tasks`` checked against the spec (default every spec label).

    The first task must be the spec's primary label; ``tasks=[spec.label]`` builds the single-task model.
    """
    if tasks is None:
        return tuple(spec.labels)
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = tuple(tasks)
    for label in tasks:
        task_output(label, spec)  # ValueError naming an unknown label
    if not tasks or tasks[0] != spec.label:
        raise ValueError(f"tasks: the first task must be the primary label '{spec.label}', got {list(tasks)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks: a label is listed twice in {list(tasks)}")
    return tasks


def build(name: str, spec: FeatureSpec, tasks: Sequence[str] | None = None, **hparams: Any) -> keras.Model:
    """Builds the ranking model (backbone + one head per task) for a registered backbone.

    Args:
      name: registered backbone name, e.g. ``"dcnv2"``.
      spec: the dataset's feature spec.
      tasks: the task labels (:func:`resolve_tasks`); default every label of the spec, so a
        single-label spec gives the single-head model and a multi-task spec one head per label.
      **hparams: backbone hyper-parameters (the model YAML's ``hparams``). For PLE/MMoE with several
        tasks, ``num_tasks`` is set to the number of tasks (a given ``num_tasks`` must be 1 or that).
    """
    tasks = resolve_tasks(spec, tasks)
    inputs = spec.keras_inputs()
    cls = get_backbone(name)
    if len(tasks) > 1 and hasattr(cls, "task_representations"):  # gated experts: one tower per task
        num_tasks = hparams.pop("num_tasks", 1)
        if num_tasks not in (1, len(tasks)):
            raise ValueError(f"hparams.num_tasks: the spec has {len(tasks)} tasks {list(tasks)}; num_tasks must be "
                             f"1 or {len(tasks)}, got {num_tasks}")
        backbone = cls(spec.to_dict(), name=BACKBONE_LAYER, num_tasks=len(tasks), **hparams)
        reps, _ = backbone(inputs, all_tasks=True, return_interaction=True)
    else:
        backbone = cls(spec.to_dict(), name=BACKBONE_LAYER, **hparams)
        # (h, z) on the first call: Keras checks a graph's connectivity with a layer's first output structure.
        h, _ = backbone(inputs, return_interaction=True)
        reps = [h] * len(tasks)
    outputs = {PRIMARY: primary_head(reps[0])}
    for label, rep in zip(tasks[1:], reps[1:]):
        outputs[TASK_PREFIX + label] = task_head(rep, label)
    return keras.Model(inputs, outputs, name=f"{name}_ranking_model")


def task_head(h, label: str):
    """A non-primary task's head on its representation: ``sigmoid(Dense(1))`` (layers ``task_<label>_logit``
    and ``task_<label>``)."""
    logit = keras.layers.Dense(1, name=f"{TASK_PREFIX}{label}_logit")(h)
    return keras.layers.Activation("sigmoid", dtype="float32", name=TASK_PREFIX + label)(logit)


def task_output_names(model: keras.Model) -> list[str]:
    """The task outputs of a built model: ``"primary"`` then every ``"task_<label>"`` head, in layer order
    (auxiliary C2AL heads are not tasks)."""
    names = [layer.name for layer in model.layers
             if layer.name.startswith(TASK_PREFIX) and not layer.name.endswith("_logit")]
    return ([PRIMARY] if any(layer.name == PRIMARY for layer in model.layers) else []) + names


def served_model(model: keras.Model) -> keras.Model:
    """The serving graph of every task: the model's inputs to ``{"primary", "task_<label>", ..}``.

    Auxiliary heads (C2AL) are dropped. A single-task model is :func:`primary_model` (one output).
    """
    names = task_output_names(model)
    if len(names) <= 1:
        return primary_model(model)
    return keras.Model(model.inputs, {n: model.get_layer(n).output for n in names},
                       name=model.name.replace("c2al_", ""))


def primary_head(h):
    """The primary head on ``h``: ``sigmoid(Dense(1))`` (layers ``primary_logit`` and ``primary``)."""
    logit = keras.layers.Dense(1, name=PRIMARY_LOGIT)(h)
    return keras.layers.Activation("sigmoid", dtype="float32", name=PRIMARY)(logit)


def _backbone_node_output(model: keras.Model):
    return model.get_layer(BACKBONE_LAYER).output


def shared_representation(model: keras.Model):
    """The symbolic ``h`` (the input of the primary head) of a model built by :func:`build`.

    Also reads models whose backbone returns ``h`` alone (saved before ``z`` was exposed) and the
    multi-task models of :func:`zoo.c2al.ple_towers` (``h`` is task 0's output).
    """
    out = _backbone_node_output(model)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, (tuple, list)):  # all_tasks=True: [u^1, .., u^T]
        out = out[0]
    return out


def interaction_output(model: keras.Model):
    """The symbolic ``z`` (the backbone's interaction output, before its over-arch) of a built model."""
    out = _backbone_node_output(model)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ValueError(f"model '{model.name}': its backbone does not expose the interaction output; "
                         "rebuild it with zoo.model.build")
    return out[1]


def primary_model(model: keras.Model) -> keras.Model:
    """The serving graph: the model's inputs to its primary output, nothing else.

    Auxiliary heads and the other tasks' heads are dropped (:func:`served_model` keeps every task).
    A multi-task backbone (PLE/MMoE with ``num_tasks > 1``, e.g. C2AL's
    ``ple_towers`` ablation) is replaced by its single-task :meth:`~zoo.backbone.Backbone.serving_copy`
    when that computes the same ``h``: the served graph is then the single-task baseline's, layer for
    layer, with the trained primary-path weights.
    """
    name = model.name.replace("c2al_", "")
    backbone = next((layer for layer in model.layers if layer.name == BACKBONE_LAYER), None)
    copy = None
    if backbone is not None and hasattr(backbone, "serving_copy") and isinstance(model.input, dict):
        copy = backbone.serving_copy({k: tuple(t.shape) for k, t in model.input.items()})
    if copy is None:
        return keras.Model(model.inputs, model.get_layer(PRIMARY).output, name=name)
    h, _ = copy(model.input, return_interaction=True)
    prob = model.get_layer(PRIMARY)(model.get_layer(PRIMARY_LOGIT)(h))  # the trained head, shared
    return keras.Model(model.inputs, prob, name=name)


def fold_embeddings(model: keras.Model) -> keras.Model:
    """The serving graph of ``model`` with every MLET or distributed table folded into a plain one
    (equal outputs).

    A convenience over :func:`zoo.folding.fold_tables` (the one implementation) for ranking models.
    """
    return fold_tables(primary_model(model))


def load_model(path: str, compile: bool = False) -> keras.Model:
    """Loads a saved ``.keras`` model of the zoo: the one model loader of the project.

    Every shipped layer and registered backbone is registered for deserialization first, so no
    ``custom_objects`` are needed. ``compile=False`` (default) skips the saved optimizer and losses:
    the model is for prediction, evaluation or export; pass ``compile=True`` to resume training.
    """
    backbone_names()  # imports every backbone module, which registers it
    return keras.saving.load_model(path, compile=compile)
