"""Training CLI: baseline and/or C2AL on the Beam job's TFRecords, per-cohort evaluation, export.

    python -m zoo.train --data runs/synthetic/data --model configs/models/dcnv2.yaml \\
        --variants baseline,c2al --out runs/synthetic/train

Both variants use the same data, seed and initial weights of the shared path. Each is trained with
``model.fit`` (Keras progress bars, TensorBoard logs under ``<out>/<variant>/tensorboard``, early
stopping on the primary head's validation AUC), evaluated on the test split (AUC, log loss, NE
overall and per cohort on every axis) and saved as ``<out>/<variant>/model.keras``.
``<out>/metrics.json`` gathers the results and NE_diff (%) of C2AL against the baseline. With
``--export`` the C2AL model (else the baseline) is exported, primary path only, to
``<export_root>/<model_name>/<version>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from zoo import c2al as c2al_lib
from zoo import data, metrics
from zoo.model import PRIMARY, build, load_model_config  # noqa: F401  (load_model_config: re-exported)
from zoo.spec import COHORT_KEY_PREFIX, FeatureSpec

VARIANTS = ("baseline", "c2al")


def resolve_c2al(spec: FeatureSpec, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's ``c2al`` block with CLI overrides applied and validated against the spec."""
    cfg = {"lambda_head": 0.1, "lambda_tail": 0.1, **(spec.c2al or {})}
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    missing = [k for k in ("axis", "head", "tail") if k not in cfg]
    if missing:
        raise ValueError(f"c2al: {missing} not set in the dataset spec '{spec.name}' nor on the command line")
    axis = spec.axis(cfg["axis"])
    for role in ("head", "tail"):
        axis.index(cfg[role])  # raises SpecError naming the axis and the unknown cohort
    return cfg


def compile_model(model: keras.Model, learning_rate: float, c2al: Mapping[str, Any] | None) -> None:
    bce = keras.losses.BinaryCrossentropy()
    if c2al is None:
        losses, weights = {PRIMARY: bce}, None
    else:
        losses = {name: keras.losses.BinaryCrossentropy() for name in (PRIMARY, c2al_lib.AUX_HEAD, c2al_lib.AUX_TAIL)}
        weights = c2al_lib.loss_weights(c2al["lambda_head"], c2al["lambda_tail"])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=losses,
        loss_weights=weights,
        metrics={PRIMARY: [keras.metrics.AUC(name="auc", num_thresholds=1000)]},
    )


def build_variant(variant: str, spec: FeatureSpec, model_cfg: Mapping[str, Any],
                  c2al: Mapping[str, Any] | None, seed: int) -> keras.Model:
    """Builds and compiles one variant; the shared path's initial weights depend only on ``seed``."""
    keras.utils.set_random_seed(seed)
    model = build(model_cfg["backbone"], spec, embedding=model_cfg["embedding"], **model_cfg["hparams"])
    if variant == "c2al":
        model = c2al_lib.C2AL(model, head_units=model_cfg["c2al"]["head_units"])
    compile_model(model, model_cfg["training"]["learning_rate"], c2al if variant == "c2al" else None)
    return model


def predict_split(model: keras.Model, spec: FeatureSpec, data_dir: str, split: str,
                  batch_size: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(labels, primary probabilities, cohort ids per axis) of every row of a split, in one pass."""
    names = [f.name for f in spec.inputs]
    ys, probs, cohorts = [], [], {a.name: [] for a in spec.cohort_axes}
    for batch in data.read_split(data_dir, split, batch_size, spec=spec).as_numpy_iterator():
        out = model.predict_on_batch({n: batch[n] for n in names})
        probs.append(np.asarray(out[PRIMARY] if isinstance(out, dict) else out).ravel())
        ys.append(batch[spec.label][:, 0])
        for a in spec.cohort_axes:
            cohorts[a.name].append(batch[COHORT_KEY_PREFIX + a.name][:, 0])
    return np.concatenate(ys), np.concatenate(probs), {k: np.concatenate(v) for k, v in cohorts.items()}


def train_variant(variant: str, spec: FeatureSpec, data_dir: str, model_cfg: Mapping[str, Any],
                  out_dir: str, seed: int, c2al: Mapping[str, Any] | None,
                  steps_per_epoch: int | None = None, verbose: Any = "auto") -> tuple[keras.Model, dict]:
    """Trains one variant with ``model.fit``; returns the model and its test-split evaluation."""
    if verbose == "auto":  # live progress bars on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else 2
    train_cfg = model_cfg["training"]
    batch_size = int(train_cfg["batch_size"])
    variant_c2al = c2al if variant == "c2al" else None
    model = build_variant(variant, spec, model_cfg, c2al, seed)
    train_ds = data.model_batches(
        spec, data.read_split(data_dir, "train", batch_size, spec=spec, shuffle=True, seed=seed,
                              repeat=steps_per_epoch is not None),
        c2al=variant_c2al)
    valid_ds = data.model_batches(spec, data.read_split(data_dir, "valid", batch_size, spec=spec),
                                  c2al=variant_c2al)
    run_dir = os.path.join(out_dir, variant)
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), update_freq=100),
    ]
    patience = int(train_cfg.get("early_stopping_patience") or 0)
    if patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=f"val_{PRIMARY}_auc" if variant_c2al else "val_auc", mode="max",
            patience=patience, restore_best_weights=True))
    start = time.time()
    history = model.fit(train_ds, validation_data=valid_ds, epochs=int(train_cfg["epochs"]),
                        steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose,
                        shuffle=False)  # the tf.data pipeline shuffles
    train_seconds = time.time() - start
    y, p, cohorts = predict_split(model, spec, data_dir, "test", batch_size * 4)
    result = metrics.evaluate(y, p, cohorts, {a.name: list(a.cohorts) for a in spec.cohort_axes})
    result["train_seconds"] = round(train_seconds, 2)
    result["epochs_run"] = len(history.history.get("loss", []))
    result["params"] = {"total": int(model.count_params())}
    model.save(os.path.join(run_dir, "model.keras"))
    return model, result


def run(data_dir: str, model_config: str, out_dir: str, variants: Sequence[str] = VARIANTS, seed: int = 0,
        c2al_overrides: Mapping[str, Any] | None = None, export_root: str | None = None,
        model_name: str | None = None, epochs: int | None = None, steps_per_epoch: int | None = None,
        verbose: Any = "auto") -> dict[str, Any]:
    """Trains the requested variants and writes ``<out_dir>/metrics.json``; returns its contents."""
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise ValueError(f"variants: must be a non-empty subset of {VARIANTS}, got {list(variants)}")
    spec = data.load_data_spec(data_dir)
    model_cfg = load_model_config(model_config)
    if epochs is not None:
        model_cfg["training"]["epochs"] = epochs
    c2al = resolve_c2al(spec, c2al_overrides or {}) if "c2al" in variants else None
    os.makedirs(out_dir, exist_ok=True)
    summary: dict[str, Any] = {
        "dataset": spec.name, "data_dir": os.path.abspath(data_dir), "backbone": model_cfg["backbone"],
        "model_config": model_cfg, "seed": seed, "backend": keras.backend.backend(), "c2al": c2al,
        "variants": {},
    }
    models = {}
    for variant in variants:
        print(f"\n== {variant}: {model_cfg['backbone']} on {spec.name} ==", flush=True)
        models[variant], summary["variants"][variant] = train_variant(
            variant, spec, data_dir, model_cfg, out_dir, seed, c2al, steps_per_epoch, verbose)
    if set(VARIANTS) <= set(variants):
        summary["ne_diff_percent"] = metrics.ne_diff(summary["variants"]["c2al"], summary["variants"]["baseline"])
    if export_root:
        from zoo.export import export_saved_model

        served = "c2al" if "c2al" in models else "baseline"
        name = model_name or f"{model_cfg['backbone']}_{spec.name}"
        path = export_saved_model(models[served], spec, export_root, name, eval_data=data_dir)  # warm-up: real rows
        summary["export"] = {"variant": served, "path": path}
    with open(os.path.join(out_dir, "metrics.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def format_report(summary: Mapping[str, Any]) -> str:
    """A plain-text table of overall and per-cohort NE, AUC and NE_diff."""
    variants = summary["variants"]
    lines = [f"{'variant':<10} {'rows':>8} {'AUC':>8} {'logloss':>8} {'NE':>8}"]
    for name, res in variants.items():
        o = res["overall"]
        lines.append(f"{name:<10} {o['rows']:>8d} {o['auc']:>8.4f} {o['log_loss']:>8.4f} {o['ne']:>8.4f}")
    diff = summary.get("ne_diff_percent")
    if diff is not None:
        lines.append(f"NE_diff overall (C2AL vs baseline): {diff['overall']:+.3f}%")
    if summary.get("c2al"):
        axis = summary["c2al"]["axis"]
        lines.append(f"per cohort on axis '{axis}' (head={summary['c2al']['head']}, tail={summary['c2al']['tail']}):")
        first = next(iter(variants.values()))["cohorts"][axis]
        for cohort, m in first.items():
            row = f"  {cohort:<14} rows {m['rows']:>7d} base rate {m['base_rate']:.3f}"
            for name, res in variants.items():
                row += f"  NE[{name}] {res['cohorts'][axis][cohort]['ne']:.4f}"
            if diff is not None:
                row += f"  NE_diff {diff['cohorts'][axis].get(cohort, float('nan')):+.3f}%"
            lines.append(row)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="output directory of beam_jobs.build_tfrecords")
    parser.add_argument("--model", default="configs/models/dcnv2.yaml", help="model YAML")
    parser.add_argument("--out", required=True, help="run directory for models, logs and metrics.json")
    parser.add_argument("--variants", default="baseline,c2al", help="comma-separated: baseline, c2al")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--c2al-axis", dest="axis")
    parser.add_argument("--c2al-head", dest="head")
    parser.add_argument("--c2al-tail", dest="tail")
    parser.add_argument("--lambda-head", type=float, dest="lambda_head")
    parser.add_argument("--lambda-tail", type=float, dest="lambda_tail")
    parser.add_argument("--export-root", default=None, help="export the served model here (e.g. saved_models)")
    parser.add_argument("--model-name", default=None, help="export directory name (default <backbone>_<dataset>)")
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("axis", "head", "tail", "lambda_head", "lambda_tail")}
    summary = run(args.data, args.model, args.out, [v.strip() for v in args.variants.split(",") if v.strip()],
                  seed=args.seed, c2al_overrides=overrides, export_root=args.export_root,
                  model_name=args.model_name, epochs=args.epochs)
    print("\n" + format_report(summary))
    print(f"\nmetrics: {os.path.join(os.path.abspath(args.out), 'metrics.json')}")
    if "export" in summary:
        print(f"exported ({summary['export']['variant']}, primary head only): {os.path.abspath(summary['export']['path'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
