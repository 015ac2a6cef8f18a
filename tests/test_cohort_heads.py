"""Served cohort heads, Gradient Aggregation and D-Train (zoo.cohort_heads, zoo.gradient_aggregation,
zoo.d_train): routing equals each group's tower, the group weights by hand, D-Train's frozen backbone bit
for bit, `.keras` and SavedModel round trips with the routing input in the signature. Model tests run
under TF and JAX (the export test exports through a TF subprocess under JAX)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from zoo import cohort_heads as ch
from zoo import d_train as dt
from zoo import gradient_aggregation as ga
from zoo.export import SIGNATURE, export_saved_model, serialize_examples, served_spec
from zoo.model import PRIMARY, build, load_model
from zoo.spec import load_spec

from helpers import HP, SPEC, SYNTHETIC_SPEC_PATH, batch, clean_env, synthetic_rows  # noqa: E402

GROUPS = {"ab": ["a", "b"], "rest": ["other"]}


def npy(x):
    return keras.ops.convert_to_numpy(x)


def routed_batch(n=48, seed=0):
    x, y = batch(n, seed)
    x["segment"] = (np.arange(n) % 5)[:, None].astype("int64")  # 0 -> a, 1 -> b, 2..4 -> other
    return x, y


def cohorts_of_segment(segment):
    return np.minimum(np.asarray(segment).reshape(-1), 2)


# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------
def test_options_defaults_and_errors_name_the_key():
    assert ch.cohort_heads_options(None) == ch.DEFAULTS
    with pytest.raises(ValueError, match=r"^cohort_heads: unknown key 'tower'; keys are"):
        ch.cohort_heads_options({"tower": 1})
    with pytest.raises(ValueError, match=r"^cohort_heads.method: must be one of"):
        ch.cohort_heads_options({"method": "pin"})
    with pytest.raises(ValueError, match=r"^cohort_heads.prior: must be one of"):
        ch.cohort_heads_options({"prior": "row_share"})
    with pytest.raises(ValueError, match=r"^cohort_heads.head_units: must be a list"):
        ch.cohort_heads_options({"head_units": 3})
    with pytest.raises(ValueError, match=r"^cohort_heads.groups.head: must be a non-empty list"):
        ch.cohort_heads_options({"groups": {"head": "a"}})


def test_axis_groups_cover_every_cohort_once():
    assert ch.axis_groups(SPEC, "seg") == (["a", "b", "other"], [0, 1, 2])
    assert ch.axis_groups(SPEC, "seg", GROUPS) == (["ab", "rest"], [0, 0, 1])
    with pytest.raises(ValueError, match=r"^groups.x: 'c' is not a cohort of axis 'seg'"):
        ch.axis_groups(SPEC, "seg", {"x": ["a", "c"]})
    with pytest.raises(ValueError, match=r"^groups.y: cohort 'a' is already in another group"):
        ch.axis_groups(SPEC, "seg", {"x": ["a"], "y": ["a", "b", "other"]})
    with pytest.raises(ValueError, match=r"^groups: cohort 'other' of axis 'seg' is in no group"):
        ch.axis_groups(SPEC, "seg", {"x": ["a", "b"]})
    with pytest.raises(ValueError, match=r"^axis: spec 'tiny' has no c2al.axis"):
        ch.axis_name(SPEC, None)


def test_in_graph_groups_equal_the_data_pipelines_cohort_ids():
    spec = load_spec(SYNTHETIC_SPEC_PATH)
    rows = synthetic_rows(2000, seed=1)
    for axis in ("user_value", "device"):
        a = spec.axis(axis)
        f = spec.feature(a.feature)
        values = np.array([[r[a.feature]] for r in rows], "float32" if f.kind == "dense" else "int64")
        want = np.array([spec.cohort_ids(r)[axis] for r in rows])
        np.testing.assert_array_equal(npy(ch.bucketizer(spec, axis)(values))[:, 0], want)
        arrays = {"cohort/" + axis: want[:, None]}
        np.testing.assert_array_equal(ch.group_ids(spec, arrays, axis, list(range(len(a.cohorts))))[:, 0], want)


# --------------------------------------------------------------------------------------------------
# Served cohort heads
# --------------------------------------------------------------------------------------------------
@pytest.mark.multi_backend
@pytest.mark.parametrize("groups, head_units", [(None, []), (GROUPS, [3]), ({"rest": ["other"], "ab": ["a", "b"]}, [])])
def test_routed_output_is_each_groups_tower_and_round_trips(groups, head_units, tmp_path):
    keras.utils.set_random_seed(0)
    base = build("dcnv2", SPEC, **HP)
    keras.utils.set_random_seed(0)
    model = ch.build_cohort_heads("dcnv2", SPEC, {"axis": "seg", "groups": groups, "head_units": head_units}, **HP)
    assert sorted(t.name for t in model.inputs) == sorted([f.name for f in SPEC.inputs] + ["segment"])
    names, group_of = ch.axis_groups(SPEC, "seg", groups)
    assert ch.group_names(model) == names
    # The backbone starts from the baseline's initial weights (built first, same seed).
    for a, b in zip(base.get_layer("backbone").weights, model.get_layer("backbone").weights, strict=True):
        np.testing.assert_array_equal(npy(a), npy(b))
    h = base.get_layer("primary_logit").kernel.shape[0]
    tower = (h * 3 + 3 + 3 + 1) if head_units else (h + 1)
    assert model.count_params() == base.count_params() - (h + 1) + len(names) * tower
    x, _ = routed_batch()
    p = npy(model(x)[PRIMARY])
    g = np.array(group_of)[cohorts_of_segment(x["segment"])]
    for k, name in enumerate(names):
        direct = npy(ch.tower_model(model, name)(x))
        np.testing.assert_array_equal(p[g == k], direct[g == k])
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    np.testing.assert_array_equal(npy(load_model(path)(x)[PRIMARY]), p)


@pytest.mark.multi_backend
def test_fit_trains_only_the_examples_own_tower():
    keras.utils.set_random_seed(1)
    model = ch.build_cohort_heads("dcnv2", SPEC, {"axis": "seg"}, **HP)
    model.compile(keras.optimizers.SGD(0.1), {PRIMARY: keras.losses.BinaryCrossentropy()})
    x, y = routed_batch(32)
    x["segment"][:] = 1  # every example in cohort b
    before = {w.path: npy(w).copy() for w in model.weights}
    model.fit(x, {PRIMARY: y}, batch_size=32, epochs=1, verbose=0)
    changed = {w.path for w in model.weights if not np.array_equal(before[w.path], npy(w))}
    assert {p for p in changed if "cohort_head_" in p} == {p for p in before if "cohort_head_b_" in p}
    assert any("backbone" in p for p in changed)


# --------------------------------------------------------------------------------------------------
# Gradient Aggregation
# --------------------------------------------------------------------------------------------------
def test_batch_weights_by_hand():
    w = npy(ga.batch_weights(np.array([0, 1, 2, 2]), [0.2, 0.3, 0.5]))
    np.testing.assert_allclose(w, [0.2, 0.3, 0.25, 0.25], rtol=1e-6)   # pi_z / n_z
    w = npy(ga.batch_weights(np.array([0, 0, 1, 0]), [0.2, 0.3, 0.5]))  # group 2 absent: pi renormalised
    np.testing.assert_allclose(w, [0.4 / 3, 0.4 / 3, 0.6, 0.4 / 3], rtol=1e-6)
    assert abs(float(w.sum()) - 1.0) < 1e-6


def test_user_share_prior_counts_users_not_rows():
    users = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 4])
    groups = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])  # rows: 60 % head; users: 1 head, 3 tail
    assert ga.user_share_prior(users, groups, 2) == [0.25, 0.75]
    assert ga.prior("uniform", 4) == [0.25] * 4
    # A user with rows in both groups counts in each: head {1, 5}, tail {2, 5} -> 1/2, 1/2.
    assert ga.user_share_prior(np.array([1, 5, 5, 2]), np.array([0, 0, 1, 1]), 3) == [0.5, 0.5, 0.0]
    with pytest.raises(ValueError, match=r"^prior: 'user_share' needs"):
        ga.prior("user_share", 2)


def reference_loss(y, p, g, prior):
    bce = -(y * np.log(np.clip(p, 1e-7, 1 - 1e-7)) + (1 - y) * np.log(np.clip(1 - p, 1e-7, 1 - 1e-7)))
    present = sorted(set(g.tolist()))
    mass = sum(prior[z] for z in present)
    return sum(prior[z] / mass * bce[g == z].mean() for z in present)


@pytest.mark.multi_backend
def test_backdoor_adjusted_loss_is_the_prior_mixed_group_mean_in_fit(tmp_path):
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 2, 20).astype("float32"), rng.uniform(0.05, 0.95, 20).astype("float32")
    g = np.array([0] * 14 + [1] * 5 + [2])
    prior = [0.1, 0.3, 0.6]
    loss = ga.BackdoorAdjustedBCE(prior)
    np.testing.assert_allclose(float(loss(ga.targets(y, g), p[:, None])), reference_loss(y, p, g, prior), rtol=1e-5)
    # In a model: evaluate (one batch) gives the same number from the model's own predictions, and
    # a fit step runs on this backend; the loss round-trips through .keras with compile=True.
    keras.utils.set_random_seed(2)
    model = ga.build_gradient_aggregation("dcnv2", SPEC, {"axis": "seg", "groups": GROUPS}, **HP)
    x, y = routed_batch(40)
    groups = ch.group_ids(SPEC, {"cohort/seg": cohorts_of_segment(x["segment"])[:, None]}, "seg", [0, 0, 1])
    ga.compile_gradient_aggregation(model, 1e-2, [0.25, 0.75])
    p = npy(model(x)[PRIMARY])[:, 0]
    got = model.evaluate(x, {PRIMARY: ga.targets(y, groups)}, batch_size=40, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(got, reference_loss(y[:, 0], p, groups[:, 0], [0.25, 0.75]), rtol=1e-5)
    history = model.fit(x, {PRIMARY: ga.targets(y, groups)}, batch_size=20, verbose=0).history
    assert np.isfinite(history["loss"][0])
    clone = ga.BackdoorAdjustedBCE.from_config(loss.get_config())
    assert clone.prior == loss.prior
    path = os.path.join(tmp_path, "ga.keras")  # the compiled loss reloads by its registered name
    model.save(path)
    loaded = load_model(path, compile=True)
    again = loaded.evaluate(x, {PRIMARY: ga.targets(y, groups)}, batch_size=40, verbose=0, return_dict=True)["loss"]
    now = model.evaluate(x, {PRIMARY: ga.targets(y, groups)}, batch_size=40, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(again, now, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# D-Train
# --------------------------------------------------------------------------------------------------
@pytest.mark.multi_backend
@pytest.mark.parametrize("head_units", [[], [3]])
def test_d_train_phases(head_units):
    keras.utils.set_random_seed(4)
    models = dt.build_d_train("dcnv2", SPEC, {"axis": "seg", "head_units": head_units}, **HP)
    if not head_units:  # phase a is the baseline graph itself
        keras.utils.set_random_seed(4)
        base = build("dcnv2", SPEC, **HP)
        assert [tuple(w.shape) for w in models.shared.weights] == [tuple(w.shape) for w in base.weights]
    x, y = routed_batch(48)
    shared_x = {k: v for k, v in x.items() if k != "segment"}
    seen = {}

    def compile_fn(model, phase):
        model.compile(keras.optimizers.Adam(0.01), {PRIMARY: keras.losses.BinaryCrossentropy()})

    def fit_fn(model, phase):
        if phase == "posttrain":  # every tower starts as the shared head: routed == shared
            np.testing.assert_array_equal(npy(model(x)[PRIMARY]), npy(models.shared(shared_x)[PRIMARY]))
        if phase == "finetune":
            seen["backbone"] = [npy(w).copy() for w in dt.backbone_weights(model)]
            seen["towers"] = [npy(w).copy() for layer in ch.towers(model) for w in layer.weights]
        return model.fit(shared_x if phase == "pretrain" else x, {PRIMARY: y}, epochs=2, batch_size=16,
                         verbose=0).history["loss"]

    losses = dt.train(models, compile_fn, fit_fn)
    assert list(losses) == list(dt.PHASES)
    after = [npy(w) for w in dt.backbone_weights(models.routed)]
    assert len(after) == len(seen["backbone"]) > 0
    for a, b in zip(seen["backbone"], after):
        np.testing.assert_array_equal(a, b)  # bit for bit
    towers_after = [npy(w) for layer in ch.towers(models.routed) for w in layer.weights]
    assert not all(np.array_equal(a, b) for a, b in zip(seen["towers"], towers_after))
    assert all(layer.trainable for layer in models.routed.layers)


# --------------------------------------------------------------------------------------------------
# Export: the routing input in the signature, routing in the served graph
# --------------------------------------------------------------------------------------------------
CLEAN_ROOM = """
import json, sys
import numpy as np
import tensorflow as tf
assert not any(m.split(".")[0] in ("zoo", "layers") for m in sys.modules)
loaded = tf.saved_model.load(sys.argv[1])
fn = loaded.signatures["serving_default"]
x = {k: tf.constant(np.array(v, dtype=fn.structured_input_signature[1][k].dtype.as_numpy_dtype))
     for k, v in json.load(open(sys.argv[2])).items()}
print(json.dumps(fn(**x)["probability"].numpy().ravel().tolist()))
"""


@pytest.mark.multi_backend
def test_routed_model_exports_with_its_routing_input_and_serves_each_groups_tower(tmp_path):
    keras.utils.set_random_seed(5)
    model = ch.build_cohort_heads("dcnv2", SPEC, {"axis": "seg", "head_units": [3]}, **HP)
    served = served_spec(model, SPEC)
    assert "segment" in {f.name for f in served.inputs} and "segment" not in {f.name for f in SPEC.inputs}
    path = export_saved_model(model, SPEC, str(tmp_path / "export"), "routed", version=1)  # verifies itself
    x, _ = routed_batch(15)
    expected = np.empty(15, "float32")
    cohort = cohorts_of_segment(x["segment"])
    for k, name in enumerate(ch.group_names(model)):
        expected[cohort == k] = npy(ch.tower_model(model, name)(x))[cohort == k, 0]
    request = os.path.join(tmp_path, "request.json")
    with open(request, "w") as fh:
        json.dump({k: np.asarray(v).tolist() for k, v in x.items()}, fh)
    script = os.path.join(tmp_path, "clean_room.py")
    with open(script, "w") as fh:
        fh.write(CLEAN_ROOM)
    proc = subprocess.run([sys.executable, script, path, request], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    if keras.backend.backend() == "tensorflow":  # the tf.Example signature parses the routing feature too
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        out = loaded.signatures["predict_examples"](examples=tf.constant(serialize_examples(served, x)))
        np.testing.assert_allclose(out["probability"].numpy().ravel(), expected, atol=1e-5)


@pytest.mark.tf_only
def test_routing_on_a_served_feature_keeps_the_baseline_signature(tmp_path):
    import tensorflow as tf

    spec = load_spec(SYNTHETIC_SPEC_PATH)
    keras.utils.set_random_seed(6)
    model = ch.build_cohort_heads("dcnv2", spec, {"groups": {"head": ["p95_100"], "rest": [
        "p00_05", "p05_25", "p25_50", "p50_75", "p75_95"]}}, num_cross_layers=1, dnn_units=[8])
    assert served_spec(model, spec) is spec  # user_value is already an input
    path = export_saved_model(model, spec, str(tmp_path), "routed_synthetic", version=1)
    fn = tf.saved_model.load(path).signatures[SIGNATURE]
    assert sorted(fn.structured_input_signature[1]) == sorted(f.name for f in spec.inputs)


@pytest.mark.tf_only
def test_tfrecord_batches_carry_the_routing_feature_and_the_stored_cohort_ids(tmp_path):
    """The tf.data path: read with ``served_spec`` the batches hold the routing feature; the in-graph
    group equals the stored ``cohort/seg`` id the Beam job wrote, and Gradient Aggregation's target
    is built from that stored id."""
    from helpers import write_data_dir
    from zoo import data

    rng = np.random.default_rng(0)
    rows = [{"user": int(u), "item": int(rng.integers(0, 9)), "wide": int(rng.integers(0, 3)),
             "price": float(rng.normal()), "hist": [int(rng.integers(0, 5))], "segment": int(rng.integers(0, 5)),
             "y": int(rng.integers(0, 2))} for u in range(200)]
    write_data_dir(SPEC, rows, str(tmp_path))
    keras.utils.set_random_seed(7)
    model = ch.build_cohort_heads("dcnv2", SPEC, {"axis": "seg"}, **HP)
    served = served_spec(model, SPEC)
    batches = data.model_batches(served, data.read_split(str(tmp_path), "train", 64, spec=served))
    x, y = next(iter(batches))
    assert "segment" in x
    stored = next(iter(data.read_split(str(tmp_path), "train", 64, spec=SPEC)))["cohort/seg"].numpy()
    np.testing.assert_array_equal(npy(model.get_layer(ch.BUCKETIZER)(x["segment"])), stored)
    groups = ch.group_ids(SPEC, {"cohort/seg": stored}, "seg", [0, 1, 2])
    assert ga.targets(y[PRIMARY].numpy(), groups).shape == (len(stored), 2)
    model.compile("adam", {PRIMARY: "binary_crossentropy"})
    assert np.isfinite(model.fit(batches, epochs=1, verbose=0).history["loss"][0])
