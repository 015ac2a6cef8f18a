"""Behaviour-sequence options of the DIN backbone, paired seeds: DARE's decoupled attention table vs
one shared table vs mean pooling vs no sequence, on the Amazon Musical Instruments 5-core reviews and
on the synthetic data's ``recent_categories``.

    python bench/sequence_quality.py [--config bench/sequence_quality.yaml] [--datasets a,b] [--arms a,b]
                                     [--seeds 0,1,2,3,4] [--work runs/sequence_quality]

For each dataset of the config: the adapter's raw rows and the Beam job's TFRecords once (Amazon:
next-item rows with 4 sampled negatives, history strictly before each review, leave-last-out split;
synthetic: the main job's generator at ``rows``), then for every seed each arm (``configs/models/din.yaml``
with the arm's hparams; the same seed gives every arm the same data order) through ``zoo.train``'s
converged protocol. Writes test AUC, log loss and NE per run, mean ± std per arm, the paired
differences of the config's comparisons with a paired t-test, and on the synthetic data the oracle
(the generator's true probabilities) to ``--output`` (JSON) and a markdown table beside it. Runs found
in ``--work`` are not repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
HERE = os.path.dirname(os.path.abspath(__file__))
METRICS = ("auc", "log_loss", "ne")


def resolve(path: str) -> str:
    """A path of the config, relative to bench/."""
    return os.path.normpath(os.path.join(HERE, path))


def build_data(name: str, entry: dict, work: str) -> str:
    """The dataset's TFRecords (adapter + Beam job) under ``work/<name>/data``, built once."""
    from zoo.spec import load_spec

    data = os.path.join(work, name, "data")
    if os.path.exists(os.path.join(data, "_SUCCESS")):
        return data
    from beam_jobs import build_tfrecords
    from zoo import datasets
    from zoo.pipeline import beam_job_args

    spec_path = resolve(entry["dataset"])
    raw = os.path.join(work, name, "raw")
    source = resolve(entry["source"]) if "source" in entry else None
    datasets.write_raw(load_spec(spec_path), source, raw, rows=int(entry.get("rows", 200_000)), seed=0,
                       malformed_rows=0)
    build_tfrecords.run(beam_job_args(spec_path, os.path.join(raw, "*.csv"), data, []))
    return data


def sequence_headroom(rows: int, spec_path: str) -> dict:
    """The most the sequence can add on the synthetic data, on the test split: the oracle (the true
    ``p``) against the best predictor without ``recent_categories``.

    The generator adds ``beta * fav`` to the logit (``fav``: the item's category is in the sequence;
    ``beta`` 0.6 for the majority, 0.3 for the head and tail cohorts). Without the sequence the user's
    favourite categories are unknown (no user id input, favourites drawn independently of every other
    feature), so ``P(fav = 1 | x without the sequence)`` is the constant ``P(fav)`` and the best
    prediction is ``P(fav) sigmoid(l0 + beta) + (1 - P(fav)) sigmoid(l0)`` with ``l0 = logit - beta fav``.
    """
    import numpy as np

    from zoo import metrics
    from zoo.datasets.synthetic import HEAD_Z, TAIL_Z, generate
    from zoo.spec import load_spec

    table = generate(rows=rows, seed=0)
    p = table["p_true"]
    fav = (table["recent_categories"] == table["item_category"][:, None]).any(axis=1).astype(float)
    beta = np.where((table["user_value"] >= HEAD_Z) | (table["user_value"] < TAIL_Z), 0.3, 0.6)
    l0 = np.log(p / (1 - p)) - beta * fav
    share = fav.mean()
    without = share / (1 + np.exp(-(l0 + beta))) + (1 - share) / (1 + np.exp(-l0))
    spec = load_spec(spec_path)
    test = np.array([spec.split_of({spec.user_id: int(u)}) == "test" for u in table[spec.user_id]])
    y = table[spec.label].astype(float)[test]
    return {"rows": int(test.sum()), "p_fav": round(float(fav[test].mean()), 4),
            **{name: {"auc": metrics.auc(y, q[test]), "ne": metrics.normalized_entropy(y, q[test])}
               for name, q in (("oracle", p), ("oracle_without_sequence", without))}}


def popularity_baseline(raw_dir: str, spec_path: str, feature: str) -> dict:
    """Test AUC of ranking by popularity: each test row scored by its ``feature`` id's positives in the
    train split (read from the adapter's raw CSV and its split column)."""
    import collections
    import csv
    import glob

    import numpy as np

    from zoo import metrics
    from zoo.spec import load_spec

    spec = load_spec(spec_path)
    split, label = spec.raw_format.split_column, spec.label_column(spec.label)
    counts: collections.Counter = collections.Counter()
    test = []
    for path in sorted(glob.glob(os.path.join(raw_dir, "*.csv"))):
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh, delimiter=spec.raw_format.delimiter):
                if row[split] == "train" and float(row[label]) > 0:
                    counts[row[feature]] += 1
                elif row[split] == "test":
                    test.append((row[feature], float(row[label])))
    y = np.array([t[1] for t in test])
    score = np.array([counts[t[0]] for t in test], float)
    return {"feature": feature, "rows": len(test), "auc": metrics.auc(y, score)}


def arm_config(work: str, model: str, arm: str, hparams: dict) -> str:
    """A model YAML for the arm: the backbone YAML as base, the arm's hparams on top."""
    path = os.path.join(work, "models", f"{arm}.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        yaml.safe_dump({"base": model, "hparams": hparams}, fh, sort_keys=False)
    return path


def train(data: str, model: str, seed: int, out: str) -> tuple[dict, bool]:
    """The run's ``metrics.json``, and whether it was trained now (False: read from an earlier run)."""
    path = os.path.join(out, "metrics.json")
    trained = not os.path.exists(path)
    if trained:
        subprocess.run([sys.executable, "-m", "zoo.train", "--data", data, "--model", model, "--variants", "baseline",
                        "--seed", str(seed), "--output", out], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(path) as fh:
        return json.load(fh), trained


def summarize(runs: dict, comparisons: list, oracle: dict | None) -> dict:
    from zoo.significance import paired_t_test

    table = {arm: {m: {"mean": statistics.mean(r[m] for r in rs),
                       "std": statistics.stdev(r[m] for r in rs) if len(rs) > 1 else 0.0} for m in METRICS}
             for arm, rs in runs.items()}
    paired = {}
    for a, b in comparisons:
        if a in runs and b in runs:
            paired[f"{a} - {b}"] = {m: {"mean_diff": statistics.mean(x[m] - y[m] for x, y in zip(runs[a], runs[b])),
                                        **paired_t_test([x[m] for x in runs[a]], [y[m] for y in runs[b]])}
                                    for m in METRICS}
    out = {"summary": table, "paired": paired}
    if oracle and "none" in table:
        base = table["none"]["ne"]["mean"]
        out["oracle_gap_closed_vs_none"] = {arm: (base - row["ne"]["mean"]) / (base - oracle["ne"])
                                            for arm, row in table.items()}
    return out


def markdown(result: dict) -> str:
    lines = [f"# Behaviour sequences in DIN: DARE vs shared table vs no sequence (seeds {result['seeds']})", "",
             "Every arm is `configs/models/din.yaml` with the arm's hparams (`bench/sequence_quality.yaml`), "
             "`zoo.train`'s converged protocol, test split read once per run; nothing tuned.", ""]
    for name, d in result["datasets"].items():
        lines += [f"## {name} ({d['rows']['train']:,} / {d['rows']['valid']:,} / {d['rows']['test']:,} "
                  "train / valid / test rows)", "",
                  "| arm | hparams | test AUC | test logloss | test NE | epochs (mean) |", "| --- | --- | --- | --- | --- | --- |"]
        for arm, row in d["summary"].items():
            epochs = statistics.mean(r["epochs_run"] for r in d["runs"][arm])
            lines.append(f"| {arm} | `{json.dumps(result['arms'][arm])}` | " + " | ".join(
                f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" for m in METRICS) + f" | {epochs:.1f} |")
        if d.get("oracle"):
            lines.append("| oracle (true p) | | " + " | ".join(f"{d['oracle'][m]:.4f}" for m in METRICS) + " | |")
        lines += ["", "| paired difference | AUC (p) | logloss (p) | NE (p) |", "| --- | --- | --- | --- |"]
        for name_ab, by_metric in d["paired"].items():
            lines.append(f"| {name_ab} | " + " | ".join(
                f"{by_metric[m]['mean_diff']:+.4f} ({by_metric[m]['p'] if by_metric[m]['p'] is not None else 'n/a'})"
                for m in METRICS) + " |")
        if "popularity_baseline" in d:
            b = d["popularity_baseline"]
            lines += ["", f"Reference: ranking the test rows by their {b['feature']}'s positives in the train split "
                      f"gives AUC {b['auc']:.4f} (no model)."]
        if "sequence_headroom" in d:
            h = d["sequence_headroom"]
            lines += ["", f"Known answer: the best predictor without the sequence reaches AUC "
                      f"{h['oracle_without_sequence']['auc']:.4f} / NE {h['oracle_without_sequence']['ne']:.4f} on the "
                      f"test split against the oracle's {h['oracle']['auc']:.4f} / {h['oracle']['ne']:.4f} "
                      f"(P(fav) {h['p_fav']:.3f}): the sequence is worth at most "
                      f"{h['oracle']['auc'] - h['oracle_without_sequence']['auc']:+.4f} AUC, "
                      f"{h['oracle']['ne'] - h['oracle_without_sequence']['ne']:+.4f} NE."]
        if "oracle_gap_closed_vs_none" in d:
            lines += ["", "Share of the no-sequence arm's NE gap to the oracle each arm closes: " + ", ".join(
                f"{arm} {share:+.3f}" for arm, share in d["oracle_gap_closed_vs_none"].items()) + "."]
        capped = sum(r["hit_cap"] for rs in d["runs"].values() for r in rs)
        lines += ["", f"Runs stopped by the epoch cap: {capped} of {sum(len(rs) for rs in d['runs'].values())}.", ""]
    env = result["environment"]
    lines.append(f"Backend {env['backend']}, Keras {env['keras']}, {env['cpu_count']} CPUs ({env['cpu']}), "
                 f"Python {env['python']}; "
                 f"wall {env['wall_s'] / 60:.1f} min for the {env['runs_trained']} runs trained by this invocation "
                 f"({env['runs_read_from_work']} read from earlier ones), {env['date']}. "
                 f"Raw runs: {os.path.basename(result['output'])}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(HERE, "sequence_quality.yaml"))
    parser.add_argument("--datasets", default=None, help="comma-separated; default every dataset of the config")
    parser.add_argument("--arms", default=None, help="comma-separated; default every arm of the config")
    parser.add_argument("--seeds", default=None, help="comma-separated; default the config's seeds")
    parser.add_argument("--work", default=os.path.join(ROOT, "runs", "sequence_quality"))
    parser.add_argument("--output", default=os.path.join(HERE, "results", "sequence_quality.json"))
    args = parser.parse_args(argv)
    with open(args.config) as fh:
        config = yaml.safe_load(fh)
    unknown = set(config) - {"model", "seeds", "datasets", "arms", "comparisons"}
    if unknown:
        parser.error(f"{args.config}: unknown key(s) {sorted(unknown)}")
    for name, entry in config["datasets"].items():
        bad = set(entry) - {"dataset", "source", "rows", "popularity"}
        if bad:
            parser.error(f"{args.config}: datasets.{name}: unknown key(s) {sorted(bad)}")
    names = args.datasets.split(",") if args.datasets else list(config["datasets"])
    arms = args.arms.split(",") if args.arms else list(config["arms"])
    for kind, chosen, known in (("dataset", names, config["datasets"]), ("arm", arms, config["arms"])):
        missing = [n for n in chosen if n not in known]
        if missing:
            parser.error(f"unknown {kind}(s) {missing}; the config has {list(known)}")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(config["seeds"])
    from environment import environment
    from zoo.spec import load_spec

    start = time.time()
    model = resolve(config["model"])
    configs = {arm: arm_config(args.work, model, arm, config["arms"][arm]) for arm in arms}
    result = {"benchmark": "sequence_quality", "seeds": seeds, "model": os.path.relpath(model, ROOT),
              "arms": {arm: config["arms"][arm] for arm in arms}, "datasets": {}, "output": args.output}
    counts = {"trained": 0, "read": 0}  # runs of this invocation: trained now, or read from --work
    for name in names:
        data = build_data(name, config["datasets"][name], args.work)
        with open(os.path.join(data, "stats.json")) as fh:
            stats = json.load(fh)
        runs: dict[str, list] = {arm: [] for arm in arms}
        oracle = None
        for seed in seeds:
            for arm in arms:
                summary, trained = train(data, configs[arm], seed, os.path.join(args.work, name, f"{arm}_seed{seed}"))
                counts["trained" if trained else "read"] += 1
                variant = summary["variants"]["baseline"]
                overall, fit = variant["overall"], variant["training"]
                runs[arm].append({"seed": seed, **{m: overall[m] for m in METRICS}, "epochs_run": fit["epochs_run"],
                                  "best_epoch": fit["best_epoch"], "hit_cap": fit["hit_cap"]})
                oracle = summary.get("oracle", {}).get("overall")
                print(f"{name:<28} {arm:<10} seed {seed}: AUC {overall['auc']:.4f} logloss {overall['log_loss']:.4f} "
                      f"NE {overall['ne']:.4f} ({fit['epochs_run']} epochs)", flush=True)
        result["datasets"][name] = {
            "dataset": config["datasets"][name], "rows": {s: stats["splits"][s]["rows"] for s in ("train", "valid", "test")},
            "runs": runs, "oracle": oracle and {m: oracle[m] for m in METRICS},
            **summarize(runs, config.get("comparisons", []), oracle)}
        if "popularity" in config["datasets"][name]:
            result["datasets"][name]["popularity_baseline"] = popularity_baseline(
                os.path.join(args.work, name, "raw"), resolve(config["datasets"][name]["dataset"]),
                config["datasets"][name]["popularity"])
        if load_spec(resolve(config["datasets"][name]["dataset"])).adapter == "synthetic":
            result["datasets"][name]["sequence_headroom"] = sequence_headroom(
                int(config["datasets"][name].get("rows", 200_000)), resolve(config["datasets"][name]["dataset"]))
    result["environment"] = {**environment(), "wall_s": round(time.time() - start, 1),
                             "runs_trained": counts["trained"], "runs_read_from_work": counts["read"]}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(result, fh, indent=1)
    text = markdown(result)
    with open(os.path.splitext(args.output)[0] + ".md", "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
