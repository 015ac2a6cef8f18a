"""Pins the behaviour the zoo takes from private Keras APIs (zoo.compat), on both backends."""

import keras
import numpy as np
import pytest

from zoo import compat

pytestmark = pytest.mark.multi_backend


class _Inner(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.d1 = keras.layers.Dense(3, name="d1")
        self.d2 = keras.layers.Dense(2, name="d2")

    def call(self, x):
        return self.d2(self.d1(x))


class _Outer(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = _Inner(name="inner")
        self.extra = keras.layers.Dense(1, name="extra")

    def call(self, x):
        return self.extra(self.inner(x))


def test_sublayers_finds_every_nested_layer_and_direct_sublayers_are_the_children():
    outer = _Outer(name="outer")
    outer(np.zeros((1, 4), "float32"))
    # The zoo relies on membership (every nested layer once), not on the order of siblings.
    names = [x.name for x in compat.sublayers(outer)]
    assert sorted(names) == ["d1", "d2", "extra", "inner"] and names[0] == "inner"
    assert [x.name for x in compat.sublayers(outer, include_self=True)][0] == "outer"
    assert [x.name for x in compat.sublayers(outer, recursive=False)] == ["inner", "extra"]
    assert [x.name for x in compat.direct_sublayers(outer)] == ["inner", "extra"]


def test_replace_tracked_layer_moves_the_weights_to_the_new_layer():
    outer = _Outer(name="outer")
    outer(np.zeros((1, 4), "float32"))
    new = keras.layers.Dense(1, name="new")
    new.build((None, 2))
    compat.replace_tracked_layer(outer, outer.extra, new)
    assert [x.name for x in compat.direct_sublayers(outer)] == ["inner", "new"]
    # 4*3+3 + 3*2+2 + (the new layer's) 2*1+1 weights; the old layer's are gone.
    assert sum(int(np.prod(w.shape)) for w in outer.weights) == 15 + 8 + 3


def test_compute_output_spec_traces_symbolically_and_builds():
    dense = keras.layers.Dense(5)
    out = compat.compute_output_spec(lambda x: dense(x) * 2, keras.KerasTensor((None, 3)))
    assert isinstance(out, keras.KerasTensor) and tuple(out.shape) == (None, 5)
    assert dense.built and tuple(dense.kernel.shape) == (3, 5)


def test_recording_calls_sees_each_result_of_the_layers_pass_and_restores_the_attribute():
    from layers import MLP

    mlp = MLP([3, 2], activation="relu", name="mlp")
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    expected = keras.ops.convert_to_numpy(mlp(x))
    relu, outputs = mlp.activation, []
    with compat.recording_calls(mlp, "activation", lambda out: outputs.append(keras.ops.convert_to_numpy(out))):
        got = keras.ops.convert_to_numpy(mlp(x))
    # One result per dense layer, in order, the last being the layer's output; the pass is unchanged.
    assert [o.shape for o in outputs] == [(4, 3), (4, 2)]
    np.testing.assert_allclose(outputs[-1], expected, rtol=1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert mlp.activation is relu and vars(mlp)["activation"] is relu
    mlp(x)
    assert len(outputs) == 2  # nothing is recorded after the block

    # A method (a class attribute) is shadowed and then shows through again, also after an error.
    dense = keras.layers.Dense(2)
    seen = []
    with pytest.raises(RuntimeError, match="stop"):
        with compat.recording_calls(dense, "compute_output_shape", seen.append):
            assert dense.compute_output_shape((None, 3)) == (None, 2) and seen == [(None, 2)]
            raise RuntimeError("stop")
    assert "compute_output_shape" not in vars(dense)
    with pytest.raises(TypeError, match="'units' of Dense is not callable"):
        with compat.recording_calls(dense, "units", seen.append):
            pass
