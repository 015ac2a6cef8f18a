"""The C2AL evidence study: baseline vs C2AL (lambda sweep, head options) and its ablations, every backbone x dataset.

    python bench/c2al_study.py [all|prepare|run|report] [--plan bench/c2al_study.yaml] [--quick]
        [--work runs/c2al_study] [--output bench/results/c2al] [--jobs 1] [--datasets a,b] [--backbones x,y]
        [--variants v,w]

``prepare`` runs each dataset of the plan through the main job's path (adapter -> Beam job ->
TFRecords) and reads every split back once into NumPy arrays (``<work>/<dataset>/{train,valid,test}.npz``
and ``spec.json``; the synthetic data at the plan's rows and users, with its true probabilities
``p_true`` carried as the oracle column). ``run`` trains the jobs (one per dataset x backbone,
:mod:`zoo.study.job`; ``--jobs N`` processes at a time, ``0`` in this process), each resumable: a run
already recorded in ``<work>/jobs/<dataset>__<backbone>/job.json`` is not trained again. ``report``
writes ``<output>/report.md`` (the verdict first), ``<output>/results.json`` (the plan, the environment
and each job's summary), ``<output>/jobs/<dataset>__<backbone>.json`` (each job's record: every run,
its validation and test metrics, diagnostics and machine) and per-dataset NE_diff plots. A job with no
record under ``<work>`` is read from ``<output>/jobs/``, so the committed report regenerates on a fresh
checkout (``report`` alone) and a later job adds to it. ``all`` does the three in turn.

``--quick`` applies the plan's ``quick`` block (a few minutes; ``tests/test_study.py`` runs it) and
defaults ``--work``/``--output`` to ``runs/c2al_study_quick``, never to the committed results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

DEFAULT_PLAN = os.path.join(ROOT, "bench", "c2al_study.yaml")
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
SPLITS = ("train", "valid", "test")


def prepare(plan, work: str, datasets: list[str]) -> None:
    """Adapter -> Beam job -> TFRecords -> NumPy arrays, for each dataset (needs TensorFlow and Beam)."""
    import numpy as np

    from beam_jobs import build_tfrecords
    from zoo import data
    from zoo import datasets as adapters
    from zoo.spec import load_spec

    for name in datasets:
        options = plan.datasets[name]
        base = os.path.join(work, name)
        if all(os.path.exists(os.path.join(base, f"{s}.npz")) for s in SPLITS):
            print(f"[prepare] {name}: arrays in {base} (kept)", flush=True)
            continue
        yaml_path = dataset_yaml(options, base)
        spec = load_spec(yaml_path)
        raw, tfrecords = os.path.join(base, "raw"), os.path.join(base, "tfrecords")
        start = time.time()
        source = os.path.join(SHARED_DATA, options["source"]) if options.get("source") else None
        generator = {k: options[k] for k in ("rows", "contrast") if k in options}
        if "users" in options:
            generator["n_users"] = options["users"]
        adapters.write_raw(spec, source, raw, seed=0, malformed_rows=0, **generator)
        build_tfrecords.run(["--spec", yaml_path, "--input", os.path.join(raw, "*.csv"), "--output", tfrecords])
        resolved = load_spec(tfrecords)
        for split in SPLITS:
            np.savez(os.path.join(base, f"{split}.npz"), **data.split_arrays(tfrecords, split, resolved))
        with open(os.path.join(base, "spec.json"), "w") as fh:
            json.dump(resolved.to_dict(), fh)
        print(f"[prepare] {name}: {time.time() - start:.0f} s -> {base}", flush=True)


def dataset_yaml(options, base: str) -> str:
    """The dataset YAML of a plan dataset: the plan's file, or a copy in ``base`` with its ``split``."""
    import yaml

    path = os.path.join(ROOT, options["dataset"])
    if options.get("split") is None:
        return path
    with open(path) as fh:
        raw = yaml.safe_load(fh)
    raw["split"] = dict(options["split"])
    os.makedirs(base, exist_ok=True)
    derived = os.path.join(base, "dataset.yaml")
    with open(derived, "w") as fh:
        yaml.safe_dump(raw, fh, sort_keys=False)
    return derived


def load_arrays(work: str, name: str):
    import numpy as np

    from zoo.spec import load_spec

    base = os.path.join(work, name)
    splits = {}
    for split in SPLITS:
        with np.load(os.path.join(base, f"{split}.npz")) as z:
            splits[split] = {k: z[k] for k in z.files}
    return load_spec(base), splits


def model_config(plan, backbone: str, dataset: str) -> dict:
    """The backbone's model YAML (full or tiny); with the dataset's ``hparams_from`` (a quality
    benchmark YAML, e.g. bench/quality_frappe.yaml) its hparams and embedding options from there."""
    from zoo.config import load_model_config
    from zoo.encoder import embedding_options

    suffix = "_test" if plan.model_configs == "tiny" else ""
    path = os.path.join(ROOT, "configs", "models", f"{backbone}{suffix}.yaml")
    cfg = load_model_config(path)
    # The plan's training block trains every backbone alike; of the model YAML's only the loss is read.
    # A precision asked for there would not be the one trained in, so it must agree with the plan's.
    policy = (cfg.get("training") or {}).get("dtype_policy", "float32")
    if policy != plan.dtype_policy:
        raise SystemExit(f"{path}: training.dtype_policy '{policy}' is not the plan's training.dtype_policy "
                         f"'{plan.dtype_policy}' (the study builds every run in the plan's)")
    tuned = plan.datasets[dataset].get("hparams_from")
    if tuned:
        import quality_frappe

        settings = quality_frappe.model_settings(backbone, quality_frappe.load_config(os.path.join(ROOT, tuned)))
        cfg = {**cfg, "hparams": settings["hparams"], "embedding": embedding_options(settings["embedding"])}
    return cfg


def run_job(plan, work: str, dataset: str, backbone: str) -> dict:
    from environment import environment
    from zoo.study.job import Job, SealedSplit

    spec, splits = load_arrays(work, dataset)
    # A job resumed on another machine trained its runs on both: the record names every one that trained
    # a run, so the report's minutes are read against the hardware that spent them.
    job = Job(plan, dataset, backbone, model_config(plan, backbone, dataset), spec, splits["train"], splits["valid"],
              SealedSplit(splits["test"]), os.path.join(work, "jobs"), log=lambda m: print(m, flush=True),
              machine=environment())
    return job.run()


def report(plan, work: str, output: str, datasets: list[str], backbones: list[str]) -> str:
    from environment import environment
    from zoo.diagnostics import plot_ne_diff
    from zoo.study.report import format_report

    jobs = []
    for d in datasets:
        for b in backbones:
            job = _finished_job(work, output, f"{d}__{b}")
            if job is not None:
                jobs.append(job)
    if not jobs:
        raise SystemExit(f"report: no finished job under {os.path.join(work, 'jobs')} or {os.path.join(output, 'jobs')}")
    # The jobs' own wall times summed: a resumed study's invocations each see only part of it.
    env = {**environment(), "job_seconds": round(sum(j["seconds"] for j in jobs), 1)}
    text, summaries = format_report(jobs, env, plan.to_dict())
    os.makedirs(output, exist_ok=True)
    for dataset in dict.fromkeys(j["dataset"] for j in jobs):
        bars = {}
        for key, s in summaries.items():
            if key.startswith(dataset + "__"):
                c = s["comparisons"][s["chosen"]]
                for scope in ("overall", "head", "tail"):
                    bars[f"{key.split('__')[1]} {scope}"] = c[scope]["ne_diff_runs"]
        plot = plot_ne_diff(bars, os.path.join(output, f"ne_diff_{dataset}.png"),
                            title=f"chosen C2AL NE_diff (%) on {dataset}, mean ± std over seeds")
        text += f"\n![NE_diff {dataset}]({os.path.basename(plot)})\n"
    path = os.path.join(output, "report.md")
    with open(path, "w") as fh:
        fh.write(text)
    os.makedirs(os.path.join(output, "jobs"), exist_ok=True)
    for job in jobs:
        _write_json(os.path.join(output, "jobs", f"{job['dataset']}__{job['backbone']}.json"), job, indent=None)
    _write_json(os.path.join(output, "results.json"),
                {"environment": env, "plan": plan.to_dict(), "summaries": summaries,
                 "jobs": [f"jobs/{j['dataset']}__{j['backbone']}.json" for j in jobs]}, indent=1)
    return path


def _finished_job(work: str, output: str, name: str) -> dict | None:
    """The job's record if it is finished (every final run tested): ``<work>/jobs/<name>/job.json``,
    else the report's own copy ``<output>/jobs/<name>.json``; None when neither is."""
    for path in (os.path.join(work, "jobs", name, "job.json"), os.path.join(output, "jobs", name + ".json")):
        if os.path.exists(path):
            with open(path) as fh:
                job = json.load(fh)
            if "test" in job and all(k in job["test"] for k in job["finals"]):
                return job
    return None


def _write_json(path: str, obj, indent: int | None) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=indent, separators=None if indent else (",", ":"))
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("step", nargs="?", choices=("all", "prepare", "run", "report"), default="all")
    parser.add_argument("--plan", default=DEFAULT_PLAN)
    parser.add_argument("--quick", action="store_true", help="the plan's quick block: minutes, not hours")
    parser.add_argument("--work", default=None, help="arrays and job records (default runs/c2al_study[_quick])")
    parser.add_argument("--output", default=None, help="report directory (default bench/results/c2al; "
                        "with --quick runs/c2al_study_quick/report)")
    parser.add_argument("--jobs", type=int, default=1, help="jobs at a time, one process each; 0 = in this process")
    parser.add_argument("--datasets", default="", help="comma-separated subset of the plan's datasets")
    parser.add_argument("--backbones", default="", help="comma-separated subset of the plan's backbones")
    parser.add_argument("--variants", default=None, help="comma-separated subset of the plan's variants "
                        "('' = none); the runs of the others are not trained (a staged study; resumable)")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # worker: dataset:backbone
    args = parser.parse_args(argv)
    from zoo.study.plan import load_plan

    plan = load_plan(args.plan, quick=args.quick)
    if args.variants is not None:
        variants = [v for v in args.variants.split(",") if v]
        bad = [v for v in variants if v not in plan.variants]
        if bad:
            raise SystemExit(f"--variants: {bad} not in the plan's {plan.variants}")
        plan = dataclasses.replace(plan, variants=variants)
    work = args.work or os.path.join(ROOT, "runs", "c2al_study_quick" if args.quick else "c2al_study")
    output = args.output or (os.path.join(work, "report") if args.quick else os.path.join(ROOT, "bench", "results", "c2al"))
    datasets = [d for d in args.datasets.split(",") if d] or list(plan.datasets)
    backbones = [b for b in args.backbones.split(",") if b] or list(plan.backbones)
    for bad, known, what in ((set(datasets) - set(plan.datasets), plan.datasets, "datasets"),
                             (set(backbones) - set(plan.backbones), plan.backbones, "backbones")):
        if bad:
            raise SystemExit(f"--{what}: {sorted(bad)} not in the plan's {list(known)}")
    if args.job:
        dataset, backbone = args.job.split(":")
        run_job(plan, work, dataset, backbone)
        return 0
    if args.step in ("all", "prepare"):
        prepare(plan, work, datasets)
    if args.step in ("all", "run"):
        pending = [(d, b) for d in datasets for b in backbones]
        if args.jobs == 0:
            for d, b in pending:
                run_job(plan, work, d, b)
        else:
            from workers import run_workers

            command = [sys.executable, os.path.abspath(__file__), "--plan", args.plan, "--work", work]
            command += [] if args.variants is None else ["--variants", args.variants]
            failed = run_workers({f"{d}:{b}": command + (["--quick"] if args.quick else []) + ["--job", f"{d}:{b}"]
                                  for d, b in pending}, args.jobs)
            for failure in failed:
                print(f"job {failure} failed; its finished runs are kept and resumed by the next run", flush=True)
    if args.step in ("all", "run", "report"):
        path = report(plan, work, output, datasets, backbones)
        print(open(path).read())
        print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
