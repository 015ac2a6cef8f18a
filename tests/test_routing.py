"""layers.routing: CohortBucketizer (the spec's cohort rule in the graph) and CohortRouter, against NumPy
references, plus the layer checks every public layer passes. TF and JAX."""

import keras
import numpy as np
import pytest

import layers
import layer_checks
from layers import routing
from layers.routing import CohortBucketizer, CohortRouter
from zoo.spec import load_spec

from helpers import SYNTHETIC_SPEC_PATH  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.multi_backend
BOUNDARIES = [-1.6448536, -0.6744898, 0.0, 0.6744898, 1.6448536]


def npy(x):
    return keras.ops.convert_to_numpy(x)


def near_boundaries():
    """float32 values at, just below and just above every boundary (float32 and float64 readings)."""
    out = []
    for b in BOUNDARIES:
        f = np.float32(b)
        if f == 0:  # the neighbours of 0 are subnormal, which TF's CPU kernels flush to zero
            out += [f, np.float32(-1e-30), np.float32(1e-30)]
            continue
        out += [f, np.nextafter(f, np.float32(-np.inf)), np.nextafter(f, np.float32(np.inf))]
    rng = np.random.default_rng(0)
    return np.concatenate([np.array(out, "float32"), rng.normal(size=200).astype("float32") * 2])[:, None]


def test_ordinal_bucketizer_matches_numpy_and_the_spec_rule_at_float32_boundaries():
    v = near_boundaries()
    got = npy(CohortBucketizer(boundaries=BOUNDARIES)(v))
    want = np.searchsorted(np.array(BOUNDARIES, "float64"), v[:, 0].astype("float64"), side="right")
    assert got.dtype == np.int32 and got.shape == (len(v), 1)
    np.testing.assert_array_equal(got[:, 0], want)
    axis = load_spec(SYNTHETIC_SPEC_PATH).axis("user_value")  # the Beam job's rule, value by value
    np.testing.assert_array_equal(got[:, 0], [axis.cohort_id(float(x)) for x in v[:, 0]])


def test_categorical_bucketizer_and_groups_match_numpy():
    values = [[0, 5], [1], [7, 2]]
    ids = np.array([[0], [1], [2], [3], [5], [7], [-1], [100]], "int64")
    table = {0: 0, 5: 0, 1: 1, 7: 2, 2: 2}
    want = np.array([table.get(int(i), 3) for i in ids[:, 0]])
    np.testing.assert_array_equal(npy(CohortBucketizer(values=values)(ids))[:, 0], want)
    groups = [1, 0, 1, 0]
    np.testing.assert_array_equal(npy(CohortBucketizer(values=values, groups=groups)(ids))[:, 0],
                                  np.array(groups)[want])
    v = near_boundaries()
    ordinal = npy(CohortBucketizer(boundaries=BOUNDARIES, groups=[0, 0, 0, 1, 1, 1])(v))[:, 0]
    np.testing.assert_array_equal(ordinal, (v[:, 0].astype("float64") >= 0.0).astype(int))


def test_router_matches_numpy_and_clips_ids():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(9, 4)).astype("float32")
    g = np.array([0, 1, 2, 3, 3, 2, 1, 0, 9])[:, None]
    got = npy(CohortRouter(num_groups=4)([logits, g]))
    want = logits[np.arange(9), np.minimum(g[:, 0], 3)][:, None]
    np.testing.assert_array_equal(got, want)


def test_router_gradient_reaches_only_the_selected_tower():
    import tensorflow as tf  # noqa: F401  (the gradient is computed through keras.ops under each backend)

    logits = keras.Variable(np.ones((4, 3), "float32"))
    g = np.array([[0], [0], [2], [2]])
    router = CohortRouter(num_groups=3)
    if keras.backend.backend() == "jax":
        import jax

        grad = jax.grad(lambda x: keras.ops.sum(router([x, g])))(np.ones((4, 3), "float32"))
    else:
        with tf.GradientTape() as tape:
            out = keras.ops.sum(router([logits, g]))
        grad = tape.gradient(out, logits.value)
    np.testing.assert_array_equal(npy(grad), np.eye(3, dtype="float32")[[0, 0, 2, 2]])


@pytest.mark.parametrize("kwargs, argument", [
    ({}, "boundaries"),
    ({"boundaries": [0.0], "values": [[1]]}, "boundaries"),
    ({"boundaries": [1.0, 0.0]}, "boundaries"),
    ({"values": [[1], [1]]}, "values"),
    ({"boundaries": [0.0], "groups": [0]}, "groups"),
])
def test_bucketizer_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        CohortBucketizer(**kwargs)


def test_router_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"^num_groups: must be an integer"):
        CohortRouter(num_groups=0)
    with pytest.raises(ValueError, match=r"^num_groups: the logits have 2 columns, expected 3"):
        CohortRouter(num_groups=3)([np.zeros((2, 2), "float32"), np.zeros((2, 1), "int32")])


CASES = [
    (lambda: CohortBucketizer(boundaries=[-1.0, 1.0], groups=[0, 1, 1]), np.array([[-2.0], [0.0], [3.0]], "float32")),
    (lambda: CohortBucketizer(values=[[0], [1, 2]]), np.array([[0], [2], [9]], "int64")),
    (lambda: CohortRouter(num_groups=3), [np.arange(6, dtype="float32").reshape(2, 3), np.array([[2], [0]], "int32")]),
]


@pytest.mark.parametrize("make_layer, inputs", CASES)
def test_layer_checks(make_layer, inputs, tmp_path):
    layer_checks.check_config_round_trip(make_layer)
    layer_checks.check_keras_round_trip(make_layer, inputs, tmp_path)
    layer_checks.check_mixed_bfloat16(make_layer, inputs)
    if keras.backend.backend() == "tensorflow":
        layer_checks.check_saved_model_round_trip(make_layer, inputs, tmp_path)


def test_docstring_examples_and_exports():
    layer_checks.check_docstring_examples(routing)
    assert {"CohortBucketizer", "CohortRouter"} <= set(layers.__all__)


def test_bucketizer_ignores_a_mixed_precision_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        v = near_boundaries()
        got = npy(CohortBucketizer(boundaries=BOUNDARIES)(v))[:, 0]
    finally:
        keras.config.set_dtype_policy(previous)
    np.testing.assert_array_equal(got, np.searchsorted(np.array(BOUNDARIES), v[:, 0].astype("float64"), side="right"))
