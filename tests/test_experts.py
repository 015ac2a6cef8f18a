"""Expert layers (MMoE, CGCLevel, PLE): NumPy-reference gate/expert mixing, gate weights on the simplex,
shapes, parameter counts, MMoE == single-level PLE without specific experts, argument errors,
serialization (get_config, .keras, SavedModel), mixed precision and docstring examples. Run under TF and JAX."""

import os
import sys

import keras
import numpy as np
import pytest

from layers import experts as experts_module
from layers.experts import PLE, CGCLevel, MMoE

sys.path.insert(0, os.path.dirname(__file__))
import layer_checks  # noqa: E402
from helpers import mlp_params  # noqa: E402

pytestmark = pytest.mark.multi_backend

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 5)).astype("float32")


# ------------------------------------------------------------------ NumPy reference (weights read out, math in NumPy)
def np_relu(v):
    return np.maximum(v, 0.0)


def np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_weights(layer):
    return keras.ops.convert_to_numpy(layer.kernel), keras.ops.convert_to_numpy(layer.bias)


def np_mlp(mlp, x):
    """Relu dense stack (activation on every layer), as layers.blocks.MLP without norm / dropout."""
    for dense in mlp._dense:
        kernel, bias = np_weights(dense)
        x = np_relu(x @ kernel + bias)
    return x


def np_gate(gate, x):
    """softmax(W h(x) + b), h the relu hidden MLP or the identity."""
    if gate.hidden is not None:
        x = np_mlp(gate.hidden, x)
    kernel, bias = np_weights(gate.logits)
    return np_softmax(x @ kernel + bias)


def np_mix(gate, experts):
    """sum_e gate[:, e] * experts[e], written as an explicit loop."""
    out = np.zeros_like(experts[0])
    for e, expert in enumerate(experts):
        out += gate[:, e:e + 1] * expert
    return out


def np_mmoe(layer, x):
    experts = [np_mlp(m, x) for m in layer.experts]
    gates = [np_gate(g, x) for g in layer.gates]
    return [np_mix(g, experts) for g in gates], gates


def np_cgc(level, xs):
    """xs = [x_1, .., x_T, x_0]; task t mixes [specific_t, shared], the shared gate mixes everything."""
    T, S = level.num_tasks, level.num_specific_experts
    specific = [[np_mlp(level.specific_experts[t * S + i], xs[t]) for i in range(S)] for t in range(T)]
    shared = [np_mlp(m, xs[-1]) for m in level.shared_experts]
    outputs, gates = [], []
    for t in range(T):
        gates.append(np_gate(level.task_gates[t], xs[t]))
        outputs.append(np_mix(gates[-1], specific[t] + shared))
    if level.output_shared:
        gates.append(np_gate(level.shared_gate, xs[-1]))
        outputs.append(np_mix(gates[-1], [e for task in specific for e in task] + shared))
    return outputs, gates


def to_np(tensors):
    return [keras.ops.convert_to_numpy(t) for t in tensors]


def assert_close(got, want, atol=1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(g), w, rtol=1e-5, atol=atol)


def assert_on_simplex(gates):
    for g in to_np(gates):
        assert (g >= 0).all()
        np.testing.assert_allclose(g.sum(-1), 1.0, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ numerics
def test_mmoe_matches_numpy_reference():
    layer = MMoE(num_experts=3, expert_units=[6, 4], num_tasks=2, gate_units=[3])
    outputs, gates = layer(X, return_gates=True)
    want_out, want_gates = np_mmoe(layer, X)
    assert [tuple(o.shape) for o in outputs] == [(6, 4)] * 2
    assert [tuple(g.shape) for g in gates] == [(6, 3)] * 2
    assert_close(gates, want_gates)
    assert_close(outputs, want_out)
    assert_on_simplex(gates)
    # Default call returns just the task outputs, the same values.
    assert_close(layer(X), want_out)


def test_mmoe_linear_gate_matches_numpy_reference():
    layer = MMoE(num_experts=3, expert_units=[6, 4], num_tasks=3)
    outputs, gates = layer(X, return_gates=True)
    for g in layer.gates:
        assert g.hidden is None
    want_out, want_gates = np_mmoe(layer, X)
    assert_close(gates, want_gates)
    assert_close(outputs, want_out)
    assert_on_simplex(gates)


def test_cgc_level_with_list_inputs_matches_numpy_reference():
    level = CGCLevel(num_tasks=2, num_specific_experts=2, num_shared_experts=1, expert_units=[6, 4], gate_units=[3],
                     output_shared=True)
    xs = [RNG.normal(size=(6, 5)).astype("float32") for _ in range(3)]  # x_1, x_2, x_0 all different
    outputs, gates = level(xs, return_gates=True)
    want_out, want_gates = np_cgc(level, xs)
    assert [tuple(o.shape) for o in outputs] == [(6, 4)] * 3
    assert [tuple(g.shape) for g in gates] == [(6, 3), (6, 3), (6, 5)]  # S + H, S + H, T*S + H
    assert_close(gates, want_gates)
    assert_close(outputs, want_out)
    assert_on_simplex(gates)


def test_cgc_level_single_tensor_feeds_every_branch():
    level = CGCLevel(num_tasks=3, num_specific_experts=1, num_shared_experts=1, expert_units=[6, 4])
    got = level(X)
    assert len(got) == 3  # no shared output on a last level
    assert_close(got, np_cgc(level, [X] * 4)[0])
    assert_close(level([X] * 4), np_cgc(level, [X] * 4)[0])


def test_ple_matches_stacked_numpy_levels():
    ple = PLE(num_levels=3, num_tasks=2, num_specific_experts=1, num_shared_experts=2, expert_units=[6, 4],
              gate_units=[3])
    outputs, gates = ple(X, return_gates=True)
    assert [lvl.output_shared for lvl in ple.levels] == [True, True, False]
    xs, want_gates = [X] * 3, []
    for level in ple.levels:
        xs, level_gates = np_cgc(level, xs)
        want_gates.append(level_gates)
    assert [tuple(o.shape) for o in outputs] == [(6, 4)] * 2
    assert [[tuple(g.shape) for g in lvl] for lvl in gates] == [[(6, 3), (6, 3), (6, 4)]] * 2 + [[(6, 3), (6, 3)]]
    assert_close(outputs, xs)
    for got, want in zip(gates, want_gates):
        assert_close(got, want)
        assert_on_simplex(got)


def test_mmoe_equals_single_level_ple_without_specific_experts():
    mmoe = MMoE(num_experts=3, expert_units=[6, 4], num_tasks=2, gate_units=[3])
    ple = PLE(num_levels=1, num_tasks=2, num_specific_experts=0, num_shared_experts=3, expert_units=[6, 4],
              gate_units=[3])
    mmoe(X)
    ple(X)
    level = ple.levels[0]
    assert level.specific_experts == [] and level.shared_gate is None
    assert mmoe.count_params() == ple.count_params()
    for src, dst in zip(mmoe.experts + mmoe.gates, level.shared_experts + level.task_gates, strict=True):
        dst.set_weights(src.get_weights())
    want, want_gates = mmoe(X, return_gates=True)
    got, got_gates = ple(X, return_gates=True)
    assert_close(got, to_np(want), atol=1e-6)
    assert_close(got_gates[0], to_np(want_gates), atol=1e-6)


def test_experts_start_distinct_and_seeded_initialization_is_reproducible():
    make = lambda: MMoE(3, [6, 4], 2, kernel_initializer=keras.initializers.GlorotUniform(seed=7))  # noqa: E731
    a, b = make(), make()
    a(X)
    b(X)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    kernels = [keras.ops.convert_to_numpy(e._dense[0].kernel) for e in a.experts]
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    unseeded = MMoE(3, [6, 4], 2)
    unseeded(X)
    kernels = [keras.ops.convert_to_numpy(e._dense[0].kernel) for e in unseeded.experts]
    assert not np.allclose(kernels[0], kernels[1])


def test_one_training_step_updates_every_expert_and_gate():
    # Seeded: with an unseeded draw a ReLU unit of a tiny expert can be dead on all 6 rows, and its
    # weights then rightly get no gradient (the result depended on which tests ran before).
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    towers = [keras.layers.Dense(1)(f) for f in PLE(2, 2, 1, 1, [6, 4], [3])(inputs)]
    model = keras.Model(inputs, towers)
    # Fastest mode per backend for one tiny step: eager TF skips tracing; JAX eager would compile every op.
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=["mse", "mse"],
                  run_eagerly=keras.backend.backend() == "tensorflow")
    before = [w.copy() for w in model.get_weights()]
    y = RNG.normal(size=(6, 1)).astype("float32")
    model.fit(X, [y, y], batch_size=6, epochs=1, verbose=0)
    changed = [not np.array_equal(b, a) for b, a in zip(before, model.get_weights())]
    assert all(changed), [w.path for w, c in zip(model.weights, changed) if not c]


# ------------------------------------------------------------------ parameter counts
def gate_params(d_in, hidden, n_out):
    return mlp_params(d_in, hidden) + (hidden[-1] if hidden else d_in) * n_out + n_out


def test_parameter_counts():
    mmoe = MMoE(num_experts=4, expert_units=[6, 4], num_tasks=2, gate_units=[3, 2])
    mmoe.build((None, 5))
    assert mmoe.count_params() == 4 * mlp_params(5, [6, 4]) + 2 * gate_params(5, [3, 2], 4)

    level = CGCLevel(num_tasks=3, num_specific_experts=2, num_shared_experts=1, expert_units=[6, 4],
                     output_shared=True)
    level.build((None, 5))
    assert level.count_params() == (3 * 2 + 1) * mlp_params(5, [6, 4]) + 3 * gate_params(5, [], 3) \
        + gate_params(5, [], 3 * 2 + 1)

    ple = PLE(num_levels=2, num_tasks=2, num_specific_experts=1, num_shared_experts=2, expert_units=[6, 4],
              gate_units=[3])
    ple.build((None, 5))
    first = (2 * 1 + 2) * mlp_params(5, [6, 4]) + 2 * gate_params(5, [3], 3) + gate_params(5, [3], 4)
    last = (2 * 1 + 2) * mlp_params(4, [6, 4]) + 2 * gate_params(4, [3], 3)
    assert ple.count_params() == first + last


# ------------------------------------------------------------------ argument errors
@pytest.mark.parametrize("make, argument", [
    (lambda: MMoE(0, [4], 2), "num_experts"),
    (lambda: MMoE(2.5, [4], 2), "num_experts"),
    (lambda: MMoE(2, [], 2), "expert_units"),
    (lambda: MMoE(2, [4, 0], 2), "expert_units"),
    (lambda: MMoE(2, 4, 2), "expert_units"),
    (lambda: MMoE(2, [4], 0), "num_tasks"),
    (lambda: MMoE(2, [4], 2, gate_units=[-3]), "gate_units"),
    (lambda: MMoE(2, [4], 2, dropout=1.0), "dropout"),
    (lambda: MMoE(2, [4], 2, norm="group"), "norm"),
    (lambda: CGCLevel(0, 1, 1, [4]), "num_tasks"),
    (lambda: CGCLevel(2, -1, 1, [4]), "num_specific_experts"),
    (lambda: CGCLevel(2, 1, -1, [4]), "num_shared_experts"),
    (lambda: CGCLevel(2, 0, 0, [4]), "num_specific_experts, num_shared_experts"),
    (lambda: CGCLevel(2, 1, 1, []), "expert_units"),
    (lambda: PLE(0, 2, 1, 1, [4]), "num_levels"),
    (lambda: PLE(2, 2, 0, 0, [4]), "num_specific_experts, num_shared_experts"),
    (lambda: PLE(2, 2, 1, 1, [4], gate_units=[0]), "gate_units"),
])
def test_rejects_bad_arguments(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_cgc_level_rejects_wrong_number_of_inputs():
    with pytest.raises(ValueError, match="inputs"):
        CGCLevel(2, 1, 1, [4])([X, X])


# ------------------------------------------------------------------ layer_checks harness
def make_mmoe():
    return MMoE(num_experts=3, expert_units=[6, 4], num_tasks=2, gate_units=[3], dropout=0.1, norm="batch")


def make_cgc():
    return CGCLevel(num_tasks=2, num_specific_experts=1, num_shared_experts=2, expert_units=[6, 4], gate_units=[3],
                    output_shared=True, activation="gelu", norm="layer")


def make_ple():
    return PLE(num_levels=2, num_tasks=2, num_specific_experts=1, num_shared_experts=1, expert_units=[6, 4],
               gate_units=[3], kernel_regularizer="l2")


CGC_INPUTS = [RNG.normal(size=(6, 5)).astype("float32") for _ in range(3)]
# The plain MMoE output is the first half of the mmoe_gates outputs, so it needs no case of its own.
CASES = [(make_mmoe, X, {"return_gates": True}), (make_cgc, CGC_INPUTS, {}), (make_ple, X, {"return_gates": True})]
IDS = ["mmoe_gates", "cgc_list_inputs", "ple_gates"]


@pytest.mark.parametrize("make_layer", [make_mmoe, make_cgc, make_ple], ids=["mmoe", "cgc", "ple"])
def test_get_config_round_trip(make_layer):
    layer_checks.check_config_round_trip(make_layer)


@pytest.mark.parametrize("make_layer, inputs, kwargs", CASES, ids=IDS)
def test_keras_file_round_trip(make_layer, inputs, kwargs, tmp_path):
    layer_checks.check_keras_round_trip(make_layer, inputs, tmp_path, **kwargs)


@pytest.mark.tf_only
@pytest.mark.parametrize("make_layer, inputs, kwargs", CASES, ids=IDS)
def test_saved_model_round_trip(make_layer, inputs, kwargs, tmp_path):
    layer_checks.check_saved_model_round_trip(make_layer, inputs, tmp_path, **kwargs)


@pytest.mark.parametrize("make_layer, inputs, kwargs", CASES, ids=IDS)
def test_mixed_bfloat16_forward(make_layer, inputs, kwargs):
    layer = layer_checks.check_mixed_bfloat16(make_layer, inputs, **kwargs)
    assert len(layer.weights) > 0


def test_docstring_examples_run():
    layer_checks.check_docstring_examples(experts_module)
