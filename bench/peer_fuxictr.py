"""Steady-state CPU training throughput (train examples/s) of the PyTorch peer FuxiCTR on Frappe_x1.

    PEER_VENV/bin/python bench/peer_fuxictr.py --fuxictr-model-zoo FUXICTR_CHECKOUT/model_zoo
        [--models dcnv2,deepfm,dlrm,autoint] [--epochs 3] [--repeats 1] [--threads N]
        [--source ../shared/data/frappe_x1] [--work TMPDIR/peer_fuxictr]
        [--output bench/results/peer_fuxictr.json] [--max-steps K]   # K: smoke runs only

FuxiCTR is never a dependency of this project: the script runs under a separate interpreter (a venv
with ``pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`` and
``pip install fuxictr==2.3.10 'polars<2'``, see bench/README.md; FuxiCTR 2.3.10 does not pin polars
but its csv reader calls ``scan_csv(dtypes=...)``, which polars 2 removed) and imports only fuxictr,
torch, numpy, PyYAML and the standard library (plus the Keras-free ``cpu_model`` of
bench/environment.py). The pip package ships no ``model_zoo``; the model classes are loaded from
the files of a FuxiCTR checkout given by ``--fuxictr-model-zoo`` (each model's one source file,
which imports only fuxictr and torch): github.com/reczoo/FuxiCTR at commit 0245987 (main; version
2.3.10, no v2.3.10 tag; its ``fuxictr/pytorch`` models and layers are the pip package's, only
preprocessing and data loaders differ). The commit (``git rev-parse``, else a ``COMMIT`` file next to
``model_zoo``) and each model file's sha256 go into the results. Nothing of FuxiCTR is copied here;
the script calls its public API only.

Data path: FuxiCTR's own. ``FeatureProcessor`` + ``build_dataset`` turn the csv files of
``--source`` (BARS Frappe_x1 dataset config: the 10 fields categorical, ``min_categr_count`` 1) into
its parquet files and ``feature_map.json`` under ``--work`` (built once; reused while
``feature_map.json`` is there); ``RankDataLoader`` (FuxiCTR 2.3.10: a Ray Data parquet loader,
shuffled every epoch, ``num_workers`` 3 prefetched batches as in BARS and the model zoo's Base
config) feeds batches of 4096.

Measurement. Each model is built fresh (``seed_everything(seed + repeat)``), then trained for 1
warm-up epoch (timed and recorded but EXCLUDED from the statistics: first-touch allocation, Ray Data
warm-up) and ``--epochs`` measured epochs. Only the training loop of an epoch is timed: from asking
the loader for its first batch to the last optimizer step, each step being the model's own
``train_step`` (forward, BCE + FuxiCTR's embedding regularization, backward, gradient clipping to
norm 10, Adam) followed by ``loss.item()`` as in FuxiCTR's ``train_epoch``. The loader's work is
inside that time, including its global shuffle at the start of every epoch (Ray Data
``random_shuffle`` of the one train parquet file): the comparison is FuxiCTR with its own data path.
After every epoch the model evaluates the validation set (``model.evaluate``, AUC / logloss;
untimed, ``--no-validate`` skips it), so that the epochs run as in training with validation; the
learning rate stays constant (no reduce-on-plateau: it does not change the cost of a step).
examples/s = rows trained in the epoch / its seconds. ``--repeats R`` runs every model R times,
the models in round-robin order (m1, m2, .., m1, m2, ..), each run with its own warm-up; a
model's median and range (min-max) are over all measured epochs of all its repeats. Torch uses
``torch.get_num_threads()`` intra-op threads unless ``--threads`` is given (recorded either way).

Hyper-parameters: the BARS protocol and models of bench/quality_frappe.yaml (its ``protocol`` and
``models`` entries, the model hparams merged over configs/models/<name>.yaml as
bench/quality_frappe.py does), translated to FuxiCTR's names; an hparam without a translation stops
the script. Protocol: ``embedding_dim`` 10, ``batch_size`` 4096, ``optimizer`` adam with
``learning_rate`` 1e-3, ``max_gradient_norm`` = ``global_clipnorm`` 10 (the value ``fit`` would set;
this loop does not call ``fit``, it sets the model's ``_max_gradient_norm`` the same way), embeddings
N(0, 1e-4) (FuxiCTR's ``FeatureEmbedding`` default; the script checks the yaml says the same),
``embedding_regularizer`` = 2 * ``embedding_l2`` (FuxiCTR adds lam/2 * ||E||^2), ``net_regularizer``
0, binary cross-entropy.

    ours (quality_frappe.yaml)          FuxiCTR 2.3.10 (model_zoo)
    deepfm -> DeepFM (model_zoo/DeepFM/DeepFM_torch)
      dnn_units                         hidden_units
      activation (relu)                 hidden_activations
      dropout                           net_dropout
      norm: batch | null                batch_norm: True | False
      first_order: table                (always: FuxiCTR's FactorizationMachine has the LR table)
    dcnv2 -> DCNv2
      structure: parallel | stacked     model_structure
      num_cross_layers                  num_cross_layers
      cross_rank: null                  use_low_rank_mixture: False (FuxiCTR's low rank is a
                                        mixture of experts, not our low-rank cross: not translated)
      dnn_units                         parallel_dnn_hidden_units (parallel) / stacked_dnn_hidden_units
      activation, dropout, norm         dnn_activations, net_dropout, batch_norm
    dlrm -> DLRM
      interaction: cat | dot            interaction_op
      bottom_units                      bottom_mlp_units (unused: Frappe has no numeric feature)
      top_units                         top_mlp_units
      dropout (top MLP only)            top_mlp_dropout; bottom_mlp_dropout 0
      activation                        top_mlp_activations, bottom_mlp_activations
      norm                              batch_norm (both MLPs in FuxiCTR; no bottom MLP here)
      self_interaction: false           (FuxiCTR's dot interaction is the strict lower triangle)
    autoint -> AutoInt (AutoInt+: use_wide False, dnn_hidden_units non-empty)
      num_attention_layers              attention_layers
      num_heads                         num_heads
      attention_dim (per head)          attention_dim = num_heads * attention_dim (all heads)
      use_residual, use_scale           use_residual, use_scale
      use_layer_norm                    layer_norm
      dnn_units                         dnn_hidden_units
      activation, norm                  dnn_activations, batch_norm
      dropout (our DNN only)            net_dropout: FuxiCTR applies it to the DNN AND to the
                                        attention probabilities (BARS AutoInt+ ran it so; ours
                                        has no attention dropout): not a faithful translation.
    afm -> AFM (model_zoo/AFM; the same model as BARS' FuxiCTR 1.1.0 AFM)
      attention_dim                     attention_dim
      attention_dropout, pooled_dropout attention_dropout: [on the weights, on the pooled vector]
      first_order: table                (always: FuxiCTR's AFM adds its LogisticRegression table)
    finalmlp -> FinalMLP (model_zoo/FinalMLP)
      mlp{1,2}_units, _activation       mlp{1,2}_hidden_units, _hidden_activations
      mlp{1,2}_dropout, _norm           mlp{1,2}_dropout, _batch_norm
      feature_selection, fs_units       use_fs, fs_hidden_units
      fs{1,2}_context (user_id, ..)     fs{1,2}_context (FuxiCTR's field names: user, item, ..)
      fs_context_table: own             (always: FuxiCTR's gates have their own context tables)
      num_heads                         num_heads

Writes ``--output`` (JSON: per model the examples/s median, range, every epoch's value by repeat,
the rows per epoch, the FuxiCTR hyper-parameters and parameter count; the protocol, environment,
FuxiCTR package version and model_zoo provenance, wall time) and prints a table. ``--max-steps K``
stops every epoch after K steps (smoke runs; the results are marked ``smoke``); do not use it for
numbers meant to be compared.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

CONFIG = os.path.join(ROOT, "bench", "quality_frappe.yaml")
MODEL_CONFIGS = os.path.join(ROOT, "configs", "models")
DEFAULT_SOURCE = os.path.join(os.path.dirname(ROOT), "shared", "data", "frappe_x1")
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "peer_fuxictr.json")
DEFAULT_WORK = os.path.join(tempfile.gettempdir(), "peer_fuxictr")
DATASET_ID = "frappe_x1"

# Our model name -> (FuxiCTR class, its source file under model_zoo/).
FUXICTR_MODELS = {
    "dcnv2": ("DCNv2", os.path.join("DCNv2", "src", "DCNv2.py")),
    "deepfm": ("DeepFM", os.path.join("DeepFM", "DeepFM_torch", "src", "DeepFM.py")),
    "dlrm": ("DLRM", os.path.join("DLRM", "src", "DLRM.py")),
    "autoint": ("AutoInt", os.path.join("AutoInt", "src", "AutoInt.py")),
    "afm": ("AFM", os.path.join("AFM", "src", "AFM.py")),
    "finalmlp": ("FinalMLP", os.path.join("FinalMLP", "src", "FinalMLP.py")),
}
# The throughput benchmark's default: the four models zoo.train's speed is compared on (AFM and
# FinalMLP are here for bench/peer_quality.py's seed check).
THROUGHPUT_MODELS = ("dcnv2", "deepfm", "dlrm", "autoint")

# BARS Frappe_x1 dataset config (FuxiCTR's csv path): every field categorical, read as float.
FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]
# configs/datasets/frappe_x1.yaml's input names where they differ from the csv columns (FuxiCTR's names).
FIELD_OF_INPUT = {"user_id": "user", "item_id": "item"}
FEATURE_COLS = [{"name": FIELDS, "active": True, "dtype": "float", "type": "categorical"}]
LABEL_COL = {"name": "label", "dtype": "float"}
MIN_CATEGR_COUNT = 1
NUM_WORKERS = 3  # BARS and the model zoo's Base config


def load_yaml(path: str) -> dict:
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def model_yaml_hparams(path: str) -> dict:
    """The ``hparams`` of a model YAML with its ``base`` chain merged (the base's first)."""
    cfg = load_yaml(path)
    merged = {}
    if cfg.get("base"):
        merged.update(model_yaml_hparams(os.path.join(os.path.dirname(path), cfg["base"])))
    merged.update(cfg.get("hparams") or {})
    return merged


def zoo_settings(name: str, config: dict) -> dict:
    """Our hparams and embedding L2 of ``name`` as bench/quality_frappe.py trains it."""
    if name not in config["models"]:
        raise SystemExit(f"{name}: no entry under `models` in {os.path.relpath(CONFIG, ROOT)}")
    entry = config["models"][name]
    base = model_yaml_hparams(os.path.join(MODEL_CONFIGS, f"{entry.get('model_config', name)}.yaml"))
    return {"hparams": {**base, **(entry.get("hparams") or {})},
            "embedding_l2": float(entry.get("embedding_l2", 0.0)), "source": entry.get("source")}


class Untranslated(SystemExit):
    pass


def _batch_norm(norm) -> bool:
    if norm in (None, "none"):
        return False
    if norm == "batch":
        return True
    raise Untranslated(f"norm={norm!r}: FuxiCTR's MLP_Block has batch norm only")


def translate(name: str, hparams: dict) -> dict:
    """Our hparams of ``name`` -> FuxiCTR's keyword arguments (the table in the module docstring)."""
    hp = dict(hparams)
    take = hp.pop
    act = take("activation", "relu")
    out: dict
    if name == "deepfm":
        if take("first_order", "table") != "table":
            raise Untranslated("deepfm first_order: FuxiCTR's DeepFM always has a free first-order table (LR_Layer)")
        out = {"hidden_units": list(take("dnn_units")), "hidden_activations": act,
               "net_dropout": float(take("dropout")), "batch_norm": _batch_norm(take("norm"))}
    elif name == "dcnv2":
        structure = take("structure")
        if structure not in ("parallel", "stacked"):
            raise Untranslated(f"dcnv2 structure={structure!r}")
        if take("cross_rank", None) is not None:
            raise Untranslated("dcnv2 cross_rank: FuxiCTR's low rank is CrossNetMix (a mixture of experts)")
        units = list(take("dnn_units"))
        out = {"model_structure": structure, "num_cross_layers": int(take("num_cross_layers")),
               "use_low_rank_mixture": False,
               "parallel_dnn_hidden_units": units if structure == "parallel" else [],
               "stacked_dnn_hidden_units": units if structure == "stacked" else [],
               "dnn_activations": act, "net_dropout": float(take("dropout")), "batch_norm": _batch_norm(take("norm"))}
    elif name == "dlrm":
        if take("self_interaction", False):
            raise Untranslated("dlrm self_interaction=true: FuxiCTR's dot interaction excludes self pairs")
        out = {"interaction_op": take("interaction", "dot"), "bottom_mlp_units": list(take("bottom_units")),
               "top_mlp_units": list(take("top_units")), "top_mlp_activations": act, "bottom_mlp_activations": act,
               "top_mlp_dropout": float(take("dropout")), "bottom_mlp_dropout": 0.0,
               "batch_norm": _batch_norm(take("norm"))}
    elif name == "autoint":
        heads = int(take("num_heads"))
        out = {"attention_layers": int(take("num_attention_layers")), "num_heads": heads,
               "attention_dim": heads * int(take("attention_dim")), "use_residual": bool(take("use_residual")),
               "use_scale": bool(take("use_scale")), "layer_norm": bool(take("use_layer_norm")),
               "dnn_hidden_units": list(take("dnn_units")), "dnn_activations": act,
               "net_dropout": float(take("dropout")), "batch_norm": _batch_norm(take("norm")), "use_wide": False}
    elif name == "afm":
        if take("first_order", "table") != "table":
            raise Untranslated("afm first_order: FuxiCTR's AFM always has a free first-order table (LogisticRegression)")
        out = {"attention_dim": int(take("attention_dim")), "use_attention": True,
               "attention_dropout": [float(take("attention_dropout")), float(take("pooled_dropout"))]}
    elif name == "finalmlp":
        if take("fs_context_table", "own") != "own":
            raise Untranslated("finalmlp fs_context_table: FuxiCTR's gates always embed their context in own tables")
        if take("fs_context_dim", None) is not None:
            raise Untranslated("finalmlp fs_context_dim: FuxiCTR's context tables have the embedding width")
        out = {"use_fs": bool(take("feature_selection")), "fs_hidden_units": list(take("fs_units")),
               "num_heads": int(take("num_heads"))}
        for stream in ("mlp1", "mlp2"):
            out.update({f"{stream}_hidden_units": list(take(f"{stream}_units")),
                        f"{stream}_hidden_activations": take(f"{stream}_activation", "relu"),
                        f"{stream}_dropout": float(take(f"{stream}_dropout")),
                        f"{stream}_batch_norm": _batch_norm(take(f"{stream}_norm"))})
        for gate in ("fs1_context", "fs2_context"):
            fields = [FIELD_OF_INPUT.get(n, n) for n in take(gate)]
            if any(f not in FIELDS for f in fields):
                raise Untranslated(f"finalmlp {gate}: {fields} are not all Frappe_x1 fields {FIELDS}")
            out[gate] = fields
    else:
        raise Untranslated(f"{name}: no FuxiCTR translation (known: {sorted(FUXICTR_MODELS)})")
    if hp:
        raise Untranslated(f"{name}: hparams without a FuxiCTR translation: {hp}")
    return out


def fuxictr_params(name: str, config: dict, model_root: str) -> dict:
    """Every keyword argument the FuxiCTR model class of ``name`` is built with."""
    protocol = config["protocol"]
    init = protocol.get("embedding_initializer") or {}
    if init.get("class_name") != "RandomNormal" or float(init.get("config", {}).get("stddev")) != 1e-4:
        raise Untranslated(f"embedding_initializer {init}: the FuxiCTR models use N(0, 1e-4) only")
    settings = zoo_settings(name, config)
    return {
        "model_id": f"{FUXICTR_MODELS[name][0]}_peer_bench",
        "gpu": -1,
        "task": "binary_classification",
        "loss": "binary_crossentropy",
        "metrics": ["AUC", "logloss"],
        "optimizer": "adam",
        "learning_rate": float(protocol["learning_rate"]),
        "embedding_dim": int(protocol["embedding_dim"]),
        "embedding_regularizer": 2.0 * settings["embedding_l2"],
        "net_regularizer": 0,
        "verbose": 0,
        "model_root": model_root,
        **translate(name, settings["hparams"]),
    }


def load_model_class(model_zoo: str, name: str):
    """The FuxiCTR model class of ``name``, from its one source file in the model zoo."""
    cls_name, rel = FUXICTR_MODELS[name]
    path = os.path.join(model_zoo, rel)
    if not os.path.exists(path):
        raise SystemExit(f"--fuxictr-model-zoo: {path} not found (a FuxiCTR checkout's model_zoo folder)")
    spec = importlib.util.spec_from_file_location(f"fuxictr_model_zoo_{cls_name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, cls_name), path


def build_data(source: str, work: str, embedding_dim: int) -> tuple:
    """FuxiCTR's csv -> parquet + feature map under ``work``; returns (feature_map, data paths, seconds)."""
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset

    data_root = os.path.join(work, "data")
    data_dir = os.path.join(data_root, DATASET_ID)
    feature_map_json = os.path.join(data_dir, "feature_map.json")
    cached = os.path.exists(feature_map_json)
    if not cached:
        import polars

        if int(polars.__version__.split(".")[0]) >= 2:
            raise SystemExit(f"polars {polars.__version__}: FuxiCTR 2.3.10's csv reader needs polars < 2 "
                             "(it passes scan_csv(dtypes=...)); pip install 'polars<2' in the peer's venv")
    start = time.perf_counter()
    params = {"dataset_id": DATASET_ID, "data_root": data_root, "data_format": "csv",
              "train_data": os.path.join(source, "train.csv"), "valid_data": os.path.join(source, "valid.csv"),
              "test_data": os.path.join(source, "test.csv"), "min_categr_count": MIN_CATEGR_COUNT,
              "feature_cols": FEATURE_COLS, "label_col": LABEL_COL}
    for split in ("train_data", "valid_data"):
        if not os.path.exists(params[split]):
            raise SystemExit(f"--source: {params[split]} not found")
    encoder = FeatureProcessor(**params)
    train, valid, test = build_dataset(encoder, **params)
    seconds = time.perf_counter() - start
    feature_map = FeatureMap(DATASET_ID, data_dir)
    feature_map.load(feature_map_json, {"embedding_dim": embedding_dim})
    return feature_map, {"train": train, "valid": valid, "test": test}, {"seconds": round(seconds, 1),
                                                                        "reused": cached, "data_dir": data_dir}


def train_epoch(model, train_gen, label: str, max_steps: int | None) -> dict:
    """One timed pass of the training loop: the model's train_step per batch, as FuxiCTR's train_epoch."""
    model.train()
    rows = steps = 0
    loss_sum = 0.0
    start = time.perf_counter()
    batches = iter(train_gen)
    for batch in batches:
        loss = model.train_step(batch)
        loss_sum += loss.item()
        rows += int(batch[label].shape[0])
        steps += 1
        if max_steps and steps >= max_steps:
            break
    seconds = time.perf_counter() - start
    if hasattr(batches, "close"):  # an epoch cut short by --max-steps stops its prefetching here
        batches.close()
    return {"seconds": round(seconds, 4), "rows": rows, "steps": steps,
            "examples_per_s": round(rows / seconds, 1), "train_loss": round(loss_sum / max(steps, 1), 6)}


def run_model(name: str, model_zoo: str, config: dict, feature_map, train_gen, valid_gen, args, repeat: int) -> dict:
    from fuxictr.pytorch.torch_utils import seed_everything

    cls, _ = load_model_class(model_zoo, name)
    params = fuxictr_params(name, config, os.path.join(args.work, "checkpoints"))
    seed_everything(seed=args.seed + repeat)
    model = cls(feature_map, **params)
    model._max_gradient_norm = float(config["protocol"]["global_clipnorm"])  # what fit(max_gradient_norm=) sets
    label = feature_map.labels[0]
    epochs = []
    for epoch in range(1 + args.epochs):
        record = train_epoch(model, train_gen, label, args.max_steps)
        record["warmup"] = epoch == 0
        if valid_gen is not None:
            logs = model.evaluate(valid_gen)
            record["valid_auc"] = round(float(logs["AUC"]), 6)
            record["valid_logloss"] = round(float(logs["logloss"]), 6)
        epochs.append(record)
        print(f"  {name:<8} repeat {repeat} epoch {epoch}{' (warm-up, excluded)' if epoch == 0 else ''}: "
              f"{record['examples_per_s']:>10.0f} ex/s  {record['rows']} rows in {record['seconds']:.2f} s  "
              f"loss {record['train_loss']:.4f}"
              + (f"  valid AUC {record['valid_auc']:.4f}" if "valid_auc" in record else ""), flush=True)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model
    return {"repeat": repeat, "seed": args.seed + repeat, "params": int(n_params), "epochs": epochs}


def summarize(name: str, runs: list[dict], params: dict) -> dict:
    measured = [e["examples_per_s"] for r in runs for e in r["epochs"] if not e["warmup"]]
    return {
        "fuxictr_model": FUXICTR_MODELS[name][0],
        "examples_per_s_median": round(statistics.median(measured), 1),
        "examples_per_s_range": [round(min(measured), 1), round(max(measured), 1)],
        "measured_epochs": len(measured),
        "examples_per_s_by_repeat": [[e["examples_per_s"] for e in r["epochs"] if not e["warmup"]] for r in runs],
        "warmup_examples_per_s_by_repeat": [[e["examples_per_s"] for e in r["epochs"] if e["warmup"]] for r in runs],
        "rows_per_epoch": sorted({e["rows"] for r in runs for e in r["epochs"]}),
        "params": runs[0]["params"],
        "fuxictr_hparams": {k: v for k, v in params.items() if k not in ("model_root", "verbose", "gpu")},
        "model_source": os.path.join("model_zoo", FUXICTR_MODELS[name][1]),
        "runs": runs,
    }


def sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def zoo_provenance(model_zoo: str, names: list[str]) -> dict:
    """Where the model classes came from: the checkout's commit (git, else a COMMIT file) and file hashes."""
    checkout = os.path.dirname(os.path.abspath(model_zoo))
    commit = None
    try:
        commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        pass
    if commit is None and os.path.exists(os.path.join(checkout, "COMMIT")):
        with open(os.path.join(checkout, "COMMIT")) as fh:
            commit = fh.read().strip()
    return {"path": os.path.abspath(model_zoo), "commit": commit,
            "sha256": {FUXICTR_MODELS[n][1]: sha256(os.path.join(model_zoo, FUXICTR_MODELS[n][1])) for n in names}}


def environment(threads_requested) -> dict:
    import numpy
    import torch

    import fuxictr
    from environment import cpu_model  # bench/environment.py: Keras-free part

    versions = {"python": platform.python_version(), "torch": torch.__version__, "fuxictr": fuxictr.__version__,
                "numpy": numpy.__version__}
    for extra in ("polars", "ray"):
        try:
            versions[extra] = importlib.import_module(extra).__version__
        except ImportError:
            pass
    return {
        **versions,
        "python_executable": sys.executable,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_threads_requested": threads_requested,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }


def format_table(summary: dict, env: dict) -> str:
    lines = [f"FuxiCTR {env['fuxictr']} / torch {env['torch']}, CPU {env['cpu']} x{env['cpu_count']}, "
             f"{env['torch_threads']} torch threads",
             "| model | FuxiCTR class | train examples/s (median) | range (min-max) | measured epochs | params |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, row in summary.items():
        lo, hi = row["examples_per_s_range"]
        lines.append(f"| {name} | {row['fuxictr_model']} | {row['examples_per_s_median']:.0f} | {lo:.0f}-{hi:.0f} "
                     f"| {row['measured_epochs']} | {row['params']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fuxictr-model-zoo", required=True,
                        help="the model_zoo folder of a FuxiCTR checkout (the pip package has none)")
    parser.add_argument("--models", default=",".join(THROUGHPUT_MODELS),
                        help=f"comma-separated, from {list(FUXICTR_MODELS)}; round-robin in this order")
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs per run, after 1 warm-up epoch")
    parser.add_argument("--repeats", type=int, default=1, help="runs per model, interleaved round-robin")
    parser.add_argument("--threads", type=int, help="torch intra-op threads; default torch.get_num_threads()")
    parser.add_argument("--seed", type=int, default=2021, help="seed of repeat 0 (repeat r: seed + r)")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="the frappe_x1 folder (train/valid/test.csv)")
    parser.add_argument("--work", default=DEFAULT_WORK, help="FuxiCTR's parquet data, feature map, checkpoints")
    parser.add_argument("--config", default=CONFIG, help="protocol and BARS model settings (YAML)")
    parser.add_argument("--output", default=DEFAULT_OUT)
    parser.add_argument("--no-validate", action="store_true", help="skip the (untimed) validation after epochs")
    parser.add_argument("--max-steps", type=int, help="stop each epoch after this many steps (smoke runs only)")
    parser.add_argument("--verbose", action="store_true", help="FuxiCTR's INFO logging")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1:
        parser.error("--epochs and --repeats must be >= 1")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in FUXICTR_MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; known: {list(FUXICTR_MODELS)}")
    config = load_yaml(args.config)
    model_zoo = os.path.abspath(args.fuxictr_model_zoo)
    model_root = os.path.join(args.work, "checkpoints")
    params = {n: fuxictr_params(n, config, model_root) for n in names}  # translation errors before any work
    for n in names:
        load_model_class(model_zoo, n)  # a wrong --fuxictr-model-zoo fails before the data build

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(model_root, exist_ok=True)
    start = time.time()
    try:
        import ray  # FuxiCTR 2.3.10's preprocessing and data loader run on Ray; shut down at the end

        if not args.verbose:
            logging.getLogger("ray").setLevel(logging.WARNING)
            logging.getLogger("ray.data").setLevel(logging.WARNING)

        from fuxictr.pytorch.dataloaders import RankDataLoader

        feature_map, data, data_build = build_data(os.path.abspath(args.source), args.work,
                                                  int(config["protocol"]["embedding_dim"]))
        batch_size = int(config["protocol"]["batch_size"])
        train_gen, valid_gen = RankDataLoader(feature_map, stage="train", train_data=data["train"],
                                              valid_data=data["valid"], batch_size=batch_size, shuffle=True,
                                              data_format="csv", num_workers=NUM_WORKERS)
        if args.no_validate:
            valid_gen = None
        print(f"data: {train_gen.num_samples} train rows, {len(train_gen)} batches of {batch_size}/epoch "
              f"(FuxiCTR data build {data_build['seconds']} s{', reused' if data_build['reused'] else ''})",
              flush=True)
        runs: dict[str, list] = {n: [] for n in names}
        for repeat in range(args.repeats):
            for name in names:
                runs[name].append(run_model(name, model_zoo, config, feature_map, train_gen, valid_gen, args, repeat))
    finally:
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
    wall = time.time() - start
    env = environment(args.threads)
    summary = {n: summarize(n, runs[n], params[n]) for n in names}
    result = {
        "benchmark": "FuxiCTR (PyTorch peer) steady-state CPU training throughput on Frappe_x1, train examples/s, "
                     f"BARS hyper-parameters of {os.path.relpath(args.config, ROOT)}",
        "smoke": bool(args.max_steps),
        "measurement": {"warmup_epochs_excluded": 1, "measured_epochs_per_run": args.epochs,
                        "repeats": args.repeats, "order": "round-robin over models per repeat",
                        "timed": "training loop only (train_step + loss.item() per batch, loader included); "
                                 "validation untimed" + (" and skipped" if args.no_validate else ""),
                        "max_steps": args.max_steps, "statistic": "median and min-max over all measured epochs"},
        "protocol": {"batch_size": int(config["protocol"]["batch_size"]),
                     "embedding_dim": int(config["protocol"]["embedding_dim"]),
                     "learning_rate": float(config["protocol"]["learning_rate"]),
                     "max_gradient_norm": float(config["protocol"]["global_clipnorm"]),
                     "data_loader": f"RankDataLoader (parquet, Ray Data), shuffle, num_workers {NUM_WORKERS}",
                     "dataset_config": {"feature_cols": FEATURE_COLS, "label_col": LABEL_COL,
                                        "min_categr_count": MIN_CATEGR_COUNT},
                     "train_rows": int(train_gen.num_samples)},
        "summary": summary,
        "data_build": data_build,
        "fuxictr_model_zoo": zoo_provenance(model_zoo, names),
        "environment": {**env, "wall_seconds": round(wall, 1)},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(result, fh, indent=2)
    print(format_table(summary, env))
    smoke = "  (SMOKE: --max-steps, not comparable)" if args.max_steps else ""
    print(f"wall {wall:.0f} s; wrote {args.output}{smoke}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
