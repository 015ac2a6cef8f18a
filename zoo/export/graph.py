"""The served graph: a model's task paths (the primary path, plus every task head of a multi-task model)
with its MLET tables folded, inputs checked against the spec."""

from __future__ import annotations

import dataclasses

import keras

from zoo.export.contract import FeatureError
from zoo.folding import fold_tables
from zoo.model import PRIMARY, primary_model, served_model, task_output_names
from zoo.spec import FeatureSpec


def primary_path(model: keras.Model) -> keras.Model:
    """The model's inputs to its primary output (a single-output model without a ``primary`` layer as is)."""
    if any(layer.name == PRIMARY for layer in model.layers):
        return primary_model(model)
    if len(model.outputs) == 1:
        return model
    raise ValueError(f"export: model '{model.name}' has no layer '{PRIMARY}' and {len(model.outputs)} "
                     f"outputs; cannot tell which one to serve")


def task_paths(model: keras.Model) -> keras.Model:
    """The model's inputs to every task output: :func:`primary_path` for a single-task model, else a
    model with outputs ``{"primary", "task_<label>", ..}`` (:func:`zoo.model.served_model`; auxiliary
    heads dropped)."""
    if len(task_output_names(model)) > 1:
        return served_model(model)
    return primary_path(model)


def serving_model(model: keras.Model, spec: FeatureSpec) -> keras.Model:
    """The served graph: the task paths only (:func:`task_paths`), MLET tables folded, inputs checked
    against the spec."""
    served = fold_tables(task_paths(model))
    check_model_inputs(served, spec)
    return served


def check_model_inputs(model: keras.Model, spec: FeatureSpec) -> None:
    """Raises FeatureError naming the first model input that disagrees with the spec."""
    inputs = {t.name: t for t in model.inputs}
    for f in spec.inputs:
        t = inputs.pop(f.name, None)
        if t is None:
            raise FeatureError(f"feature '{f.name}': a spec input the model does not take "
                               f"(model inputs: {sorted(x.name for x in model.inputs)})")
        want = ((None,) + spec.input_shape(f), spec.input_dtype(f))
        if (tuple(t.shape), str(t.dtype)) != want:
            raise FeatureError(f"feature '{f.name}': model input is {str(t.dtype)} {tuple(t.shape)}, "
                               f"the spec says {want[1]} {want[0]}")
    if inputs:
        name = sorted(inputs)[0]
        raise FeatureError(f"feature '{name}': a model input that is not a spec input of '{spec.name}'")



def finite_dense(features, spec: FeatureSpec):
    """The served features with every dense input checked in the graph: a NaN or infinite value fails
    the request with ``feature '<name>': a NaN or infinite value ...`` (the Beam job never writes one, so
    the model never saw one) instead of returning a NaN probability."""
    import tensorflow as tf

    out = dict(features)
    for f in spec.inputs:
        if f.kind == "dense" and f.name in out:
            out[f.name] = tf.debugging.assert_all_finite(
                out[f.name], f"feature '{f.name}': a NaN or infinite value (dense inputs must be finite)")
    return out


def served_spec(model: keras.Model, spec: FeatureSpec) -> FeatureSpec:
    """``spec`` with the model's carried-feature inputs made serving inputs (else ``spec`` itself).

    A routed model (:mod:`zoo.cohort_heads`) takes the raw feature of its cohort axis, which a spec
    may carry for cohorts only (``input: false``); its served signature, ``tf.Example`` parse spec
    and warm-up rows then include that feature, as a spec input would. Other inputs are unchanged.
    """
    names = {t.name for t in model.inputs} - {f.name for f in spec.inputs}
    carried = {f.name for f in spec.features if not f.input} & names
    if not carried:
        return spec
    features = tuple(dataclasses.replace(f, input=True) if f.name in carried else f for f in spec.features)
    return dataclasses.replace(spec, features=features)
