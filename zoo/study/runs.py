"""One training run of the study: a baseline or a C2AL variant, paired by seed, under the protocol.

Pairing: for a seed, every variant starts from the same initial weights of the shared path (the
backbone and the primary head are built first, right after ``keras.utils.set_random_seed(seed)``;
auxiliary heads are created after them) and sees the same data order and dropout masks (the random
state is reset to the seed again right before ``fit``). So with ``lambda = 0`` a C2AL run computes the
baseline's updates and ends with its metrics (``tests/test_study.py`` checks it), and a difference the
study reports is the method's, not the noise of another path. (The ``ple_towers`` ablation builds
extra experts in between: its initial weights differ.)

The served-tower variants (:data:`VARIANTS` entries with a ``method``: ``cohort_heads``,
``gradient_aggregation``, ``d_train``) build :func:`zoo.cohort_heads.build_cohort_heads` (D-Train:
:func:`zoo.d_train.build_d_train`) with the same seeding, so their backbone starts from the baseline's
initial weights too; their routing feature is added to the inputs (:func:`input_names`).
Gradient Aggregation's prior is computed on the training split (users from ``spec.user_id``);
D-Train runs its three phases, each one protocol fit.

Runs train from NumPy arrays (the Beam job's TFRecords read back once, ``bench/c2al_study.py
prepare``), so they need Keras only and run under JAX too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import keras
import numpy as np

from zoo import c2al as c2al_lib
from zoo import cohort_heads as ch
from zoo import crocodile
from zoo import d_train as dt
from zoo import gradient_aggregation as ga
from zoo import metrics
from zoo.encoder import embedding_options
from zoo.losses import loss_options
from zoo.model import PRIMARY, build
from zoo.precision import dtype_policy_scope
from zoo.protocol import FitResult, Protocol, fit, primary_probabilities
from zoo.spec import COHORT_KEY_PREFIX, FeatureSpec
from zoo.study.variants import BASELINE, VARIANTS

@dataclasses.dataclass(frozen=True)
class Run:
    """What one run trains: ``variant`` (``baseline`` or a :data:`VARIANTS` name), its lambda
    (``lambda_head = lambda_tail``), C2AL head options (``head_units``, ``tap``) and the seed."""

    variant: str
    seed: int
    lam: float = 0.0
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """A stable id, e.g. ``c2al|lambda=0.3|seed=1`` or ``c2al|lambda=0.3|tap=interaction_output|seed=0``."""
        lam = self.variant != BASELINE and self.method is None
        parts = [self.variant] + ([f"lambda={self.lam:g}"] if lam else [])
        parts += [f"{k}={_text(v)}" for k, v in self.options]
        return "|".join(parts + [f"seed={self.seed}"])

    @property
    def method(self) -> str | None:
        """The :mod:`zoo.cohort_heads` method of a served-tower variant, else None."""
        return None if self.variant == BASELINE else VARIANTS[self.variant].method

    @property
    def config_key(self) -> str:
        """:attr:`key` without the seed: the runs of one configuration."""
        return self.key.rsplit("|seed=", 1)[0]

    def c2al_options(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """The model YAML's ``c2al`` block with this run's ablation and head options."""
        return c2al_lib.c2al_options({**base, "ablation": VARIANTS[self.variant].ablation,
                                      **{k: _value(v) for k, v in self.options}})


def _heads(run: Run) -> bool:
    return run.variant != BASELINE and VARIANTS[run.variant].heads


def crocodile_embedding(embedding: Mapping[str, Any], spec: FeatureSpec) -> dict[str, Any]:
    """The ``crocodile`` variant's embedding: the gate's priors are the user id and the C2AL cohort
    axis's feature, those of them that are id inputs of the model (none: no gate)."""
    ids = {f.name for f in spec.inputs if f.kind != "dense"}
    axis = spec.c2al.get("axis") if spec.c2al else None
    candidates = [spec.user_id] + ([spec.axis(axis).feature] if axis else [])
    priors = [f for f in dict.fromkeys(candidates) if f in ids]
    return embedding_options(crocodile.study_embedding(embedding, priors))


EMBEDDINGS = {"crocodile": crocodile_embedding}


def run_embedding(model_cfg: Mapping[str, Any], spec: FeatureSpec, run: Run) -> dict[str, Any]:
    """The embedding options of a run: the model YAML's, or its variant's (``Variant.embedding``)."""
    name = VARIANTS[run.variant].embedding if run.variant != BASELINE else None
    return EMBEDDINGS[name](model_cfg["embedding"], spec) if name else model_cfg["embedding"]


def _text(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def options_tuple(options: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """Head options as a hashable, ordered tuple (lists become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in (options or {}).items()))


def cohort_masks(spec: FeatureSpec, arrays: Mapping[str, np.ndarray], pair: Mapping[str, Any]):
    """Float32 ``(N, 1)`` membership masks of the pair's head and tail cohorts (cohort form)."""
    axis = spec.axis(pair["axis"])
    ids = arrays[COHORT_KEY_PREFIX + axis.name][:, 0]
    head = (ids == axis.index(pair["head"])).astype("float32")[:, None]
    tail = (ids == axis.index(pair["tail"])).astype("float32")[:, None]
    return head, tail


def method_options(model_cfg: Mapping[str, Any], run: Run, pair: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``cohort_heads`` options of a served-tower run: the YAML's block with the variant's entries
    over it, the run's method, the pair's axis unless the block names one."""
    block = {**(model_cfg.get("cohort_heads") or {}), **dict(VARIANTS[run.variant].cohort_heads)}
    block["method"] = run.method
    if block.get("axis") is None and pair is not None:
        block["axis"] = pair["axis"]
    return ch.cohort_heads_options(block)


def input_names(spec: FeatureSpec, run: Run, model_cfg: Mapping[str, Any],
                pair: Mapping[str, Any] | None) -> list[str]:
    """The model inputs of a run: the spec's, plus a served-tower run's routing feature."""
    names = [f.name for f in spec.inputs]
    if run.method is not None:
        feature = spec.axis(ch.axis_name(spec, method_options(model_cfg, run, pair)["axis"])).feature
        names += [feature] if feature not in names else []
    return names


def _groups(spec: FeatureSpec, arrays: Mapping[str, np.ndarray], options: Mapping[str, Any]):
    axis = ch.axis_name(spec, options["axis"])
    names, group_of = ch.axis_groups(spec, axis, options["groups"])
    return names, ch.group_ids(spec, arrays, axis, group_of)


def targets(spec: FeatureSpec, arrays: Mapping[str, np.ndarray], run: Run, pair: Mapping[str, Any] | None,
            model_cfg: Mapping[str, Any] | None = None):
    """Keras targets of a run: ``{"primary": y}`` plus its auxiliary labels (Gradient Aggregation:
    ``[y, group]``)."""
    y = arrays[spec.label].astype("float32")
    out = {PRIMARY: y}
    if not _heads(run):
        return out
    if run.method == "gradient_aggregation":
        _, groups = _groups(spec, arrays, method_options(model_cfg or {}, run, pair))
        return {PRIMARY: ga.targets(y, groups)}
    if run.method is not None:
        return out
    ablation = VARIANTS[run.variant].ablation
    head, tail = cohort_masks(spec, arrays, pair)
    labels = {"aux_head": head, "aux_tail": tail} if ablation == "membership" else \
        {"aux_head": y * head, "aux_tail": y * tail}
    out.update({name: labels[name] for name in c2al_lib.aux_outputs(ablation)})
    return out


def sample_weights(spec: FeatureSpec, train: Mapping[str, np.ndarray], run: Run,
                   pair: Mapping[str, Any] | None) -> np.ndarray | None:
    """The ``reweight`` ablation's primary-loss weights ``1 + (lambda / pi_C) 1[x in C]`` (else None)."""
    if not _heads(run) or run.method is not None or VARIANTS[run.variant].ablation != "reweight":
        return None
    head, tail = cohort_masks(spec, train, pair)
    a = c2al_lib.reweight_coefficients(run.lam, run.lam, float(head.mean()), float(tail.mean()))
    return (1.0 + a["head"] * head + a["tail"] * tail)[:, 0]


def gradient_aggregation_prior(spec: FeatureSpec, train: Mapping[str, np.ndarray], options: Mapping[str, Any]):
    """``P(z)`` of a Gradient Aggregation run on the training split (``user_share``: distinct users)."""
    names, groups = _groups(spec, train, options)
    users = train.get(spec.user_id) if options["prior"] == "user_share" else None
    if options["prior"] == "user_share" and users is None:
        raise ValueError(f"prior: 'user_share' needs the training arrays' user ids '{spec.user_id}'")
    return ga.prior(options["prior"], len(names), users, groups)


def build_run_model(backbone: str, model_cfg: Mapping[str, Any], spec: FeatureSpec, run: Run,
                    learning_rate: float, pair: Mapping[str, Any] | None = None,
                    train: Mapping[str, np.ndarray] | None = None, dtype_policy: str = "float32"):
    """The compiled training model of a run; the shared path's initial weights depend on the seed only.

    Served-tower runs need the ``pair`` (its axis) and Gradient Aggregation the ``train`` arrays (its
    prior); D-Train returns the uncompiled :class:`zoo.d_train.DTrainModels` (compiled per phase).
    The layers are built in ``dtype_policy`` (:mod:`zoo.precision`; variables stay float32).
    """
    keras.backend.clear_session()  # a long job builds many models: free the previous ones' state
    with dtype_policy_scope(dtype_policy):
        return _build_run_model(backbone, model_cfg, spec, run, learning_rate, pair, train)


def _build_run_model(backbone, model_cfg, spec, run, learning_rate, pair, train):
    keras.utils.set_random_seed(run.seed)
    hparams = dict(embedding=run_embedding(model_cfg, spec, run), **model_cfg["hparams"])
    loss = (model_cfg.get("training") or {}).get("loss")
    if run.method is not None:
        if loss is not None and loss_options(loss)["type"] != "bce":
            raise ValueError(f"run {run.key}: training.loss '{loss_options(loss)['type']}' applies to the baseline "
                             f"and C2AL runs only; method '{run.method}' trains with its own BCE")
        options = method_options(model_cfg, run, pair)
        if run.method == "d_train":
            return dt.build_d_train(backbone, spec, options, **hparams)
        model = ch.build_cohort_heads(backbone, spec, options, **hparams)
        if run.method == "gradient_aggregation":
            if train is None:
                raise ValueError(f"run {run.key}: gradient_aggregation needs the training arrays for its prior")
            ga.compile_gradient_aggregation(model, learning_rate, gradient_aggregation_prior(spec, train, options))
        else:
            c2al_lib.compile_model(model, learning_rate, None, auc_metric=False)
        return model
    if not _heads(run):
        model = build(backbone, spec, **hparams)
        lambdas = None
    else:
        model = c2al_lib.build_c2al(backbone, spec, run.c2al_options(model_cfg["c2al"]), **hparams)
        lambdas = {"lambda_head": run.lam, "lambda_tail": run.lam}
    c2al_lib.compile_model(model, learning_rate, lambdas, auc_metric=False,  # the protocol's metric is exact
                           loss=loss)
    return model


def inputs_of(spec: FeatureSpec, arrays: Mapping[str, np.ndarray],
              names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The model inputs of a split: the spec's inputs, or ``names`` (:func:`input_names`)."""
    return {n: arrays[n] for n in (names or [f.name for f in spec.inputs])}


def train_run(backbone: str, model_cfg: Mapping[str, Any], spec: FeatureSpec, train: Mapping[str, np.ndarray],
              valid: Mapping[str, np.ndarray], run: Run, pair: Mapping[str, Any] | None, protocol: Protocol,
              batch_size: int, learning_rate: float,
              callbacks: tuple[keras.callbacks.Callback, ...] = (),
              dtype_policy: str = "float32") -> tuple[keras.Model, FitResult]:
    """Builds (in ``dtype_policy``) and trains one run under ``protocol``; the model ends with its best
    epoch's weights."""
    if run.variant != BASELINE and pair is None:
        raise ValueError(f"run {run.key}: a C2AL variant needs a cohort pair")
    model = build_run_model(backbone, model_cfg, spec, run, learning_rate, pair, train, dtype_policy)
    names = input_names(spec, run, model_cfg, pair)
    if run.method == "d_train":
        return _train_d_train(model, spec, train, valid, run, names, protocol, batch_size, learning_rate, callbacks)
    keras.utils.set_random_seed(run.seed)  # the data order and dropout draws do not depend on the heads
    result = fit(model, inputs_of(spec, train, names), targets(spec, train, run, pair, model_cfg),
                 validation=(inputs_of(spec, valid, names), valid[spec.label]), protocol=protocol,
                 extra_callbacks=callbacks, batch_size=batch_size, shuffle=True,
                 sample_weight=sample_weights(spec, train, run, pair))
    return model, result


def _train_d_train(models: dt.DTrainModels, spec, train, valid, run, names, protocol, batch_size, learning_rate,
                   callbacks) -> tuple[keras.Model, FitResult]:
    """D-Train's three phases, each a protocol fit; the result sums epochs and time, the last phase's best."""
    base_names = [f.name for f in spec.inputs]
    y = {PRIMARY: train[spec.label].astype("float32")}

    def compile_fn(model, phase):
        c2al_lib.compile_model(model, learning_rate, None, auc_metric=False)

    def fit_fn(model, phase):
        use = base_names if phase == dt.PHASES[0] else names
        keras.utils.set_random_seed(run.seed)  # phase a: the baseline's data order and dropout draws
        return fit(model, inputs_of(spec, train, use), y, validation=(inputs_of(spec, valid, use), valid[spec.label]),
                   protocol=protocol, extra_callbacks=callbacks if phase == dt.PHASES[-1] else (),
                   batch_size=batch_size, shuffle=True)

    phases = dt.train(models, compile_fn, fit_fn)
    last = phases[dt.PHASES[-1]]
    history = {f"{phase}/{k}": v for phase, r in phases.items() for k, v in r.history.items()}
    result = dataclasses.replace(last, epochs_run=sum(r.epochs_run for r in phases.values()),
                                 hit_cap=any(r.hit_cap for r in phases.values()),
                                 seconds=sum(r.seconds for r in phases.values()), history={**last.history, **history})
    return models.routed, result


def predict(model: keras.Model, spec: FeatureSpec, arrays: Mapping[str, np.ndarray],
            batch_size: int = 16384) -> np.ndarray:
    """The primary head's probabilities ``(N,)`` on a split."""
    names = [t.name for t in model.inputs]  # a served-tower model also takes its routing feature
    return primary_probabilities(model.predict(inputs_of(spec, arrays, names), batch_size=batch_size, verbose=0))


def evaluate(spec: FeatureSpec, arrays: Mapping[str, np.ndarray], p: np.ndarray) -> dict[str, Any]:
    """AUC, log loss and NE overall and per cohort of every axis (:func:`zoo.metrics.evaluate`)."""
    ids = {a.name: arrays[COHORT_KEY_PREFIX + a.name][:, 0] for a in spec.cohort_axes}
    return metrics.evaluate(arrays[spec.label][:, 0], p, ids, {a.name: list(a.cohorts) for a in spec.cohort_axes})
