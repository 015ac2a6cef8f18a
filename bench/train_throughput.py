"""Steady-state training throughput of every backbone x backend x input path, against the GEMM roofline.

    python bench/train_throughput.py [--models dcnv2,deepfm] [--backends tensorflow,jax]
        [--paths memory,stream,numpy] [--repeats 3] [--epochs 2] [--data runs/frappe_x1/data]
        [--output bench/results/train_throughput.json]

Data: the Frappe_x1 TFRecords of ``python -m zoo.pipeline --dataset configs/datasets/frappe_x1.yaml
--source ../shared/data/frappe_x1`` (``runs/frappe_x1/data``; 202,027 train rows). Models: every
registered backbone the data's spec supports (``zoo.registry.backbones_for``: the others are named
and skipped), with the BARS hyper-parameters of ``bench/quality_frappe.yaml`` where it has them
(embedding 10; DCNv2, DeepFM, DLRM, AutoInt+, AFM) and its own model YAML's otherwise; built and compiled by ``zoo.train.build_variant`` (the
baseline: Adam 1e-3, BCE, no per-step metric), batch 4096, seed 0.

Input paths (each what a user's run feeds ``model.fit``):

* ``memory``: ``zoo.train``'s path on a split that fits (``training.reader: auto``): the TFRecords
  parsed once by ``zoo.data.training_batches``, every epoch a fresh permutation of the rows in memory;
* ``stream``: ``zoo.train`` with ``training.reader: stream``: the shards read and parsed every epoch
  (GZIP TFRecords, shard order and a 100K-row buffer shuffled);
* ``numpy``: arrays through ``zoo.protocol.fit_inputs`` (what ``bench/quality_frappe.py`` and the
  C2AL study feed): one in-memory pipeline on TensorFlow, Keras's own array iterator on JAX.

Each (backend, repeat) is one subprocess that trains every model on every path: ``1 + --epochs``
full passes over the train split with ``steps_per_epoch`` = one pass; the first epoch (tracing,
XLA compilation, the reader's first pass) is **excluded**, and each later epoch's examples/s is
rows / wall time of the whole epoch (steps, data and anything between them; no validation). The
repeats run interleaved (backend by backend, then the next repeat), and the table reports the
median over every measured epoch of every repeat with its range. Stalls: ``epoch spread`` is
slowest / fastest steady epoch - 1 within a run (median and max over the runs), and ``s outside
steps`` the longest time per epoch spent outside the train steps (between Keras's batch callbacks:
iterator set-up and teardown, callbacks), where TensorFlow's per-epoch iterator teardown used to
cost seconds.

Roofline: in the same process, the fp32 GEMM rate of a ``(batch, k) @ (k, n)`` matmul of the
model's largest dense kernel (``keras.ops.matmul`` under ``jit``; GFLOP/s, median of 20 calls), and
the model's training FLOPs per example (3 x the forward pass's floating-point ops counted by
TensorFlow's graph profiler at batch 4096: the backward pass of a matmul costs twice its forward;
counted once, in the TensorFlow worker, and used for both backends). ``share of GEMM`` = FLOPs per
example x examples/s / GEMM rate: how close the whole step runs to the machine's matmul speed. It is a
roofline only where dense kernels carry the FLOPs (the MLP models); a model whose largest kernel is
small (AFM, DHEN, PLE, MMoE: a slow GEMM shape) or whose FLOPs sit in attention einsums can exceed
100 %, which then says the reference shape is not its bottleneck.

``--steps N`` (the slow models) measures epochs of N steps; the warm-up is still one whole pass (a
fit of its own), so the partial last batch is traced before the clock counts.

``--device gpu`` (a lent accelerator; JAX only) runs the same measurement there. ``--precision
bfloat16`` (CPU or GPU) trains with ``training.dtype_policy: mixed_bfloat16`` as ``zoo.train
--dtype-policy`` does (zoo.precision) and takes the GEMM roofline in bfloat16. Writes ``--output`` (JSON: every epoch of every run, medians, ranges, FLOPs, GEMM
rates, sizes, the environment of ``bench/environment.py``, the wall time) and prints a markdown table.
``--quick`` (a few steps per epoch, one repeat, output in the temporary directory) is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

DEFAULT_DATA = os.path.join(ROOT, "runs", "frappe_x1", "data")
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "train_throughput.json")
PATHS = ("memory", "stream", "numpy")
BATCH = 4096


def model_config(name: str, precision: str = "float32") -> dict:
    """The model's config as ``zoo.train`` reads it, with the BARS settings of quality_frappe.yaml
    (``precision`` bfloat16: ``training.dtype_policy: mixed_bfloat16``, as ``zoo.train --dtype-policy``)."""
    import quality_frappe

    from zoo.config import load_model_config

    config = quality_frappe.load_config()
    settings = quality_frappe.model_settings(name, config)
    cfg = load_model_config(quality_frappe.model_config_path(name, config))
    cfg.update(backbone=settings["backbone"], hparams=settings["hparams"], embedding=settings["embedding"])
    from workers import precision_policy

    cfg["training"].update(batch_size=BATCH, learning_rate=1e-3, dtype_policy=precision_policy(precision))
    return cfg


def flops_per_example(model, spec) -> float:
    """3 x the forward pass's float ops per example (TensorFlow graph profiler, batch BATCH)."""
    import tensorflow as tf

    specs = {name: tf.TensorSpec((BATCH, *feature.shape), feature.dtype)
             for name, feature in spec.parse_spec("inputs").items()}
    graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(specs).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    total = tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
    return 3.0 * total / BATCH


def gemm_rate(model, dtype: str = "float32") -> dict:
    """GFLOP/s of ``(BATCH, k) @ (k, n)`` for the model's largest 2-D kernel, jit-compiled, median of 20."""
    import keras
    import numpy as np

    kernels = [tuple(w.shape) for w in model.weights if len(w.shape) == 2 and "embedding" not in w.path]
    k, n = max(kernels, key=lambda s: s[0] * s[1]) if kernels else (128, 128)
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.normal(size=(BATCH, k)).astype(dtype))
    b = keras.ops.convert_to_tensor(rng.normal(size=(k, n)).astype(dtype))
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        matmul = jax.jit(lambda a, b: a @ b)
        block = lambda out: out.block_until_ready()  # noqa: E731
    else:
        import tensorflow as tf

        matmul = tf.function(lambda a, b: tf.matmul(a, b), jit_compile=False)
        block = lambda out: out.numpy()  # noqa: E731
    for _ in range(3):
        block(matmul(a, b))
    times = []
    for _ in range(20):
        start = time.perf_counter()
        block(matmul(a, b))
        times.append(time.perf_counter() - start)
    return {"shape": [BATCH, k, n], "gflops": round(2.0 * BATCH * k * n / statistics.median(times) / 1e9, 1)}


def worker(args) -> dict:
    """One subprocess (backend fixed by KERAS_BACKEND): every model on every path, ``1 + epochs`` epochs."""
    import keras

    from workers import epoch_timer
    from zoo import data, protocol
    from zoo.spec import load_spec
    from zoo.train import build_variant

    spec = load_spec(args.data)
    names = [f.name for f in spec.inputs]
    train = data.split_arrays(args.data, "train", spec)
    rows = len(train[spec.label])
    steps = args.steps or -(-rows // BATCH)
    per_pass = -(-rows // BATCH)

    def epoch_rows(epoch: int) -> int:  # every batch is full but the last of each pass over the split
        return sum(rows - (per_pass - 1) * BATCH if g % per_pass == per_pass - 1 else BATCH
                   for g in range(epoch * steps, (epoch + 1) * steps))

    # The warm-up epoch is always one whole pass (with --steps a fit of its own), so every batch shape,
    # the partial last one included, is traced and compiled before the clock counts.
    measured_rows = [epoch_rows(e) for e in range(args.epochs)] if args.steps else [rows] * args.epochs
    out = {"backend": keras.backend.backend(), "train_rows": rows, "rows_per_epoch": [rows] + measured_rows,
           "models": {}}
    for name in args.models.split(","):
        cfg = model_config(name, args.precision)
        result = {"paths": {}}
        for path in args.paths.split(","):
            keras.backend.clear_session()
            model = build_variant("baseline", spec, cfg, None, seed=0)
            if "gemm" not in result:
                result["gemm"] = gemm_rate(model, args.precision)
                result["params"] = int(model.count_params())
                if keras.backend.backend() == "tensorflow":
                    result["flops_per_example"] = flops_per_example(model, spec)
            timer = epoch_timer()
            if path == "numpy":
                keras.utils.set_random_seed(0)
                x, y, kwargs = protocol.fit_inputs({n: train[n] for n in names}, {"primary": train[spec.label]},
                                                   {"batch_size": BATCH, "shuffle": True})
            else:
                batches, _, _ = data.training_batches(args.data, spec, BATCH, seed=0, reader=path)
                x, y, kwargs = data.model_batches(spec, batches), None, {"steps_per_epoch": per_pass}
            if args.steps:  # the warm-up pass, then the measured epochs of --steps steps
                model.fit(x, y, **kwargs, epochs=1, callbacks=[timer], verbose=0)
                if "steps_per_epoch" in kwargs:
                    kwargs["steps_per_epoch"] = steps
                else:  # JAX arrays: Keras's own iterator, one pass per epoch
                    kwargs = {**kwargs, "steps_per_epoch": steps}
                model.fit(x, y, **kwargs, epochs=args.epochs, callbacks=[timer], verbose=0)
            else:
                model.fit(x, y, **kwargs, epochs=1 + args.epochs, callbacks=[timer], verbose=0)
            result["paths"][path] = {
                "epoch_seconds": [round(t, 3) for t in timer.epochs],
                "in_step_seconds": [round(t, 3) for t in timer.in_steps],
                "examples_per_second": [round(n / t) for n, t in zip(out["rows_per_epoch"][1:], timer.epochs[1:])],
            }
            print(f"[{out['backend']}] {name:<8} {path:<6} " + " ".join(
                f"{v:,}" for v in result["paths"][path]["examples_per_second"]) + " ex/s", file=sys.stderr, flush=True)
        out["models"][name] = result
    return out


def summarize(runs: list[dict], models: list[str], backends: list[str], paths: list[str]) -> list[dict]:
    flops = {m: r["models"][m]["flops_per_example"] for r in runs if r["backend"] == "tensorflow"
             for m in r["models"] if "flops_per_example" in r["models"][m]}
    rows = []
    for model in models:
        for backend in backends:
            mine = [r["models"][model] for r in runs if r["backend"] == backend and model in r["models"]]
            if not mine:
                continue
            gemm = statistics.median(m["gemm"]["gflops"] for m in mine)
            for path in paths:
                epochs = [v for m in mine for v in m["paths"].get(path, {}).get("examples_per_second", [])]
                if not epochs:
                    continue
                timed = [m["paths"][path] for m in mine if path in m["paths"]]
                spreads = [max(t["epoch_seconds"][1:]) / min(t["epoch_seconds"][1:]) - 1 for t in timed]
                outside = [e - s for t in timed for e, s in zip(t["epoch_seconds"][1:], t["in_step_seconds"][1:])]
                median = statistics.median(epochs)
                row = {"model": model, "backend": backend, "path": path, "examples_per_second": round(median),
                       "range": [min(epochs), max(epochs)], "epochs": len(epochs),
                       "epoch_spread": round(statistics.median(spreads), 3), "epoch_spread_max": round(max(spreads), 3),
                       "seconds_outside_steps_max": round(max(outside), 3), "gemm_gflops": gemm,
                       "params": mine[0]["params"]}
                if model in flops:
                    row["mflops_per_example"] = round(flops[model] / 1e6, 3)
                    row["share_of_gemm"] = round(flops[model] * median / (gemm * 1e9), 3)
                rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | backend | path | train examples/s (median) | range | epoch spread (median / max) "
             "| max s outside steps | MFLOP/example | GEMM GFLOP/s | share of GEMM |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['backend']} | {r['path']} | {r['examples_per_second']:,} | "
                     f"{r['range'][0]:,}-{r['range'][1]:,} | {r['epoch_spread']:.0%} / {r['epoch_spread_max']:.0%} | "
                     f"{r['seconds_outside_steps_max']:.2f} | "
                     f"{r.get('mflops_per_example', float('nan')):.2f} | {r['gemm_gflops']:.0f} | "
                     f"{r.get('share_of_gemm', float('nan')):.0%} |")
    return "\n".join(lines)


def main() -> None:
    from workers import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None, help="comma-separated backbones (default: every registered one)")
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per run, after one warm-up epoch")
    parser.add_argument("--steps", type=int, default=0, help="steps per epoch (default: one pass over the split)")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 steps per epoch, one repeat")
    parser.add_argument("--output", default=None)
    parser.add_argument("--append", action="store_true",
                        help="keep the runs of other models already in --output (e.g. the slow models measured "
                             "with fewer steps or paths) and summarize them all")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    from zoo.registry import backbone_names

    if not os.path.exists(os.path.join(args.data, "spec.json")):
        raise SystemExit(f"--data {args.data}: no TFRecords; run python -m zoo.pipeline --dataset "
                         "configs/datasets/frappe_x1.yaml --source ../shared/data/frappe_x1 --max-epochs 1 "
                         "--variants baseline --output runs/frappe_x1")
    if args.models:
        models = args.models.split(",")
    else:
        from zoo.registry import backbones_for
        from zoo.spec import load_spec

        models, skipped = backbones_for(load_spec(args.data))
        for name, reason in skipped.items():
            print(f"skipped {name}: {reason}", file=sys.stderr)
    backends = args.backends.split(",")
    if args.device == "gpu" and backends != ["jax"]:
        raise SystemExit("--device gpu: JAX only (--backends jax)")
    unknown = sorted(set(models) - set(backbone_names())) + sorted(set(args.paths.split(",")) - set(PATHS))
    if unknown:
        raise SystemExit(f"unknown model or path: {unknown}; models {backbone_names()}, paths {list(PATHS)}")
    if args.quick:
        args.steps, args.repeats, args.epochs = args.steps or 3, 1, 1
    output = args.output or (os.path.join(tempfile.gettempdir(), "train_throughput_quick.json") if args.quick
                             else DEFAULT_OUT)
    start, runs = time.time(), []
    for repeat in range(args.repeats):
        for backend in backends:
            env = {**os.environ, "KERAS_BACKEND": backend}
            if args.device == "cpu":
                env["CUDA_VISIBLE_DEVICES"] = ""
                env["JAX_PLATFORMS"] = "cpu"
            argv = [sys.executable, os.path.abspath(__file__), "--worker", "--models", ",".join(models),
                    "--paths", args.paths, "--epochs", str(args.epochs), "--steps", str(args.steps),
                    "--data", args.data, "--precision", args.precision]
            proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{backend} worker (repeat {repeat}) failed with exit code {proc.returncode}")
            runs.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "repeat": repeat,
                         "steps_per_epoch": args.steps or "one pass", "measured_epochs": args.epochs})
    from environment import environment

    invocation = {"models": models, "backends": backends, "paths": args.paths.split(","), "repeats": args.repeats,
                  "measured_epochs_per_run": args.epochs, "warmup_epochs_excluded": 1,
                  "steps_per_epoch": args.steps or "one pass", "wall_seconds": round(time.time() - start, 1),
                  "environment": environment()}
    invocations = [invocation]
    if args.append and os.path.exists(output):
        with open(output) as fh:
            previous = json.load(fh)
        kept = [r for r in previous["runs"] if not set(r["models"]) & set(models)]
        invocations = [i for i in previous["invocations"] if not set(i["models"]) & set(models)] + invocations
        runs = kept + runs
    every = list(dict.fromkeys(m for i in invocations for m in i["models"]))
    rows = summarize(runs, every, ["tensorflow", "jax"], list(PATHS))
    result = {"environment": invocation["environment"], "device": args.device, "precision": args.precision,
              "batch_size": BATCH, "data": os.path.relpath(args.data, ROOT),
              "invocations": invocations, "summary": rows, "runs": runs}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as fh:
        json.dump(result, fh, indent=1)
    print(table(rows))
    print(f"\nwall time {invocation['wall_seconds']:.0f} s; results: {output}")


if __name__ == "__main__":
    main()
