"""The converged training protocol (zoo.protocol): scripted validation curves decide when a run stops,
which epoch's weights it ends with and when the learning rate drops."""

import keras
import numpy as np
import pytest

from zoo import metrics
from zoo.protocol import ExactValidation, Protocol, exact_scores, fit

pytestmark = pytest.mark.multi_backend


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((3,), name="x")
    out = keras.layers.Dense(1, activation="sigmoid", name="primary")(x)
    model = keras.Model({"x": x}, {"primary": out})
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss={"primary": "binary_crossentropy"})
    return model


def data(rows=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)).astype("float32")
    y = (x[:, :1] + 0.3 * rng.normal(size=(rows, 1)) > 0).astype("float32")
    return {"x": x}, y


class Snapshots(keras.callbacks.Callback):
    """The weights after every epoch (before any restore at the end)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])


def scripted(curve, key="val_logloss_exact"):
    """A validation whose monitored metric follows ``curve`` epoch by epoch."""
    values = iter(curve)
    x, y = data(16, seed=1)
    return ExactValidation(x, y, scores=lambda y, p: {key: next(values)})


def run(curve, protocol, key="val_logloss_exact"):
    model = tiny_model()
    x, y = data()
    snapshots = Snapshots()
    result = fit(model, x, {"primary": y}, validation=scripted(curve, key), protocol=protocol,
                 extra_callbacks=[snapshots], batch_size=16, shuffle=True)
    return model, result, snapshots.weights


def same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))


def test_a_plateau_stops_the_run_and_the_best_epochs_weights_are_restored():
    model, result, snapshots = run([0.50, 0.40, 0.45, 0.41, 0.30, 0.20], Protocol(max_epochs=6))
    # epoch 2 is the best; epochs 3 and 4 bring no gain: patience 2 stops after epoch 4
    assert (result.epochs_run, result.best_epoch, result.best_value) == (4, 2, 0.40)
    assert result.stopped_early and not result.hit_cap
    assert same(model.get_weights(), snapshots[1]) and not same(model.get_weights(), snapshots[3])
    # the learning rate is logged before the epoch's plateau check: x0.1 after epoch 3, again after 4
    np.testing.assert_allclose(result.history["lr"], [1e-3, 1e-3, 1e-3, 1e-4], rtol=1e-6)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)), 1e-5, rtol=1e-6)
    assert result.history["val_logloss_exact"] == [0.50, 0.40, 0.45, 0.41]


def test_a_run_cut_by_the_cap_says_so_and_still_ends_with_its_best_weights():
    model, result, snapshots = run([0.50, 0.40, 0.45], Protocol(max_epochs=3))
    assert (result.epochs_run, result.best_epoch) == (3, 2)
    assert result.hit_cap and not result.stopped_early
    assert same(model.get_weights(), snapshots[1]) and not same(model.get_weights(), snapshots[2])


def test_auc_is_maximized_and_min_delta_decides_what_counts_as_a_gain():
    protocol = Protocol(max_epochs=10, monitor="auc", min_delta=0.01)
    model, result, snapshots = run([0.70, 0.75, 0.755, 0.759, 0.90], protocol, key="val_auc_exact")
    assert (result.epochs_run, result.best_epoch, result.best_value) == (4, 2, 0.75)  # +0.005 and +0.009 are no gain
    assert same(model.get_weights(), snapshots[1])


def test_patience_zero_trains_to_the_cap_and_keeps_the_last_weights():
    model, result, snapshots = run([0.5, 0.6, 0.7], Protocol(max_epochs=3, early_stopping_patience=0,
                                                             reduce_lr_factor=1.0))
    assert (result.epochs_run, result.best_epoch, result.hit_cap) == (3, 3, True)
    assert same(model.get_weights(), snapshots[2])
    np.testing.assert_allclose(result.history["lr"], [1e-3] * 3, rtol=1e-6)


def test_the_exact_metrics_are_the_full_split_auc_log_loss_and_ne_of_the_primary_head():
    model = tiny_model()
    x, y = data()
    xv, yv = data(200, seed=3)
    result = fit(model, x, {"primary": y}, validation=(xv, yv), protocol=Protocol(max_epochs=2), batch_size=16)
    p = np.asarray(model.predict(xv, verbose=0)["primary"]).ravel()
    # the restored epoch's metrics are the model's metrics now
    epoch = result.best_epoch - 1
    assert result.history["val_auc_exact"][epoch] == pytest.approx(metrics.auc(yv, p), abs=1e-6)
    assert result.history["val_logloss_exact"][epoch] == pytest.approx(metrics.log_loss(yv, p), rel=1e-5)
    assert result.history["val_ne_exact"][epoch] == pytest.approx(metrics.normalized_entropy(yv, p), rel=1e-5)
    assert exact_scores(np.array([0, 1, 1, 0]), np.array([0.2, 0.8, 0.6, 0.4]))["val_auc_exact"] == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"max_epochs": 0}, "max_epochs: must be a positive int"),
    ({"early_stopping_patience": -1}, "early_stopping_patience: must be an int >= 0"),
    ({"reduce_lr_factor": 0.0}, r"reduce_lr_factor: must be a number in \(0, 1\]"),
    ({"reduce_lr_factor": 1.5}, r"reduce_lr_factor: must be a number in \(0, 1\]"),
    ({"monitor": "accuracy"}, "monitor: must be one of"),
    ({"min_delta": "0"}, "min_delta: must be a number >= 0"),
])
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match="^" + message):
        Protocol(**kwargs)
    with pytest.raises(ValueError, match="^training." + message):
        Protocol.from_mapping(kwargs, "training")


def test_the_protocol_owns_the_epochs_and_the_callbacks():
    model = tiny_model()
    x, y = data()
    with pytest.raises(ValueError, match="fit: 'epochs' is set by the protocol"):
        fit(model, x, {"primary": y}, validation=(x, y), protocol=Protocol(), epochs=3)


@pytest.mark.tf_only
def test_a_fit_cut_by_an_error_leaves_tensorboard_summaries_working(tmp_path):
    """An error mid-epoch (a corrupt shard) ends the TensorBoard callback too: later tf.summary writes
    in the same process still reach their event file."""
    import glob

    import tensorflow as tf

    class Fails(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                raise tf.errors.DataLossError(None, None, "corrupted record")

    x, y = data()
    board = keras.callbacks.TensorBoard(str(tmp_path / "tb"), update_freq=100)
    with pytest.raises(tf.errors.DataLossError):
        fit(tiny_model(), x, {"primary": y}, validation=scripted([0.5]), protocol=Protocol(max_epochs=2),
            extra_callbacks=[Fails(), board], batch_size=16)
    writer = tf.summary.create_file_writer(str(tmp_path / "after"))
    with writer.as_default(step=3):
        tf.summary.scalar("written", 1.0)
    writer.flush()
    (events,) = glob.glob(str(tmp_path / "after" / "events.out.tfevents.*"))
    tags = [(v.tag, e.step) for e in tf.compat.v1.train.summary_iterator(events) for v in e.summary.value]
    assert tags == [("written", 3)]


@pytest.mark.tf_only
def test_an_error_before_training_begins_is_raised_as_it_is_with_tensorboard_attached(tmp_path):
    """``model.fit`` rejects an argument it does not know before any callback begins: that error
    reaches the caller, not one from ending a TensorBoard callback that never started."""
    x, y = data()
    board = keras.callbacks.TensorBoard(str(tmp_path / "tb"), update_freq=100)
    with pytest.raises(TypeError, match="unexpected keyword argument 'not_a_fit_argument'"):
        fit(tiny_model(), x, {"primary": y}, validation=scripted([0.5]), protocol=Protocol(max_epochs=2),
            extra_callbacks=[board], batch_size=16, not_a_fit_argument=1)


def test_array_fits_take_one_pass_per_epoch_and_repeat_with_the_seed():
    """64 rows, batch 16: 4 steps every epoch on either backend (on TensorFlow from one in-memory
    pipeline for the whole fit), and the same global seed gives bit-identical weights."""
    class Steps(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.per_epoch = []

        def on_epoch_begin(self, epoch, logs=None):
            self.per_epoch.append(0)

        def on_train_batch_end(self, batch, logs=None):
            self.per_epoch[-1] += 1

    weights = []
    for _ in range(2):
        model = tiny_model()
        x, y = data()
        steps = Steps()
        fit(model, x, {"primary": y}, validation=data(16, seed=1), protocol=Protocol(max_epochs=3,
            early_stopping_patience=0), extra_callbacks=[steps], batch_size=16, shuffle=True)
        assert steps.per_epoch == [4, 4, 4]
        weights.append(model.get_weights())
    assert same(*weights)


def test_array_inputs_become_one_pipeline_on_tensorflow_only():
    from zoo.protocol import fit_inputs

    x, y = data(50)
    out_x, out_y, kwargs = fit_inputs(x, {"primary": y}, {"batch_size": 16, "shuffle": True})
    if keras.backend.backend() != "tensorflow":
        assert out_x is x and kwargs == {"batch_size": 16, "shuffle": True}
        return
    assert out_y is None and kwargs == {"steps_per_epoch": 4, "shuffle": False}  # ceil(50 / 16); it shuffles
    sizes = [len(b[1]["primary"]) for b in out_x.take(8).as_numpy_iterator()]
    assert sizes == [16, 16, 16, 2, 16, 16, 16, 2]
    # What Keras alone handles stays with Keras: other options, or data that is already a pipeline.
    assert fit_inputs(x, y, {"batch_size": 16, "validation_split": 0.1})[0] is x
    assert fit_inputs(x, y, {"batch_size": 16, "shuffle": "batch"})[0] is x


def test_predict_primary_equals_model_predict_with_a_partial_last_slice():
    from zoo.protocol import predict_primary

    model = tiny_model()
    x, _ = data(37)
    expected = np.asarray(model.predict(x, batch_size=37, verbose=0)["primary"]).ravel()
    np.testing.assert_allclose(predict_primary(model, x, batch_size=16), expected, rtol=1e-6, atol=1e-7)
