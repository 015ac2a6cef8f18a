"""zoo.optimizers.PaperAdam: Adam's step as Algorithm 1 of arXiv 1412.6980 / torch.optim.Adam, against NumPy."""

import keras
import numpy as np
import pytest

import zoo.optimizers
from layer_checks import check_docstring_examples
from zoo.model import load_model
from zoo.optimizers import PaperAdam
from zoo.protocol import ADAM_EPSILON, adam

pytestmark = pytest.mark.multi_backend

LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-8
# Gradients from 1e-10 (far below epsilon, where the two forms of Adam part) to 1 (where they agree).
GRADIENTS = np.array([[1e-10, -3e-9, 2e-8, 0.5],
                      [2e-10, -1e-9, -4e-8, 0.25],
                      [5e-11, 4e-9, 1e-8, -1.0]], dtype="float64")


def numpy_adam(grads, paper_form: bool):
    """Adam from its definition; ``paper_form``: eps after the bias correction (PyTorch), else Keras' form."""
    theta = np.zeros(grads.shape[1])
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        if paper_form:
            theta = theta - LR * (m / (1 - B1 ** t)) / (np.sqrt(v / (1 - B2 ** t)) + EPS)
        else:
            theta = theta - LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t) * m / (np.sqrt(v) + EPS)
    return theta


def run(optimizer, grads, dtype="float32"):
    w = keras.Variable(np.zeros(grads.shape[1], dtype), dtype=dtype)
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g.astype(dtype))], [w])
    return np.asarray(w, dtype="float64")


def test_steps_equal_the_paper_form_and_not_keras_form():
    got = run(PaperAdam(LR, beta_1=B1, beta_2=B2, epsilon=EPS), GRADIENTS)
    np.testing.assert_allclose(got, numpy_adam(GRADIENTS, paper_form=True), rtol=1e-4, atol=1e-12)
    # Keras' own Adam is the other form: on the tiny gradients the two differ severalfold ...
    keras_adam = run(keras.optimizers.Adam(LR, beta_1=B1, beta_2=B2, epsilon=EPS), GRADIENTS)
    np.testing.assert_allclose(keras_adam, numpy_adam(GRADIENTS, paper_form=False), rtol=1e-4, atol=1e-12)
    assert np.all(np.abs(got[:3]) > 2 * np.abs(keras_adam[:3]))
    # ... and agree where |g| >> eps.
    np.testing.assert_allclose(got[3], keras_adam[3], rtol=1e-4)


def test_embedding_gradients_through_fit_equal_numpy():
    # An Embedding's gradient reaches the optimizer as IndexedSlices on TensorFlow; rows not looked up
    # get a zero gradient and still move by their momentum, as torch.optim.Adam on a dense gradient.
    keras.utils.set_random_seed(0)
    table = np.array([[0.5], [-0.25], [1.0]], "float32")
    ids = keras.Input((1,), dtype="int32")
    out = keras.layers.Flatten()(keras.layers.Embedding(3, 1, embeddings_initializer=keras.initializers.Constant(table))(ids))
    model = keras.Model(ids, out)
    model.compile(optimizer=PaperAdam(LR, beta_1=B1, beta_2=B2, epsilon=EPS), loss="mse")
    x = np.array([[0], [1]], "int32")           # steps on rows 0 and 1, then on row 0 only
    y = np.zeros((2, 1), "float32")
    model.train_on_batch(x, y)
    model.train_on_batch(x[:1], y[:1])
    # d mse / d e: batch 1 (rows 0, 1): 2 e_i / 2 = e_i; batch 2 (row 0): 2 e_0.
    e = table[:, 0].astype("float64")
    g1 = np.array([e[0], e[1], 0.0])
    m = (1 - B1) * g1
    v = (1 - B2) * g1 ** 2
    theta1 = e - LR * (m / (1 - B1)) / (np.sqrt(v / (1 - B2)) + EPS)
    g2 = np.array([2 * theta1[0], 0.0, 0.0])
    m = B1 * m + (1 - B1) * g2
    v = B2 * v + (1 - B2) * g2 ** 2
    theta2 = theta1 - LR * (m / (1 - B1 ** 2)) / (np.sqrt(v / (1 - B2 ** 2)) + EPS)
    np.testing.assert_allclose(np.asarray(model.get_weights()[0])[:, 0], theta2, rtol=1e-5)


def test_protocol_adam_steps():
    opt = adam(1e-3, global_clipnorm=10.0, step="paper")
    assert type(opt) is PaperAdam
    assert opt.epsilon == ADAM_EPSILON and opt.global_clipnorm == 10.0
    assert type(adam(1e-3)) is keras.optimizers.Adam and adam(1e-3).epsilon == ADAM_EPSILON
    with pytest.raises(ValueError, match="step must be one of"):
        adam(1e-3, step="torch")


def test_config_and_keras_round_trip(tmp_path):
    opt = PaperAdam(3e-4, beta_1=0.8, epsilon=1e-9, global_clipnorm=5.0)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is PaperAdam
    assert (again.beta_1, again.epsilon, again.global_clipnorm) == (0.8, 1e-9, 5.0)
    x = keras.Input((2,))
    model = keras.Model(x, keras.layers.Dense(1)(x))
    model.compile(optimizer=opt, loss="mse")
    model.train_on_batch(np.ones((4, 2), "float32"), np.ones((4, 1), "float32"))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = load_model(path, compile=True)   # no custom_objects
    assert type(loaded.optimizer) is PaperAdam
    assert int(loaded.optimizer.iterations) == 1


def test_amsgrad_is_refused():
    with pytest.raises(ValueError, match="amsgrad"):
        PaperAdam(1e-3, amsgrad=True)


def test_docstring_example():
    check_docstring_examples(zoo.optimizers)
