"""Real multi-task labels end to end on a tiny two-label CSV written here (click, conversion):
spec validation, the Beam job (both labels stored, per-label stats, a bad value dead-lettered naming
its label), the reader's targets, zoo.train of a 2-task PLE with C2AL beside it (metrics per task and
cohort), and the SavedModel serving every task, checked in a clean process that imports nothing of
the project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml
from helpers import CLEAN_ROOM_PREAMBLE, clean_env, raw_records

from zoo.spec import SPLITS, FeatureSpec, SpecError, decode_examples

pytestmark = pytest.mark.tf_only

COLUMNS = ["click", "conversion", "user", "item", "price", "segment"]
SPEC = {
    "name": "mt_tiny",
    "labels": ["click", "conversion"],
    "user_id": "user",
    "split": {"train": 0.6, "valid": 0.2, "test": 0.2},
    "format": {"columns": COLUMNS},
    "defaults": {"embedding_dim": 4},
    "features": [
        {"name": "user", "kind": "categorical", "vocab_size": 50},
        {"name": "item", "kind": "categorical", "vocab_size": 40},
        {"name": "price", "kind": "dense"},
        {"name": "segment", "kind": "categorical", "vocab_size": 3},
    ],
    "cohort_axes": [{"name": "seg", "feature": "segment", "values": {"a": [0], "b": [1]}, "other": "rest"}],
    "c2al": {"axis": "seg", "head": "a", "tail": "b"},
}
ROWS = 3000
BAD_LINES = ["2,0,1,1,0.5,0", "1,2,1,1,0.5,0", "1,x,1,1,0.5,0"]  # bad click, bad conversion (twice)


def with_(**changes):
    raw = json.loads(json.dumps(SPEC))
    raw.update(changes)
    return raw


# ---------------------------------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------------------------------
def test_spec_labels_round_trip_and_single_label_still_works():
    spec = FeatureSpec.from_dict(SPEC)
    assert spec.labels == ("click", "conversion") and spec.label == "click" and spec.multi_task
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["labels"] == ["click", "conversion"] and "label" not in spec.to_dict()
    single = {k: v for k, v in SPEC.items() if k != "labels"}
    single = FeatureSpec.from_dict({**single, "label": "click", "format": {"columns": COLUMNS}})
    assert single.labels == ("click",) and not single.multi_task and single.to_dict()["label"] == "click"
    parse = spec.parse_spec("all")
    assert {"click", "conversion"} <= set(parse) and "conversion" not in spec.parse_spec("inputs")


@pytest.mark.parametrize("changes,message", [
    (dict(label="click"), "labels: give either 'label' (one task) or 'labels'"),
    (dict(labels=["click", "click"]), "label 'click': listed twice in labels"),
    (dict(labels=["click", "bought"]), "label 'bought': column 'bought' is not a column of format.columns"),
    (dict(labels=["click", "user"]), "feature 'user': has the same name as the label 'user'"),
    (dict(labels=[]), "labels: must be a non-empty list"),
    (dict(labels=["click", "con-version"]), "label 'con-version': label names must be letters"),
    (dict(labels=["click", "conversion"], features=SPEC["features"] + [{"name": "task_conversion", "kind": "dense"}],
          format={"columns": COLUMNS + ["task_conversion"]}),
     "feature 'task_conversion': clashes with the model output of label 'conversion'"),
    (dict(format={"columns": COLUMNS, "type": "libfm"}), "labels: format.type libfm has one label column"),
])
def test_spec_label_errors(changes, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        FeatureSpec.from_dict(with_(**changes))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------
# Data: a tiny CSV with two related labels, through the Beam job
# ---------------------------------------------------------------------------------------------------
def make_rows(n=ROWS, seed=0):
    """click depends on price and the user's parity; conversion (only after a click) on the item and segment."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 50, n)
    item = rng.integers(0, 40, n)
    price = rng.normal(size=n).round(3)
    segment = rng.integers(0, 3, n)
    p_click = 1 / (1 + np.exp(-(2.0 * price + 1.5 * (user % 2) - 0.8)))
    click = (rng.random(n) < p_click).astype(int)
    p_conv = 1 / (1 + np.exp(-(2.5 * (item < 15) + 1.0 * (segment == 0) - 1.5)))
    conversion = click * (rng.random(n) < p_conv).astype(int)
    return [dict(click=int(c), conversion=int(v), user=int(u), item=int(i), price=float(p), segment=int(s))
            for c, v, u, i, p, s in zip(click, conversion, user, item, price, segment)]


@pytest.fixture(scope="module")
def mt_data(tmp_path_factory):
    """(work dir, rows, build_tfrecords result) of the two-label CSV."""
    from beam_jobs import build_tfrecords

    work = tmp_path_factory.mktemp("multitask")
    rows = make_rows()
    (work / "raw").mkdir()
    lines = [",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in rows] + BAD_LINES
    (work / "raw" / "part-0.csv").write_text("\n".join(lines) + "\n")
    (work / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    info = build_tfrecords.run(["--spec", str(work / "spec.yaml"), "--input", str(work / "raw" / "*.csv"),
                                "--output", str(work / "data"), "--num_shards", "1",
                                "--direct_running_mode=in_memory"])
    return work, rows, info


def test_beam_writes_both_labels_and_counts_positives_per_label(mt_data):
    work, rows, info = mt_data
    data_dir = str(work / "data")
    spec = info["spec"]
    stats = info["stats"]
    assert stats["rows"] == ROWS
    for label in ("click", "conversion"):
        assert stats["labels"][label]["positives"] == sum(r[label] for r in rows)
        assert sum(stats["splits"][s]["labels"][label]["positives"] for s in SPLITS) == sum(r[label] for r in rows)
    assert stats["positives"] == stats["labels"]["click"]["positives"]
    # Every stored row carries both labels with the raw values (matched by the full row).
    stored = []
    for split in SPLITS:
        cols = decode_examples(spec, raw_records(data_dir, split))
        stored += [tuple(float(cols[c][i, 0]) for c in COLUMNS) for i in range(len(cols["click"]))]
    want = [tuple(float(r[c]) for c in COLUMNS) for r in rows]
    assert sorted(stored) == sorted(tuple(np.float32(v).item() for v in t) for t in want)


def test_bad_label_values_are_dead_lettered_naming_the_label(mt_data):
    work, _, info = mt_data
    assert info["stats"]["dead_letter"]["by_reason"] == {"bad_label": 3}
    dead = []
    for path in (work / "data" / "dead_letter").glob("*.jsonl"):
        dead += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    errors = {d["line"]: d["error"] for d in dead}
    assert errors == {
        "2,0,1,1,0.5,0": "label 'click': '2' is not 0 or 1",
        "1,2,1,1,0.5,0": "label 'conversion': '2' is not 0 or 1",
        "1,x,1,1,0.5,0": "label 'conversion': cannot parse 'x'",
    }


def test_read_split_and_model_batches_give_both_targets(mt_data):
    from zoo import data

    work, _, info = mt_data
    data_dir = str(work / "data")
    spec = info["spec"]
    parsed = next(data.read_split(data_dir, "train", 64, spec=spec).as_numpy_iterator())
    assert parsed["click"].shape == parsed["conversion"].shape == (64, 1)
    x, y = next(data.model_batches(spec, data.read_split(data_dir, "train", 64, spec=spec)).as_numpy_iterator())
    assert sorted(y) == ["primary", "task_conversion"]
    np.testing.assert_array_equal(y["primary"], parsed["click"])
    np.testing.assert_array_equal(y["task_conversion"], parsed["conversion"])
    assert set(x) == {"user", "item", "price", "segment"}
    # C2AL labels come from the primary label.
    _, y = next(data.model_batches(spec, data.read_split(data_dir, "train", 64, spec=spec),
                                   c2al=spec.c2al).as_numpy_iterator())
    seg = parsed["cohort/seg"]
    np.testing.assert_array_equal(y["aux_head"], parsed["click"] * (seg == 0))
    assert sorted(y) == ["aux_head", "aux_tail", "primary", "task_conversion"]


# ---------------------------------------------------------------------------------------------------
# Train a 2-task PLE (baseline and C2AL), metrics per task, export, clean-room reload
# ---------------------------------------------------------------------------------------------------
CLEAN_ROOM = CLEAN_ROOM_PREAMBLE + textwrap.dedent("""
    # every output of both signatures
    out = {"default": {k: v.numpy().ravel().tolist() for k, v in default(**feats).items()},
           "examples": {k: v.numpy().ravel().tolist() for k, v in on_examples(examples=records).items()},
           "outputs": {name: sorted(fn.structured_outputs) for name, fn in loaded.signatures.items()},
           "project_modules": [m for m in sys.modules if m.split(".")[0] in ("zoo", "layers", "beam_jobs")]}
    json.dump(out, open(out_json, "w"))
""")


@pytest.fixture(scope="module")
def trained(mt_data):
    from zoo import train

    work, _, _ = mt_data
    (work / "ple.yaml").write_text(yaml.safe_dump({
        "base": os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "configs", "models", "_test_base.yaml"),
        "backbone": "ple",
        "hparams": {"num_tasks": 1, "num_levels": 1, "num_specific_experts": 1, "num_shared_experts": 2,
                    "expert_units": [16], "gate_units": [], "tower_units": [8]},
        "training": {"max_epochs": 4, "batch_size": 128, "learning_rate": 0.01,
                     "task_weights": {"conversion": 1.0}},
    }))
    summary = train.run(str(work / "data"), str(work / "ple.yaml"), str(work / "run"), ["baseline", "c2al"],
                        export_root=str(work / "saved_models"), model_name="ple_mt", verbose=0)
    return work, summary


def test_train_reports_every_task_overall_and_per_cohort(trained):
    from zoo import evaluation

    work, summary = trained
    with open(work / "run" / "metrics.json") as fh:
        saved = json.load(fh)
    for variant in ("baseline", "c2al"):
        tasks = saved["variants"][variant]["tasks"]
        assert sorted(tasks) == ["click", "conversion"]
        for label, res in tasks.items():
            assert res["overall"]["rows"] == saved["variants"][variant]["overall"]["rows"]
            assert sorted(res["cohorts"]["seg"]) == ["a", "b", "rest"]
            assert res["overall"]["auc"] > 0.6, (variant, label, res["overall"])  # both tasks learned something
        assert tasks["click"]["overall"] == saved["variants"][variant]["overall"]
    assert saved["model_config"]["training"]["task_weights"] == {"conversion": 1.0}
    report = evaluation.format_report(summary)
    assert "per task" in report and "conversion" in report and "seg=rest" in report


def test_task_weights_must_name_labels(mt_data):
    from zoo import train
    from zoo.config import ConfigError, training_options

    with pytest.raises(ConfigError, match=r"training.task_weights: must be a mapping \{label: number >= 0\}"):
        training_options({"task_weights": {"conversion": -1}})
    with pytest.raises(ValueError, match="training.task_weights: 'bought' is not a label of spec 'mt_tiny'"):
        train.check_task_weights(mt_data[2]["spec"], {"bought": 1.0})


def test_saved_model_serves_every_task_and_matches_keras(trained):
    from zoo.model import load_model

    work, summary = trained
    data_dir = str(work / "data")
    export_dir = summary["export"]["path"]
    assert summary["export"]["variant"] == "c2al"
    out_json = str(work / "clean_room.json")
    (work / "clean_room.py").write_text(CLEAN_ROOM)
    proc = subprocess.run([sys.executable, str(work / "clean_room.py"), export_dir, data_dir, out_json],
                          cwd=str(work), env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out_json) as fh:
        got = json.load(fh)
    assert got["project_modules"] == []
    # Both signatures serve the two task heads only (the C2AL heads are dropped).
    assert got["outputs"] == {"predict_examples": ["probability", "probability_conversion"],
                              "serving_default": ["probability", "probability_conversion"]}
    model = load_model(str(work / "run" / "c2al" / "model.keras"))
    from helpers import eval_batch, inputs_of

    spec = FeatureSpec.from_dict(json.load(open(os.path.join(data_dir, "spec.json"))))
    batch = eval_batch(spec, data_dir)
    want = model.predict(inputs_of(spec, batch), batch_size=1024, verbose=0)
    for key, output in (("probability", "primary"), ("probability_conversion", "task_conversion")):
        for signature in ("default", "examples"):
            np.testing.assert_allclose(got[signature][key], np.asarray(want[output]).ravel(), atol=1e-5)
