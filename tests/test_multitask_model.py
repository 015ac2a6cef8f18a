"""Multi-task models (a spec with ``labels: [y, y2]``): one head per task, PLE/MMoE one tower per task,
both tasks train on TensorFlow and JAX, the ``.keras`` round trip, C2AL beside the task heads, and the
served graph (every task head, no auxiliary head)."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from helpers import HP, SPEC, batch

from zoo.c2al import AUX_HEAD, AUX_TAIL, C2AL, build_c2al, compile_model, task_loss_weights
from zoo.model import (PRIMARY, build, load_model, primary_model, resolve_tasks, served_model, task_output,
                       task_output_names)
from zoo.spec import FeatureSpec

pytestmark = pytest.mark.multi_backend

MT = FeatureSpec.from_dict({**{k: v for k, v in SPEC.to_dict().items() if k not in ("label", "format")},
                            "labels": ["y", "y2"]})
PLE_HP = dict(num_levels=1, num_specific_experts=1, num_shared_experts=2, expert_units=[16, 8], gate_units=[8],
              tower_units=[8])
T2 = "task_y2"


def two_task_batch(n=512, seed=1):
    """A batch with two related but different labels: y (the helpers' rule) and y2 (another rule)."""
    x, y = batch(n, seed=seed)
    y2 = ((x["wide"][:, 0] == 1) | (x["price"][:, 0] < -0.8)).astype("float32")[:, None]
    return x, {PRIMARY: y, T2: y2}


def numpy_out(model, x):
    return {k: keras.ops.convert_to_numpy(v) for k, v in model(x).items()}


def test_task_names_and_resolution():
    assert MT.labels == ("y", "y2") and MT.label == "y" and MT.multi_task
    assert task_output("y", MT) == PRIMARY and task_output("y2", MT) == T2
    assert resolve_tasks(MT) == ("y", "y2") and resolve_tasks(MT, ["y"]) == ("y",)
    with pytest.raises(ValueError, match="task 'clicks': not a label of spec 'tiny'"):
        resolve_tasks(MT, ["y", "clicks"])
    with pytest.raises(ValueError, match="the first task must be the primary label 'y'"):
        resolve_tasks(MT, ["y2"])


@pytest.mark.parametrize("name,hp", [("dcnv2", HP), ("ple", PLE_HP), ("mmoe", dict(num_experts=2, expert_units=[8],
                                                                                     tower_units=[4]))])
def test_one_head_per_task(name, hp):
    model = build(name, MT, **hp)
    assert sorted(model.output) == [PRIMARY, T2]
    assert task_output_names(model) == [PRIMARY, T2]
    x, _ = two_task_batch(8)
    out = numpy_out(model, x)
    assert out[PRIMARY].shape == out[T2].shape == (8, 1)
    backbone = model.get_layer("backbone")
    if name in ("ple", "mmoe"):  # one tower per task, task t's head on u^t
        assert backbone.num_tasks == 2 and len(backbone.towers) == 2
        assert model.get_layer(f"{T2}_logit").input.shape[-1] == hp["tower_units"][-1]
    # The single-task model of the same spec (tasks=[primary]) is the baseline graph.
    single = build(name, MT, tasks=["y"], **hp)
    assert list(single.output) == [PRIMARY]


def test_num_tasks_must_agree_with_the_labels():
    with pytest.raises(ValueError, match="hparams.num_tasks: the spec has 2 tasks"):
        build("ple", MT, num_tasks=3, **PLE_HP)
    assert build("ple", MT, num_tasks=1, **PLE_HP).get_layer("backbone").num_tasks == 2


@pytest.mark.parametrize("name,hp", [("ple", PLE_HP), ("dcnv2", HP)])
def test_two_tasks_train_and_round_trip(name, hp, tmp_path):
    keras.utils.set_random_seed(0)
    model = build(name, MT, **hp)
    compile_model(model, 0.01, None, auc_metric=False)
    x, y = two_task_batch()
    before = model.evaluate(x, y, verbose=0, return_dict=True)
    model.fit(x, y, epochs=6, batch_size=64, verbose=0)
    after = model.evaluate(x, y, verbose=0, return_dict=True)
    for out in (PRIMARY, T2):  # each task's own loss falls
        assert after[f"{out}_loss"] < before[f"{out}_loss"] - 0.03, (out, before, after)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = load_model(path)
    got, want = numpy_out(loaded, x), numpy_out(model, x)
    assert sorted(got) == [PRIMARY, T2]
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-6)


def test_task_weights_weight_the_losses():
    keras.utils.set_random_seed(0)
    model = build("dcnv2", MT, **HP)
    assert task_loss_weights(model) == {PRIMARY: 1.0, T2: 1.0}
    assert task_loss_weights(model, {"y2": 0.5}) == {PRIMARY: 1.0, T2: 0.5}
    with pytest.raises(ValueError, match="task_weights: 'y3' is not a task"):
        task_loss_weights(model, {"y3": 1.0})
    with pytest.raises(ValueError, match=r"task_weights.y2: must be a number >= 0"):
        task_loss_weights(model, {"y2": -1})
    x, y = two_task_batch(64)
    compile_model(model, 0.01, None, auc_metric=False, task_weights={"y": 2.0, "y2": 0.5}, primary_label="y")
    r = model.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(r["loss"], 2.0 * r[f"{PRIMARY}_loss"] + 0.5 * r[f"{T2}_loss"], rtol=1e-4)


@pytest.mark.parametrize("name,hp", [("ple", PLE_HP), ("dcnv2", HP)])
def test_c2al_heads_beside_the_task_heads_and_served_graph_has_tasks_only(name, hp):
    keras.utils.set_random_seed(0)
    model = build_c2al(name, MT, None, **hp)
    assert sorted(model.output) == sorted([PRIMARY, T2, AUX_HEAD, AUX_TAIL])
    # The auxiliary heads read h, the input of the primary head.
    h = model.get_layer("primary_logit").input
    assert model.get_layer(f"{AUX_HEAD}_logit").input is h
    compile_model(model, 0.01, {"lambda_head": 0.1, "lambda_tail": 0.2}, auc_metric=False)
    x, y = two_task_batch(64)
    y = {**y, AUX_HEAD: y[PRIMARY] * (x["wide"] == 0), AUX_TAIL: y[PRIMARY] * (x["wide"] == 1)}
    r = model.evaluate(x, y, verbose=0, return_dict=True)  # BCE(primary) + BCE(task) + lambdas * BCE(aux)
    np.testing.assert_allclose(r["loss"], r[f"{PRIMARY}_loss"] + r[f"{T2}_loss"] + 0.1 * r[f"{AUX_HEAD}_loss"]
                               + 0.2 * r[f"{AUX_TAIL}_loss"], rtol=1e-4)
    served = served_model(model)
    assert sorted(served.output) == [PRIMARY, T2]
    names = {layer.name for layer in served.layers}
    assert not any(n.startswith("aux_") for n in names)
    x, _ = two_task_batch(16)
    got, want = numpy_out(served, x), numpy_out(model, x)
    for k in (PRIMARY, T2):
        np.testing.assert_allclose(got[k], want[k], atol=1e-6)
    # Served parameters: the multi-task baseline's (same backbone + task heads), none of the aux heads'.
    keras.utils.set_random_seed(0)
    baseline = build(name, MT, **hp)
    assert served.count_params() == baseline.count_params()
    # The primary path alone is still available.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(primary_model(model)(x)), want[PRIMARY], atol=1e-6)


def test_c2al_wrapper_on_a_multi_task_model_keeps_the_tasks():
    model = C2AL(build("dcnv2", MT, **HP), heads=(AUX_HEAD,))
    assert sorted(model.output) == sorted([PRIMARY, T2, AUX_HEAD])


def test_ple_towers_ablation_refuses_a_multi_task_spec():
    with pytest.raises(ValueError, match="c2al ablation 'ple_towers': spec 'tiny' has several labels"):
        build_c2al("ple", MT, {"ablation": "ple_towers"}, **PLE_HP)
