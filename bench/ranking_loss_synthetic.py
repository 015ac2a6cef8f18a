"""BCE vs BCE + pairwise ranking loss on the synthetic data through ``zoo.train``, paired seeds.

    python bench/ranking_loss_synthetic.py [--rows 200000] [--seeds 0,1,2,3,4] [--work runs/ranking_loss]

The main job's data (``zoo.pipeline --variants baseline``: the generator, the Beam job, 200,000 rows
by default) once, then for each seed the DCNv2 baseline twice with the same seed (same initial
weights and data order): ``configs/models/dcnv2.yaml`` (BCE) and ``bench/ranking_loss_dcnv2.yaml``
(the same model with ``training.loss: bce_ranking``), under ``zoo.train``'s converged protocol
(validation log loss selects the epoch; the test split is evaluated once per run). Writes test AUC,
log loss and NE per seed, mean ± std, the paired differences with a paired t-test, and the oracle (the
generator's true probabilities) to ``--output`` (JSON) and the same table as markdown next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
ARMS = {"bce": os.path.join(ROOT, "configs", "models", "dcnv2.yaml"),
        "bce_ranking": os.path.join(ROOT, "bench", "ranking_loss_dcnv2.yaml")}
METRICS = ("auc", "log_loss", "ne")


def run(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def main(argv=None) -> int:
    from zoo.significance import paired_t_test

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--work", default=os.path.join(ROOT, "runs", "ranking_loss"))
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "ranking_loss_synthetic.json"))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.time()
    data = os.path.join(args.work, "data")
    if not os.path.exists(os.path.join(data, "spec.json")):
        run(["zoo.pipeline", "--rows", str(args.rows), "--variants", "baseline", "--output", args.work,
             "--export-root", os.path.join(args.work, "saved_models")])
    runs: dict[str, list] = {arm: [] for arm in ARMS}
    oracle = None
    for seed in seeds:
        for arm, model in ARMS.items():
            out = os.path.join(args.work, f"{arm}_seed{seed}")
            if not os.path.exists(os.path.join(out, "metrics.json")):
                run(["zoo.train", "--data", data, "--model", model, "--variants", "baseline", "--seed", str(seed),
                     "--output", out])
            with open(os.path.join(out, "metrics.json")) as fh:
                summary = json.load(fh)
            overall = summary["variants"]["baseline"]["overall"]
            fit = summary["variants"]["baseline"]["training"]
            runs[arm].append({"seed": seed, **{m: overall[m] for m in METRICS},
                              "epochs_run": fit["epochs_run"], "best_epoch": fit["best_epoch"],
                              "hit_cap": fit["hit_cap"]})
            oracle = summary.get("oracle", {}).get("overall")
            print(f"{arm:<12} seed {seed}: AUC {overall['auc']:.4f} logloss {overall['log_loss']:.4f} "
                  f"NE {overall['ne']:.4f} ({fit['epochs_run']} epochs)", flush=True)
    table = {arm: {m: {"mean": statistics.mean(r[m] for r in rs), "std": statistics.stdev(r[m] for r in rs)
                       if len(rs) > 1 else 0.0} for m in METRICS} for arm, rs in runs.items()}
    paired = {m: {"mean_diff": statistics.mean(b[m] - a[m] for a, b in zip(runs["bce"], runs["bce_ranking"])),
                  **(paired_t_test([b[m] for b in runs["bce_ranking"]], [a[m] for a in runs["bce"]])
                     if len(seeds) > 1 else {})} for m in METRICS}
    from environment import environment  # bench/environment.py (this script's folder is on sys.path)

    result = {"benchmark": "ranking_loss_synthetic", "rows": args.rows, "seeds": seeds, "model": "dcnv2",
              "loss": {"type": "bce_ranking", "alpha": 0.7, "pairs_per_row": 256}, "runs": runs, "summary": table,
              "paired_ranking_minus_bce": paired, "oracle": oracle,
              "environment": {**environment(), "wall_s": round(time.time() - start, 1)}}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(result, fh, indent=1)
    lines = [f"# BCE vs BCE + ranking loss, DCNv2 on synthetic data ({args.rows:,} rows, seeds {seeds})", "",
             "| loss | test AUC | test logloss | test NE |", "| --- | --- | --- | --- |"]
    for arm, row in table.items():
        lines.append(f"| {arm} | " + " | ".join(f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}" for m in METRICS) + " |")
    if oracle:
        lines.append("| oracle (true p) | " + " | ".join(f"{oracle[m]:.4f}" for m in METRICS) + " |")
    lines += ["", "Paired (ranking - BCE): " + "; ".join(
        f"{m} {p['mean_diff']:+.4f} (p {p.get('p', float('nan')):.3f})" for m, p in paired.items()),
        "", f"Runs stopped by the epoch cap: {sum(r['hit_cap'] for rs in runs.values() for r in rs)} of "
        f"{sum(len(rs) for rs in runs.values())}.",
        "", f"zoo.train, converged protocol; wall {result['environment']['wall_s'] / 60:.1f} min. Raw runs: "
        f"{os.path.basename(args.output)}."]
    with open(os.path.splitext(args.output)[0] + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
