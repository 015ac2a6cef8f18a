"""The converged training protocol: one implementation for ``zoo.train``, the C2AL study and the BARS check.

A run trains with ``model.fit`` until the validation metric stops improving, never for a fixed
number of epochs that may leave a model half-trained:

1. after every epoch the **exact** validation metric of the primary head is computed on the whole
   validation split (:class:`ExactValidation`: AUC by ranks, log loss and NE from
   :mod:`zoo.metrics`, not ``keras.metrics.AUC``'s thresholded estimate) and written into the
   epoch logs as ``val_auc_exact``, ``val_logloss_exact`` and ``val_ne_exact``;
2. ``keras.callbacks.ReduceLROnPlateau`` multiplies the learning rate by ``reduce_lr_factor`` after
   ``reduce_lr_patience`` epochs without a gain of at least ``min_delta`` (floor
   ``min_learning_rate``);
3. ``keras.callbacks.EarlyStopping`` stops after ``early_stopping_patience`` epochs without a gain
   and restores the best epoch's weights;
4. ``max_epochs`` caps the run. A run that reaches the cap was still improving: its best weights are
   restored too (Keras restores only on an early stop) and :class:`FitResult` says ``hit_cap``, so a
   study can report how many runs the cap cut short (it should be none).

``monitor`` is ``"logloss"`` (minimized; the same selection as NE on a fixed split, the metric the
C2AL study reports) or ``"auc"`` (maximized; the BARS protocol of ``bench/quality_frappe.py``).
``early_stopping_patience: 0`` turns early stopping and the best-weight restore off (every epoch up
to the cap is trained; the tiny test configs), and ``reduce_lr_factor: 1.0`` turns the learning-rate
schedule off.

    >>> protocol = Protocol(max_epochs=30, monitor="logloss")
    >>> result = fit(model, train_x, train_y, validation=(valid_x, valid_y), protocol=protocol,
    ...              batch_size=1024)                                            # doctest: +SKIP
    >>> result.best_epoch, result.epochs_run, result.hit_cap                    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from zoo import metrics
from zoo.checkpoint import Checkpoint, EpochBoundary, ResumeCallback
from zoo.optimizers import PaperAdam

# Adam's epsilon for every training path of the zoo: PyTorch's default 1e-8 rather than Keras' 1e-7.
# Embedding rows start near zero (N(0, 1e-4)) and a rare id's gradients are tiny, so (our reading, not
# measured) sqrt(v) can come near 1e-7 and Keras' epsilon would shrink their steps; on Frappe_x1 the PyTorch
# epsilons (this and layers.MLP's batch-norm epsilon) lowered test logloss by about 0.01
# (bench/results/quality_frappe_epsilons.md).
ADAM_EPSILON = 1e-8

# Adam's step: ``keras`` (keras.optimizers.Adam, the default) or ``paper`` (zoo.optimizers.PaperAdam:
# epsilon after the bias correction, as PyTorch; no effect on Frappe_x1 DeepFM over 5 seeds,
# bench/results/quality_frappe_paper_adam.md).
ADAM_STEPS = ("keras", "paper")


def adam(learning_rate: float, global_clipnorm: float | None = None, step: str = "keras") -> keras.optimizers.Adam:
    """The zoo's optimizer: Adam with :data:`ADAM_EPSILON`; ``step`` picks the form of its update
    (:data:`ADAM_STEPS`: ``keras.optimizers.Adam`` or :class:`zoo.optimizers.PaperAdam`)."""
    if step not in ADAM_STEPS:
        raise ValueError(f"adam: step must be one of {ADAM_STEPS}, got {step!r}")
    cls = PaperAdam if step == "paper" else keras.optimizers.Adam
    return cls(learning_rate, epsilon=ADAM_EPSILON, global_clipnorm=global_clipnorm)


MONITORS = {"logloss": "min", "auc": "max"}
PRIMARY = "primary"  # the primary output's name (zoo.model.PRIMARY)


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value: Any, low: float, high: float = math.inf) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The protocol's settings; see the module docstring. Every field is checked on construction.

    Attributes:
      max_epochs: the epoch cap (a positive int).
      early_stopping_patience: epochs without a gain before stopping; 0 = no early stopping.
      reduce_lr_factor: learning-rate factor on a plateau, in (0, 1]; 1 = off.
      reduce_lr_patience: epochs without a gain before the learning rate is reduced (>= 1).
      min_learning_rate: the floor of the schedule.
      min_delta: the smallest change of the monitored metric that counts as a gain.
      monitor: ``"logloss"`` or ``"auc"`` of the primary head on the validation split.
    """

    max_epochs: int = 30
    early_stopping_patience: int = 2
    reduce_lr_factor: float = 0.1
    reduce_lr_patience: int = 1
    min_learning_rate: float = 1e-6
    min_delta: float = 1e-6
    monitor: str = "logloss"

    def __post_init__(self):
        checks = {
            "max_epochs": (_is_int(self.max_epochs, 1), "a positive int"),
            "early_stopping_patience": (_is_int(self.early_stopping_patience, 0), "an int >= 0"),
            "reduce_lr_factor": (_is_number(self.reduce_lr_factor, 0.0, 1.0) and self.reduce_lr_factor > 0,
                                 "a number in (0, 1]"),
            "reduce_lr_patience": (_is_int(self.reduce_lr_patience, 1), "an int >= 1"),
            "min_learning_rate": (_is_number(self.min_learning_rate, 0.0), "a number >= 0"),
            "min_delta": (_is_number(self.min_delta, 0.0), "a number >= 0"),
            "monitor": (self.monitor in MONITORS, f"one of {sorted(MONITORS)}"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"{name}: must be {expected}, got {getattr(self, name)!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], where: str = "protocol") -> "Protocol":
        """The protocol keys of a mapping (other keys ignored: a training block also holds the batch
        size and learning rate); errors name ``where`` and the key."""
        try:
            return cls(**{k: options[k] for k in cls.names() if k in options})
        except ValueError as err:
            raise ValueError(f"{where}.{err}") from None

    @property
    def log_key(self) -> str:
        """The epoch-log key the callbacks monitor, e.g. ``val_logloss_exact``."""
        return f"val_{self.monitor}_exact"

    @property
    def mode(self) -> str:
        return MONITORS[self.monitor]


@dataclasses.dataclass
class FitResult:
    """What one protocol run did.

    Attributes:
      epochs_run: epochs trained.
      best_epoch: the 1-based epoch whose weights the model holds at the end.
      best_value: the monitored validation metric at ``best_epoch``.
      hit_cap: the run trained ``max_epochs`` epochs without an early stop (it may not have converged).
      stopped_early: early stopping ended the run.
      seconds: wall time of ``model.fit`` (validation included).
      history: per epoch: ``val_auc_exact``, ``val_logloss_exact``, ``val_ne_exact``, ``lr`` and the
        training losses Keras logged.
    """

    epochs_run: int
    best_epoch: int
    best_value: float
    hit_cap: bool
    stopped_early: bool
    seconds: float
    history: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def primary_probabilities(output: Any) -> np.ndarray:
    """The primary head's probabilities ``(N,)`` of a ``predict`` result (dict or array)."""
    if isinstance(output, Mapping):
        output = output[PRIMARY]
    return np.asarray(output, dtype=np.float64).ravel()


def exact_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """``val_auc_exact``, ``val_logloss_exact`` and ``val_ne_exact`` of labels ``y`` and probabilities ``p``."""
    y = np.asarray(y, dtype=np.float64).ravel()
    return {"val_auc_exact": metrics.auc(y, p), "val_logloss_exact": metrics.log_loss(y, p),
            "val_ne_exact": metrics.normalized_entropy(y, p)}


def predict_batch(model: keras.Model, x: Any) -> Any:
    """``model.predict_on_batch(x)``, except under a TensorFlow strategy of several replicas
    (``zoo.distribution``'s ``mirrored``), where ``predict_on_batch`` feeds every replica the whole
    batch and returns their outputs concatenated: there ``model.predict`` splits the batch."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        rows = len(keras.tree.flatten(x)[0])
        return model.predict(x, batch_size=rows, verbose=0)
    return model.predict_on_batch(x)


def predict_primary(model: keras.Model, x: Any, batch_size: int) -> np.ndarray:
    """The primary head's probabilities ``(N,)`` on array inputs, one ``predict_on_batch`` per slice of
    ``batch_size`` rows: no input pipeline is built (``model.predict`` builds and tears down a tf.data
    iterator per call on TensorFlow, the teardown that stalled epoch starts in ``model.fit``)."""
    rows = len(keras.tree.flatten(x)[0])
    return np.concatenate([
        primary_probabilities(predict_batch(model, keras.tree.map_structure(lambda a: a[i:i + batch_size], x)))
        for i in range(0, rows, batch_size)])


class ExactValidation(keras.callbacks.Callback):
    """Writes the exact validation metrics of the primary head into the epoch logs.

    It must come before the callbacks that read them (:func:`callbacks` puts it first; Keras passes
    one logs dict through the callback list in order).

    Args:
      x: validation inputs (what ``model.predict`` takes: a dict of arrays).
      y: validation labels ``(N,)`` or ``(N, 1)``.
      batch_size: prediction batch size.
      scores: ``(y, p) -> {log key: value}``; defaults to :func:`exact_scores` (tests script a curve).
    """

    def __init__(self, x: Any, y: np.ndarray, batch_size: int = 8192,
                 scores: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] = exact_scores):
        super().__init__()
        self.x, self.y, self.batch_size, self.scores = x, np.asarray(y), int(batch_size), scores

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        p = predict_primary(self.model, self.x, self.batch_size)
        logs.update({k: float(v) for k, v in self.scores(self.y, p).items()})
        logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def callbacks(protocol: Protocol, validation: ExactValidation) -> list[keras.callbacks.Callback]:
    """``[validation, ReduceLROnPlateau?, EarlyStopping?]`` configured by ``protocol``."""
    out: list[keras.callbacks.Callback] = [validation]
    monitor = dict(monitor=protocol.log_key, mode=protocol.mode, min_delta=protocol.min_delta)
    if protocol.reduce_lr_factor < 1.0:
        out.append(keras.callbacks.ReduceLROnPlateau(factor=protocol.reduce_lr_factor,
                                                     patience=protocol.reduce_lr_patience,
                                                     min_lr=protocol.min_learning_rate, **monitor))
    if protocol.early_stopping_patience > 0:
        out.append(keras.callbacks.EarlyStopping(patience=protocol.early_stopping_patience,
                                                 restore_best_weights=True, **monitor))
    return out


_ARRAY_FIT_KEYS = {"batch_size", "shuffle", "sample_weight", "initial_epoch"}


def fit_inputs(x: Any, y: Any, fit_kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """What :func:`fit` hands ``model.fit``: on TensorFlow, array inputs become one endless in-memory
    dataset for the whole fit, returned as ``(dataset, None, fit_kwargs with steps_per_epoch)``.

    Keras turns arrays into a tf.data pipeline and builds a fresh iterator every epoch; tearing the
    previous one down stalls TensorFlow for seconds at some epoch starts. :func:`zoo.batches.memory_batches`
    with ``steps_per_epoch`` = one pass serves every epoch from one iterator, each pass a permutation
    of every row (seeded from NumPy's global generator, so ``keras.utils.set_random_seed`` fixes the
    order). Other backends, datasets, and fits with options beyond batch size, shuffle, sample weights
    and the initial epoch are passed to Keras unchanged.
    """
    leaves = keras.tree.flatten(x) if x is not None else []
    arrays = bool(leaves) and all(isinstance(a, np.ndarray) for a in leaves)
    if (keras.backend.backend() != "tensorflow" or y is None or not arrays
            or not set(fit_kwargs) <= _ARRAY_FIT_KEYS or fit_kwargs.get("shuffle", True) not in (True, False)):
        return x, y, fit_kwargs
    from zoo.batches import memory_batches  # TensorFlow: installed whenever it is the backend

    kwargs = dict(fit_kwargs)
    batch_size = int(kwargs.pop("batch_size", None) or 32)
    shuffle = bool(kwargs.pop("shuffle", True))
    weights = kwargs.pop("sample_weight", None)
    columns = (x, y) if weights is None else (x, y, weights)
    kwargs.update(steps_per_epoch=-(-len(leaves[0]) // batch_size), shuffle=False)  # the pipeline shuffles
    seed = int(np.random.randint(2 ** 31 - 1))
    return memory_batches(columns, batch_size, seed=seed, shuffle=shuffle), None, kwargs


class _TrainBegan(keras.callbacks.Callback):
    """Records that ``model.fit`` called ``on_train_begin`` (the callbacks before it began)."""

    def __init__(self):
        super().__init__()
        self.began = False

    def on_train_begin(self, logs=None):
        self.began = True


def _checkpointed(checkpoint: Checkpoint, protocol: Protocol, protocol_callbacks: Sequence[keras.callbacks.Callback],
                  fit_callbacks: list[keras.callbacks.Callback], x: Any, y: Any, fit_kwargs: dict[str, Any]):
    """The tracking callback, the callback list ``[EpochBoundary, *fit_callbacks, ResumeCallback]`` and
    the fit arguments (``initial_epoch`` of a resume) of a checkpointed fit."""
    epoch_steps = fit_kwargs.get("steps_per_epoch")
    if y is not None or not epoch_steps or "initial_epoch" in fit_kwargs:
        raise ValueError("fit: a checkpointed fit takes an endless dataset in x (y None) and steps_per_epoch, "
                         "and sets initial_epoch itself")
    pick = lambda cls: next((c for c in protocol_callbacks if isinstance(c, cls)), None)  # noqa: E731
    boundary = EpochBoundary()
    tracker = ResumeCallback(checkpoint, int(epoch_steps), protocol.max_epochs, boundary,
                             pick(keras.callbacks.EarlyStopping), pick(keras.callbacks.ReduceLROnPlateau))
    kwargs = dict(fit_kwargs)
    if checkpoint.restored is not None:
        kwargs["initial_epoch"] = checkpoint.restored.state.epochs
    return tracker, [boundary, *fit_callbacks, tracker], kwargs


def fit(model: keras.Model, x: Any, y: Any = None, *, validation: tuple[Any, np.ndarray] | ExactValidation,
        protocol: Protocol, extra_callbacks: Sequence[keras.callbacks.Callback] = (), verbose: Any = 0,
        checkpoint: Checkpoint | None = None, **fit_kwargs: Any) -> FitResult:
    """Trains ``model`` under ``protocol``; the model ends with its best epoch's weights.

    Args:
      model: a compiled model whose primary output is ``"primary"`` (or its only output).
      x, y: what ``model.fit`` takes (arrays, or a dataset in ``x`` with ``y`` None).
      validation: ``(x_valid, y_valid)`` or a ready :class:`ExactValidation`.
      protocol: the :class:`Protocol`.
      extra_callbacks: run after the protocol's (e.g. TensorBoard, which then logs the exact metrics).
      verbose: ``model.fit``'s verbosity.
      checkpoint: a :class:`zoo.checkpoint.Checkpoint`: checkpoint the fit and, when it holds a
        restored checkpoint, continue from it (``x`` must then be an endless dataset that starts at
        :attr:`~zoo.checkpoint.Checkpoint.start_step` and ``steps_per_epoch`` must be given; see
        :mod:`zoo.checkpoint`). None (the default): no checkpoints, the fit as before.
      **fit_kwargs: passed to ``model.fit`` (``batch_size``, ``shuffle``, ``sample_weight``,
        ``steps_per_epoch``, ...); ``epochs``, ``callbacks`` and ``validation_data`` are the protocol's.
        On TensorFlow, arrays with only ``batch_size``, ``shuffle``, ``sample_weight`` or
        ``initial_epoch`` train from one in-memory pipeline for every epoch (:func:`fit_inputs`).
    """
    clash = sorted({"epochs", "callbacks", "validation_data"} & set(fit_kwargs))
    if clash:
        raise ValueError(f"fit: '{clash[0]}' is set by the protocol")
    x, y, fit_kwargs = fit_inputs(x, y, fit_kwargs)
    if not isinstance(validation, ExactValidation):
        x_valid, y_valid = validation
        validation = ExactValidation(x_valid, y_valid, batch_size=max(8192, int(fit_kwargs.get("batch_size") or 0)))
    protocol_callbacks = callbacks(protocol, validation)
    stopper = next((c for c in protocol_callbacks if isinstance(c, keras.callbacks.EarlyStopping)), None)
    start = time.time()
    began = _TrainBegan()  # after the extra callbacks: once it has begun, every TensorBoard has too
    fit_callbacks: list[keras.callbacks.Callback] = [*protocol_callbacks, *extra_callbacks, began]
    tracker = None
    if checkpoint is not None:
        tracker, fit_callbacks, fit_kwargs = _checkpointed(checkpoint, protocol, protocol_callbacks, fit_callbacks,
                                                           x, y, fit_kwargs)
    try:
        if tracker is not None and checkpoint.restored is not None and checkpoint.restored.state.finished:
            tracker.restore_model(model)  # the fit had ended: its final state, nothing left to train
            tracker.restore_callbacks(model)
        else:
            history = model.fit(x, y, epochs=protocol.max_epochs, callbacks=fit_callbacks, verbose=verbose,
                                **fit_kwargs)
    except BaseException:
        # Keras ends callbacks only after a finished fit: a TensorBoard callback interrupted by an error
        # (a corrupt shard mid-epoch) would keep its summary writer and recording condition as this
        # thread's defaults, and every later tf.summary call in the process would write nothing. An
        # error before training began (the data adapter) left nothing to end.
        for callback in extra_callbacks if began.began else ():
            if isinstance(callback, keras.callbacks.TensorBoard):
                callback.on_train_end()
        raise
    seconds = time.time() - start
    if tracker is not None:  # every epoch of the run, the ones before a resume included
        seconds = tracker.seconds
        logs = {k: list(values) for k, values in tracker.history.items()}
    else:
        logs = {k: [float(v) for v in values] for k, values in history.history.items()}
    curve = logs[protocol.log_key]
    epochs_run = len(curve)
    stopped_early = bool(stopper is not None and stopper.stopped_epoch > 0)
    if stopper is not None:
        best_index = int(stopper.best_epoch)
        if stopper.best_weights is not None:  # set here too, whatever rule the Keras version restores by
            model.set_weights(stopper.best_weights)
    else:
        best_index = epochs_run - 1  # no early stopping: the last epoch's weights are kept
    return FitResult(epochs_run=epochs_run, best_epoch=best_index + 1, best_value=curve[best_index],
                     hit_cap=not stopped_early and epochs_run == protocol.max_epochs,
                     stopped_early=stopped_early, seconds=round(seconds, 2), history=logs)

