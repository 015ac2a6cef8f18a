"""Training examples/s against the device count, per ``zoo.train --distribution``, through zoo.train's input path.

    python bench/train_scaling.py [--distributions none,data_parallel] [--devices 1,2] [--rows 200000]
        [--batch-size 8192] [--precision float32|bfloat16] [--repeats 3] [--epochs 3]
        [--model configs/models/dcnv2.yaml] [--device cpu|gpu] [--model-shards M]
        [--output bench/results/train_scaling.json]

Data: Criteo-shaped synthetic rows generated here (:func:`generate`): 13 integer counts ``I1..I13``
(``floor(exp(N(1, 1.5)))``, stored as ``log1p`` as ``configs/datasets/criteo_layout.yaml`` does) and 26
categorical ids ``C1..C26`` with vocabularies log-spaced from 10 to 200,000 ids (:data:`VOCAB_SIZES`,
611K ids in all; id ``floor(V * u**2)``, so small ids are frequent), the click drawn from a known
logistic model (a bias, one N(0, 0.25) weight per id and field, N(0, 0.2) weights on the centred
log-counts; its probability is the spec's oracle column ``p_true``, so a fit that learns is
visible). They are written as CSV and encoded by the project's own writer,
``python -m beam_jobs.build_tfrecords`` (spec.json, manifest.json, GZIP shards: exactly what
``zoo.train --data`` reads), under ``--work`` (default ``runs/train_scaling``; reused while rows,
batch size, seed and :data:`DATA_VERSION` match). 10 % of the rows go to each of valid and test; the
train split holds the rest rounded down to a multiple of ``--batch-size`` (the spec's
``format.split_column``), so an epoch is exactly one pass of full batches both without a distribution
and with one (``zoo.data.training_batches``' ``full_batches``, what ``zoo.train`` uses under a
distribution): every row of the comparison trains the same rows per epoch.

Model: ``--model`` (default DCNv2, ``configs/models/dcnv2.yaml``: 3 full-rank cross layers, MLP
256-128-64, embedding dim 16 from the spec) built and compiled by ``zoo.train.build_variant``
(baseline, Adam, BCE), ``training.batch_size`` = ``--batch-size`` (the global batch), ``--precision
bfloat16`` = ``training.dtype_policy: mixed_bfloat16`` (as ``bench/train_throughput.py``). Input:
``zoo.data.training_batches`` (the model YAML's reader; ``auto`` picks ``memory`` here) ->
``zoo.data.model_batches`` -> ``model.fit(steps_per_epoch=...)``, built and fitted inside
``zoo.distribution.distribution_scope(name, model_shards)`` with ``zoo.train.distributed_model_config``
(``model_parallel``: the tables' rows padded to the shard count) as ``zoo.train`` does.

Each (distribution, device count) of ``--distributions`` x ``--devices`` is one subprocess with
``KERAS_BACKEND=jax``: on CPU ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (N virtual
devices), with ``--device gpu`` ``CUDA_VISIBLE_DEVICES`` = the first N GPUs (default N: 1, 2, 4, ...
and all of them). ``none`` trains on one device whatever N, so it runs at N = 1 only. A run fits
``2 + --epochs`` epochs of one pass each (``--steps`` to shorten them); the first two (tracing and
XLA compilation: under ``keras.distribution`` on a one-device mesh the train step is compiled again
at the start of the second epoch, see :data:`WARMUP_EPOCHS`) are excluded, as ``bench/train_throughput.py`` excludes its
first (its epoch timer, ``bench/workers.py``), and each run records its train-step compilations per
epoch, so a measured epoch that compiled shows. Repeats run interleaved. The table gives, per
(distribution, devices), the median examples/s over every measured epoch of every repeat, its
range, the speed-up over the same distribution on 1 device (``none`` on 1 device where that row is
missing) and the efficiency (speed-up / devices). ``--output`` (JSON) holds every epoch, the summary, the data's sizes and the
environment of ``bench/environment.py`` as a worker saw it (its devices included).

Read the CPU numbers for what they are: N virtual CPU devices are N XLA devices on the same cores
(2 on the development machine), so CPU "scaling" measures the overhead of splitting the batch and
all-reducing the gradients, never a speed-up. Real scaling needs several accelerators: ``--device
gpu`` on a lent GPU machine. ``--quick`` (20K rows, batch 1024, 3 steps per epoch, one repeat, the
data and the output in the temporary directory) is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from workers import PRECISIONS, epoch_timer, precision_policy  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "train_scaling.json")
DEFAULT_WORK = os.path.join(ROOT, "runs", "train_scaling")
DEFAULT_MODEL = os.path.join(ROOT, "configs", "models", "dcnv2.yaml")
DATA_VERSION = 1  # bump when generate() changes: cached data directories are then rebuilt
N_DENSE = 13
# 26 categorical fields, log-spaced from 10 to 200,000 ids (np.geomspace(10, 200_000, 26), rounded).
VOCAB_SIZES = tuple(int(v) for v in np.geomspace(10, 200_000, 26).round())
ID_SKEW = 2.0  # id = floor(V * u ** ID_SKEW), u uniform: small ids frequent
ID_WEIGHT_STD, DENSE_WEIGHT_STD, BIAS = 0.25, 0.2, -1.4
VALID_FRACTION = TEST_FRACTION = 0.1
# Epochs excluded from the measurement. One is not enough under keras.distribution on a one-device
# mesh: JAX compiles the train step on the first step, again on the second (the state now carries
# the step's output shardings) and once more on the first step of epoch 2 (after Keras syncs the
# state back into the variables), ~1.1 s each. On 2 devices, and without a distribution, it compiles
# once (results/train_scaling.json, every run: [2, 1, 0, 0, 0] vs [1, 0, 0, 0, 0] per epoch). Epoch 3
# on compiles nothing, and every run records its compilations per epoch (train_step_compiles_per_epoch).
WARMUP_EPOCHS = 2
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
QUICK = {"rows": 20_000, "batch_size": 1024, "steps": 3, "epochs": 1, "repeats": 1}


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def split_sizes(rows: int, batch_size: int) -> dict[str, int]:
    """Rows per split: 10 % valid, 10 % test, the rest rounded down to a whole number of batches."""
    valid, test = int(rows * VALID_FRACTION), int(rows * TEST_FRACTION)
    train = (rows - valid - test) // batch_size * batch_size
    if train == 0:
        raise ValueError(f"--rows {rows}: the train split (80 %) must hold at least one batch of "
                         f"--batch-size {batch_size}")
    return {"train": train, "valid": valid, "test": test}


def generate(sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """The rows as columns: ``label`` (0/1), ``I1..I13`` (int counts >= 0), ``C1..C26`` (ids in
    ``[0, V_f)``), ``p_true`` (the click probability the label was drawn from), ``split``."""
    rng = np.random.default_rng(seed)
    n = sum(sizes.values())
    counts = np.floor(np.exp(rng.normal(1.0, 1.5, size=(n, N_DENSE)))).astype(np.int64)
    logit = np.full(n, BIAS)
    log_counts = np.log1p(counts)
    logit += (log_counts - log_counts.mean(axis=0)) @ rng.normal(0.0, DENSE_WEIGHT_STD, N_DENSE)
    table = {f"I{j + 1}": counts[:, j] for j in range(N_DENSE)}
    for f, vocab in enumerate(VOCAB_SIZES):
        ids = np.minimum((vocab * rng.random(n) ** ID_SKEW).astype(np.int64), vocab - 1)
        logit += rng.normal(0.0, ID_WEIGHT_STD, vocab)[ids]
        table[f"C{f + 1}"] = ids
    p_true = 1.0 / (1.0 + np.exp(-logit))
    table["label"] = (rng.random(n) < p_true).astype(np.int64)
    table["p_true"] = p_true
    table["split"] = rng.permutation(np.repeat(np.array(list(sizes)), list(sizes.values())))
    return table


def spec_dict(name: str = "criteo_synthetic") -> dict:
    """The dataset spec of :func:`generate`'s CSV (Criteo's dense transforms, the given split column)."""
    columns = ["label", *(f"I{j + 1}" for j in range(N_DENSE)), *(f"C{f + 1}" for f in range(len(VOCAB_SIZES))),
               "p_true", "split"]
    features = [{"name": f"I{j + 1}", "kind": "dense", "transforms": [{"clip": [0, None]}, "log1p"]}
                for j in range(N_DENSE)]
    features += [{"name": f"C{f + 1}", "kind": "categorical", "vocab_size": v} for f, v in enumerate(VOCAB_SIZES)]
    features.append({"name": "p_true", "kind": "dense", "input": False})
    return {"name": name, "description": "Criteo-shaped synthetic rows of bench/train_scaling.py",
            "label": "label", "split_by": "line", "split": {"train": 0.8, "valid": 0.1, "test": 0.1},
            "format": {"delimiter": ",", "header": True, "columns": columns, "split_column": "split"},
            "defaults": {"embedding_dim": 16}, "features": features, "oracle": "p_true"}


def write_csv(table: dict[str, np.ndarray], path: str, columns: list[str]) -> str:
    """``table`` as CSV with a header, in ``columns`` order (the last one ``split``; integers as
    integers, ``p_true`` to 7 significant digits), one block of rows per split."""
    if columns[-1] != "split":
        raise ValueError(f"write_csv: the last column must be 'split', got {columns[-1]!r}")
    numeric = columns[:-1]
    with open(path, "w") as fh:
        fh.write(",".join(columns) + "\n")
        for split in np.unique(table["split"]):  # the split name is a constant of the block's format
            rows = table["split"] == split
            matrix = np.column_stack([table[c][rows].astype(object) for c in numeric])
            np.savetxt(fh, matrix, fmt=",".join("%.7g" if c == "p_true" else "%d" for c in numeric) + f",{split}")
    return path


def build_data(work: str, rows: int, batch_size: int, seed: int = 0) -> tuple[str, dict]:
    """The TFRecords of :func:`generate` under ``work`` (reused when already built); ``(data_dir, info)``."""
    import yaml

    sizes = split_sizes(rows, batch_size)
    name = f"criteo_synthetic_r{rows}_b{batch_size}_s{seed}_v{DATA_VERSION}"
    data_dir = os.path.join(work, name, "data")
    info_path = os.path.join(work, name, "info.json")
    if os.path.exists(os.path.join(data_dir, "_SUCCESS")) and os.path.exists(info_path):
        with open(info_path) as fh:
            return data_dir, json.load(fh)
    start = time.perf_counter()
    raw_dir = os.path.join(work, name, "raw")
    os.makedirs(raw_dir, exist_ok=True)
    spec = spec_dict()
    spec_path = os.path.join(work, name, "spec.yaml")
    with open(spec_path, "w") as fh:
        yaml.safe_dump(spec, fh, sort_keys=False)
    table = generate(sizes, seed)
    csv = write_csv(table, os.path.join(raw_dir, "rows.csv"), spec["format"]["columns"])
    subprocess.run([sys.executable, "-m", "beam_jobs.build_tfrecords", "--spec", spec_path, "--input", csv,
                    "--output", data_dir], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT})
    shutil.rmtree(raw_dir)
    info = {"rows": sizes, "positive_rate": round(float(table["label"].mean()), 4),
            "mean_p_true": round(float(table["p_true"].mean()), 4), "vocab_sizes": list(VOCAB_SIZES),
            "dense_features": N_DENSE, "seed": seed, "version": DATA_VERSION,
            "build_seconds": round(time.perf_counter() - start, 1)}
    with open(info_path, "w") as fh:
        json.dump(info, fh, indent=1)
    return data_dir, info


# ---------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------


def grid(distributions: list[str], devices: list[int]) -> list[tuple[str, int]]:
    """Every (distribution, device count) to run; ``none`` uses one device whatever the count, so only N = 1."""
    return [(d, n) for d in distributions for n in devices if d != "none" or n == 1]


def worker(args) -> dict:
    """One subprocess (KERAS_BACKEND=jax, its devices set by the parent): ``1 + epochs`` epochs of one run."""
    import keras

    from environment import environment
    from zoo import data
    from zoo.config import load_model_config
    from zoo.distribution import distribution_scope
    from zoo.spec import load_spec
    from zoo.train import build_variant, distributed_model_config

    spec = load_spec(args.data)
    cfg = load_model_config(args.model)
    cfg["training"].update(batch_size=args.batch_size, dtype_policy=precision_policy(args.precision))
    cfg = distributed_model_config(cfg, args.distribution, args.model_shards)  # zoo.train's: padded tables
    devices = keras.distribution.list_devices()
    if args.distribution != "none" and len(devices) != args.devices:
        raise SystemExit(f"worker: {len(devices)} devices visible, {args.devices} requested")
    timer, compiles = epoch_timer(), compile_counter()
    with distribution_scope(args.distribution, args.model_shards) as distribution:
        model = build_variant("baseline", spec, cfg, None, seed=0)
        batches, per_pass, reader = data.training_batches(args.data, spec, args.batch_size, seed=0,
                                                          reader=cfg["training"]["reader"],
                                                          full_batches=args.distribution != "none")
        steps = args.steps or per_pass
        history = model.fit(data.model_batches(spec, batches), steps_per_epoch=steps,
                            epochs=WARMUP_EPOCHS + args.epochs, callbacks=[timer, compiles], verbose=0)
    examples = steps * args.batch_size  # every batch is full (split_sizes)
    w = WARMUP_EPOCHS
    out = {"distribution": args.distribution, "devices": args.devices,
           "device_kinds": sorted({f"{d.platform}:{d.device_kind}" for d in _jax_devices()}),
           "distribution_repr": repr(distribution) if distribution is not None else None,
           "reader": reader, "steps_per_epoch": steps, "examples_per_epoch": examples,
           "params": int(model.count_params()), "loss": [round(float(v), 5) for v in history.history["loss"]],
           "warmup_epoch_seconds": [round(t, 3) for t in timer.epochs[:w]],
           "train_step_compiles_per_epoch": compiles.per_epoch,
           "epoch_seconds": [round(t, 3) for t in timer.epochs[w:]],
           "in_step_seconds": [round(t, 3) for t in timer.in_steps[w:]],
           "examples_per_second": [round(examples / t) for t in timer.epochs[w:]],
           "environment": environment()}
    print(f"[{args.distribution} x {args.devices}] " + " ".join(f"{v:,}" for v in out["examples_per_second"])
          + " ex/s", file=sys.stderr, flush=True)
    return out


def _jax_devices():
    import jax

    return jax.devices()


def compile_counter():
    """A Keras callback holding ``per_epoch``: the XLA compilations of the train step in each epoch
    (JAX's ``/jax/core/compile/backend_compile_duration`` events of a function named ``*train*``)."""
    import jax
    import keras

    class CompileCounter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.count, self.per_epoch, self._at = 0, [], 0
            jax.monitoring.register_event_duration_secs_listener(self._event)

        def _event(self, event, duration, **kwargs):
            if event == COMPILE_EVENT and "train" in str(kwargs.get("fun_name", "")):
                self.count += 1

        def on_epoch_end(self, epoch, logs=None):
            self.per_epoch.append(self.count - self._at)
            self._at = self.count

    return CompileCounter()


def worker_env(device: str, devices: int) -> dict[str, str]:
    """The environment of a worker on ``devices`` CPU (virtual) or GPU devices."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT,
           "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if device == "cpu":
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform")]
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu",
                   XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]))
    else:
        env.update(CUDA_VISIBLE_DEVICES=",".join(str(i) for i in range(devices)), JAX_PLATFORMS="cuda")
    return env


def gpu_count() -> int:
    """GPUs JAX sees on this machine (0 without any), asked in a subprocess."""
    env = {**os.environ, "JAX_PLATFORMS": "cuda"}
    done = subprocess.run([sys.executable, "-c", "import jax; print(jax.device_count())"], env=env,
                          capture_output=True, text=True)
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0


def default_devices(device: str, available: int) -> list[int]:
    """CPU: 1 and 2 virtual devices; GPU: 1, 2, 4, ... and every GPU."""
    if device == "cpu":
        return [1, 2]
    counts = [2 ** k for k in range(int(math.log2(max(available, 1))) + 1)]
    return counts + ([available] if available not in counts else [])


# ---------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (distribution, devices), in the runs' order: median and range of every measured
    epoch's examples/s, speed-up over the same distribution on 1 device (else ``none`` on 1 device;
    None without either), efficiency = speed-up / devices, and the train-step compilations that fell
    in measured epochs (0 when the warm-up covered them)."""
    groups: dict[tuple[str, int], list[int]] = {}
    compiled: dict[tuple[str, int], int] = {}
    for run in runs:
        key = (run["distribution"], run["devices"])
        groups.setdefault(key, []).extend(run["examples_per_second"])
        compiled[key] = compiled.get(key, 0) + sum(run.get("train_step_compiles_per_epoch", [])[WARMUP_EPOCHS:])
    medians = {key: statistics.median(values) for key, values in groups.items()}
    rows = []
    for (name, devices), values in groups.items():
        base = medians.get((name, 1), medians.get(("none", 1)))
        speedup = medians[(name, devices)] / base if base else None
        rows.append({"distribution": name, "devices": devices, "examples_per_second": round(medians[(name, devices)]),
                     "range": [min(values), max(values)], "epochs": len(values),
                     "speedup": round(speedup, 3) if speedup is not None else None,
                     "efficiency": round(speedup / devices, 3) if speedup is not None else None,
                     "compiles_in_measured_epochs": compiled[(name, devices)]})
    return rows


def table(rows: list[dict]) -> str:
    """The markdown table of :func:`summarize`'s rows."""
    lines = ["| distribution | devices | train examples/s (median) | range | speed-up vs 1 device | efficiency |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if r["speedup"] is not None else "-"
        efficiency = f"{r['efficiency']:.0%}" if r["efficiency"] is not None else "-"
        lines.append(f"| {r['distribution']} | {r['devices']} | {r['examples_per_second']:,} | "
                     f"{r['range'][0]:,}-{r['range'][1]:,} | {speedup} | {efficiency} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def parse_devices(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``; a one-line ValueError naming ``--devices`` otherwise."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--devices: comma-separated device counts, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise ValueError(f"--devices: device counts must be >= 1, got {text!r}")
    return list(dict.fromkeys(counts))


def check_options(distributions: list[str], devices: list[int], batch_size: int, available: int | None) -> None:
    """One-line ValueErrors naming the bad option."""
    from zoo.distribution import DISTRIBUTIONS

    unknown = [d for d in distributions if d not in DISTRIBUTIONS]
    if unknown or not distributions:
        raise ValueError(f"--distributions: must be among {list(DISTRIBUTIONS)}, got {unknown or distributions}")
    if "mirrored" in distributions:
        raise ValueError("--distributions: 'mirrored' runs on TensorFlow; this bench's workers run JAX")
    uneven = [n for n in devices if batch_size % n]
    if uneven:
        raise ValueError(f"--batch-size {batch_size}: not divisible by --devices {uneven} (each device takes "
                         "an equal share of the global batch)")
    if available is not None and max(devices) > available:
        raise ValueError(f"--devices: {max(devices)} requested, {available} GPUs on this machine")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--distributions", default="none,data_parallel",
                        help="comma-separated zoo.distribution.DISTRIBUTIONS")
    parser.add_argument("--devices", default=None,
                        help="comma-separated device counts (default: 1,2 on CPU; 1,2,4,..,all on GPU)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--model-shards", type=int, default=None,
                        help="model_parallel's model axis (default: every device of the run)")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic rows in all (80 %% train)")
    parser.add_argument("--batch-size", type=int, default=8192, help="the global batch")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model YAML")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs per run, after the warm-up epochs")
    parser.add_argument("--steps", type=int, default=0, help="steps per epoch (default: one pass over the split)")
    parser.add_argument("--seed", type=int, default=0, help="the data's seed")
    parser.add_argument("--work", default=None, help=f"data directory cache (default {DEFAULT_WORK})")
    parser.add_argument("--quick", action="store_true", help="smoke run: " + ", ".join(
        f"{k} {v}" for k, v in QUICK.items()) + "; data and output in the temporary directory")
    parser.add_argument("--output", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--distribution", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.devices = int(args.devices)
        print(json.dumps(worker(args)))
        return
    if args.quick:
        for key, value in QUICK.items():  # what the command line left at its default
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    distributions = [d.strip() for d in args.distributions.split(",") if d.strip()]
    try:
        available = gpu_count() if args.device == "gpu" else None
        if available == 0:
            raise ValueError("--device gpu: JAX sees no GPU on this machine")
        devices = parse_devices(args.devices) if args.devices else default_devices(args.device, available or 1)
        check_options(distributions, devices, args.batch_size, available)
        work = args.work or (tempfile.mkdtemp(prefix="train_scaling_") if args.quick else DEFAULT_WORK)
        data_dir, info = build_data(work, args.rows, args.batch_size, args.seed)
    except ValueError as err:
        raise SystemExit(f"train_scaling: {err}") from None
    output = args.output or (os.path.join(tempfile.gettempdir(), "train_scaling_quick.json") if args.quick
                             else DEFAULT_OUT)
    print(f"data: {data_dir} ({info['rows']['train']:,} train rows, positive rate {info['positive_rate']:.3f})",
          file=sys.stderr, flush=True)
    start, runs = time.time(), []
    for repeat in range(args.repeats):
        for name, n in grid(distributions, devices):
            argv = [sys.executable, os.path.abspath(__file__), "--worker", "--data", data_dir, "--distribution", name,
                    "--devices", str(n), "--model", args.model, "--batch-size", str(args.batch_size),
                    "--precision", args.precision, "--epochs", str(args.epochs), "--steps", str(args.steps)]
            if args.model_shards is not None and name == "model_parallel":
                argv += ["--model-shards", str(args.model_shards)]
            proc = subprocess.run(argv, env=worker_env(args.device, n), stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"train_scaling: worker {name} x {n} (repeat {repeat}) failed with exit code "
                                 f"{proc.returncode}")
            runs.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "repeat": repeat})
    rows = summarize(runs)
    environment = runs[0]["environment"]
    for run in runs:
        del run["environment"]
    result = {"environment": environment, "device": args.device, "precision": args.precision,
              "batch_size": args.batch_size, "model": os.path.relpath(os.path.abspath(args.model), ROOT),
              "data": info, "distributions": distributions, "device_counts": devices, "repeats": args.repeats,
              "measured_epochs_per_run": args.epochs, "warmup_epochs_excluded": WARMUP_EPOCHS,
              "steps_per_epoch": runs[0]["steps_per_epoch"], "model_shards": args.model_shards,
              "wall_seconds": round(time.time() - start, 1), "summary": rows, "runs": runs}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as fh:
        json.dump(result, fh, indent=1)
    print(table(rows))
    for r in rows:
        if r["compiles_in_measured_epochs"]:
            print(f"warning: {r['distribution']} x {r['devices']}: the train step compiled "
                  f"{r['compiles_in_measured_epochs']} time(s) inside measured epochs; its examples/s include it")
    print(f"\nwall time {result['wall_seconds']:.0f} s; results: {output}")


if __name__ == "__main__":
    main()
