"""Ranking model, DCNv2 backbone, feature encoder and the C2AL wrapper. Run under TF and JAX."""

import os

import keras
import numpy as np
import pytest

from zoo.c2al import AUX_HEAD, AUX_TAIL, C2AL, loss_weights
from zoo.encoder import FeatureEncoder
from zoo.model import PRIMARY, build, primary_model, shared_representation
from zoo.registry import backbone_names, get_backbone
from zoo.spec import PAD_ID, FeatureSpec
from zoo.c2al import compile_model

pytestmark = pytest.mark.multi_backend

from helpers import HP, SPEC, batch  # noqa: E402  (tests/ is on sys.path under pytest)


def test_encoder_pools_sequences_over_non_padding_and_maps_oov():
    encoder = FeatureEncoder(SPEC.to_dict())
    x, _ = batch(16)
    x["hist"][0] = [PAD_ID, PAD_ID, PAD_ID]
    x["hist"][1] = [2, PAD_ID, 7]
    token_sets, dense = encoder(x)
    assert len(token_sets) == 1
    tokens = token_sets[0]
    assert encoder.token_names == ["user", "item", "wide", "hist"]
    assert [tuple(t.shape) for t in tokens] == [(16, 4), (16, 4), (16, 2), (16, 4)]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(dense), x["price"])
    # Width 4: user (7 rows incl. OOV) then item (5 hashed rows), fused into one table.
    table = keras.ops.convert_to_numpy(encoder.embedders[1].embeddings)
    assert table.shape == (12, 4)
    user_rows = np.where(x["user"][:, 0] < 6, x["user"][:, 0], 6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tokens[0]), table[user_rows])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tokens[1]), table[7 + np.mod(x["item"][:, 0], 5)])
    hist = keras.ops.convert_to_numpy(tokens[3])
    np.testing.assert_allclose(hist[0], np.zeros(4))  # all padding pools to zeros
    np.testing.assert_allclose(hist[1], (table[7 + 2] + table[7 + 2]) / 2, atol=1e-6)  # 7 mod 5 = 2


def test_registry():
    assert "dcnv2" in backbone_names()
    # Backbones and layers share class names (AFM, PLE, MMoE) but never a serialization name.
    import layers

    for name in layers.__all__:
        assert keras.saving.get_registered_object(f"ctr_zoo>{name}") is getattr(layers, name), name
    for name in backbone_names():
        cls = get_backbone(name)
        assert keras.saving.get_registered_name(cls) == f"ctr_zoo.backbones>{cls.__name__}"
    with pytest.raises(KeyError, match="backbone 'nope': unknown; registered backbones are"):
        get_backbone("nope")


@pytest.mark.parametrize("structure, h_width", [("stacked", 4), ("parallel", 4 * 3 + 2 + 1 + 4)])
def test_dcnv2_shapes_and_parameter_count(structure, h_width):
    model = build("dcnv2", SPEC, structure=structure, **HP)
    x, _ = batch(8)
    assert tuple(model(x)[PRIMARY].shape) == (8, 1)
    assert shared_representation(model).shape == (None, h_width)
    d0 = 4 * 3 + 2 + 1  # user, item, hist (width 4) + wide (width 2) + price
    embeddings = 12 * 4 + 4 * 2
    cross = 2 * (d0 * d0 + d0)
    deep_in = d0 if structure == "parallel" else d0
    deep = deep_in * 8 + 8 + 8 * 4 + 4
    head = h_width + 1
    assert model.count_params() == embeddings + cross + deep + head


def test_dcnv2_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_cross_layers"):
        build("dcnv2", SPEC, num_cross_layers=0)
    with pytest.raises(ValueError, match="structure"):
        build("dcnv2", SPEC, structure="diagonal")


def test_training_steps_lower_the_loss():
    keras.utils.set_random_seed(0)
    model = build("dcnv2", SPEC, **HP)
    compile_model(model, 0.01, None)
    x, y = batch(512, seed=1)
    before = model.evaluate(x, {PRIMARY: y}, verbose=0, return_dict=True)["loss"]
    model.fit(x, {PRIMARY: y}, epochs=5, batch_size=64, verbose=0)
    after = model.evaluate(x, {PRIMARY: y}, verbose=0, return_dict=True)["loss"]
    assert after < before - 0.05


def test_keras_round_trip(tmp_path):
    model = build("dcnv2", SPEC, structure="parallel", cross_rank=3, **HP)
    x, _ = batch(16)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)[PRIMARY]),
                               keras.ops.convert_to_numpy(model(x)[PRIMARY]), atol=1e-6)
    assert loaded.get_layer("backbone").get_config() == model.get_layer("backbone").get_config()


def test_c2al_adds_two_heads_on_h_and_export_is_the_baseline():
    keras.utils.set_random_seed(3)
    base = build("dcnv2", SPEC, **HP)
    wrapped = C2AL(base)
    x, _ = batch(32)
    out = wrapped(x)
    assert sorted(out) == [AUX_HEAD, AUX_TAIL, PRIMARY]
    h_width = shared_representation(base).shape[-1]
    assert wrapped.count_params() == base.count_params() + 2 * (h_width + 1)
    served = primary_model(wrapped)
    assert served.count_params() == base.count_params()
    assert [w.path for w in served.weights] == [w.path for w in base.weights]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(served(x)),
                                  keras.ops.convert_to_numpy(out[PRIMARY]))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(served(x)),
                                  keras.ops.convert_to_numpy(base(x)[PRIMARY]))
    with_mlp = C2AL(build("dcnv2", SPEC, **HP), head_units=[3])
    assert with_mlp.count_params() == base.count_params() + 2 * (h_width * 3 + 3 + 3 + 1)
    with pytest.raises(ValueError, match="tap"):
        C2AL(base, tap="over_arch_output")


def test_c2al_loss_is_weighted_sum_and_lambda_zero_is_baseline():
    keras.utils.set_random_seed(5)
    base = build("dcnv2", SPEC, **HP)
    wrapped = C2AL(base)
    x, y = batch(128, seed=2)
    member_head = (x["user"][:, :1] % 3 == 0).astype("float32")
    member_tail = (x["user"][:, :1] % 3 == 1).astype("float32")
    targets = {PRIMARY: y, AUX_HEAD: y * member_head, AUX_TAIL: y * member_tail}
    compile_model(base, 1e-3, None)
    base_loss = base.evaluate(x, {PRIMARY: y}, batch_size=128, verbose=0, return_dict=True)["loss"]

    compile_model(wrapped, 1e-3, {"lambda_head": 0.0, "lambda_tail": 0.0})
    zero = wrapped.evaluate(x, targets, batch_size=128, verbose=0, return_dict=True)
    assert zero["loss"] == pytest.approx(base_loss, rel=1e-6, abs=1e-7)

    compile_model(wrapped, 1e-3, {"lambda_head": 0.3, "lambda_tail": 0.7})
    weighted = wrapped.evaluate(x, targets, batch_size=128, verbose=0, return_dict=True)
    preds = {k: keras.ops.convert_to_numpy(v) for k, v in wrapped(x).items()}

    def bce(t, p):
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))

    expected = (bce(y, preds[PRIMARY]) + 0.3 * bce(targets[AUX_HEAD], preds[AUX_HEAD])
                + 0.7 * bce(targets[AUX_TAIL], preds[AUX_TAIL]))
    assert weighted["loss"] == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError, match="lambda_head/lambda_tail"):
        loss_weights(-0.1, 0.1)


def test_first_build_in_a_process_starts_from_the_seeded_weights():
    """The same seed gives the same initial weights for the first and later builds of a process
    (importing the backbones, keras_rs included, on the first build must not shift the seeded RNG)."""
    import subprocess
    import sys

    code = (
        "import keras, numpy as np\n"
        "from zoo.spec import load_spec\n"
        "from zoo.model import build\n"
        "spec = load_spec('configs/datasets/synthetic.yaml')\n"
        "def weights():\n"
        "    keras.utils.set_random_seed(0)\n"
        "    return [keras.ops.convert_to_numpy(w) for w in build('dcnv2', spec, dnn_units=[4]).weights]\n"
        "a, b = weights(), weights()\n"
        "print(all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"
