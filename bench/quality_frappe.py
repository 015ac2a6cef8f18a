"""Test AUC / log loss of each backbone on Frappe_x1 under the published BARS protocol, 5 seeds.

    python bench/quality_frappe.py [--models deepfm,dcnv2] [--seeds 0,1,2,3,4] [--jobs 4]
        [--source ../shared/data/frappe_x1] [--output bench/results/quality_frappe.json]

Every model trains from the NumPy arrays of ``zoo.datasets.frappe.load_arrays`` (the same local ids
the Beam job writes; no TensorFlow needed, so it runs under JAX on a GPU machine too) with
``model.fit``: the protocol and each model's hyper-parameters are in ``bench/quality_frappe.yaml``
(BARS: embedding 10, batch 4096, Adam 1e-3, exact validation AUC after every epoch with
reduce-on-plateau x0.1 and early stopping after 2 epochs without gain, best weights restored, the
test set evaluated once). Writes the per-seed runs, mean +/- std, the published numbers and the
difference (and to BARS' repeated-run mean where its page has one), and the environment (versions, CPU, accelerator, backend, wall time) to ``--output``
(JSON) and the same table as markdown next to it, and prints the table.

Models: by default every registered backbone that Frappe_x1 supports (``zoo.registry.backbones_for``; DIN,
which needs a behaviour sequence, is named and skipped), each from its
``configs/models/<name>.yaml``), or the YAML's ``default_models`` list where it has one; ``--models``
selects a subset. The YAML's ``models`` section holds each model's BARS settings (hyper-parameter
overrides, embedding L2, published numbers, the primary ``loss`` as in a model YAML's
``training.loss``) and may add variants of a backbone (``model_config``). A
backbone without an entry there trains with the YAML's shared ``defaults`` under the same protocol,
and the table marks it "no BARS config".

``--from-results EARLIER.json`` rewrites ``--output`` from an earlier output (its runs, protocol and
environment) with the YAML's current published numbers, without training.

``--jobs N`` trains N models at a time, each in its own process (on one GPU the small models leave
it mostly idle, so this shortens the wall time); the default is one process, in order.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = os.path.join(ROOT, "bench", "quality_frappe.yaml")
SPEC = os.path.join(ROOT, "configs", "datasets", "frappe_x1.yaml")
DEFAULT_SOURCE = os.path.join(os.path.dirname(ROOT), "shared", "data", "frappe_x1")
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "quality_frappe.json")
MODEL_CONFIGS = os.path.join(ROOT, "configs", "models")


def load_config(path: str = CONFIG) -> dict:
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh)


NO_BARS_CONFIG = "no BARS config"
ENTRY_KEYS = ("source", "published", "published_runs", "embedding_l2", "embedding_initializer", "hparams", "loss",
              "model_config")
PUBLISHED_KEYS = ("auc", "logloss")
PUBLISHED_RUNS_KEYS = ("runs", "auc_mean", "auc_std", "logloss_mean", "logloss_std")


def model_entry(name: str, config: dict) -> dict:
    """A model's entry in the YAML's ``models`` section, or the shared ``defaults`` when it has none."""
    if name in config["models"]:
        return config["models"][name]
    return {**(config.get("defaults") or {}), "source": NO_BARS_CONFIG, "published": None}


def default_models(config: dict) -> list[str]:
    """The YAML's ``default_models``, else every registered backbone that can be built on Frappe_x1 (the
    others, e.g. DIN without a behaviour sequence, are named on stderr)."""
    if config.get("default_models"):
        return list(config["default_models"])
    from zoo.registry import backbones_for
    from zoo.spec import load_spec

    names, skipped = backbones_for(load_spec(SPEC))
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    return names


def check_models(names: list[str], config: dict, config_path: str) -> None:
    """Every name is a registered backbone or an entry of the YAML's ``models``, and has its model YAML."""
    from zoo.registry import backbone_names

    registered = backbone_names()
    unknown = [n for n in names if n not in registered and n not in config["models"]]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; registered backbones: {registered}; "
                         f"other entries of {os.path.relpath(config_path, ROOT)}: "
                         f"{sorted(set(config['models']) - set(registered))}")
    for name in names:
        try:
            check_entry(name, model_entry(name, config))
        except ValueError as err:
            raise SystemExit(f"{os.path.relpath(config_path, ROOT)}: {err}") from None
        path = model_config_path(name, config)
        if not os.path.exists(path):
            raise SystemExit(f"model {name}: model YAML {os.path.relpath(path, ROOT)} not found")
        try:
            model_settings(name, config)
        except ValueError as err:
            raise SystemExit(f"{os.path.relpath(config_path, ROOT)}: {err}") from None


def check_entry(name: str, entry: dict) -> None:
    """A model entry has only :data:`ENTRY_KEYS`, and its ``published`` / ``published_runs`` exactly their
    keys with numbers; the first offence is raised as a one-line ``ValueError`` naming the key."""
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ValueError(f"models.{name}: unknown keys {unknown}; known: {list(ENTRY_KEYS)}")
    for key, expected in (("published", PUBLISHED_KEYS), ("published_runs", PUBLISHED_RUNS_KEYS)):
        value = entry.get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or set(value) != set(expected):
            raise ValueError(f"models.{name}.{key}: needs exactly the keys {list(expected)}, got "
                             f"{sorted(value) if isinstance(value, dict) else value!r}")
        bad = [k for k in expected if isinstance(value[k], bool) or not isinstance(value[k], (int, float))]
        if bad:
            raise ValueError(f"models.{name}.{key}.{bad[0]}: must be a number, got {value[bad[0]]!r}")


def model_config_path(name: str, config: dict) -> str:
    return os.path.join(MODEL_CONFIGS, f"{model_entry(name, config).get('model_config', name)}.yaml")


def model_settings(name: str, config: dict) -> dict:
    """The backbone, hparams, embedding options and loss of one model: the model YAML, then the
    overrides (the model's BARS entry, or the YAML's shared ``defaults``)."""
    from zoo.config import load_model_config
    from zoo.losses import loss_options

    entry = model_entry(name, config)
    protocol = config["protocol"]
    base = load_model_config(model_config_path(name, config))
    return {
        "backbone": base["backbone"],
        "hparams": {**base["hparams"], **(entry.get("hparams") or {})},
        "embedding": {"type": "plain", "l2": float(entry.get("embedding_l2", 0.0)),
                      "initializer": entry.get("embedding_initializer", protocol["embedding_initializer"])},
        "loss": loss_options(entry.get("loss", base["training"]["loss"]), f"models.{name}.loss"),
    }


def train_one(name: str, seed: int, config: dict, splits: dict, spec, verbose: int = 0) -> dict:
    """Trains one model with one seed under the protocol; returns its test metrics."""
    import keras

    from zoo import metrics
    from zoo.losses import primary_loss
    from zoo.model import PRIMARY, build
    from zoo.protocol import Protocol, adam, fit

    protocol = config["protocol"]
    settings = model_settings(name, config)
    inputs = [f.name for f in spec.inputs]
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = (
        ({n: feats[n] for n in inputs}, labels) for feats, labels in (splits[s] for s in ("train", "valid", "test")))
    keras.utils.set_random_seed(seed)
    model = build(settings["backbone"], spec, embedding=settings["embedding"], **settings["hparams"])
    model.compile(
        optimizer=adam(protocol["learning_rate"], global_clipnorm=protocol["global_clipnorm"],
                       step=protocol.get("adam_step", "keras")),
        loss={PRIMARY: primary_loss(settings["loss"])},
    )
    batch = int(protocol["batch_size"])
    fitted = fit(model, x_train, {PRIMARY: y_train}, validation=(x_valid, y_valid),
                 protocol=Protocol.from_mapping(protocol, "protocol"), batch_size=batch, shuffle=True,
                 verbose=verbose)
    p = model.predict(x_test, batch_size=4 * batch, verbose=0)[PRIMARY].ravel()
    return {
        "seed": seed,
        "test_auc": round(metrics.auc(y_test.ravel(), p), 6),
        "test_logloss": round(metrics.log_loss(y_test.ravel(), p), 6),
        "best_valid_auc": round(fitted.best_value, 6),
        "best_epoch": fitted.best_epoch,
        "epochs_run": fitted.epochs_run,
        "hit_cap": fitted.hit_cap,
        "train_seconds": round(fitted.seconds, 1),
        "params": int(model.count_params()),
    }


def run_models(names: list[str], seeds: list[int], source: str, config: dict, verbose: int = 0,
               part: str | None = None) -> dict:
    """Trains ``names`` x ``seeds`` in this process; returns ``{name: [run, ...]}``.

    With ``part`` (a JSON path) the runs are saved there after each one, and runs already in it are
    kept and not repeated, so an interrupted benchmark resumes where it stopped.
    """
    from zoo.datasets.frappe import load_arrays
    from zoo.spec import load_spec

    runs: dict[str, list] = {}
    if part and os.path.exists(part):
        with open(part) as fh:
            runs = json.load(fh)
    spec = load_spec(SPEC)
    splits = load_arrays(spec, source)
    for name in names:
        for seed in seeds:
            if any(r["seed"] == seed for r in runs.get(name, [])):
                continue
            run = train_one(name, seed, config, splits, spec, verbose)
            runs.setdefault(name, []).append(run)
            if part:
                with open(part, "w") as fh:
                    json.dump(runs, fh, indent=1)
            print(f"{name:<8} seed {seed}: test AUC {run['test_auc']:.4f} logloss {run['test_logloss']:.4f} "
                  f"({run['epochs_run']} epochs, best {run['best_epoch']}, {run['train_seconds']:.0f} s)", flush=True)
    return runs


def run_parallel(names: list[str], seeds: list[int], source: str, jobs: int, max_epochs: int,
                 parts_dir: str, config_path: str = CONFIG, adam_step: str = "keras") -> dict:
    """One subprocess per model, ``jobs`` at a time; each keeps its runs in ``<parts_dir>/<name>.json``."""
    from workers import run_workers

    os.makedirs(parts_dir, exist_ok=True)
    failed = run_workers({
        name: [sys.executable, __file__, "--models", name, "--seeds", ",".join(map(str, seeds)),
               "--source", source, "--part-out", os.path.join(parts_dir, f"{name}.json"),
               "--max-epochs", str(max_epochs), "--config", config_path, "--adam-step", adam_step]
        for name in names}, jobs)
    if failed:
        raise RuntimeError(f"workers failed: {failed}; finished runs are kept in {parts_dir}")
    runs = {}
    for name in names:
        with open(os.path.join(parts_dir, f"{name}.json")) as fh:
            runs[name] = json.load(fh)[name]
    return runs


def summarize(runs: dict, config: dict) -> dict:
    """Mean +/- std per model, against the published numbers."""
    tolerance = config["protocol"]["tolerance_auc"]
    table = {}
    for name, model_runs in runs.items():
        aucs = [r["test_auc"] for r in model_runs]
        losses = [r["test_logloss"] for r in model_runs]
        row = {
            "seeds": len(model_runs),
            "runs_at_epoch_cap": sum(1 for r in model_runs if r.get("hit_cap")),
            "auc_mean": round(statistics.fmean(aucs), 6),
            "auc_std": round(statistics.stdev(aucs), 6) if len(aucs) > 1 else 0.0,
            "logloss_mean": round(statistics.fmean(losses), 6),
            "logloss_std": round(statistics.stdev(losses), 6) if len(losses) > 1 else 0.0,
            "published": model_entry(name, config).get("published"),
            "published_runs": model_entry(name, config).get("published_runs"),
            "source": model_entry(name, config).get("source"),
        }
        if row["published"]:
            row["auc_minus_published"] = round(row["auc_mean"] - row["published"]["auc"], 6)
            row["logloss_minus_published"] = round(row["logloss_mean"] - row["published"]["logloss"], 6)
            row["auc_within_tolerance"] = abs(row["auc_minus_published"]) <= tolerance
        if row["published_runs"]:
            row["auc_minus_published_mean"] = round(row["auc_mean"] - row["published_runs"]["auc_mean"], 6)
            row["logloss_minus_published_mean"] = round(
                row["logloss_mean"] - row["published_runs"]["logloss_mean"], 6)
        table[name] = row
    return table


def format_table(table: dict, tolerance: float) -> str:
    """The summary as a markdown table: the published single run, the AUC difference and the tolerance
    check, then the diffs (AUC / logloss) against BARS' repeated-run mean where it reports one."""
    lines = ["| model | test AUC (mean ± std) | test logloss (mean ± std) | published AUC / logloss "
             f"| AUC diff | within {tolerance} | BARS runs: AUC / logloss (mean ± std) | diff to their mean |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in table.items():
        pub, runs = row["published"], row.get("published_runs")
        cells = [name, f"{row['auc_mean']:.4f} ± {row['auc_std']:.4f}",
                 f"{row['logloss_mean']:.4f} ± {row['logloss_std']:.4f}"]
        if pub:
            cells += [f"{pub['auc']:.4f} / {pub['logloss']:.4f}", f"{row['auc_minus_published']:+.4f}",
                      "yes" if row["auc_within_tolerance"] else "NO"]
        else:
            cells += ["no BARS config" if row["source"] == NO_BARS_CONFIG else "none", "", ""]
        if runs:
            cells += [f"{runs['runs']} runs: {runs['auc_mean']:.4f} ± {runs['auc_std']:.4f} / "
                      f"{runs['logloss_mean']:.4f} ± {runs['logloss_std']:.4f}",
                      f"{row['auc_minus_published_mean']:+.4f} / {row['logloss_minus_published_mean']:+.4f}"]
        else:
            cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from zoo.protocol import ADAM_STEPS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=CONFIG)
    config_path = pre.parse_known_args(argv)[0].config
    config = load_config(config_path)
    parser.add_argument("--config", default=CONFIG, help="protocol and per-model settings (YAML)")
    parser.add_argument("--models", default="", help="comma-separated; default: the YAML's default_models, "
                        "else every registered backbone Frappe_x1 supports (zoo.registry.backbones_for)")
    parser.add_argument("--seeds", default=",".join(map(str, config["protocol"]["seeds"])))
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="the frappe_x1 folder")
    parser.add_argument("--jobs", type=int, default=1, help="models trained at a time, one process each")
    parser.add_argument("--output", default=DEFAULT_OUT)
    parser.add_argument("--parts-dir", help="with --jobs: where each model's runs are kept as they finish "
                        "(runs found there are not repeated); default: a temporary folder")
    parser.add_argument("--part-out", help=argparse.SUPPRESS)  # worker mode: runs only, as JSON
    parser.add_argument("--max-epochs", type=int, help="override the protocol's max_epochs (smoke runs)")
    parser.add_argument("--adam-step", choices=ADAM_STEPS, help="override the protocol's adam_step "
                        "(keras: keras.optimizers.Adam; paper: zoo.optimizers.PaperAdam, PyTorch's step)")
    parser.add_argument("--from-results", help="rewrite --output from this earlier output (its runs, protocol and "
                        "environment) with the YAML's current published numbers, without training")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    if args.from_results:
        with open(args.from_results) as fh:
            earlier = json.load(fh)
        config["protocol"] = earlier["protocol"]
        check_models(list(earlier["runs"]), config, config_path)
        write_results(args.output, {**earlier, "summary": summarize(earlier["runs"], config)},
                      config["protocol"]["seeds"])
        return 0
    if args.max_epochs:
        config["protocol"]["max_epochs"] = args.max_epochs
    if args.adam_step:
        config["protocol"]["adam_step"] = args.adam_step
    names = [n for n in args.models.split(",") if n] or default_models(config)
    check_models(names, config, config_path)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.part_out:
        run_models(names, seeds, args.source, config, args.verbose, part=args.part_out)
        return 0

    start = time.time()
    if args.jobs > 1:
        with tempfile.TemporaryDirectory() as tmp:
            runs = run_parallel(names, seeds, args.source, args.jobs, config["protocol"]["max_epochs"],
                                args.parts_dir or tmp, config_path, config["protocol"].get("adam_step", "keras"))
    else:
        runs = run_models(names, seeds, args.source, config, args.verbose)
    wall = time.time() - start
    from environment import environment
    from zoo.protocol import ADAM_EPSILON, adam

    optimizer = type(adam(1e-3, step=config["protocol"].get("adam_step", "keras")))
    result = {
        "benchmark": f"Frappe_x1 test AUC / logloss, BARS protocol ({os.path.relpath(config_path, ROOT)})",
        "protocol": {**config["protocol"],
                     "optimizer": {"class": f"{optimizer.__module__}.{optimizer.__qualname__}", "epsilon": ADAM_EPSILON}},
        "summary": summarize(runs, config),
        "runs": runs,
        "hyper_parameters": {name: model_settings(name, config) for name in names},
        "environment": {**environment(), "wall_seconds": round(wall, 1), "parallel_jobs": args.jobs},
    }
    write_results(args.output, result, seeds)
    return 0


def write_results(output: str, result: dict, seeds: list[int]) -> None:
    """``result`` as JSON to ``output`` and its table as markdown next to it; prints the table."""
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as fh:
        json.dump(result, fh, indent=2)
    markdown = format_table(result["summary"], result["protocol"]["tolerance_auc"])
    env = result["environment"]
    with open(os.path.splitext(output)[0] + ".md", "w") as fh:
        fh.write(f"# Frappe_x1 quality (seeds {seeds})\n\n{markdown}\n\n"
                 f"Backend {env['backend']}, Keras {env['keras']}, accelerators {env['accelerators'] or 'none'}, "
                 f"CPU {env['cpu']} x{env['cpu_count']}, {env['parallel_jobs']} job(s), wall "
                 f"{env['wall_seconds'] / 60:.1f} min, {env['date']}. Raw runs and hyper-parameters: "
                 f"{os.path.basename(output)}.\n")
    print(markdown)
    print(f"wall {env['wall_seconds']:.0f} s; wrote {output}")


if __name__ == "__main__":
    sys.exit(main())
