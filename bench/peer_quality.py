"""Test AUC / log loss of the PyTorch peer FuxiCTR on Frappe_x1 under the BARS protocol, one run per seed.

    PEER_VENV/bin/python bench/peer_quality.py --fuxictr-model-zoo FUXICTR_CHECKOUT/model_zoo
        [--models afm] [--seeds 0,1,2,3,4] [--source ../shared/data/frappe_x1]
        [--work TMPDIR/peer_fuxictr] [--output bench/results/peer_quality.json] [--max-epochs N]
        [--compare bench/results/quality_frappe_afm_dropout.json] [--from-results EARLIER.json]

Why: a BARS number is one run (seed 2021) of one configuration. Where the zoo's 5-seed mean misses
it (AFM), the question is whether the reference implementation itself reaches it on average; this
script answers it with the reference's own code, data path and training loop, the seeds that
bench/quality_frappe.py uses, so that the two seed distributions can be compared side by side.

Data: FuxiCTR's own preprocessing (``FeatureProcessor`` + ``build_dataset``, as bench/peer_fuxictr.py:
its ids, vocabulary and parquet files), served from memory by :class:`ArrayBatches` (batches of
4096, train reshuffled every epoch) rather than FuxiCTR's Ray Data loader: the order is seeded and
no loader workers compete with the 2 training threads; the rows, ids and batch size are the same.

What runs: FuxiCTR's model class from a checkout's ``model_zoo`` (loaded, translated and built
exactly as bench/peer_fuxictr.py does: the hyper-parameters of bench/quality_frappe.yaml in
FuxiCTR's names, embeddings N(0, 1e-4), ``embedding_regularizer`` = 2 * ``embedding_l2``), trained
with FuxiCTR's own ``fit``: its validation AUC after every epoch, learning rate x0.1 on every epoch
without a gain of 1e-6 (floor 1e-6), early stop after 2 such epochs, best checkpoint reloaded, at
most ``max_epochs`` of the YAML's protocol; then its ``evaluate`` on the test split, once.
``seed_everything(seed)`` before each build (torch, numpy, random: initial weights and dropout
masks) and the batch order seeded with it too.

Writes ``--output`` (JSON: per model every seed's test and best-validation AUC / log loss, epochs,
the per-epoch validation curve, mean +/- std, the published number, provenance and environment)
and a markdown table next to it after every seed (marked incomplete until the last), and prints
the table. ``--compare`` adds the zoo's runs of the same models from a bench/quality_frappe.py
results file: both means and stds and Welch's t-test per metric (the seeds of two frameworks do not
pair; ``zoo.significance``, pure Python). ``--from-results`` rewrites the files from an earlier
output (e.g. to add ``--compare``) without training. FuxiCTR is never a dependency of this project:
this runs in the peer's own venv (bench/README.md, ``peer_fuxictr.py``) and imports FuxiCTR, torch,
numpy, polars, PyYAML, the standard library and ``zoo.significance`` only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)  # zoo.significance (pure Python) for the comparison with the zoo's runs

import peer_fuxictr  # noqa: E402  (bench/peer_fuxictr.py: translation, model loading, data build)

DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "peer_quality.json")


class ArrayBatches:
    """A split held in memory as torch tensors, served as FuxiCTR's batch dicts (``{column: tensor}``).

    Stands in for FuxiCTR's loaders (same rows, columns and dtypes as its parquet files; the last
    batch is partial, as theirs): ``shuffle`` draws a new permutation each pass from a generator
    seeded by :meth:`reseed`, so a seed fixes the batch order too.
    """

    def __init__(self, parquet_path: str, batch_size: int, shuffle: bool):
        import numpy as np
        import polars
        import torch

        frame = polars.read_parquet(parquet_path)
        self.columns = {c: torch.from_numpy(np.array(frame[c].to_numpy())) for c in frame.columns}  # writable copy
        self.num_samples = frame.height
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator()

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def __iter__(self):
        import torch

        order = (torch.randperm(self.num_samples, generator=self.generator) if self.shuffle
                 else torch.arange(self.num_samples))
        for start in range(0, self.num_samples, self.batch_size):
            rows = order[start:start + self.batch_size]
            yield {c: values[rows] for c, values in self.columns.items()}


def train_seed(name: str, seed: int, model_zoo: str, config: dict, feature_map, gens: dict, work: str,
               max_epochs: int) -> dict:
    """One FuxiCTR ``fit`` + test ``evaluate`` of ``name`` with ``seed``; returns its metrics and curve."""
    from fuxictr.pytorch.torch_utils import seed_everything

    cls, _ = peer_fuxictr.load_model_class(model_zoo, name)
    params = peer_fuxictr.fuxictr_params(name, config, os.path.join(work, "checkpoints"))
    params["model_id"] = f"{params['model_id']}_seed{seed}"
    seed_everything(seed=seed)
    gens["train"].reseed(seed)
    model = cls(feature_map, **params)
    os.makedirs(model.model_dir, exist_ok=True)  # fit saves the best checkpoint there
    curve: list[dict] = []
    record_and_check = model.checkpoint_and_earlystop

    def checkpoint_and_earlystop(logs, **kwargs):  # records each validation before FuxiCTR acts on it
        curve.append({"epoch": model._epoch_index + 1, "valid_auc": round(float(logs["AUC"]), 6),
                      "learning_rate": float(model.optimizer.param_groups[0]["lr"])})
        return record_and_check(logs, **kwargs)

    model.checkpoint_and_earlystop = checkpoint_and_earlystop
    start = time.perf_counter()
    model.fit(gens["train"], epochs=max_epochs, validation_data=gens["valid"],
              max_gradient_norm=float(config["protocol"]["global_clipnorm"]))
    seconds = time.perf_counter() - start
    valid = model.evaluate(gens["valid"], metrics=["AUC", "logloss"])
    test = model.evaluate(gens["test"], metrics=["AUC", "logloss"])
    best = max(curve, key=lambda c: c["valid_auc"])
    return {
        "seed": seed,
        "test_auc": round(float(test["AUC"]), 6),
        "test_logloss": round(float(test["logloss"]), 6),
        "best_valid_auc": round(float(valid["AUC"]), 6),
        "best_valid_logloss": round(float(valid["logloss"]), 6),
        "best_epoch": best["epoch"],
        "epochs_run": len(curve),
        "hit_cap": len(curve) >= max_epochs and not model._stop_training,
        "train_seconds": round(seconds, 1),
        "params": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        "valid_auc_by_epoch": [c["valid_auc"] for c in curve],
    }


def summarize(name: str, runs: list[dict], config: dict) -> dict:
    aucs = [r["test_auc"] for r in runs]
    losses = [r["test_logloss"] for r in runs]
    spread = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
    entry = config["models"].get(name, {})
    published = entry.get("published") or {}
    out = {"fuxictr_model": peer_fuxictr.FUXICTR_MODELS[name][0], "seeds": len(runs),
           "runs_at_epoch_cap": sum(r["hit_cap"] for r in runs),
           "auc_mean": round(statistics.mean(aucs), 6), "auc_std": round(spread(aucs), 6),
           "logloss_mean": round(statistics.mean(losses), 6), "logloss_std": round(spread(losses), 6),
           "published": published, "published_runs": entry.get("published_runs"), "source": entry.get("source")}
    if published:
        out["auc_minus_published"] = round(out["auc_mean"] - published["auc"], 6)
        out["logloss_minus_published"] = round(out["logloss_mean"] - published["logloss"], 6)
    if out["published_runs"]:
        out["auc_minus_published_mean"] = round(out["auc_mean"] - out["published_runs"]["auc_mean"], 6)
        out["logloss_minus_published_mean"] = round(out["logloss_mean"] - out["published_runs"]["logloss_mean"], 6)
    return out


def compare(name: str, runs: list[dict], zoo_results: dict, label: str) -> dict | None:
    """The zoo's runs of ``name`` (a bench/quality_frappe.py results file) against the peer's: means, stds
    and Welch's t-test per metric (two frameworks: the seeds do not pair)."""
    from zoo.significance import welch_t_test  # pure Python: importable in the peer's venv

    theirs = (zoo_results.get("runs") or {}).get(name)
    if not theirs or len(theirs) < 2 or len(runs) < 2:
        return None
    out = {"zoo_results": label, "zoo_seeds": sorted(r["seed"] for r in theirs)}
    for metric in ("test_auc", "test_logloss"):
        zoo, peer = [r[metric] for r in theirs], [r[metric] for r in runs]
        out[metric] = {"zoo_mean": round(statistics.mean(zoo), 6), "zoo_std": round(statistics.stdev(zoo), 6),
                       "peer_mean": round(statistics.mean(peer), 6), "peer_std": round(statistics.stdev(peer), 6),
                       "zoo_minus_peer": round(statistics.mean(zoo) - statistics.mean(peer), 6),
                       "welch": welch_t_test(zoo, peer)}
    return out


def format_table(summary: dict, runs: dict, env: dict) -> str:
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    lines = [f"# FuxiCTR {env['fuxictr']} on Frappe_x1 (seeds {seeds})",
             "",
             "| model | test AUC (mean ± std) | test logloss (mean ± std) | published AUC / logloss | diff AUC / "
             "logloss | BARS runs: mean AUC / logloss | diff to their mean | per seed (test AUC / logloss) | epochs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in summary.items():
        pub, bars_runs = row["published"], row.get("published_runs")
        per_seed = ", ".join(f"{r['test_auc']:.4f} / {r['test_logloss']:.4f}" for r in runs[name])
        epochs = ", ".join(str(r["epochs_run"]) for r in runs[name])
        cells = [name, f"{row['auc_mean']:.4f} ± {row['auc_std']:.4f}",
                 f"{row['logloss_mean']:.4f} ± {row['logloss_std']:.4f}"]
        cells += ([f"{pub['auc']:.4f} / {pub['logloss']:.4f}",
                   f"{row['auc_minus_published']:+.4f} / {row['logloss_minus_published']:+.4f}"] if pub else ["none", ""])
        cells += ([f"{bars_runs['runs']} runs: {bars_runs['auc_mean']:.4f} / {bars_runs['logloss_mean']:.4f}",
                   f"{row['auc_minus_published_mean']:+.4f} / {row['logloss_minus_published_mean']:+.4f}"]
                  if bars_runs else ["", ""])
        lines.append("| " + " | ".join(cells + [per_seed, epochs]) + " |")
    compared = {n: row["zoo_comparison"] for n, row in summary.items() if row.get("zoo_comparison")}
    if compared:
        lines += ["", "The zoo's runs of the same model against the peer's (Welch's t-test; the seeds do not pair "
                  "across frameworks):", "",
                  "| model | zoo test AUC | peer test AUC | zoo - peer (p) | zoo logloss | peer logloss | zoo - peer (p) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, c in compared.items():
            cells = []
            for metric in ("test_auc", "test_logloss"):
                m = c[metric]
                cells += [f"{m['zoo_mean']:.4f} ± {m['zoo_std']:.4f}", f"{m['peer_mean']:.4f} ± {m['peer_std']:.4f}",
                          f"{m['zoo_minus_peer']:+.4f} ({m['welch']['p']:.2f})"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "Zoo runs: " + "; ".join(f"{n}: `{c['zoo_results']}` (seeds {c['zoo_seeds']})"
                                               for n, c in compared.items()) + "."]
    lines += ["", f"torch {env['torch']}, CPU {env['cpu']} x{env['cpu_count']}, {env['torch_threads']} torch threads, "
              f"wall {env['wall_seconds'] / 60:.1f} min, {env['date']}. Raw runs: "
              f"{os.path.basename(env['output'])}."]
    return "\n".join(lines)


def write_results(args, config: dict, plan: dict, runs: dict, env: dict, complete: bool,
                  zoo_results: dict | None) -> str:
    """Writes ``--output`` (JSON) and its markdown table; returns the table."""
    done = {n: r for n, r in runs.items() if r}
    summary = {n: summarize(n, r, config) for n, r in done.items()}
    if zoo_results is not None:
        for n, r in done.items():
            summary[n]["zoo_comparison"] = compare(n, r, zoo_results, os.path.relpath(args.compare, ROOT))
    names = plan["names"]
    result = {
        "benchmark": "FuxiCTR (PyTorch peer) Frappe_x1 test AUC / logloss, its own fit under the BARS "
                     f"protocol, hyper-parameters of {os.path.relpath(args.config, ROOT)}",
        "complete": complete,
        "protocol": {"seeds": plan["seeds"], "max_epochs": plan["max_epochs"], "monitor": "AUC",
                     "early_stop_patience": 2,
                     "reduce_lr_on_plateau": "x0.1 on every epoch without a gain (FuxiCTR's lr_decay)",
                     "batch_size": int(config["protocol"]["batch_size"]),
                     "max_gradient_norm": float(config["protocol"]["global_clipnorm"])},
        "summary": summary,
        "runs": done,
        "fuxictr_hparams": {n: {k: v for k, v in peer_fuxictr.fuxictr_params(n, config, args.work).items()
                                if k not in ("model_root", "verbose", "gpu")} for n in names},
        "fuxictr_model_zoo": peer_fuxictr.zoo_provenance(plan["model_zoo"], names),
        "environment": {k: v for k, v in env.items() if k != "output"},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(result, fh, indent=2)
    table = format_table(summary, done, env) + ("" if complete else "\n\nINCOMPLETE: interrupted run.")
    with open(os.path.splitext(args.output)[0] + ".md", "w") as fh:
        fh.write(table + "\n")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fuxictr-model-zoo", required=True,
                        help="the model_zoo folder of a FuxiCTR checkout (the pip package has none)")
    parser.add_argument("--models", default="afm", help=f"comma-separated, from {list(peer_fuxictr.FUXICTR_MODELS)}")
    parser.add_argument("--seeds", default=None, help="default: the protocol's seeds in bench/quality_frappe.yaml")
    parser.add_argument("--source", default=peer_fuxictr.DEFAULT_SOURCE)
    parser.add_argument("--work", default=peer_fuxictr.DEFAULT_WORK, help="FuxiCTR's parquet data and checkpoints")
    parser.add_argument("--config", default=peer_fuxictr.CONFIG)
    parser.add_argument("--output", default=DEFAULT_OUT)
    parser.add_argument("--max-epochs", type=int, help="override the protocol's max_epochs (smoke runs)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads; default torch.get_num_threads()")
    parser.add_argument("--compare", help="a bench/quality_frappe.py results JSON: compare its runs of the same "
                        "models with the peer's (written into the results)")
    parser.add_argument("--from-results", help="rewrite --output from this earlier output (its runs and "
                        "environment; with --compare, the comparison added) without training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    config = peer_fuxictr.load_yaml(args.config)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in peer_fuxictr.FUXICTR_MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; known: {list(peer_fuxictr.FUXICTR_MODELS)}")
    seeds = ([int(s) for s in args.seeds.split(",") if s] if args.seeds is not None
             else list(config["protocol"]["seeds"]))
    max_epochs = args.max_epochs or int(config["protocol"]["max_epochs"])
    model_zoo = os.path.abspath(args.fuxictr_model_zoo)
    for n in names:  # translation and model-file errors before any work
        peer_fuxictr.fuxictr_params(n, config, args.work)
        peer_fuxictr.load_model_class(model_zoo, n)

    zoo_results = None
    if args.compare:
        with open(args.compare) as fh:
            zoo_results = json.load(fh)
    plan = {"seeds": seeds, "max_epochs": max_epochs, "model_zoo": model_zoo, "names": names}
    if args.from_results:
        with open(args.from_results) as fh:
            earlier = json.load(fh)
        env = {**earlier["environment"], "output": args.output}
        write_results(args, config, plan, earlier["runs"], env, earlier.get("complete", True), zoo_results)
        return 0

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(os.path.join(args.work, "checkpoints"), exist_ok=True)
    start = time.time()
    runs: dict[str, list] = {n: [] for n in names}

    def environment() -> dict:
        return {**peer_fuxictr.environment(args.threads), "wall_seconds": round(time.time() - start, 1),
                "output": args.output}

    try:
        import ray  # noqa: F401  (FuxiCTR 2.3.10's preprocessing runs on Ray; shut down at the end)

        logging.getLogger("ray").setLevel(logging.WARNING)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        feature_map, data, _ = peer_fuxictr.build_data(os.path.abspath(args.source), args.work,
                                                      int(config["protocol"]["embedding_dim"]))
        batch_size = int(config["protocol"]["batch_size"])
        gens = {split: ArrayBatches(path, batch_size, shuffle=split == "train") for split, path in data.items()}
        for name in names:
            for seed in seeds:
                run = train_seed(name, seed, model_zoo, config, feature_map, gens, args.work, max_epochs)
                runs[name].append(run)
                print(f"{name:<8} seed {seed}: test AUC {run['test_auc']:.4f} logloss {run['test_logloss']:.4f} "
                      f"({run['epochs_run']} epochs, best {run['best_epoch']}, {run['train_seconds']:.0f} s)",
                      flush=True)
                # after every seed, so that an interrupted run keeps what it finished
                write_results(args, config, plan, runs, environment(), False, zoo_results)
    finally:
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
    print(write_results(args, config, plan, runs, environment(), True, zoo_results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
