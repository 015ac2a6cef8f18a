"""Training CLI: baseline and/or C2AL on the Beam job's TFRecords, per-cohort evaluation, export.

    python -m zoo.train --data runs/synthetic/data --model configs/models/dcnv2.yaml \\
        --variants baseline,c2al --output runs/synthetic/train

Both variants use the same data, seed and initial weights of the shared path. Each is trained with
``model.fit`` under the converged protocol of :mod:`zoo.protocol` (the exact validation metric of the
primary head every epoch, reduce-on-plateau, early stopping, best weights restored, an epoch cap; the
model YAML's ``training`` block; Keras progress bars, TensorBoard logs under
``<output>/<variant>/tensorboard``), evaluated on the test split (AUC, log loss, NE
overall and per cohort on every axis) and saved as ``<output>/<variant>/model.keras``.
``<output>/metrics.json`` gathers the results and NE_diff (%) of C2AL against the baseline
(predictions and the printed report: :mod:`zoo.evaluation`). With
``--export-root DIR`` the C2AL model (else the baseline) is exported, primary path only, to
``DIR/<model_name>/<version>/``. The model YAML is read once by :func:`zoo.config.load_model_config`.
``training.dtype_policy`` (or ``--dtype-policy``) builds the models in mixed precision
(:mod:`zoo.precision`: ``mixed_bfloat16``, ``mixed_float16`` with loss scaling); the variables, the
heads, the metrics and the served graph's inputs and outputs stay float32. ``--distribution``
trains on several devices (:mod:`zoo.distribution`): ``data_parallel`` (JAX; every device of
every process), ``model_parallel`` (JAX; the embedding tables row-sharded over ``--model-shards``
devices) or ``mirrored`` (TensorFlow, one host). ``--coordinator HOST:PORT --num-processes P
--process-id I`` (or the ``KERAS_DISTRIBUTION_*`` environment variables) joins a multi-process run;
only process 0 writes files.

The ``c2al`` variant is C2AL as published or one of its ablations (:data:`zoo.c2al.ABLATIONS`:
``reweight``, ``membership``, ``single_head``, ``single_tail``, ``ple_towers``), chosen by the model
YAML's ``c2al.ablation`` or ``--c2al-ablation``; the auxiliary heads' tap by ``c2al.tap`` or
``--c2al-tap``. ``metrics.json`` records the ablation (``c2al_ablation``) and the tap
(``c2al_tap``). The cohort pair is the dataset spec's ``c2al`` block, overridden by the command line
or, from Python, by a whole pair passed to :func:`run` (``{axis, head, tail}`` or the quantile form
``{feature, head_min, tail_max}``), e.g. from :func:`zoo.cohorts.choose_pair`.

Training is preemption-safe (:mod:`zoo.checkpoint`): checkpoints under ``<output>/<variant>/checkpoint``
at every epoch end (and every ``training.checkpoint_every_steps`` steps); the same command after a
kill resumes where the run was and ends as the uninterrupted run would, printing where it resumed
from; ``--no-resume`` starts over.

The data directory is checked before training (:func:`beam_jobs.manifest.check_shards`: every shard
of ``manifest.json`` there with its size). Errors (a missing ``spec.json``, a missing or truncated
shard, a shard that cannot be decompressed mid-training, a bad option) end the CLI with one line on
stderr and exit status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
from typing import Any, Mapping, Sequence

import keras
import tensorflow as tf

from beam_jobs.manifest import check_shards
from zoo import c2al as c2al_lib
from zoo import checkpoint as checkpoint_lib
from zoo import cli
from zoo.c2al import compile_model
from zoo import data, metrics, protocol
from zoo.config import load_model_config, training_options
from zoo import distribution as distribution_lib
from zoo.distribution import DISTRIBUTIONS, check_distribution, distribution_scope
from zoo.evaluation import format_report, oracle_metrics, predict_split, predict_tasks
from zoo.model import build, served_model
from zoo.precision import DTYPE_POLICIES, dtype_policy_scope
from zoo.spec import FeatureSpec, load_spec

VARIANTS = ("baseline", "c2al")
COHORT_KEYS, QUANTILE_KEYS = data.COHORT_KEYS, data.QUANTILE_KEYS
LAMBDA_KEYS = ("lambda_head", "lambda_tail")
PAIR_KEYS = COHORT_KEYS + QUANTILE_KEYS


def resolve_c2al(spec: FeatureSpec, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's ``c2al`` block with overrides applied and validated against the spec.

    ``overrides`` (None values ignored) may hold the lambdas and part or all of a cohort pair in
    either form: the cohort form ``{axis, head, tail}`` (cohort names of an axis; a part, e.g. only
    ``head``, overrides that key of the spec's pair) or the quantile form ``{feature, head_min,
    tail_max}`` (head: ``feature >= head_min``, tail: ``feature <= tail_max``; ``axis`` optional and
    informational), which replaces the spec's pair. Errors name the bad key, axis, cohort or feature.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(PAIR_KEYS + LAMBDA_KEYS))
    if unknown:
        raise ValueError(f"c2al: unknown key '{unknown[0]}'; keys are {list(PAIR_KEYS + LAMBDA_KEYS)}")
    cfg = {"lambda_head": 0.1, "lambda_tail": 0.1, **(spec.c2al or {})}
    if any(k in overrides for k in QUANTILE_KEYS):  # a quantile pair replaces the spec's pair
        cfg = {k: v for k, v in cfg.items() if k not in PAIR_KEYS}
    elif any(k in overrides for k in ("head", "tail")):  # cohort form: drop a quantile pair of the spec
        cfg = {k: v for k, v in cfg.items() if k not in QUANTILE_KEYS}
    cfg.update(overrides)
    for key in LAMBDA_KEYS:
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"c2al: '{key}' must be a number >= 0, got {value!r}")
        cfg[key] = float(value)
    if any(k in cfg for k in QUANTILE_KEYS):
        data.quantile_pair(spec, cfg)  # the pipeline's own checks, errors naming the key or feature
        return cfg
    missing = [k for k in COHORT_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"c2al: {missing} not set in the dataset spec '{spec.name}' nor in the overrides")
    axis = spec.axis(cfg["axis"])
    for role in ("head", "tail"):
        axis.index(cfg[role])  # raises SpecError naming the axis and the unknown cohort
    if cfg["head"] == cfg["tail"]:
        raise ValueError(f"c2al: head and tail must be different cohorts, got '{cfg['head']}' twice")
    return cfg


def cohort_fractions(spec: FeatureSpec, data_dir: str, c2al: Mapping[str, Any],
                     batch_size: int = 4096) -> dict[str, float]:
    """``{"head": pi_head, "tail": pi_tail}``: the cohorts' fractions of the training split (one pass)."""
    def sums(batch):
        head, tail = data.c2al_masks(spec, batch, c2al)
        return tf.reduce_sum(head), tf.reduce_sum(tail), tf.cast(tf.shape(head)[0], tf.float32)

    zero = tf.constant(0.0)
    head, tail, rows = data.read_split(data_dir, "train", batch_size, spec=spec).map(sums).reduce(
        (zero, zero, zero), lambda acc, b: (acc[0] + b[0], acc[1] + b[1], acc[2] + b[2]))
    rows = float(rows)
    if rows == 0:
        raise ValueError(f"{data_dir}: the train split is empty")
    return {"head": float(head) / rows, "tail": float(tail) / rows}


def build_variant(variant: str, spec: FeatureSpec, model_cfg: Mapping[str, Any],
                  c2al: Mapping[str, Any] | None, seed: int) -> keras.Model:
    """Builds and compiles one variant; the shared path's initial weights depend only on ``seed``
    (except for the ``ple_towers`` ablation, whose extra experts are created in between)."""
    keras.utils.set_random_seed(seed)
    hparams = dict(embedding=model_cfg["embedding"], **model_cfg["hparams"])
    with dtype_policy_scope(model_cfg["training"]["dtype_policy"]):  # mixed precision: zoo.precision
        if variant == "c2al":
            model = c2al_lib.build_c2al(model_cfg["backbone"], spec, model_cfg["c2al"], **hparams)
        else:
            model = build(model_cfg["backbone"], spec, **hparams)
    check_task_weights(spec, model_cfg["training"].get("task_weights"))
    compile_model(model, model_cfg["training"]["learning_rate"], c2al if variant == "c2al" else None,
                  auc_metric=False,  # the protocol's exact validation AUC each epoch is the one reported
                  task_weights=model_cfg["training"].get("task_weights"), primary_label=spec.label,
                  loss=model_cfg["training"]["loss"])
    return model


def check_task_weights(spec: FeatureSpec, task_weights: Mapping[str, float] | None) -> None:
    """Raises ValueError naming a ``training.task_weights`` key that is not a label of the spec."""
    for label in task_weights or {}:
        if label not in spec.labels:
            raise ValueError(f"training.task_weights: '{label}' is not a label of spec '{spec.name}' "
                             f"(labels: {list(spec.labels)})")


def train_variant(variant: str, spec: FeatureSpec, data_dir: str, model_cfg: Mapping[str, Any],
                  out_dir: str, seed: int, c2al: Mapping[str, Any] | None,
                  steps_per_epoch: int | None = None, verbose: Any = "auto",
                  cohort_weights: Mapping[str, float] | None = None,
                  diagnostics_every: int | None = None, resume: bool = True,
                  distribution: str = "none") -> tuple[keras.Model, dict]:
    """Trains one variant with ``model.fit``; returns the model and its test-split evaluation.

    Training is checkpointed under ``<out_dir>/<variant>/checkpoint`` (:mod:`zoo.checkpoint`: every
    epoch end, and every ``training.checkpoint_every_steps`` steps). ``resume`` (the default)
    continues from a checkpoint found there, exactly where the killed run was, and prints where it
    resumed from; a checkpoint of another config, seed, cohort pair or data directory is refused
    (:class:`zoo.checkpoint.CheckpointError`). ``resume=False`` deletes it and starts over.

    ``distribution`` (:data:`zoo.distribution.DISTRIBUTIONS`; the caller enters its scope) makes every
    training batch full (:func:`zoo.data.training_batches`' ``full_batches``); only the chief process
    writes TensorBoard logs, checkpoints and ``model.keras`` (every process resumes from the chief's
    checkpoint: a shared file system).

    ``cohort_weights`` are the ``reweight`` ablation's coefficients (:func:`zoo.c2al.reweight_coefficients`).
    ``diagnostics_every``: log :class:`zoo.diagnostics.C2ALDiagnostics` every that many steps on the
    first 512 validation rows (TensorBoard under ``<variant>/tensorboard/diagnostics``, JSON lines in
    ``<variant>/diagnostics.jsonl``).
    """
    if verbose == "auto":  # live progress bars on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else 2
    train_cfg = model_cfg["training"]
    batch_size = int(train_cfg["batch_size"])
    variant_c2al = c2al if variant == "c2al" else None
    model = build_variant(variant, spec, model_cfg, c2al, seed)
    pipeline: dict[str, Any] = {"c2al": variant_c2al}
    if variant_c2al is not None:
        ablation = model_cfg["c2al"]["ablation"]
        pipeline.update(labels=c2al_lib.aux_labels(ablation), aux=c2al_lib.aux_outputs(ablation))
        if ablation == "reweight" and cohort_weights is None:
            raise ValueError("c2al ablation 'reweight': needs cohort_weights")
    run_dir = os.path.join(out_dir, variant)
    chief = distribution_lib.is_chief()
    full_batches = distribution != "none"
    resolved_reader, pass_steps = data.reader_and_steps(data_dir, spec, batch_size, train_cfg["reader"], full_batches)
    epoch_steps = steps_per_epoch or pass_steps
    fingerprint = {  # what the trajectory depends on; checkpoint_every_steps and the distribution do not count
        "variant": variant, "seed": seed, "c2al": variant_c2al, "epoch_steps": epoch_steps,
        "reader": resolved_reader, "data": checkpoint_lib.data_fingerprint(data_dir),
        "cohort_weights": cohort_weights if variant_c2al is not None else None,
        "model_config": {**model_cfg, "training": {k: v for k, v in train_cfg.items() if k != "checkpoint_every_steps"}},
    }
    checkpoint = checkpoint_lib.Checkpoint(run_dir, fingerprint, train_cfg["checkpoint_every_steps"], resume=resume,
                                           writer=chief)
    distribution_lib.barrier("zoo.train.checkpoint_loaded")  # every process read the same one before any write
    if checkpoint.restored is not None:
        state = checkpoint.restored.state
        if state.finished:
            print(f"{variant}: resumed from epoch {state.epochs} step {state.step} of {checkpoint.restored.path} "
                  "(the fit had finished: its final state restored, nothing trained)", flush=True)
        else:
            print(f"{variant}: resumed from epoch {state.epochs + 1} step {state.step} of {checkpoint.restored.path} "
                  f"({state.step - state.epochs * epoch_steps} of the epoch's {epoch_steps} steps done)", flush=True)
    batches, pass_steps, reader = data.training_batches(data_dir, spec, batch_size, seed=seed,
                                                        reader=resolved_reader, start_step=checkpoint.start_step,
                                                        full_batches=full_batches)
    train_ds = data.model_batches(spec, batches, cohort_weights=cohort_weights if variant_c2al is not None else None,
                                  **pipeline)
    # The protocol's exact validation metric is of the plain primary head (unweighted, on every
    # validation row, read once into memory).
    valid = data.split_arrays(data_dir, "valid", spec, batch_size * 4)
    validation = protocol.ExactValidation({f.name: valid[f.name] for f in spec.inputs}, valid[spec.label],
                                          batch_size=batch_size * 4)
    callbacks: list[keras.callbacks.Callback] = [
        checkpoint_lib.ResumableTensorBoard(os.path.join(run_dir, "tensorboard"), update_freq=100),
    ] if chief else []
    if diagnostics_every:
        from zoo.diagnostics import C2ALDiagnostics

        callbacks.append(C2ALDiagnostics({f.name: valid[f.name][:512] for f in spec.inputs},
                                         every_n_steps=diagnostics_every,
                                         log_dir=os.path.join(run_dir, "tensorboard", "diagnostics"),
                                         json_path=os.path.join(run_dir, "diagnostics.jsonl")))
    fitted = protocol.fit(model, train_ds, validation=validation,
                          protocol=protocol.Protocol.from_mapping(train_cfg, "training"),
                          extra_callbacks=callbacks, steps_per_epoch=epoch_steps,
                          verbose=verbose, shuffle=False, checkpoint=checkpoint)  # the tf.data pipeline shuffles
    names = {a.name: list(a.cohorts) for a in spec.cohort_axes}
    if spec.multi_task:  # every task on the test split; the primary's metrics stay the top-level ones
        ys, ps, cohorts = predict_tasks(model, spec, data_dir, "test", batch_size * 4)
        result = metrics.evaluate(ys[spec.label], ps[spec.label], cohorts, names)
        result["tasks"] = {label: metrics.evaluate(ys[label], ps[label], cohorts, names) for label in spec.labels}
    else:
        y, p, cohorts = predict_split(model, spec, data_dir, "test", batch_size * 4)
        result = metrics.evaluate(y, p, cohorts, names)
    result["train_seconds"] = fitted.seconds
    result["reader"] = reader
    result["training"] = {k: v for k, v in fitted.to_dict().items() if k != "seconds"}
    result["epochs_run"] = fitted.epochs_run
    result["params"] = {"total": int(model.count_params()), "served": int(served_model(model).count_params())}
    if chief:
        with distribution_lib.local_only():  # the chief alone: no cross-process variable creation
            model.save(os.path.join(run_dir, "model.keras"))
    return model, result


def run(data_dir: str, model_config: str | Mapping[str, Any], out_dir: str, variants: Sequence[str] = VARIANTS,
        seed: int = 0, c2al_overrides: Mapping[str, Any] | None = None, export_root: str | None = None,
        model_name: str | None = None, max_epochs: int | None = None, steps_per_epoch: int | None = None,
        verbose: Any = "auto", discover: Mapping[str, Any] | None = None,
        diagnostics_every: int | None = None, dtype_policy: str | None = None,
        distribution: str = "none", model_shards: int | None = None, resume: bool = True) -> dict[str, Any]:
    """Trains the requested variants and writes ``<out_dir>/metrics.json``; returns its contents.

    ``model_config``: a model YAML's path, or the result of :func:`zoo.config.load_model_config`
    (a caller that checked it before a long step, e.g. ``zoo.pipeline``; it is not modified).

    ``discover`` (needs both variants): after the baseline, :func:`zoo.cohorts.discover` runs on it
    with these keyword arguments (``axis`` defaults to the spec's ``c2al.axis``; e.g. ``split``,
    ``metric``, ``bins``, ``min_fraction``, ``mode``, ``quantile``), writes
    ``<out_dir>/discovery/cohort_divergence.{json,png}``, and the C2AL variant trains on the chosen
    pair instead of the configured one: baseline -> discovery -> C2AL -> evaluation -> export.

    ``max_epochs`` and ``dtype_policy`` (:data:`zoo.precision.DTYPE_POLICIES`), when given, override the
    model YAML's ``training.max_epochs`` / ``training.dtype_policy``.

    ``distribution`` (:data:`zoo.distribution.DISTRIBUTIONS`): ``data_parallel`` builds and trains every
    variant replicated on every device (of every process after :func:`zoo.distribution.initialize`),
    each global batch split across them; ``model_parallel`` row-shards the embedding tables over
    ``model_shards`` devices (default all; the tables' rows padded to a multiple of it,
    ``embedding.row_multiple``); ``mirrored`` is TensorFlow's ``MirroredStrategy``. Under every
    distribution each training batch is full (:func:`zoo.data.training_batches`). In a multi-process
    run only the chief (process 0) writes files; every process returns the same summary.

    ``resume`` (default True): a variant with a checkpoint under ``<out_dir>/<variant>/checkpoint``
    (a killed run) continues from it (:func:`train_variant`, :mod:`zoo.checkpoint`); False starts
    every variant over. The checkpoints are removed once ``metrics.json`` is written.

    ``c2al_overrides`` (None values ignored): the cohort pair and lambdas of :func:`resolve_c2al`
    (a whole pair such as :func:`zoo.cohorts.choose_pair`'s, in either form, or single keys), and
    the model options ``ablation``, ``tap`` and ``head_units`` over the model YAML's ``c2al`` block.
    """
    check_distribution(distribution)
    distribution_lib.check_model_shards(distribution, model_shards)
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise ValueError(f"variants: must be a non-empty subset of {VARIANTS}, got {list(variants)}")
    spec = load_spec(data_dir)
    check_shards(data_dir)  # every split's shards against manifest.json, before hours of training
    model_cfg = (copy.deepcopy(dict(model_config)) if isinstance(model_config, Mapping)
                 else load_model_config(model_config))
    if max_epochs is not None:
        model_cfg["training"] = training_options({**model_cfg["training"], "max_epochs": max_epochs},
                                                 where="max_epochs override: training")
    if dtype_policy is not None:
        model_cfg["training"] = training_options({**model_cfg["training"], "dtype_policy": dtype_policy},
                                                 where="dtype_policy override: training")
    model_cfg = distributed_model_config(model_cfg, distribution, model_shards)
    overrides = {k: v for k, v in (c2al_overrides or {}).items() if v is not None}
    options = {k: overrides.pop(k) for k in c2al_lib.OPTION_KEYS if k in overrides}
    model_cfg["c2al"] = c2al_lib.c2al_options({**model_cfg["c2al"], **options})
    ablation = model_cfg["c2al"]["ablation"]
    if discover is not None and list(variants) != list(VARIANTS):
        raise ValueError(f"discover: needs variants {list(VARIANTS)} (the baseline is discovered on), got {list(variants)}")
    c2al = resolve_c2al(spec, overrides) if "c2al" in variants else None
    chief = distribution_lib.is_chief()
    if chief:
        os.makedirs(out_dir, exist_ok=True)
    summary: dict[str, Any] = {
        "dataset": spec.name, "data_dir": os.path.abspath(data_dir), "backbone": model_cfg["backbone"],
        "model_config": model_cfg, "seed": seed, "backend": keras.backend.backend(), "c2al": c2al,
        "c2al_ablation": ablation if c2al else None, "c2al_tap": model_cfg["c2al"]["tap"] if c2al else None,
        "distribution": {"name": distribution, "devices": distribution_lib.device_count(distribution),
                         "processes": distribution_lib.process_count(),
                         "model_shards": distribution_lib.check_model_shards(distribution, model_shards)},
        "variants": {},
    }
    def reweight(c2al):
        if c2al is None or ablation != "reweight":
            return None
        fractions = cohort_fractions(spec, data_dir, c2al)
        weights = c2al_lib.reweight_coefficients(c2al["lambda_head"], c2al["lambda_tail"],
                                                 fractions["head"], fractions["tail"])
        summary["c2al_reweight"] = {"train_fractions": fractions, "coefficients": weights}
        return weights

    cohort_weights = reweight(c2al)
    models = {}
    for variant in variants:
        if variant == "c2al" and discover is not None:
            c2al = _discover_pair(models["baseline"], spec, data_dir, out_dir, dict(discover), overrides, summary)
            cohort_weights = reweight(c2al)
        label = f"c2al ({ablation})" if variant == "c2al" and ablation != "none" else variant
        print(f"\n== {label}: {model_cfg['backbone']} on {spec.name} ==", flush=True)
        with distribution_scope(distribution, model_shards):  # zoo.distribution: build and fit on its devices
            models[variant], summary["variants"][variant] = train_variant(
                variant, spec, data_dir, model_cfg, out_dir, seed, c2al, steps_per_epoch, verbose, cohort_weights,
                diagnostics_every, resume, distribution)
    oracle = oracle_metrics(spec, data_dir, "test", int(model_cfg["training"]["batch_size"]) * 4)
    if oracle is not None:  # the true click probability's metrics on the same test rows, computed once
        summary["oracle"] = oracle
    if set(VARIANTS) <= set(variants):
        summary["ne_diff_percent"] = metrics.ne_diff(summary["variants"]["c2al"], summary["variants"]["baseline"])
        if oracle is not None:
            summary["gap_closed"] = metrics.gap_closed(summary["variants"]["baseline"], summary["variants"]["c2al"],
                                                       oracle)
        if chief:
            summary["plots"] = _plots(summary, out_dir, diagnostics_every)
    if export_root and chief:
        from zoo.export import export_saved_model

        served = "c2al" if "c2al" in models else "baseline"
        name = model_name or f"{model_cfg['backbone']}_{spec.name}"
        with distribution_lib.local_only():
            path = export_saved_model(models[served], spec, export_root, name, eval_data=data_dir)  # warm-up: real rows
        summary["export"] = {"variant": served, "path": path}
    if chief:
        with open(os.path.join(out_dir, "metrics.json"), "w") as fh:
            json.dump(summary, fh, indent=2)
        for variant in variants:  # the run is complete: a rerun starts over instead of resuming
            shutil.rmtree(os.path.join(out_dir, variant, checkpoint_lib.DIRECTORY), ignore_errors=True)
    distribution_lib.barrier("zoo.train.run")  # the other processes wait for the chief's files
    return summary


def distributed_model_config(model_cfg: dict[str, Any], distribution: str, model_shards: int | None) -> dict[str, Any]:
    """``model_cfg`` checked against ``distribution`` (the global batch must split over its batch shards
    and processes) with ``embedding.row_multiple`` raised to a multiple of the model shards
    (``model_parallel``), so that every table splits evenly."""
    distribution_lib.check_batch_size(int(model_cfg["training"]["batch_size"]), distribution, model_shards)
    multiple = distribution_lib.table_row_multiple(distribution, model_shards)
    if multiple == 1:
        return model_cfg
    embedding = dict(model_cfg["embedding"] or {"type": "plain"})
    if embedding.get("type", "plain") == "distributed":
        raise ValueError("embedding: type 'distributed' (keras_rs, which shards its own tables on a TPU's "
                         "SparseCore) cannot be row-sharded by distribution 'model_parallel'; use 'data_parallel'")
    embedding["row_multiple"] = math.lcm(int(embedding.get("row_multiple", 1)), multiple)
    return {**model_cfg, "embedding": embedding}


def _plots(summary: Mapping[str, Any], out_dir: str, diagnostics_every: int | None) -> dict[str, str]:
    """Per-cohort NE_diff bars; with diagnostics, baseline-vs-C2AL |Y| histograms at several points."""
    from zoo import diagnostics

    plots = {"ne_diff": diagnostics.plot_ne_diff(
        summary["ne_diff_percent"]["cohorts"], os.path.join(out_dir, "ne_diff.png"),
        title=f"C2AL NE_diff (%) per cohort, {summary['backbone']} on {summary['dataset']}")}
    if diagnostics_every:
        records = {v: diagnostics.load_records(os.path.join(out_dir, v, "diagnostics.jsonl")) for v in VARIANTS}
        if all(any(r.get("abs_y") for r in recs) for recs in records.values()):  # AttentionFM backbones only
            plots["attention_histograms"] = diagnostics.plot_attention_histograms(
                records["baseline"], records["c2al"], os.path.join(out_dir, "attention_histograms.png"))
    return plots


def _discover_pair(baseline: keras.Model, spec: FeatureSpec, data_dir: str, out_dir: str,
                   options: dict[str, Any], overrides: Mapping[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Cohort discovery on the trained baseline; returns the resolved c2al config of the chosen pair."""
    from zoo import cohorts

    axis = options.pop("axis", None) or (spec.c2al or {}).get("axis")
    if axis is None:
        raise ValueError(f"discover: no axis given and the spec '{spec.name}' has no c2al.axis")
    strategy = options.pop("strategy", "most")
    found = cohorts.discover(baseline, data_dir, axis, **options)
    json_path, png_path = found.save(os.path.join(out_dir, "discovery"))
    print(f"\n== discovery on the baseline ({found.metric}, axis '{axis}', split '{found.split}') ==\n"
          + found.format_table(top=5), flush=True)
    pair = {k: v for k, v in overrides.items() if k in ("lambda_head", "lambda_tail")}
    c2al = resolve_c2al(spec, {**pair, **cohorts.choose_pair(found, strategy)})
    summary["c2al"] = c2al
    summary["discovery"] = {"strategy": strategy, "head": c2al.get("head"), "tail": c2al.get("tail"),
                            "most_divergent": [found.head, found.tail], "divergence": found.divergence,
                            "metric": found.metric, "json": json_path, "png": png_path}
    return c2al


def add_discovery_arguments(parser: argparse.ArgumentParser, default: bool = False) -> None:
    """``--discover`` and its options (see :func:`run`'s ``discover``), shared with ``zoo.pipeline``."""
    parser.add_argument("--discover", action=argparse.BooleanOptionalAction, default=default,
                        help="find the C2AL pair on the trained baseline (zoo.cohorts) instead of the spec's")
    parser.add_argument("--discover-axis", default=None, help="cohort axis (default: the spec's c2al.axis)")
    parser.add_argument("--discover-split", default="valid")
    parser.add_argument("--discover-metric", default="js", help="js, kl, w1 or cosine")
    parser.add_argument("--discover-bins", type=int, default=50)
    parser.add_argument("--discover-min-fraction", type=float, default=0.01)
    parser.add_argument("--discover-mode", default="exhaustive", help="exhaustive or quantile (ordinal axes)")
    parser.add_argument("--discover-quantile", type=float, default=0.05)
    parser.add_argument("--discover-strategy", default="most",
                        help="most (C2AL), or the ablations least (least-divergent pair) and random")


def discovery_options(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.discover:
        return None
    return {"axis": args.discover_axis, "split": args.discover_split, "metric": args.discover_metric,
            "bins": args.discover_bins, "min_fraction": args.discover_min_fraction, "mode": args.discover_mode,
            "quantile": args.discover_quantile, "strategy": args.discover_strategy}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.train", description=__doc__.split("\n")[0],
                                     allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="output directory of beam_jobs.build_tfrecords")
    parser.add_argument("--model", default="configs/models/dcnv2.yaml", help="model YAML")
    parser.add_argument("--output", required=True, help="run directory for models, logs and metrics.json")
    parser.add_argument("--variants", default="baseline,c2al", help="comma-separated: baseline, c2al")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None, help="override training.max_epochs (the epoch cap)")
    parser.add_argument("--distribution", choices=DISTRIBUTIONS, default="none",
                        help="data_parallel: replicate on every device, split each batch; model_parallel: also "
                        "row-shard the embedding tables (both JAX); mirrored: tf.distribute.MirroredStrategy "
                        "(TensorFlow, one host); zoo.distribution")
    parser.add_argument("--model-shards", type=int, default=None,
                        help="model_parallel: devices each table is row-sharded over (default: all)")
    parser.add_argument("--coordinator", default=None,
                        help="multi-process (JAX): HOST:PORT of process 0 (else KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="multi-process: processes in the run (else KERAS_DISTRIBUTION_NUM_PROCESSES)")
    parser.add_argument("--process-id", type=int, default=None,
                        help="multi-process: this process's id, 0 = the chief (else KERAS_DISTRIBUTION_PROCESS_ID)")
    parser.add_argument("--dtype-policy", choices=DTYPE_POLICIES, default=None,
                        help="override training.dtype_policy: mixed_bfloat16 / mixed_float16 compute in 16 bits, "
                        "variables and outputs float32 (zoo.precision)")
    parser.add_argument("--c2al-axis", dest="axis")
    parser.add_argument("--c2al-head", dest="head")
    parser.add_argument("--c2al-tail", dest="tail")
    parser.add_argument("--lambda-head", type=float, dest="lambda_head")
    parser.add_argument("--lambda-tail", type=float, dest="lambda_tail")
    parser.add_argument("--c2al-feature", dest="feature", help="quantile-form pair: head = feature >= --c2al-head-min, "
                        "tail = feature <= --c2al-tail-max (replaces the spec's cohort pair)")
    parser.add_argument("--c2al-head-min", type=float, dest="head_min")
    parser.add_argument("--c2al-tail-max", type=float, dest="tail_max")
    parser.add_argument("--c2al-ablation", dest="ablation", choices=c2al_lib.ABLATIONS,
                        help="override the model YAML's c2al.ablation (default none: C2AL as published)")
    parser.add_argument("--c2al-tap", dest="tap", choices=c2al_lib.TAPS,
                        help="override the model YAML's c2al.tap (where the auxiliary heads read from)")
    add_discovery_arguments(parser)
    parser.add_argument("--diagnostics-every", type=int, default=0,
                        help="log C2AL diagnostics (zoo.diagnostics) every N training steps; 0 = off")
    parser.add_argument("--export-root", default=None, help="export the served model here (e.g. saved_models)")
    parser.add_argument("--model-name", default=None, help="export directory name (default <backbone>_<dataset>)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue a killed run from <output>/<variant>/checkpoint (default); --no-resume "
                        "deletes the checkpoints and starts over (zoo.checkpoint)")
    cli.add_cli_flags(parser)
    args = parser.parse_args(argv)
    return cli.run_reporting_errors(parser.prog, lambda: _main(args), args.debug, cli.data_loss_hint(args.data))


MULTI_PROCESS_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                     "KERAS_DISTRIBUTION_PROCESS_ID")


def _main(args: argparse.Namespace) -> int:
    flags = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in flags) or any(k in os.environ for k in MULTI_PROCESS_ENV):
        distribution_lib.initialize(*flags)  # before any computation
        print(f"process {distribution_lib.process_index()} of {distribution_lib.process_count()}", flush=True)
    overrides = {k: getattr(args, k) for k in PAIR_KEYS + LAMBDA_KEYS + ("ablation", "tap")}
    summary = run(args.data, args.model, args.output, [v.strip() for v in args.variants.split(",") if v.strip()],
                  seed=args.seed, c2al_overrides=overrides, export_root=args.export_root,
                  model_name=args.model_name, max_epochs=args.max_epochs, discover=discovery_options(args),
                  diagnostics_every=args.diagnostics_every or None, dtype_policy=args.dtype_policy,
                  distribution=args.distribution, model_shards=args.model_shards, resume=args.resume)
    if not distribution_lib.is_chief():
        return 0
    print("\n" + format_report(summary))
    print(f"\nmetrics: {os.path.join(os.path.abspath(args.output), 'metrics.json')}")
    if "export" in summary:
        print(f"exported ({summary['export']['variant']}, primary head only): {os.path.abspath(summary['export']['path'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
