"""C2AL taps, per-head architecture and the ablations of docs/methods.md#ablations (reweight, membership, single
head, PLE towers): every registered backbone, the data pipeline's labels and sample weights, the
training CLI. Model tests run under TF and JAX; pipeline and CLI tests under TF only."""

import json
import os

import keras
import numpy as np
import pytest
import yaml

from zoo import c2al as c2al_lib
from zoo.c2al import AUX_HEAD, AUX_TAIL, DEFAULT_TAP, TAPS, build_c2al, c2al_options, compile_model
from zoo.config import load_model_config
from zoo.model import PRIMARY, build, interaction_output, primary_model, shared_representation
from zoo.backbone import Backbone
from zoo.registry import backbone_names
from zoo.spec import load_spec

from helpers import SPEC, batch, tiny_hparams  # noqa: E402  (tests/ is on sys.path under pytest)
from helpers import UNIFORM as USPEC  # noqa: E402  (every id width 4: every backbone builds on it)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAMBDAS = {"lambda_head": 0.3, "lambda_tail": 0.7}


def npy(x):
    return keras.ops.convert_to_numpy(x)


def bce(t, p):
    p = np.clip(np.asarray(p, "float64"), 1e-7, 1 - 1e-7)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def targets_for(model, x, y):
    head = (x["user"][:, :1] % 3 == 0).astype("float32")
    tail = (x["user"][:, :1] % 3 == 1).astype("float32")
    all_targets = {PRIMARY: y, AUX_HEAD: y * head, AUX_TAIL: y * tail}
    return {k: v for k, v in all_targets.items() if k in model.output}


@pytest.mark.multi_backend
@pytest.mark.parametrize("name", backbone_names())
def test_both_taps_build_train_and_serve_the_baseline(name):
    hp = tiny_hparams(name)
    x, y = batch(32)
    keras.utils.set_random_seed(0)
    base = build(name, USPEC, **hp)
    base_out = npy(base(x)[PRIMARY])
    h, z = shared_representation(base), interaction_output(base)
    widths = {"primary_head_input": h.shape[-1], "interaction_output": z.shape[-1]}
    assert tuple(npy(keras.Model(base.inputs, z)(x)).shape) == (32, widths["interaction_output"])
    if type(base.get_layer("backbone")).over_arch is Backbone.over_arch:  # identity over-arch: z is h
        assert z is h or widths["interaction_output"] == widths["primary_head_input"]
    for tap in TAPS:
        keras.utils.set_random_seed(0)  # the baseline's seed: the shared path starts identical
        model = build_c2al(name, USPEC, {"tap": tap, "head_units": {"tail": [3]}}, **hp)
        width = widths[tap]
        assert tuple(model.get_layer("aux_head_logit").kernel.shape) == (width, 1)  # head: Dense(1)
        tail_mlp = model.get_layer("aux_tail_mlp")                                    # tail: [3] then Dense(1)
        assert [tuple(w.shape) for w in tail_mlp.weights][0] == (width, 3)
        assert model.count_params() == base.count_params() + (width + 1) + (width * 3 + 3 + 3 + 1)
        served = primary_model(model)
        assert served.count_params() == base.count_params()
        # Same layers as the baseline (auto-named sublayers differ between two builds: compare shapes),
        # the wrapped model's own weights, and (same seed) the baseline's outputs.
        assert [tuple(w.shape) for w in served.weights] == [tuple(w.shape) for w in base.weights]
        assert {id(w) for w in served.weights} <= {id(w) for w in model.weights}
        np.testing.assert_array_equal(npy(served(x)), base_out)
        if tap == DEFAULT_TAP and keras.backend.backend() != "tensorflow":
            continue  # JAX compiles each step (seconds): the new tap only; TF runs both eagerly
        compile_model(model, 0.01, LAMBDAS)
        model.run_eagerly = keras.backend.backend() == "tensorflow"  # one step: eager on TF, jit on JAX
        before = npy(model.get_layer("aux_head_logit").kernel).copy()
        loss = model.train_on_batch(x, targets_for(model, x, y), return_dict=True)["loss"]
        assert np.isfinite(float(loss))
        assert not np.allclose(before, npy(model.get_layer("aux_head_logit").kernel))


@pytest.mark.multi_backend
def test_interaction_tap_round_trip_and_multi_embedding_z(tmp_path):
    keras.utils.set_random_seed(1)
    embedding = {"type": "multi", "num_sets": 2}
    base = build("dcnv2", USPEC, embedding=embedding, num_cross_layers=1, dnn_units=[6])
    keras.utils.set_random_seed(1)
    model = build_c2al("dcnv2", USPEC, {"tap": "interaction_output"}, embedding=embedding, num_cross_layers=1,
                       dnn_units=[6])
    backbone = model.get_layer("backbone")
    z = interaction_output(model)  # the mean of the projected sets, before the deep over-arch
    assert z.shape[-1] == backbone.set_projections[0].units != shared_representation(model).shape[-1]
    x, _ = batch(16)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for key, value in model(x).items():
        np.testing.assert_allclose(npy(loaded(x)[key]), npy(value), atol=1e-6)
    served = primary_model(loaded)
    assert served.count_params() == base.count_params()
    np.testing.assert_allclose(npy(served(x)), npy(base(x)[PRIMARY]), atol=1e-6)
    assert interaction_output(loaded).shape[-1] == z.shape[-1]


@pytest.mark.multi_backend
@pytest.mark.parametrize("ablation", ["membership", "single_head", "single_tail"])  # none: test_model.py
def test_lambda_zero_is_the_baseline_loss_and_heads_per_ablation(ablation):
    keras.utils.set_random_seed(5)
    base = build("dcnv2", SPEC, num_cross_layers=1, dnn_units=[4])
    keras.utils.set_random_seed(5)
    model = build_c2al("dcnv2", SPEC, {"ablation": ablation}, num_cross_layers=1, dnn_units=[4])
    aux = c2al_lib.aux_outputs(ablation)
    assert sorted(model.output) == sorted([PRIMARY, *aux])
    assert primary_model(model).count_params() == base.count_params()
    x, y = batch(64, seed=2)
    targets = targets_for(model, x, y)
    if ablation == "membership":  # labels 1[x in C] (the pipeline's; see the tf.data tests)
        targets = {k: (v if k == PRIMARY else (x["user"][:, :1] % 3 == (k == AUX_TAIL)).astype("float32"))
                   for k, v in targets.items()}
    compile_model(base, 1e-3, None)
    base_loss = base.evaluate(x, {PRIMARY: y}, batch_size=64, verbose=0, return_dict=True)["loss"]
    compile_model(model, 1e-3, {"lambda_head": 0.0, "lambda_tail": 0.0})
    zero = model.evaluate(x, targets, batch_size=64, verbose=0, return_dict=True)["loss"]
    assert zero == pytest.approx(base_loss, rel=1e-6, abs=1e-7)
    compile_model(model, 1e-3, LAMBDAS)
    weighted = model.evaluate(x, targets, batch_size=64, verbose=0, return_dict=True)["loss"]
    preds = {k: npy(v) for k, v in model(x).items()}
    expected = bce(y, preds[PRIMARY]).mean() + sum(
        LAMBDAS[f"lambda_{k[4:]}"] * bce(targets[k], preds[k]).mean() for k in aux)
    assert weighted == pytest.approx(expected, rel=1e-4)


@pytest.mark.multi_backend
@pytest.mark.parametrize("name", ["ple", "mmoe"])
def test_ple_towers_serves_the_single_task_baseline(name):
    hp = {**tiny_hparams(name), **({"num_levels": 1} if name == "ple" else {})}
    base = build(name, SPEC, **hp)
    model = build_c2al(name, SPEC, {"ablation": "ple_towers", "head_units": {"head": [4]}}, **hp)
    backbone = model.get_layer("backbone")
    assert backbone.num_tasks == 3 and len(backbone.towers) == 3
    x, y = batch(32)
    out = model(x)
    assert sorted(out) == [AUX_HEAD, AUX_TAIL, PRIMARY]
    tasks = backbone(x, all_tasks=True)  # aux_tail reads tower 2 through its own Dense(1)
    tail = model.get_layer("aux_tail_logit")
    expected_tail = 1 / (1 + np.exp(-(npy(tasks[2]) @ npy(tail.kernel) + npy(tail.bias))))
    np.testing.assert_allclose(npy(out[AUX_TAIL]), expected_tail, atol=1e-5)
    assert tuple(model.get_layer("aux_head_mlp").weights[0].shape) == (tasks[1].shape[-1], 4)

    # The served graph is the single-task baseline: its layers and weight names, the primary output.
    served = primary_model(model)
    assert served.count_params() == base.count_params() < model.count_params()
    assert [w.path for w in served.weights] == [w.path for w in base.weights]
    assert [tuple(w.shape) for w in served.weights] == [tuple(w.shape) for w in base.weights]
    np.testing.assert_allclose(npy(served(x)), npy(out[PRIMARY]), atol=1e-6)

    # lambda = 0: the loss is the primary BCE, that is the served (baseline-graph) model's loss.
    targets = targets_for(model, x, y)
    compile_model(model, 0.01, {"lambda_head": 0.0, "lambda_tail": 0.0})
    zero = model.evaluate(x, targets, batch_size=32, verbose=0, return_dict=True)["loss"]
    assert zero == pytest.approx(bce(y, npy(served(x))).mean(), rel=1e-4)
    compile_model(model, 0.01, LAMBDAS)
    model.run_eagerly = keras.backend.backend() == "tensorflow"
    model.train_on_batch(x, targets)
    np.testing.assert_allclose(npy(primary_model(model)(x)), npy(model(x)[PRIMARY]), atol=1e-6)


@pytest.mark.multi_backend
def test_ple_towers_rejects_what_it_cannot_serve_as_the_baseline():
    with pytest.raises(ValueError, match="ple_towers.*got 'dcnv2'"):
        build_c2al("dcnv2", SPEC, {"ablation": "ple_towers"}, num_cross_layers=1)
    with pytest.raises(ValueError, match="num_levels"):
        build_c2al("ple", SPEC, {"ablation": "ple_towers"}, **tiny_hparams("ple"))  # 2 levels
    with pytest.raises(ValueError, match="num_tasks"):
        build_c2al("mmoe", SPEC, {"ablation": "ple_towers"}, **{**tiny_hparams("mmoe"), "num_tasks": 2})


@pytest.mark.multi_backend
@pytest.mark.parametrize("block, key", [
    ({"taps": "x"}, "'taps'"),
    ({"head_units": {"middle": [2]}}, "'middle'"),
    ({"head_units": [0]}, "head_units"),
    ({"head_units": {"tail": [2, -1]}}, "head_units.tail"),
    ({"tap": "over_arch_output"}, "tap"),
    ({"ablation": "pcgrad"}, "ablation"),
    ({"ablation": "ple_towers", "tap": "interaction_output"}, "tap"),
])
def test_bad_options_name_the_key(block, key, tmp_path):
    with pytest.raises(ValueError, match=key):
        c2al_options(block)
    path = os.path.join(tmp_path, "m.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump({"backbone": "dcnv2", "c2al": block}, fh)
    with pytest.raises(ValueError, match=key):
        load_model_config(path)
    assert c2al_options({"head_units": {"head": [8]}}) == {
        "head_units": {"head": [8], "tail": []}, "tap": DEFAULT_TAP, "ablation": "none"}


# ----- tf.data pipeline and training CLI (TensorFlow) ----------------------------------------------
def parsed_batch():
    """A hand-built parsed batch: cohort ids on axis 'seg' (a=0 head, b=1 tail, other=2)."""
    x, _ = batch(6)
    y = np.array([[1], [1], [1], [0], [0], [1]], "float32")
    seg = np.array([[0], [1], [2], [0], [1], [2]], "int64")
    x["price"] = np.array([[2.0], [-2.0], [0.0], [1.0], [-1.0], [0.1]], "float32")
    return {**x, "y": y, "segment": seg, "cohort/seg": seg}


PAIR = {"axis": "seg", "head": "a", "tail": "b"}


def one_batch(ds):
    return next(iter(ds.as_numpy_iterator()))


@pytest.mark.tf_only
def test_pipeline_labels_and_reweight_sample_weights():
    import tensorflow as tf

    from zoo.data import model_batches

    parsed = parsed_batch()
    ds = tf.data.Dataset.from_tensors(parsed)
    y = parsed["y"]
    _, t = one_batch(model_batches(SPEC, ds, PAIR))
    np.testing.assert_array_equal(t[AUX_HEAD], [[1], [0], [0], [0], [0], [0]])
    np.testing.assert_array_equal(t[AUX_TAIL], [[0], [1], [0], [0], [0], [0]])
    assert np.all(t[AUX_HEAD] <= y) and np.all(t[AUX_TAIL] <= y)
    _, t = one_batch(model_batches(SPEC, ds, PAIR, labels=c2al_lib.aux_labels("membership")))
    np.testing.assert_array_equal(t[AUX_HEAD], [[1], [0], [0], [1], [0], [0]])  # 1[x in C], y ignored
    np.testing.assert_array_equal(t[AUX_TAIL], [[0], [1], [0], [0], [1], [0]])
    _, t = one_batch(model_batches(SPEC, ds, PAIR, aux=c2al_lib.aux_outputs("single_head")))
    assert sorted(t) == [AUX_HEAD, PRIMARY]

    # reweight: w = 1 + (lambda_head / pi_head) 1[head] + (lambda_tail / pi_tail) 1[tail]; pi = 2/6 here.
    coefficients = c2al_lib.reweight_coefficients(0.2, 0.3, 2 / 6, 2 / 6)
    assert coefficients == pytest.approx({"head": 0.6, "tail": 0.9})
    x, t, w = one_batch(model_batches(SPEC, ds, PAIR, aux=c2al_lib.aux_outputs("reweight"),
                                      cohort_weights=coefficients))
    assert sorted(t) == [PRIMARY] and sorted(w) == [PRIMARY] and "segment" not in x
    np.testing.assert_allclose(w[PRIMARY], [[1.6], [1.9], [1.0], [1.6], [1.9], [1.0]], rtol=1e-6)
    assert w[PRIMARY].mean() == pytest.approx(1 + 0.2 + 0.3)  # extra mass per cohort = its lambda

    # Keras applies them to the primary BCE: mean(w * BCE); with lambdas 0 it is the baseline loss.
    keras.utils.set_random_seed(0)
    model = build_c2al("dcnv2", SPEC, {"ablation": "reweight"}, num_cross_layers=1, dnn_units=[4])
    assert sorted(model.output) == [PRIMARY]
    compile_model(model, 1e-3, {"lambda_head": 0.2, "lambda_tail": 0.3})
    loss = model.evaluate(model_batches(SPEC, ds, PAIR, aux=(), cohort_weights=coefficients), verbose=0,
                          return_dict=True)["loss"]
    per_row = bce(y, npy(model(x)[PRIMARY]))
    assert loss == pytest.approx(float((w[PRIMARY] * per_row).mean()), rel=1e-4)
    zero = model.evaluate(model_batches(SPEC, ds, PAIR, aux=(), cohort_weights={"head": 0.0, "tail": 0.0}),
                          verbose=0, return_dict=True)["loss"]
    assert zero == pytest.approx(float(per_row.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="cohort_weights"):
        model_batches(SPEC, ds, None, cohort_weights=coefficients)
    with pytest.raises(ValueError, match="reweight"):
        c2al_lib.reweight_coefficients(0.1, 0.1, 0.0, 0.5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from helpers import synthetic_rows, write_data_dir

    path = str(tmp_path_factory.mktemp("data"))
    write_data_dir(load_spec(os.path.join(ROOT, "configs/datasets/synthetic.yaml")), synthetic_rows(1500, seed=2),
                   path)
    return path


@pytest.mark.tf_only
def test_resolve_c2al_takes_a_whole_pair_in_either_form(data_dir):
    from zoo.spec import SpecError
    from zoo.train import resolve_c2al

    spec = load_spec(data_dir)
    pair = {"axis": "user_value", "head": "p75_95", "tail": "p05_25"}
    assert resolve_c2al(spec, pair) == {**pair, "lambda_head": 0.03, "lambda_tail": 0.03}
    quantile = {"axis": "user_value", "feature": "user_value", "head_min": 2.0, "tail_max": -1.0}
    resolved = resolve_c2al(spec, {**quantile, "lambda_tail": 0.5})
    assert resolved == {**quantile, "lambda_head": 0.03, "lambda_tail": 0.5}  # the spec's head/tail are gone
    with pytest.raises(SpecError, match="'nope'"):
        resolve_c2al(spec, {"feature": "nope", "head_min": 1.0, "tail_max": 0.0})
    with pytest.raises(ValueError, match="'tail_max'"):
        resolve_c2al(spec, {"feature": "user_value", "head_min": 1.0})
    with pytest.raises(ValueError, match="head_min"):
        resolve_c2al(spec, {"feature": "user_value", "head_min": 0.0, "tail_max": 1.0})
    with pytest.raises(ValueError, match="'divergence'"):
        resolve_c2al(spec, {**pair, "divergence": 0.3})
    with pytest.raises(ValueError, match="lambda_head"):
        resolve_c2al(spec, {"lambda_head": -1.0})


@pytest.mark.tf_only
def test_train_records_the_ablation_and_serves_the_baseline(data_dir, tmp_path):
    from zoo import data, evaluation, train

    out = str(tmp_path / "reweight")
    code = train.main(["--data", data_dir, "--model", os.path.join(ROOT, "configs/models/dcnv2_test.yaml"),
                       "--output", out, "--variants", "c2al", "--c2al-ablation", "reweight", "--max-epochs", "1"])
    assert code == 0
    summary = json.load(open(os.path.join(out, "metrics.json")))
    assert summary["c2al_ablation"] == "reweight" and summary["c2al_tap"] == DEFAULT_TAP
    spec = load_spec(data_dir)
    ids = np.concatenate([b["cohort/user_value"][:, 0] for b in
                          data.read_split(data_dir, "train", 512, spec=spec).as_numpy_iterator()])
    axis = spec.axis("user_value")
    fractions = summary["c2al_reweight"]["train_fractions"]
    assert fractions["head"] == pytest.approx(np.mean(ids == axis.index("p95_100")))
    assert fractions["tail"] == pytest.approx(np.mean(ids == axis.index("p00_05")))
    lam = spec.c2al["lambda_head"]  # the dataset YAML's
    assert lam == 0.03 and summary["c2al_reweight"]["coefficients"]["head"] == pytest.approx(lam / fractions["head"])
    params = summary["variants"]["c2al"]["params"]
    assert params["total"] == params["served"]  # no auxiliary head at all

    # A quantile-form pair (as zoo.cohorts.choose_pair writes it), a single head on the interaction tap.
    out = str(tmp_path / "single")
    overrides = {"feature": "user_value", "head_min": 1.0, "tail_max": -1.0, "ablation": "single_head",
                 "tap": "interaction_output", "lambda_tail": None}
    summary = train.run(data_dir, os.path.join(ROOT, "configs/models/dcnv2_test.yaml"), out,
                        ["baseline", "c2al"], c2al_overrides=overrides, max_epochs=1, steps_per_epoch=2, verbose=0)
    assert summary["c2al_ablation"] == "single_head" and summary["c2al_tap"] == "interaction_output"
    assert summary["c2al"]["feature"] == "user_value" and "head" not in summary["c2al"]
    assert summary["variants"]["c2al"]["params"]["served"] == summary["variants"]["baseline"]["params"]["total"]
    assert "head: user_value >= 1.0" in evaluation.format_report(summary)
