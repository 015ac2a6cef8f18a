"""In-process serving latency and throughput of every backbone's exported SavedModel, both signatures.

    python bench/serving_latency.py [--models dcnv2,deepfm] [--data runs/frappe_x1/data]
        [--calls 2000] [--warmup 200] [--repeats 10] [--quick] [--output bench/results/serving_latency.json]

Models: every registered backbone that the data's spec supports (``zoo.registry.backbones_for``; the others,
e.g. DIN on a spec without a behaviour sequence, are named and skipped), so a new backbone is measured
without touching this script), each built from its ``configs/models/<name>.yaml`` (backbone,
embedding and hyper-parameters, as ``zoo.train`` builds it) on the spec of ``--data``: by default the
Frappe_x1 TFRecords (``runs/frappe_x1/data``, written by ``python -m zoo.pipeline --dataset
configs/datasets/frappe_x1.yaml ...``); ``--data runs/synthetic/data`` measures on the main job's
synthetic data (the setting of the hand-measured DCNv2 reference below). ``--models`` picks a subset.

Per model:

1. build it with seed 0 and **do not train it**: latency and throughput depend on the graph and
   the parameter shapes, not on the weights' values;
2. export it with ``zoo.export.export_saved_model`` into a temporary export root, the project's real
   export path: served graph (task paths, MLET folded), warm-up records from the first test rows of
   ``--data``, the reload + comparison of both signatures with the Keras model, the staged rename;
3. load it with ``tf.saved_model.load`` in this process and time both signatures:
   ``serving_default`` (one named tensor per feature) and ``predict_examples`` (a batch of serialized
   ``tf.train.Example`` strings from ``zoo.export.serialize_examples``, parsed in the graph);

   * batch-1 latency: ``--warmup`` untimed calls, then ``--calls`` timed calls (default 200 and
     2000), each on one of the first 256 test rows in turn; p50 / p90 / p99 / mean in ms;
   * throughput at batch 1024 and 8192 (the first rows of the test split, repeated if the split is
     smaller): 2 untimed calls, then ``--repeats`` timed calls (default 10); examples/s is the batch
     over the median call time.

Every request is built before the clock starts (tensors for ``serving_default``, serialized examples
for ``predict_examples``), so request construction and serialization are excluded; a timed call is
the signature call plus reading its ``probability`` back as NumPy (``perf_counter`` around both),
with Python's garbage collector off during the timed loop. This is the Python ``tf.saved_model.load``
path, one caller, no RPC: TF Serving adds its gRPC/REST handling and batching on top, and saves the
Python call overhead (a good part of a batch-1 call). ``params (served)`` counts the elements of the
loaded SavedModel's variables, checked equal to the Keras serving model's ``count_params``; the
random-seed states of Dropout layers (an int64 pair each, unused at inference but saved with the
model) are not parameters and are counted apart (``saved_model_seed_states``).

A backbone that fails to build, export, load or run is reported (stage, error, traceback tail) in
the table's failures and the JSON's ``failures``, and the others are still measured; the exit status
is then 1.

Reference (an earlier hand measurement of the main job's DCNv2 export on the synthetic data; its
method is not recorded, so compare with ``--data runs/synthetic/data --models dcnv2`` loosely):
``serving_default`` batch-1 p50 0.58 ms, 230K examples/s at batch 1024; ``predict_examples``
0.44 ms, 206K examples/s.

Prints a markdown table and writes ``--output`` (JSON: the environment of ``bench/environment.py``,
load average before and after, TensorFlow's thread settings, the sizes and call counts, per-model
results, failures, wall time). ``--quick`` (20 warm-up + 100 timed batch-1 calls, 3 throughput calls,
unless ``--calls`` / ``--warmup`` / ``--repeats`` say otherwise) is a smoke run; its default output is
``serving_latency_quick.json`` in the temporary directory, so it never replaces the measured results.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's zoo, not an installed one
sys.path.insert(1, os.path.join(ROOT, "bench"))  # bench/environment.py
os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the export then runs in this process (JAX works too)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_DATA = os.path.join(ROOT, "runs", "frappe_x1", "data")
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "serving_latency.json")
QUICK_OUT = os.path.join(tempfile.gettempdir(), "serving_latency_quick.json")
MODEL_CONFIGS = os.path.join(ROOT, "configs", "models")
BATCH_SIZES = (1024, 8192)
SINGLE_ROWS = 256  # distinct rows the batch-1 calls cycle through
THROUGHPUT_WARMUP = 2
FULL = {"warmup": 200, "calls": 2000, "repeats": 10}
QUICK = {"warmup": 20, "calls": 100, "repeats": 3}
SEED = 0
SEED_STATE = "seed_generator_state"  # a Keras SeedGenerator's variable (Dropout), saved with the model
REFERENCE = {
    "what": "an earlier hand measurement of the main job's DCNv2 export (synthetic data); method not recorded",
    "serving_default": {"p50_ms": 0.58, "examples_per_s_1024": 230_000},
    "predict_examples": {"p50_ms": 0.44, "examples_per_s_1024": 206_000},
}


def model_config_path(name: str) -> str:
    return os.path.join(MODEL_CONFIGS, f"{name}.yaml")


def request_rows(spec, data_dir: str, rows: int):
    """The first ``rows`` test rows of ``data_dir`` as checked arrays (``zoo.export.warmup_features``),
    repeated in order when the split is smaller; returns ``(features, distinct rows)``."""
    import numpy as np

    from zoo.export import warmup_features

    features = warmup_features(spec, data_dir, rows, "test")
    distinct = len(next(iter(features.values())))
    if distinct < rows:
        index = np.arange(rows) % distinct
        features = {k: np.take(v, index, axis=0) for k, v in features.items()}
    return features, distinct


def build_requests(spec, data_dir: str) -> dict:
    """Every request of the benchmark, built once: per signature, the batch-1 pool and one request per
    batch size, as the keyword arguments of the signature call (``tf.Tensor`` values)."""
    import numpy as np
    import tensorflow as tf

    from zoo.export import EXAMPLES_INPUT, EXAMPLES_SIGNATURE, SIGNATURE, serialize_examples

    features, distinct = request_rows(spec, data_dir, max(BATCH_SIZES))
    examples = np.array(serialize_examples(spec, features), dtype=object)
    pool = min(SINGLE_ROWS, distinct)

    def named(lo, hi):
        return {k: tf.constant(v[lo:hi]) for k, v in features.items()}

    def serialized(lo, hi):
        return {EXAMPLES_INPUT: tf.constant(examples[lo:hi], dtype=tf.string)}

    requests = {}
    for signature, make in ((SIGNATURE, named), (EXAMPLES_SIGNATURE, serialized)):
        requests[signature] = {"single": [make(i, i + 1) for i in range(pool)],
                               "batches": {b: make(0, b) for b in BATCH_SIZES}}
    sizes = {"distinct_rows": distinct, "batch_1_pool": pool,
             "example_bytes_mean": round(float(np.mean([len(e) for e in examples[:pool]])), 1)}
    return {"requests": requests, "sizes": sizes}


def _call(fn, request):
    from zoo.export import OUTPUT

    return fn(**request)[OUTPUT].numpy()


def batch1_latency(fn, pool: list, warmup: int, calls: int) -> dict:
    """``warmup`` untimed then ``calls`` timed batch-1 calls cycling through ``pool``; ms percentiles."""
    import numpy as np

    for i in range(warmup):
        _call(fn, pool[i % len(pool)])
    times = np.empty(calls)
    gc.collect()
    gc.disable()
    try:
        for i in range(calls):
            request = pool[i % len(pool)]
            start = time.perf_counter()
            _call(fn, request)
            times[i] = time.perf_counter() - start
    finally:
        gc.enable()
    ms = times * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p90_ms": round(float(np.percentile(ms, 90)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4), "mean_ms": round(float(ms.mean()), 4),
            "min_ms": round(float(ms.min()), 4), "max_ms": round(float(ms.max()), 4)}


def throughput(fn, request: dict, batch: int, repeats: int) -> dict:
    """Examples/s of one batch size: the batch over the median of ``repeats`` timed calls."""
    for _ in range(THROUGHPUT_WARMUP):
        _call(fn, request)
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            _call(fn, request)
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    median = statistics.median(times)
    return {"examples_per_s": round(batch / median), "median_ms": round(median * 1e3, 3),
            "min_ms": round(min(times) * 1e3, 3), "max_ms": round(max(times) * 1e3, 3)}


def _dir_mb(path: str) -> float:
    return round(sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 2**20, 2)


def measure_model(name: str, spec, data_dir: str, export_root: str, counts: dict, cache: dict,
                  state: dict) -> dict:
    """Builds, exports, loads and times one backbone; ``state["stage"]`` names the step in progress."""
    import keras
    import tensorflow as tf

    from zoo.config import load_model_config
    from zoo.export import EXAMPLES_SIGNATURE, SIGNATURE, export_saved_model, served_spec, serving_model
    from zoo.model import build

    start = time.perf_counter()
    state["stage"] = "config"
    path = model_config_path(name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{os.path.relpath(path, ROOT)}: no model YAML for registered backbone '{name}'")
    cfg = load_model_config(path)
    state["stage"] = "build"
    keras.utils.set_random_seed(SEED)
    model = build(cfg["backbone"], spec, embedding=cfg["embedding"], **cfg["hparams"])
    served = served_spec(model, spec)
    params_keras = serving_model(model, served).count_params()
    state["stage"] = "export"
    t = time.perf_counter()
    export_dir = export_saved_model(model, spec, export_root, name, eval_data=data_dir)
    export_s = time.perf_counter() - t
    state["stage"] = "load"
    t = time.perf_counter()
    loaded = tf.saved_model.load(export_dir)
    load_s = time.perf_counter() - t
    # Dropout's random-seed states (int64 (2,), unused at inference) are saved too; they are no parameters.
    seed_states = [v.name for v in loaded.variables if SEED_STATE in v.name]
    params = sum(int(v.shape.num_elements()) for v in loaded.variables if SEED_STATE not in v.name)
    if params != params_keras:
        raise RuntimeError(f"the SavedModel holds {params} parameters, the Keras serving model {params_keras}")
    state["stage"] = "requests"
    key = served.to_json()
    if key not in cache:
        cache[key] = build_requests(served, data_dir)
    requests = cache[key]["requests"]
    result = {"model_yaml": os.path.relpath(path, ROOT), "backbone": cfg["backbone"], "hparams": cfg["hparams"],
              "params_served": params, "params_training_model": model.count_params(),
              "saved_model_seed_states": len(seed_states), "saved_model_mb": _dir_mb(export_dir),
              "export_seconds": round(export_s, 2), "load_seconds": round(load_s, 2),
              "request_sizes": cache[key]["sizes"], "signatures": {}}
    for signature in (SIGNATURE, EXAMPLES_SIGNATURE):
        state["stage"] = f"measure {signature}"
        fn = loaded.signatures[signature]
        t = time.perf_counter()
        _call(fn, requests[signature]["single"][0])
        first_call_ms = (time.perf_counter() - t) * 1e3
        entry = {"first_call_ms": round(first_call_ms, 3),
                 "batch_1": batch1_latency(fn, requests[signature]["single"], counts["warmup"], counts["calls"]),
                 "throughput": {str(b): throughput(fn, requests[signature]["batches"][b], b, counts["repeats"])
                                for b in BATCH_SIZES}}
        result["signatures"][signature] = entry
    shutil.rmtree(os.path.dirname(export_dir), ignore_errors=True)
    del loaded, model
    keras.backend.clear_session()
    gc.collect()
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    return result


def _shown(path: str) -> str:
    """``path`` relative to the checkout when it lies inside it (symlinks kept), else absolute."""
    rel = os.path.relpath(os.path.abspath(path), ROOT)
    return os.path.abspath(path) if rel.startswith("..") else rel


def _thousands(x: float) -> str:
    return f"{x / 1000:.0f}K" if x >= 10_000 else f"{x / 1000:.1f}K"


def format_table(models: dict, failures: list) -> str:
    """The markdown table: params, then per signature batch-1 p50 / p99 and examples/s per batch size."""
    sigs = ("serving_default", "predict_examples")
    head = ["model", "params (served)"]
    for s in sigs:
        head += [f"{s} p50 ms", "p99 ms"] + [f"ex/s @{b}" for b in BATCH_SIZES]
    head += ["export s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in models.items():
        row = [name, f"{r['params_served']:,}"]
        for s in sigs:
            e = r["signatures"][s]
            row += [f"{e['batch_1']['p50_ms']:.3f}", f"{e['batch_1']['p99_ms']:.3f}"]
            row += [_thousands(e["throughput"][str(b)]["examples_per_s"]) for b in BATCH_SIZES]
        row += [f"{r['export_seconds']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    for f in failures:
        cells = [f["model"], f"FAILED at {f['stage']}: {f['error'].splitlines()[0][:160]}"] + [""] * (len(head) - 2)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--models", default="", help="comma-separated subset of the registered backbones "
                        "(default: every one the data's spec supports, zoo.registry.backbones_for)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="a Beam job data directory: its spec.json builds "
                        "the models and its test split gives the requests and warm-up rows (default: Frappe_x1; "
                        "runs/synthetic/data: the main job's)")
    parser.add_argument("--calls", type=int, help=f"timed batch-1 calls per signature (default {FULL['calls']}, "
                        f"--quick {QUICK['calls']})")
    parser.add_argument("--warmup", type=int, help=f"untimed batch-1 calls first (default {FULL['warmup']}, "
                        f"--quick {QUICK['warmup']})")
    parser.add_argument("--repeats", type=int, help=f"timed calls per throughput batch size (default "
                        f"{FULL['repeats']}, --quick {QUICK['repeats']})")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few calls, output in the temp dir")
    parser.add_argument("--output", help=f"results JSON (default {os.path.relpath(DEFAULT_OUT, ROOT)}; "
                        f"--quick: {QUICK_OUT})")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    counts = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    if counts["calls"] < 1 or counts["repeats"] < 1 or counts["warmup"] < 0:
        parser.error("--calls and --repeats must be >= 1, --warmup >= 0")
    output = args.output or (QUICK_OUT if args.quick else DEFAULT_OUT)

    import tensorflow as tf

    from environment import environment
    from zoo.registry import backbone_names
    from zoo.spec import load_spec

    registered = backbone_names()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in registered]
    if unknown:
        parser.error(f"--models: unknown {unknown}; registered backbones: {registered}")
    if not os.path.exists(os.path.join(args.data, "spec.json")):
        parser.error(f"--data {args.data}: no spec.json; write the Frappe_x1 TFRecords with python -m zoo.pipeline "
                     "--dataset configs/datasets/frappe_x1.yaml --source <frappe_x1 folder> --output runs/frappe_x1, "
                     "or pass the main job's runs/synthetic/data")
    spec = load_spec(args.data)
    if not names:
        from zoo.registry import backbones_for

        names, skipped = backbones_for(spec)
        for name, reason in skipped.items():
            print(f"skipped {name}: {reason}", file=sys.stderr)

    load_before = os.getloadavg()
    wall_start = time.perf_counter()
    models, failures, cache = {}, [], {}
    with tempfile.TemporaryDirectory(prefix="serving-latency-") as export_root:
        for name in names:
            print(f"{name}: build, export, load, {counts['warmup']}+{counts['calls']} batch-1 calls and "
                  f"{THROUGHPUT_WARMUP}+{counts['repeats']} calls at {'/'.join(map(str, BATCH_SIZES))} "
                  "per signature ...", flush=True)
            state = {"stage": "start"}
            try:
                models[name] = measure_model(name, spec, args.data, export_root, counts, cache, state)
            except Exception as err:  # a failing backbone is a finding: recorded, the others still run
                failures.append({"model": name, "stage": state["stage"], "error": f"{type(err).__name__}: {err}",
                                 "traceback": traceback.format_exc().splitlines()[-25:]})
                print(f"{name}: FAILED at {state['stage']}: {type(err).__name__}: {str(err)[:2000]}",
                      file=sys.stderr, flush=True)
                import keras

                keras.backend.clear_session()
                gc.collect()
    wall = time.perf_counter() - wall_start

    table = format_table(models, failures)
    env = {**environment(), "wall_seconds": round(wall, 1),
           "loadavg_before": [round(x, 2) for x in load_before],
           "loadavg_after": [round(x, 2) for x in os.getloadavg()],
           "cpus_usable": len(os.sched_getaffinity(0)),
           "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),  # 0: TensorFlow's default
           "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}
    result = {
        "benchmark": "serving_latency: in-process tf.saved_model.load calls of each backbone's export, both signatures",
        "command": " ".join(["python", "bench/serving_latency.py", *(sys.argv[1:] if argv is None else argv)]),
        "setup": {
            "data": _shown(args.data),
            "spec": spec.name,
            "training": "none: models are built with seed 0 and exported untrained (weights do not change latency)",
            "export": "zoo.export.export_saved_model into a temporary root: warm-up records from the test split, "
                      "both signatures verified against Keras",
            "batch_1": {"warmup_calls": counts["warmup"], "timed_calls": counts["calls"],
                        "distinct_rows_cycled": SINGLE_ROWS},
            "throughput": {"batch_sizes": list(BATCH_SIZES), "warmup_calls": THROUGHPUT_WARMUP,
                           "timed_calls": counts["repeats"], "statistic": "batch / median call time"},
            "timed_call": "signature call + probability .numpy(); requests pre-built (construction and "
                          "serialization excluded); gc disabled in timed loops",
            "quick": args.quick,
        },
        "reference": REFERENCE,
        "models": models,
        "failures": failures,
        "table": table,
        "environment": env,
    }
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as fh:
        json.dump(result, fh, indent=2)
    print()
    print(table)
    for f in failures:
        print(f"\n{f['model']} failed at {f['stage']}: {f['error']}\n  " + "\n  ".join(f["traceback"][-6:]))
    print(f"\n{len(models)} measured, {len(failures)} failed; backend {env['backend']}, TensorFlow "
          f"{env.get('tensorflow')}, {env['cpus_usable']} usable CPUs, load {env['loadavg_before'][0]} -> "
          f"{env['loadavg_after'][0]}; wall {wall:.0f} s; wrote {output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
