"""C2AL experiment runner: baseline vs C2AL for every backbone x dataset x seed, with a report.

    python bench/c2al_report.py prepare [--work runs/c2al_report]              # Beam -> TFRecords -> arrays (TF)
    python bench/c2al_report.py run [--jobs 8] [--output bench/results/c2al]   # training + report (Keras only)
    python bench/c2al_report.py                                                # both

``prepare`` runs each dataset through the same path as the main job (adapter -> Beam job ->
TFRecords, read back with ``zoo.data.read_split``) and caches every split as NumPy arrays (model
inputs, label, cohort ids, the raw features) with the resolved ``spec.json``. ``run`` needs only
Keras and those arrays, so it also runs under JAX on a GPU machine. For each (dataset, backbone):

1. the seed-0 baseline is trained; its validation predictions give the per-cohort histograms of the
   dataset's C2AL axis, and cohort discovery (``zoo.cohorts``, Jensen-Shannon, 20 bins, cohorts with
   at least 1 % of the rows) picks the most contrasting (head, tail) pair;
2. baseline and C2AL (two ``Dense(1)`` heads on ``h``, labels ``y * 1[x in C]``, lambda 0.1 each) are
   trained for every seed on the same data with the same initial weights of the shared path;
3. both are evaluated once on the test split: AUC, log loss and NE overall and per cohort.

The report (markdown + plots + raw JSON) gives NE_diff (%) = 100 (NE_c2al - NE_base) / NE_base
mean +/- std over seeds, overall and on the head and tail cohorts, and a paired two-sided t-test on
the per-seed NE pairs (H0: equal mean NE). Negative NE_diff = C2AL better.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DATASETS = {  # name -> (dataset YAML, source folder relative to ../shared/data or None)
    "synthetic": ("configs/datasets/synthetic.yaml", None),
    "movielens100k": ("configs/datasets/movielens100k.yaml", "ml-100k"),
    "frappe_x1": ("configs/datasets/frappe_x1.yaml", "frappe_x1"),
    # The synthetic data without its planted head/tail behaviour: discovery only (the reference
    # backbone, seed 0), to show how small the top divergence is when there is no contrast to find.
    "synthetic_nocontrast": ("configs/datasets/synthetic.yaml", None),
}
DISCOVERY_ONLY = {"synthetic_nocontrast"}
MODEL_CONFIGS = os.path.join(ROOT, "configs", "models")
# The main job's model (zoo.pipeline's default --model). Its backbone is the reference backbone: the only
# one that writes the discovery artefacts discovery_<dataset>/ (one writer per dataset, so parallel jobs
# never write the same files, and they are comparable with the main job's discovery) and the only one
# that runs the discovery-only datasets.
REFERENCE_MODEL = os.path.join(MODEL_CONFIGS, "dcnv2.yaml")
SEEDS = (0, 1, 2, 3, 4)
TRAINING = {"batch_size": 2048, "epochs": 4, "learning_rate": 1e-3, "early_stopping_patience": 1}
DISCOVERY = {"metric": "js", "bins": 20, "min_fraction": 0.01}
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


# --------------------------------------------------------------------------------------------------
# prepare: raw data -> Beam -> TFRecords -> NumPy arrays (needs TensorFlow and Beam)
# --------------------------------------------------------------------------------------------------
def prepare(work: str, datasets: list[str], synthetic_rows: int) -> None:
    import numpy as np

    from beam_jobs import build_tfrecords
    from zoo import data
    from zoo import datasets as adapters
    from zoo.spec import SPLITS, load_spec

    for name in datasets:
        yaml_path, source = DATASETS[name]
        spec = load_spec(os.path.join(ROOT, yaml_path))
        base = os.path.join(work, name)
        raw, tfrecords = os.path.join(base, "raw"), os.path.join(base, "tfrecords")
        print(f"[prepare] {name}: adapter -> Beam -> {tfrecords}", flush=True)
        adapters.write_raw(spec, os.path.join(SHARED_DATA, source) if source else None, raw,
                           rows=synthetic_rows, seed=0, malformed_rows=0, contrast=name != "synthetic_nocontrast")
        build_tfrecords.run(["--spec", os.path.join(ROOT, yaml_path), "--input", os.path.join(raw, "*.csv"),
                             "--output", tfrecords])
        resolved = load_spec(tfrecords)
        for split in SPLITS:
            columns: dict[str, list] = {}
            for batch in data.read_split(tfrecords, split, 65536, spec=resolved).as_numpy_iterator():
                for key, value in batch.items():
                    columns.setdefault(key, []).append(value)
            np.savez_compressed(os.path.join(base, f"{split}.npz"), **{k: np.concatenate(v) for k, v in columns.items()})
        with open(os.path.join(base, "spec.json"), "w") as fh:
            json.dump(resolved.to_dict(), fh)


def load_arrays(work: str, name: str):
    import numpy as np

    from zoo.spec import load_spec

    base = os.path.join(work, name)
    spec = load_spec(base)
    splits = {}
    for split in ("train", "valid", "test"):
        with np.load(os.path.join(base, f"{split}.npz")) as z:
            splits[split] = {k: z[k] for k in z.files}
    return spec, splits


# --------------------------------------------------------------------------------------------------
# run: one (dataset, backbone) job = discovery + 5 seeds x (baseline, C2AL)  (Keras only)
# --------------------------------------------------------------------------------------------------
def cohort_ids(spec, arrays, axis: str):
    from zoo.spec import COHORT_KEY_PREFIX

    return arrays[COHORT_KEY_PREFIX + axis][:, 0]


def targets(y, arrays, spec, pair):
    """Keras targets of a C2AL model: primary y, aux_head = y 1[head], aux_tail = y 1[tail]."""
    ids = cohort_ids(spec, arrays, pair["axis"])
    axis = spec.axis(pair["axis"])
    head = (ids == axis.index(pair["head"])).astype("float32")[:, None]
    tail = (ids == axis.index(pair["tail"])).astype("float32")[:, None]
    return {"primary": y, "aux_head": y * head, "aux_tail": y * tail}


def model_config_path(backbone: str) -> str:
    return os.path.join(MODEL_CONFIGS, f"{backbone}.yaml")


def reference_backbone() -> str:
    """The backbone named by the main job's model YAML (:data:`REFERENCE_MODEL`)."""
    import yaml

    with open(REFERENCE_MODEL) as fh:
        return yaml.safe_load(fh)["backbone"]


def selected_backbones(requested: str) -> list[str]:
    """``--backbones`` (comma-separated; empty = every registered backbone), checked against the registry
    and against the model YAMLs: each must have ``configs/models/<name>.yaml``."""
    from zoo.registry import backbone_names

    registered = backbone_names()
    names = [b for b in requested.split(",") if b] or registered
    unknown = [b for b in names if b not in registered]
    if unknown:
        raise SystemExit(f"--backbones: unknown {unknown}; registered: {registered}")
    for name in names:
        if not os.path.exists(model_config_path(name)):
            raise SystemExit(f"backbone {name}: model YAML {os.path.relpath(model_config_path(name), ROOT)} not found")
    return names


def train_variant(backbone: str, spec, splits, seed: int, pair=None, lambdas=(0.1, 0.1)):
    """Trains baseline (pair None) or C2AL; returns (model, test probabilities, epochs run)."""
    import keras

    from zoo import c2al as c2al_lib
    from zoo.config import load_model_config
    from zoo.model import PRIMARY, build

    cfg = load_model_config(model_config_path(backbone))
    names = [f.name for f in spec.inputs]
    x = {s: {n: splits[s][n] for n in names} for s in splits}
    y = {s: splits[s][spec.label].astype("float32") for s in splits}
    keras.utils.set_random_seed(seed)
    model = build(backbone, spec, embedding=cfg["embedding"], **cfg["hparams"])
    if pair is None:
        fit_y, val_y = {PRIMARY: y["train"]}, {PRIMARY: y["valid"]}
    else:
        model = c2al_lib.C2AL(model)
        fit_y = targets(y["train"], splits["train"], spec, pair)
        val_y = targets(y["valid"], splits["valid"], spec, pair)
    lambdas_cfg = None if pair is None else {"lambda_head": lambdas[0], "lambda_tail": lambdas[1]}
    c2al_lib.compile_model(model, TRAINING["learning_rate"], lambdas_cfg)  # the training CLI's loss and metric
    monitor = "val_auc" if pair is None else f"val_{PRIMARY}_auc"
    stop = keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=TRAINING["early_stopping_patience"],
                                         restore_best_weights=True)
    history = model.fit(x["train"], fit_y, validation_data=(x["valid"], val_y), batch_size=TRAINING["batch_size"],
                        epochs=TRAINING["epochs"], callbacks=[stop], verbose=0, shuffle=True)
    predict = {s: model.predict(x[s], batch_size=8192, verbose=0) for s in ("valid", "test")}
    probs = {s: (p[PRIMARY] if isinstance(p, dict) else p).ravel() for s, p in predict.items()}
    return probs, len(history.history["loss"])


def run_job(work: str, dataset: str, backbone: str, seeds: list[int], out_dir: str, part: str | None = None) -> dict:
    """Discovery + every seed of one (dataset, backbone); with ``part`` the result is saved after each seed."""
    from zoo import cohorts, metrics

    spec, splits = load_arrays(work, dataset)
    axis = spec.axis(spec.c2al["axis"])
    lambdas = (spec.c2al.get("lambda_head", 0.1), spec.c2al.get("lambda_tail", 0.1))
    cohort_names = {a.name: list(a.cohorts) for a in spec.cohort_axes}

    def evaluate(p, split="test"):
        arrays = splits[split]
        ids = {a.name: cohort_ids(spec, arrays, a.name) for a in spec.cohort_axes}
        return metrics.evaluate(arrays[spec.label][:, 0], p, ids, cohort_names)

    result = {"dataset": dataset, "backbone": backbone, "axis": axis.name, "seeds": {},
              "rows": {s: int(len(a[spec.label])) for s, a in splits.items()}}
    if part and os.path.exists(part):  # resume: keep the discovery and the seeds already done
        with open(part) as fh:
            result = json.load(fh)
    start = time.time() - result.get("seconds", 0.0)
    for seed in seeds:
        if str(seed) in result["seeds"] or (dataset in DISCOVERY_ONLY and "pair" in result):
            continue
        base_probs, base_epochs = train_variant(backbone, spec, splits, seed)
        if "pair" not in result:  # discovery on the first seed's baseline, validation split
            hist = cohorts.CohortHistograms(list(axis.cohorts), bins=DISCOVERY["bins"])
            hist.update(base_probs["valid"], cohort_ids(spec, splits["valid"], axis.name),
                        labels=splits["valid"][spec.label][:, 0])
            found = cohorts.from_histograms(hist, axis, metric=DISCOVERY["metric"],
                                            min_fraction=DISCOVERY["min_fraction"])
            result["pair"] = found.c2al_config()
            result["configured_pair"] = {"head": spec.c2al["head"], "tail": spec.c2al["tail"]}
            result["discovery"] = found.to_dict()
            if backbone == reference_backbone():
                found.save(os.path.join(out_dir, f"discovery_{dataset}"))
        if dataset in DISCOVERY_ONLY:
            result["seconds"] = round(time.time() - start, 1)
            if part:
                with open(part, "w") as fh:
                    json.dump(result, fh)
            break
        pair = result["pair"]
        c2al_probs, c2al_epochs = train_variant(backbone, spec, splits, seed, pair, lambdas)
        base, c2al = evaluate(base_probs["test"]), evaluate(c2al_probs["test"])
        result["seeds"][str(seed)] = {"baseline": base, "c2al": c2al, "epochs": [base_epochs, c2al_epochs],
                                      "ne_diff_percent": metrics.ne_diff(c2al, base)}
        d = result["seeds"][str(seed)]["ne_diff_percent"]
        print(f"{dataset:<14} {backbone:<8} seed {seed}: NE base {base['overall']['ne']:.4f} c2al "
              f"{c2al['overall']['ne']:.4f} NE_diff {d['overall']:+.3f}%", flush=True)
        result["seconds"] = round(time.time() - start, 1)
        if part:
            with open(part, "w") as fh:
                json.dump(result, fh)
    return result


# --------------------------------------------------------------------------------------------------
# statistics and report
# --------------------------------------------------------------------------------------------------
def summarize_job(job: dict) -> dict:
    from zoo import metrics

    seeds = sorted(job["seeds"], key=int)
    pair = job["pair"]
    rows = {}
    for scope, getter in (("overall", lambda r: r["overall"]),
                          ("head", lambda r: r["cohorts"][job["axis"]][pair["head"]]),
                          ("tail", lambda r: r["cohorts"][job["axis"]][pair["tail"]])):
        base = [getter(job["seeds"][s]["baseline"]) for s in seeds]
        c2al = [getter(job["seeds"][s]["c2al"]) for s in seeds]
        diffs = [100 * (c["ne"] - b["ne"]) / b["ne"] for b, c in zip(base, c2al)]
        rows[scope] = {
            "rows": base[0]["rows"],
            "ne_base": statistics.fmean(b["ne"] for b in base), "ne_c2al": statistics.fmean(c["ne"] for c in c2al),
            "auc_base": statistics.fmean(b["auc"] for b in base), "auc_c2al": statistics.fmean(c["auc"] for c in c2al),
            "logloss_base": statistics.fmean(b["log_loss"] for b in base),
            "logloss_c2al": statistics.fmean(c["log_loss"] for c in c2al),
            "ne_diff_runs": diffs, "ne_diff_mean": statistics.fmean(diffs), "ne_diff_std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "ttest": metrics.paired_t_test([c["ne"] for c in c2al], [b["ne"] for b in base]),
        }
    return rows


def headline(jobs: list[dict]) -> list[str]:
    """Per dataset: mean NE_diff over backbones and how many backbones are significantly better/worse."""
    out = ["## Headline", "", "| dataset | top JS of the discovered pair (median over backbones) | mean NE_diff overall "
           "| head | tail | backbones better / worse at p < 0.05 (overall; head; tail) |", "| --- | --- | --- | --- | --- | --- |"]
    for dataset in dict.fromkeys(j["dataset"] for j in jobs if j["dataset"] not in DISCOVERY_ONLY):
        ds = [j for j in jobs if j["dataset"] == dataset]
        sums = [summarize_job(j) for j in ds]
        cells = []
        for k in ("overall", "head", "tail"):
            better = sum(1 for s in sums if s[k]["ttest"]["p"] is not None and s[k]["ttest"]["p"] < 0.05
                         and s[k]["ne_diff_mean"] < 0)
            worse = sum(1 for s in sums if s[k]["ttest"]["p"] is not None and s[k]["ttest"]["p"] < 0.05
                        and s[k]["ne_diff_mean"] > 0)
            cells.append(f"{better} / {worse}")
        js = statistics.median(j["discovery"]["divergence"] for j in ds)
        means = [statistics.fmean(s[k]["ne_diff_mean"] for s in sums) for k in ("overall", "head", "tail")]
        out.append(f"| {dataset} | {js:.3f} | " + " | ".join(f"{m:+.3f}%" for m in means) + f" | {'; '.join(cells)} |")
    control = [j for j in jobs if j["dataset"] in DISCOVERY_ONLY]
    if control:
        out += ["", f"No-contrast control (synthetic without the planted cohorts, {control[0]['backbone']}): top JS "
                f"{control[0]['discovery']['divergence']:.3f}. A discovered pair whose divergence is at or below "
                "the control's has no more contrast than sampling noise plus the shared user-value effect."]
    return out


def write_report(jobs: list[dict], out_dir: str, wall: float, environment: dict) -> str:
    from zoo.diagnostics import plot_ne_diff

    lines = ["# C2AL vs baseline: every backbone x dataset", "",
             "Sizes (train / valid / test rows): " + "; ".join(
                 f"{d} {r['train']:,} / {r['valid']:,} / {r['test']:,}"
                 for d, r in {j["dataset"]: j["rows"] for j in jobs}.items())
             + f". Training {TRAINING} (early stopping on validation AUC, best "
             f"weights restored); seeds per backbone x dataset: {sorted({len(j['seeds']) for j in jobs if j['dataset'] not in DISCOVERY_ONLY})}; C2AL lambda_head = lambda_tail = 0.1, one Dense(1) head each on h; discovery "
             f"{DISCOVERY} on the seed-0 baseline's validation predictions. Backend {environment['backend']}, "
             f"accelerators {environment['accelerators'] or 'none'}, CPU {environment['cpu']} x"
             f"{environment['cpu_count']}; compute {sum(j.get('seconds', 0) for j in jobs) / 60:.1f} min summed over "
             f"the jobs (each job one process; `--jobs 2` on 2 cores takes about half that in wall time).", ""]
    lines += headline(jobs) + ["",
             "NE_diff = 100 (NE_C2AL - NE_base) / NE_base, mean ± std over seeds (negative = C2AL better); p = "
             "two-sided paired t-test on the per-seed NE pairs (df = seeds - 1).", ""]
    planted = {j["backbone"]: j["discovery"]["divergence"] for j in jobs if j["dataset"] == "synthetic"}
    for job in [j for j in jobs if j["dataset"] in DISCOVERY_ONLY]:
        base = planted.get(job["backbone"])
        lines += [f"## {job['dataset']}: discovery only ({job['backbone']}, seed 0)", "",
                  f"Top pair {job['pair']['head']} / {job['pair']['tail']}, {DISCOVERY['metric']} divergence "
                  f"{job['discovery']['divergence']:.3f}" + (f" vs {base:.3f} on the planted data "
                  f"({base / job['discovery']['divergence']:.1f}x)" if base else "") + ". Without a planted "
                  "contrast the extreme user-value cohorts still differ through the shared +0.2 z user-value "
                  "term of the click model, so the top divergence is smaller, not zero.", ""]
    for dataset in dict.fromkeys(j["dataset"] for j in jobs if j["dataset"] not in DISCOVERY_ONLY):
        ds_jobs = [j for j in jobs if j["dataset"] == dataset]
        pair = ds_jobs[0]["configured_pair"]
        lines += [f"## {dataset} (axis `{ds_jobs[0]['axis']}`; configured pair {pair['head']} / {pair['tail']})", "",
                  "| backbone | discovered head / tail (JS) | NE base | AUC base → C2AL | NE_diff overall | p | "
                  "NE_diff head | p | NE_diff tail | p |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        bars = {}
        for job in ds_jobs:
            s = summarize_job(job)
            job["summary"] = s
            found = job["pair"]
            js = job["discovery"]["divergence"]
            cell = [f"{s[k]['ne_diff_mean']:+.3f} ± {s[k]['ne_diff_std']:.3f}% | {s[k]['ttest']['p']}"
                    for k in ("overall", "head", "tail")]
            lines.append(f"| {job['backbone']} | {found['head']} / {found['tail']} ({js:.3f}) | "
                         f"{s['overall']['ne_base']:.4f} | {s['overall']['auc_base']:.4f} → "
                         f"{s['overall']['auc_c2al']:.4f} | " + " | ".join(cell) + " |")
            for k in ("overall", "head", "tail"):
                bars[f"{job['backbone']} {k}"] = s[k]["ne_diff_runs"]
        plot = os.path.join(out_dir, f"ne_diff_{dataset}.png")
        plot_ne_diff(bars, plot, title=f"C2AL NE_diff (%) on {dataset}, mean ± std over seeds")
        lines += ["", f"![NE_diff {dataset}]({os.path.basename(plot)})", ""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", nargs="?", choices=("prepare", "run", "all"), default="all")
    parser.add_argument("--work", default=os.path.join(ROOT, "runs", "c2al_report"))
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "c2al"))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--backbones", default="", help="comma-separated; default: every registered backbone "
                        "(zoo.registry.backbone_names()), each with its configs/models/<name>.yaml")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--synthetic-rows", type=int, default=200_000)
    parser.add_argument("--jobs", type=int, default=1, help="(dataset, backbone) jobs at a time, one process each")
    parser.add_argument("--epochs", type=int, default=TRAINING["epochs"], help="maximum epochs per training")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # worker: dataset:backbone
    args = parser.parse_args(argv)
    datasets = [d for d in args.datasets.split(",") if d]
    # checked before the (long) prepare step; a worker (--job) was given its backbone by this check
    backbones = [] if args.job or args.step == "prepare" else selected_backbones(args.backbones)
    seeds = [int(s) for s in args.seeds.split(",")]
    TRAINING["epochs"] = args.epochs
    os.makedirs(args.output, exist_ok=True)
    parts = os.path.join(args.work, "parts")
    if args.job:
        dataset, backbone = args.job.split(":")
        os.makedirs(parts, exist_ok=True)
        run_job(args.work, dataset, backbone, seeds, args.output, part=os.path.join(parts, f"{dataset}__{backbone}.json"))
        return 0
    if args.step in ("prepare", "all"):
        prepare(args.work, datasets, args.synthetic_rows)
    if args.step == "prepare":
        return 0
    start = time.time()
    def finished(job: str) -> bool:
        path = os.path.join(parts, job.replace(":", "__") + ".json")
        if not os.path.exists(path):
            return False
        with open(path) as fh:
            done = json.load(fh)
        return "pair" in done and (job.split(":")[0] in DISCOVERY_ONLY or {str(s) for s in seeds} <= set(done["seeds"]))

    reference = reference_backbone()
    pending = [f"{d}:{b}" for d in datasets for b in backbones
               if (d not in DISCOVERY_ONLY or b == reference) and not finished(f"{d}:{b}")]
    from workers import run_workers

    for failure in run_workers({job: [sys.executable, __file__, "--job", job, "--work", args.work,
                                      "--output", args.output, "--seeds", args.seeds, "--epochs", str(args.epochs)]
                                for job in pending},
                               args.jobs):
        print(f"job {failure} failed; its finished seeds are kept and resumed by the next run", flush=True)
    wall = time.time() - start
    jobs = []
    for d in datasets:
        for b in backbones:
            path = os.path.join(parts, f"{d}__{b}.json")
            if os.path.exists(path):
                with open(path) as fh:
                    job = json.load(fh)
                if len(job["seeds"]) >= 2 or d in DISCOVERY_ONLY:  # a job cut short counts with >= 2 seeds
                    jobs.append(job)
    from environment import environment

    env_info = {**environment(), "wall_seconds": round(wall, 1), "parallel_jobs": args.jobs}
    report = write_report(jobs, args.output, wall, env_info)
    with open(os.path.join(args.output, "results.json"), "w") as fh:
        json.dump({"environment": env_info, "training": TRAINING, "discovery": DISCOVERY, "jobs": jobs}, fh, indent=1)
    print(open(report).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
