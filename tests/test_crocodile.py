"""Crocodile (arXiv 2405.12706): the cross-expert covariance loss and the prior-informed gate as layers
(NumPy references, arguments, serialization) and as options of the multi-embedding option (training,
pairing with plain multi-embedding, backbones, export, YAML, the study variant). TF and JAX."""

import os
import sys

import keras
import numpy as np
import pytest

from layers import CrossExpertCovariance, PriorElementwiseGate
from layers import disentangle as disentangle_module
from zoo.c2al import C2AL, compile_model
from zoo.config import ConfigError, load_model_config
from zoo.encoder import embedding_options
from zoo.model import PRIMARY, build, primary_model

sys.path.insert(0, os.path.dirname(__file__))
import layer_checks  # noqa: E402
from helpers import HP, SPEC, UNIFORM, batch, tiny_hparams  # noqa: E402

pytestmark = pytest.mark.multi_backend


def npy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# --------------------------------------------------------------------------------------------------
# NumPy references
# --------------------------------------------------------------------------------------------------
def numpy_cov_loss(outputs, row_normalization=True):
    """L_cov = (1/d^2) sum_{p<q} || X_p^T X_q / n ||_1 with X the row-centred outputs."""
    xs = [np.asarray(o, "float64") - np.asarray(o, "float64").mean(axis=0) for o in outputs]
    n, d = xs[0].shape
    total = sum(np.abs(xs[p].T @ xs[q]).sum() for p in range(len(xs)) for q in range(p + 1, len(xs)))
    return total / (n if row_normalization else 1) / d ** 2


def numpy_gate(prior, experts, mlp_weights, out_kernel, out_bias, normalization):
    h = prior
    for kernel, bias in mlp_weights:
        h = np.maximum(h @ kernel + bias, 0.0)
    m, d = len(experts), experts[0].shape[1]
    logits = (h @ out_kernel + out_bias).reshape(-1, m, d)
    stacked = np.stack(experts, axis=1)
    if normalization == "softmax":
        a = np.exp(logits - logits.max(axis=1, keepdims=True))
        a = a / a.sum(axis=1, keepdims=True)
        return (a * stacked).sum(axis=1)
    return (2.0 / (1.0 + np.exp(-logits)) * stacked).sum(axis=1) / m


def test_covariance_loss_on_hand_data():
    o1 = np.array([[1.0, 2.0], [3.0, 0.0], [-1.0, 1.0]])
    o2 = np.array([[0.0, 1.0], [2.0, 1.0], [1.0, -2.0]])
    # centred: x1 = [[0, 1], [2, -1], [-2, 0]], x2 = [[-1, 1], [1, 1], [0, -2]]
    # x1^T x2 = [[2, 6], [-2, 0]] -> ||.||_1 = 10; / n=3; / d^2=4 -> 5/6 (without / n: 2.5)
    assert float(CrossExpertCovariance()([o1, o2])) == pytest.approx(5 / 6, abs=1e-6)
    assert float(CrossExpertCovariance(row_normalization=False)([o1, o2])) == pytest.approx(2.5, abs=1e-6)
    assert numpy_cov_loss([o1, o2]) == pytest.approx(5 / 6)


def test_covariance_loss_matches_numpy_reference_for_several_experts():
    rng = np.random.default_rng(0)
    outputs = [rng.normal(size=(32, 5)).astype("float32") for _ in range(4)]
    for normalize in (True, False):
        got = float(CrossExpertCovariance(row_normalization=normalize)(outputs))
        assert got == pytest.approx(numpy_cov_loss(outputs, normalize), rel=1e-5)
    # Only pairs p < q: an expert's own variance is not penalised, a copy of an expert is.
    x = outputs[0]
    assert float(CrossExpertCovariance()([x, np.zeros_like(x)])) == 0.0
    assert float(CrossExpertCovariance()([x, x])) == pytest.approx(numpy_cov_loss([x, x]), rel=1e-5)


def test_covariance_loss_adds_alpha_times_value_only_in_training():
    rng = np.random.default_rng(1)
    outputs = [rng.normal(size=(16, 3)).astype("float32") for _ in range(3)]
    layer = CrossExpertCovariance(alpha=0.25)
    value = float(layer(outputs))
    assert layer.losses == []
    assert float(layer(outputs, training=True)) == pytest.approx(value, rel=1e-6)
    assert len(layer.losses) == 1 and float(layer.losses[0]) == pytest.approx(0.25 * value, rel=1e-6)
    zero = CrossExpertCovariance(alpha=0.0)
    zero(outputs, training=True)
    assert zero.losses == []


def test_row_sampling_uses_distinct_seeded_rows_and_only_in_training():
    rng = np.random.default_rng(2)
    outputs = [rng.normal(size=(40, 3)).astype("float32") for _ in range(3)]
    a, b = CrossExpertCovariance(sample_rows=8, seed=3), CrossExpertCovariance(sample_rows=8, seed=3)
    rows = npy(a.row_indices(40))
    assert rows.shape == (8,) and len(set(rows.tolist())) == 8 and rows.min() >= 0 and rows.max() < 40
    sampled = float(b(outputs, training=True))  # same seed, first draw: the same rows
    assert sampled == pytest.approx(numpy_cov_loss([o[rows] for o in outputs]), rel=1e-5)
    assert float(b(outputs)) == pytest.approx(numpy_cov_loss(outputs), rel=1e-5)  # not training: all rows
    small = [o[:5] for o in outputs]  # a batch below sample_rows is used whole
    assert float(CrossExpertCovariance(sample_rows=8)(small, training=True)) == \
        pytest.approx(numpy_cov_loss(small), rel=1e-5)
    with pytest.raises(ValueError, match=r"^row_indices: "):
        CrossExpertCovariance().row_indices(4)


@pytest.mark.parametrize("normalization", ["softmax", "scaled_sigmoid"])
def test_gate_matches_numpy_reference(normalization):
    rng = np.random.default_rng(4)
    prior = rng.normal(size=(6, 5)).astype("float32")
    experts = [rng.normal(size=(6, 3)).astype("float32") for _ in range(3)]
    gate = PriorElementwiseGate(num_experts=3, units=[4], normalization=normalization)
    # Zero-initialized output layer: the gate starts as the plain mean of the experts.
    np.testing.assert_allclose(npy(gate([prior, *experts])), np.mean(experts, axis=0), atol=1e-6)
    for w in gate.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    mlp = [(npy(d.kernel), npy(d.bias)) for d in gate.mlp._dense]
    expected = numpy_gate(prior, experts, mlp, npy(gate.logits.kernel), npy(gate.logits.bias), normalization)
    np.testing.assert_allclose(npy(gate([prior, *experts])), expected, atol=1e-5)
    a = npy(gate.gates(prior))
    assert a.shape == (6, 3, 3)
    if normalization == "softmax":  # a per-dimension mixture over the experts
        np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-6)
    else:
        assert np.all((a > 0) & (a < 2))


def test_linear_gate_without_hidden_units():
    rng = np.random.default_rng(5)
    prior, experts = rng.normal(size=(4, 2)).astype("float32"), [rng.normal(size=(4, 3)) for _ in range(2)]
    gate = PriorElementwiseGate(num_experts=2)
    gate([prior, *experts])
    assert gate.mlp is None and gate.count_params() == 2 * 6 + 6
    gate.logits.kernel.assign(rng.normal(size=(2, 6)).astype("float32"))
    expected = numpy_gate(prior, experts, [], npy(gate.logits.kernel), npy(gate.logits.bias), "softmax")
    np.testing.assert_allclose(npy(gate([prior, *experts])), expected, atol=1e-5)


@pytest.mark.parametrize("make, argument", [
    (lambda: CrossExpertCovariance(alpha=-1.0), "alpha"),
    (lambda: CrossExpertCovariance(alpha="big"), "alpha"),
    (lambda: CrossExpertCovariance(sample_rows=1), "sample_rows"),
    (lambda: CrossExpertCovariance(seed=-1), "seed"),
    (lambda: CrossExpertCovariance(row_normalization=1), "row_normalization"),
    (lambda: CrossExpertCovariance()([np.ones((2, 3))]), "inputs"),
    (lambda: CrossExpertCovariance()([np.ones((2, 3)), np.ones((2, 4))]), "inputs"),
    (lambda: PriorElementwiseGate(num_experts=0), "num_experts"),
    (lambda: PriorElementwiseGate(num_experts=2, units=[0]), "units"),
    (lambda: PriorElementwiseGate(num_experts=2, normalization="tanh"), "normalization"),
    (lambda: PriorElementwiseGate(num_experts=2, activation="no_such"), "activation"),
    (lambda: PriorElementwiseGate(num_experts=2)([np.ones((2, 3)), np.ones((2, 3))]), "inputs"),
    (lambda: PriorElementwiseGate(num_experts=2)([np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 4))]), "inputs"),
])
def test_layer_arguments_are_checked(make, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: "):
        make()


RNG = np.random.default_rng(6)
EXPERTS = [RNG.normal(size=(8, 3)).astype("float32") for _ in range(3)]
GATE_INPUTS = [RNG.normal(size=(8, 5)).astype("float32"), *EXPERTS]
CASES = [
    (lambda: CrossExpertCovariance(alpha=0.1, sample_rows=4, seed=1), EXPERTS),
    (lambda: PriorElementwiseGate(num_experts=3, units=[4], normalization="scaled_sigmoid"), GATE_INPUTS),
]
IDS = ["covariance", "gate"]


@pytest.mark.parametrize("make_layer, inputs", CASES, ids=IDS)
def test_get_config_round_trip(make_layer, inputs):
    layer_checks.check_config_round_trip(make_layer)


@pytest.mark.parametrize("make_layer, inputs", CASES, ids=IDS)
def test_keras_file_round_trip(make_layer, inputs, tmp_path):
    layer_checks.check_keras_round_trip(make_layer, inputs, tmp_path)


@pytest.mark.tf_only
@pytest.mark.parametrize("make_layer, inputs", CASES, ids=IDS)
def test_saved_model_round_trip(make_layer, inputs, tmp_path):
    layer_checks.check_saved_model_round_trip(make_layer, inputs, tmp_path)


def test_gate_under_mixed_bfloat16():
    layer_checks.check_mixed_bfloat16(
        lambda: PriorElementwiseGate(num_experts=3, units=[4]), GATE_INPUTS)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:  # the covariance is computed in float32 whatever the policy
        value = CrossExpertCovariance()([keras.ops.cast(x, "bfloat16") for x in EXPERTS])
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
    finally:
        keras.config.set_dtype_policy(previous)


def test_docstring_examples_run():
    layer_checks.check_docstring_examples(disentangle_module)


# --------------------------------------------------------------------------------------------------
# The embedding options
# --------------------------------------------------------------------------------------------------
CROC = {"type": "multi", "num_sets": 3, "covariance_loss": {"alpha": 0.5, "sample_rows": 32},
        "gate": {"prior_fields": ["user", "item"], "units": [8]}}


def test_options_fill_defaults():
    options = embedding_options({"type": "multi", "num_sets": 2, "covariance_loss": {},
                                 "gate": {"prior_fields": ["user"]}})
    assert options["covariance_loss"] == {"alpha": 2e-5, "sample_rows": None, "seed": 0, "row_normalization": True,
                                          "target": "experts"}
    assert options["gate"] == {"prior_fields": ["user"], "units": [], "activation": "relu",
                               "normalization": "softmax"}
    assert "gate" not in embedding_options({"type": "multi", "num_sets": 2, "gate": None})
    assert embedding_options(options) == options  # idempotent (get_config stores the filled block)


@pytest.mark.parametrize("embedding, message", [
    ({"type": "multi", "num_sets": 2, "covariance_loss": {"alfa": 1}},
     "embedding: covariance_loss: unknown key 'alfa'; keys are ['alpha', "),
    ({"type": "multi", "num_sets": 2, "gate": {"prior_fields": ["user"], "unit": [4]}},
     "embedding: gate: unknown key 'unit'"),
    ({"type": "multi", "num_sets": 1, "covariance_loss": {}}, "embedding: covariance_loss needs num_sets >= 2"),
    ({"type": "multi", "num_sets": 2, "covariance_loss": {"alpha": -1}}, "embedding: covariance_loss.alpha: "),
    ({"type": "multi", "num_sets": 2, "covariance_loss": {"sample_rows": 1}},
     "embedding: covariance_loss.sample_rows: "),
    ({"type": "multi", "num_sets": 2, "covariance_loss": {"target": "tables"}},
     "embedding: covariance_loss.target: must be one of"),
    ({"type": "multi", "num_sets": 2, "covariance_loss": 0.1}, "embedding: covariance_loss: must be a mapping"),
    ({"type": "multi", "num_sets": 2, "gate": {}}, "embedding: gate.prior_fields: must be a non-empty list"),
    ({"type": "multi", "num_sets": 2, "gate": {"prior_fields": "user"}}, "embedding: gate.prior_fields: "),
    ({"type": "multi", "num_sets": 2, "gate": {"prior_fields": ["user"], "normalization": "tanh"}},
     "embedding: gate.normalization: "),
    ({"type": "plain", "gate": {"prior_fields": ["user"]}}, "embedding: unknown option(s) ['gate'] for type 'plain'"),
])
def test_bad_options_are_named(embedding, message):
    with pytest.raises(ValueError) as err:
        embedding_options(embedding)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_prior_field_must_be_an_id_input():
    with pytest.raises(ValueError, match=r"^embedding: gate.prior_fields: 'price' is not a categorical or sequence"):
        build("dcnv2", SPEC, embedding={"type": "multi", "num_sets": 2, "gate": {"prior_fields": ["price"]}}, **HP)


def _trained(embedding, epochs=3, seed=0):
    keras.backend.clear_session()  # the same layer names in both models
    keras.utils.set_random_seed(seed)
    model = build("dcnv2", SPEC, embedding=embedding, **HP)
    compile_model(model, 0.01, None)
    x, y = batch(512, seed=1)
    keras.utils.set_random_seed(seed)
    history = model.fit(x, {PRIMARY: y}, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    return model, history.history["loss"]


def measured_covariance(model, x):
    """L_cov of the trained experts' outputs on ``x`` (every row, no loss added)."""
    backbone = model.get_layer("backbone")
    _, experts = backbone.expert_outputs(x)
    return float(CrossExpertCovariance()(experts))


def test_alpha_zero_trains_exactly_like_plain_multi_embedding():
    plain, plain_loss = _trained({"type": "multi", "num_sets": 3})
    zero, zero_loss = _trained({"type": "multi", "num_sets": 3, "covariance_loss": {"alpha": 0.0}})
    assert zero_loss == plain_loss
    assert [w.path for w in zero.weights] == [w.path for w in plain.weights]
    for a, b in zip(zero.weights, plain.weights):
        np.testing.assert_array_equal(npy(a), npy(b))


def test_alpha_changes_only_training_and_reduces_the_cross_covariance():
    x, _ = batch(512, seed=1)
    plain, _ = _trained({"type": "multi", "num_sets": 3}, epochs=4)
    croc, _ = _trained({"type": "multi", "num_sets": 3, "covariance_loss": {"alpha": 10.0, "sample_rows": 48}},
                       epochs=4)
    # Same initial weights (the loss layer draws nothing at build), different training.
    assert measured_covariance(croc, x) < 0.5 * measured_covariance(plain, x)


def test_covariance_on_the_embeddings_target():
    x, _ = batch(512, seed=1)
    emb = {"type": "multi", "num_sets": 2}
    plain, _ = _trained(emb, epochs=4)
    croc, _ = _trained({**emb, "covariance_loss": {"alpha": 10.0, "target": "embeddings"}}, epochs=4)

    def embedding_cov(model):
        token_sets, _ = model.get_layer("backbone").encoder(x)
        return float(CrossExpertCovariance()([keras.ops.concatenate(t, axis=-1) for t in token_sets]))

    assert embedding_cov(croc) < embedding_cov(plain)


def test_crocodile_model_trains_round_trips_and_serves_without_the_loss(tmp_path):
    model, losses = _trained(CROC, epochs=3)
    assert losses[-1] < losses[0]
    backbone = model.get_layer("backbone")
    assert type(backbone.gate) is PriorElementwiseGate and type(backbone.covariance) is CrossExpertCovariance
    x, _ = batch(64, seed=2)
    out = npy(model(x)[PRIMARY])
    assert model.losses == []  # an inference call adds no loss term
    path = os.path.join(tmp_path, "croc.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(npy(loaded(x)[PRIMARY]), out, atol=1e-6)
    assert loaded.get_layer("backbone").get_config() == backbone.get_config()
    served = primary_model(C2AL(model))
    np.testing.assert_allclose(npy(served(x)), out, atol=1e-6)
    # The served function with training=False equals the model's output with the loss layer unused.
    np.testing.assert_allclose(npy(model(x, training=False)[PRIMARY]), out, atol=1e-6)


@pytest.mark.parametrize("name", ["ple"])  # the gated-experts path; the contract suite covers multi-embedding for all
def test_other_backbones_with_crocodile(name, tmp_path):
    keras.utils.set_random_seed(3)
    embedding = {**CROC, "num_sets": 2}
    model = build(name, UNIFORM, embedding=embedding, **tiny_hparams(name))
    x, y = batch(128, seed=3)
    out = npy(model(x)[PRIMARY])
    assert out.shape == (128, 1) and np.all(np.isfinite(out))
    compile_model(model, 0.01, None)
    history = model.fit(x, {PRIMARY: y}, epochs=1, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    out = npy(model(x)[PRIMARY])
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    np.testing.assert_allclose(npy(keras.saving.load_model(path)(x)[PRIMARY]), out, atol=1e-6)


@pytest.mark.tf_only
@pytest.mark.parametrize("name", ["dcnv2"])
def test_export_serves_the_keras_numbers(name, tmp_path):
    import tensorflow as tf

    from zoo.export import OUTPUT, SIGNATURE, export_saved_model

    keras.utils.set_random_seed(4)
    model = build(name, UNIFORM, embedding=CROC, **tiny_hparams(name))
    compile_model(model, 0.01, None)
    x, y = batch(256, seed=5)
    model.fit(x, {PRIMARY: y}, epochs=1, batch_size=64, verbose=0)  # the loss has been used
    path = export_saved_model(C2AL(model), UNIFORM, str(tmp_path), f"{name}_croc", verify=False)
    inputs = {f.name: tf.constant(x[f.name], dtype=UNIFORM.input_dtype(f)) for f in UNIFORM.inputs}
    served = tf.saved_model.load(path).signatures[SIGNATURE](**inputs)[OUTPUT].numpy()
    assert float(np.max(np.abs(served - npy(model(x)[PRIMARY])))) <= 1e-5


def test_model_yaml_block(tmp_path):
    path = os.path.join(tmp_path, "croc.yaml")
    with open(path, "w") as fh:
        fh.write("backbone: dcnv2\nembedding:\n  type: multi\n  num_sets: 4\n"
                 "  covariance_loss: {alpha: 2.0e-5, sample_rows: null}\n"
                 "  gate: {prior_fields: [user_id, item_id], units: [64]}\n")
    cfg = load_model_config(path)
    assert cfg["embedding"]["covariance_loss"]["alpha"] == 2e-5
    assert cfg["embedding"]["gate"]["units"] == [64]
    with open(path, "w") as fh:
        fh.write("backbone: dcnv2\nembedding: {type: multi, num_sets: 2, covariance_loss: {weight: 1}}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: embedding: covariance_loss: unknown key 'weight'"):
        load_model_config(path)


def test_study_variant_builds_crocodile_paired_by_seed():
    from zoo.study.runs import Run, build_run_model, run_embedding, targets

    cfg = load_model_config(os.path.join(os.path.dirname(__file__), "..", "configs", "models", "dcnv2_test.yaml"))
    run = Run("crocodile", seed=2, lam=0.1)
    embedding = run_embedding(cfg, SPEC, run)
    assert embedding["type"] == "multi" and embedding["covariance_loss"]["alpha"] == 2e-5
    assert embedding["gate"]["prior_fields"] == ["user"]  # SPEC's user id; its cohort feature is no input
    model = build_run_model("dcnv2", cfg, SPEC, run, 1e-3)
    again = build_run_model("dcnv2", cfg, SPEC, run, 1e-3)
    assert sorted(model.output) == [PRIMARY]  # no auxiliary heads
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(npy(a), npy(b))
    x, y = batch(8)
    assert list(targets(SPEC, {**x, "y": y}, run, None)) == [PRIMARY]


def test_study_trains_the_crocodile_variant_under_the_protocol():
    from zoo.protocol import Protocol
    from zoo.study.runs import Run, train_run

    cfg = load_model_config(os.path.join(os.path.dirname(__file__), "..", "configs", "models", "dcnv2_test.yaml"))
    x, y = batch(512, seed=7)
    xv, yv = batch(128, seed=8)
    model, result = train_run("dcnv2", cfg, SPEC, {**x, "y": y}, {**xv, "y": yv}, Run("crocodile", seed=0, lam=0.1),
                              pair={"axis": "seg", "head": "a", "tail": "b"}, protocol=Protocol(max_epochs=2),
                              batch_size=64, learning_rate=0.01)
    assert result.epochs_run >= 1 and sorted(model.output) == [PRIMARY]
    assert model.get_layer("backbone").covariance is not None
