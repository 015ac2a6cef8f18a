"""The C2AL study (zoo.study, bench/c2al_study.py): the plan's checks, the pairing of runs, the
validation-only selection with a sealed test split, and the quick mode end to end."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, SPEC, batch
from zoo.protocol import Protocol
from zoo.study.job import SealedSplit, SealedSplitError, select
from zoo.study.plan import PlanError, load_plan, plan_from_mapping
from zoo.study.runs import Run, evaluate, predict, train_run

PLAN = os.path.join(ROOT, "bench", "c2al_study.yaml")
PAIR = {"axis": "seg", "head": "a", "tail": "b"}
CONFIG = {"embedding": {"type": "plain"}, "hparams": dict(num_cross_layers=2, dnn_units=[8, 4], dropout=0.3),
          "c2al": {}}


def arrays(n, seed):
    x, y = batch(n, seed)
    return {**x, "y": y, "cohort/seg": np.random.default_rng(seed).integers(0, 3, (n, 1))}


@pytest.mark.multi_backend
def test_lambda_zero_reproduces_the_baseline_exactly_and_lambda_one_does_not():
    """Same initial weights, data order and dropout masks (dropout 0.3 here): with lambda 0 the C2AL
    and reweight runs make the baseline's updates, so their predictions are bit-identical."""
    train, valid = arrays(256, 0), arrays(128, 1)
    p = {}
    for run in (Run("baseline", 3), Run("c2al", 3, 0.0), Run("reweight", 3, 0.0), Run("c2al", 3, 1.0)):
        model, fitted = train_run("dcnv2", CONFIG, SPEC, train, valid, run, PAIR, Protocol(max_epochs=2), 32, 3e-3)
        p[run.key] = predict(model, SPEC, valid)
        assert fitted.epochs_run == 2
    base = p["baseline|seed=3"]
    np.testing.assert_array_equal(p["c2al|lambda=0|seed=3"], base)
    np.testing.assert_array_equal(p["reweight|lambda=0|seed=3"], base)
    assert np.abs(p["c2al|lambda=1|seed=3"] - base).max() > 1e-3
    assert evaluate(SPEC, valid, base)["overall"]["rows"] == 128


@pytest.mark.multi_backend
def test_the_plans_dtype_policy_builds_every_run_and_the_global_policy_is_restored():
    """training.dtype_policy mixed_bfloat16: the baseline's and C2AL's layers compute in bfloat16 with
    float32 variables; the default float32 run is unchanged; Keras' global policy is float32 after."""
    import keras

    train, valid = arrays(128, 0), arrays(64, 1)
    assert load_plan(PLAN).dtype_policy == "float32"
    for run in (Run("baseline", 1), Run("c2al", 1, 0.3)):
        computes, p = {}, {}
        for policy in ("float32", "mixed_bfloat16"):
            model, _ = train_run("dcnv2", CONFIG, SPEC, train, valid, run, PAIR, Protocol(max_epochs=1), 32, 3e-3,
                                 dtype_policy=policy)
            dense = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dense)]
            computes[policy] = {layer.compute_dtype for layer in dense}
            assert dense and {w.dtype for layer in dense for w in layer.weights} == {"float32"}
            p[policy] = predict(model, SPEC, valid)
            assert keras.config.dtype_policy().name == "float32"
        assert computes == {"float32": {"float32"}, "mixed_bfloat16": {"bfloat16"}}
        gap = np.abs(p["mixed_bfloat16"] - p["float32"]).max()  # the same seed, rounded to bfloat16 on the way
        assert 0 < gap < 0.05, gap


def test_a_model_yaml_precision_other_than_the_plans_is_refused(tmp_path):
    import dataclasses

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import c2al_study

    plan = load_plan(PLAN)
    assert c2al_study.model_config(plan, "dlrm", "synthetic")["training"]["dtype_policy"] == "float32"
    bf16 = dataclasses.replace(plan, training={**plan.training, "dtype_policy": "mixed_bfloat16"})
    with pytest.raises(SystemExit, match=r"dlrm\.yaml: training\.dtype_policy 'float32' is not the plan's "
                                         r"training\.dtype_policy 'mixed_bfloat16'"):
        c2al_study.model_config(bf16, "dlrm", "synthetic")


def test_the_test_split_is_sealed_until_the_selection_is_final_and_read_once_per_run():
    split = SealedSplit({"y": np.zeros(3)})
    with pytest.raises(SealedSplitError, match="before the selection was final"):
        split.read("baseline|seed=0")
    split.unseal()
    assert split.read("baseline|seed=0")["y"].shape == (3,)
    with pytest.raises(SealedSplitError, match="read it a second time"):
        split.read("baseline|seed=0")
    assert split.reads == ["baseline|seed=0"]


def test_selection_minimizes_the_chosen_validation_score_and_breaks_ties_low():
    curve = {0.1: {"ne_overall": 0.90, "ne_cohorts": 0.80}, 0.3: {"ne_overall": 0.89, "ne_cohorts": 0.85},
             1.0: {"ne_overall": 0.89, "ne_cohorts": 0.70}}
    assert select(curve, "overall") == 0.3
    assert select(curve, "cohorts") == 1.0


def test_the_shipped_plan_and_its_quick_block_load():
    full, quick = load_plan(PLAN), load_plan(PLAN, quick=True)
    assert full.backbones == ["dlrm", "dcnv2", "autoint", "dhen", "wukong", "ple"]
    assert set(full.datasets) == {"synthetic", "synthetic_nocontrast", "movielens100k", "frappe_x1"}
    assert full.protocol.early_stopping_patience == 2 and full.protocol.monitor == "logloss"
    assert quick.model_configs == "tiny" and quick.training["max_epochs"] == 3
    assert quick.training["monitor"] == "logloss"  # merged key by key with the plan's training block


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown key 'colour'"),
    ({"backbones": ["nope"]}, r"backbones: unknown \['nope'\]"),
    ({"sweep_seeds": [7]}, "sweep_seeds: must be a subset of seeds"),
    ({"seeds": [0]}, "seeds: a paired test needs at least 2 seeds"),
    ({"lambdas": [0.0]}, "lambdas: must be a non-empty list of positive numbers"),
    ({"variants": ["reweigh"]}, "variants: unknown 'reweigh'"),
    ({"training": {"batch_size": 8, "max_epochs": 0}}, "training.max_epochs: must be a positive int"),
    ({"training": {"batch_size": 8, "epochs": 3}}, "training: unknown key 'epochs'"),
    ({"training": {"batch_size": 8, "dtype_policy": "float64"}}, "training.dtype_policy: must be one of"),
    ({"head_options": [{"head": [8]}]}, r"head_options\[0\]: must set some of"),
    ({"variant_datasets": ["criteo"]}, "variant_datasets: 'criteo' is not one of the plan's datasets"),
    ({"datasets": {"s": {"dataset": "x.yaml", "split": {"train": 0.5, "valid": 0.1, "test": 0.3}}}},
     "datasets.s.split: must map train, valid and test to positive fractions summing to 1"),
    ({"datasets": {"s": {"dataset": "x.yaml", "split": {"train": 0.9, "test": 0.1}}}}, "datasets.s.split: must map"),
])
def test_a_bad_plan_names_the_key(change, message):
    import yaml

    with open(PLAN) as fh:
        raw = yaml.safe_load(fh)
    raw.update(change)
    with pytest.raises(PlanError, match="^my.yaml: .*" + message):
        plan_from_mapping(raw, where="my.yaml")


def test_a_plan_split_replaces_only_the_dataset_yamls_split(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import c2al_study

    from zoo.spec import load_spec

    original = os.path.join(ROOT, "configs", "datasets", "synthetic.yaml")
    split = {"train": 0.6, "valid": 0.1, "test": 0.3}
    assert c2al_study.dataset_yaml({"dataset": "configs/datasets/synthetic.yaml"}, str(tmp_path)) == original
    derived = load_spec(c2al_study.dataset_yaml({"dataset": "configs/datasets/synthetic.yaml", "split": split},
                                                str(tmp_path)))
    assert dict(derived.split) == split
    assert {**derived.to_dict(), "split": None} == {**load_spec(original).to_dict(), "split": None}


def test_the_quick_study_runs_end_to_end_and_reads_the_test_split_only_for_the_final_runs(tmp_path):
    """The quick mode (restricted to DCNv2 here to keep the suite short): prepare -> jobs -> report."""
    work, out = str(tmp_path / "work"), str(tmp_path / "report")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "c2al_study.py"), "--quick", "--jobs", "0",
                           "--backbones", "dcnv2", "--work", work, "--output", out],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Skipping variable loading" not in proc.stderr  # the reloads (discovery, test) take the whole file
    with open(os.path.join(work, "jobs", "synthetic__dcnv2", "job.json")) as fh:
        job = json.load(fh)
    plan = load_plan(PLAN, quick=True)
    lam = job["selection"]["lambda"]
    assert lam in plan.lambdas and set(job["selection"]["curve"]) == {str(float(v)) for v in plan.lambdas}
    # every sweep lambda trained on the sweep seeds; only the finals (and the oracle) were tested
    swept = {k for k, r in job["runs"].items() if r["variant"] == "c2al" and not r["options"]}
    assert {f"c2al|lambda={v:g}|seed={s}" for v in plan.lambdas for s in plan.sweep_seeds} <= swept
    assert set(job["test"]) == set(job["finals"]) | {"oracle"}
    untested = [k for k in job["runs"] if k not in job["test"]]
    assert untested and all(job["runs"][k]["variant"] == "c2al" for k in untested)
    assert len(job["finals"]) == len(plan.seeds) * (2 + len(plan.variants))
    # the oracle's test NE is that of the stored true probabilities, below the baseline's
    base = job["test"]["baseline|seed=0"]["overall"]["ne"]
    assert job["test"]["oracle"]["overall"]["ne"] < base
    report = open(os.path.join(out, "report.md")).read()
    assert report.index("## Verdict") < report.index("## synthetic")
    assert f"| {lam:g} (chosen) |" in report and "gap closed head" in report
    assert "gradients/aux_head/head/cosine" in report
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["summaries"]["synthetic__dcnv2"]["epochs"]["runs"] == len(job["runs"])
    assert results["jobs"] == ["jobs/synthetic__dcnv2.json"]
    assert json.load(open(os.path.join(out, "jobs", "synthetic__dcnv2.json"))) == job
    # a fresh checkout has the report's job records and no work directory: the report regenerates from them
    first = open(os.path.join(out, "report.md")).read()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "c2al_study.py"), "report", "--quick",
                           "--backbones", "dcnv2", "--work", str(tmp_path / "fresh"), "--output", out],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert open(os.path.join(out, "report.md")).read() == first
    here = job["machines"]
    assert len(here) == 1 and here[0]["cpu_count"] == os.cpu_count()
    assert here[0]["backend"] == results["environment"]["backend"]
    assert {(r["machine"], r["revision"]) for r in job["runs"].values()} == {(0, here[0]["revision"])}
    machine = f"{here[0]['cpu']} x{here[0]['cpu_count']}, accelerators {here[0]['accelerators'] or 'none'}"
    assert f"trained on {machine};" in report
    if here[0]["revision"] is not None:  # a checkout without git records none
        assert f" Code: {here[0]['revision']} ({len(job['runs'])} runs)." in report

    # resumed on another machine with nothing left to train: it trained no run, so the record and the
    # report name only the machine that did
    earlier = {**here[0], "cpu": "Earlier CPU", "date": "2026-01-02"}
    with open(os.path.join(work, "jobs", "synthetic__dcnv2", "job.json"), "w") as fh:
        json.dump({**job, "machines": [earlier]}, fh)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "c2al_study.py"), "run", "--quick", "--jobs", "0",
                           "--backbones", "dcnv2", "--work", work, "--output", out],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.load(open(os.path.join(work, "jobs", "synthetic__dcnv2", "job.json")))
    assert resumed["runs"] == job["runs"] and resumed["machines"] == [earlier]
    report = open(os.path.join(out, "report.md")).read()
    earlier_machine = machine.replace(here[0]["cpu"], "Earlier CPU", 1)
    assert f" min on {earlier_machine}, 2026-01-02." in report and f"{machine}, {here[0]['date']}" not in report

    # a run trained on the resumed machine adds it to the record, and the run names it
    with open(os.path.join(work, "jobs", "synthetic__dcnv2", "job.json"), "w") as fh:
        runs = dict(job["runs"])
        runs.pop("baseline|seed=1")
        json.dump({**job, "runs": runs, "machines": [earlier]}, fh)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "c2al_study.py"), "run", "--quick", "--jobs", "0",
                           "--backbones", "dcnv2", "--work", work, "--output", out],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.load(open(os.path.join(work, "jobs", "synthetic__dcnv2", "job.json")))
    assert [m["cpu"] for m in resumed["machines"]] == ["Earlier CPU", here[0]["cpu"]]
    assert resumed["runs"]["baseline|seed=1"]["machine"] == 1 and resumed["runs"]["baseline|seed=0"]["machine"] == 0
    report = open(os.path.join(out, "report.md")).read()
    assert f" min on {earlier_machine}, 2026-01-02 and {machine}, {here[0]['date']}." in report

    # a staged invocation without the variant (--variants '') keeps the variant's finals and test results
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "c2al_study.py"), "run", "--quick", "--jobs", "0",
                           "--backbones", "dcnv2", "--variants", "", "--work", work, "--output", out],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    staged = json.load(open(os.path.join(work, "jobs", "synthetic__dcnv2", "job.json")))
    assert staged["finals"] == job["finals"] and any(k.startswith("random_pair|") for k in staged["finals"])
    assert {k: staged["test"][k] for k in job["finals"]} == {k: job["test"][k] for k in job["finals"]}


def test_the_report_names_each_machine_and_the_jobs_it_trained():
    from zoo.study.report import _machines

    a, b = {"cpu": "A", "cpu_count": 2, "accelerators": []}, {"cpu": "B", "cpu_count": 8, "accelerators": ["gpu:0"]}
    jobs = [{"dataset": "s", "backbone": "dlrm", "machines": [a]}, {"dataset": "s", "backbone": "dcnv2", "machines": [a, b]},
            {"dataset": "m", "backbone": "ple"}]
    assert _machines(jobs[:1]) == "A x2, accelerators none"
    assert _machines(jobs) == (f"A x2, accelerators none (2 jobs: s/dlrm, s/dcnv2); B x8, accelerators ['gpu:0'] "
                               f"(1 job: s/dcnv2); an unrecorded machine (1 job: m/ple) (an unrecorded machine: a job "
                               f"record older than per-job machines)")
    assert _machines(jobs[2:]) == "an unrecorded machine (an unrecorded machine: a job record older than per-job machines)"


@pytest.mark.multi_backend
def test_served_tower_variants_train_paired_with_the_baseline():
    """cohort_heads, gradient_aggregation and d_train: built after the same seed as the baseline (the
    backbone starts from its weights), trained from NumPy arrays with the routing feature added,
    predicted through the routed model."""
    import keras

    from zoo.study.runs import build_run_model, input_names

    train, valid = arrays(384, 0), arrays(192, 1)
    for split in (train, valid):
        split["segment"] = split["cohort/seg"].copy()  # segment 0 -> a, 1 -> b, 2 -> other
    config = {**CONFIG, "cohort_heads": {"groups": {"ab": ["a", "b"], "rest": ["other"]}}}
    base = build_run_model("dcnv2", config, SPEC, Run("baseline", 2), 1e-3)
    base_w = [keras.ops.convert_to_numpy(w) for w in base.get_layer("backbone").weights]
    for variant in ("cohort_heads", "gradient_aggregation", "d_train"):
        run = Run(variant, 2, 0.3)
        assert run.key == f"{variant}|seed=2" and "segment" in input_names(SPEC, run, config, PAIR)
        built = build_run_model("dcnv2", config, SPEC, run, 1e-3, PAIR, train)
        routed = getattr(built, "routed", built)
        for a, b in zip(base_w, routed.get_layer("backbone").weights, strict=True):
            np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
        model, fitted = train_run("dcnv2", config, SPEC, train, valid, run, PAIR, Protocol(max_epochs=2), 64, 3e-3)
        assert "segment" in {t.name for t in model.inputs}
        p = predict(model, SPEC, valid)
        assert p.shape == (192,) and np.isfinite(p).all()
        assert fitted.epochs_run >= (3 if variant == "d_train" else 1)


def test_the_uniform_gradient_aggregation_variant_overrides_the_yaml_prior():
    """gradient_aggregation_uniform: the model YAML's cohort_heads block with prior uniform over it; the
    compiled loss mixes the two groups 1/2 each, where the YAML's user_share prior gives the training
    split's share of distinct users per group."""
    from zoo.study.runs import build_run_model, method_options

    train = arrays(384, 0)
    train["user"] = (np.arange(384) % 48).reshape(-1, 1)  # 48 users, user u in segment u % 3
    train["cohort/seg"] = train["user"] % 3
    train["segment"] = train["cohort/seg"].copy()
    config = {**CONFIG, "cohort_heads": {"groups": {"ab": ["a", "b"], "rest": ["other"]}, "prior": "user_share"}}
    uniform, share = Run("gradient_aggregation_uniform", 1), Run("gradient_aggregation", 1)
    assert uniform.key == "gradient_aggregation_uniform|seed=1"
    assert method_options(config, uniform, PAIR) == {**method_options(config, share, PAIR), "prior": "uniform"}
    assert build_run_model("dcnv2", config, SPEC, uniform, 1e-3, PAIR, train).loss["primary"].prior == [0.5, 0.5]
    # 48 users, 16 per segment: ab holds 32 of them, rest 16
    np.testing.assert_allclose(build_run_model("dcnv2", config, SPEC, share, 1e-3, PAIR, train).loss["primary"].prior,
                               [2 / 3, 1 / 3])


def test_the_ranking_loss_reaches_c2al_runs_and_is_refused_by_method_runs():
    """training.loss applies to the baseline and C2AL runs; a served-tower method trains with its own BCE
    and says so instead of ignoring the option."""
    from zoo.losses import BCEWithPairwiseRanking
    from zoo.study.runs import build_run_model

    config = {**CONFIG, "training": {"loss": {"type": "bce_ranking", "alpha": 0.5, "pairs_per_row": 8}},
              "cohort_heads": {"groups": {"ab": ["a", "b"], "rest": ["other"]}}}
    for run in (Run("baseline", 0), Run("c2al", 0, 0.3)):
        model = build_run_model("dcnv2", config, SPEC, run, 1e-3, PAIR)
        assert isinstance(model.loss["primary"], BCEWithPairwiseRanking) and model.loss["primary"].alpha == 0.5
    with pytest.raises(ValueError, match=r"^run cohort_heads\|seed=0: training\.loss 'bce_ranking' applies to the "
                                         r"baseline and C2AL runs only"):
        build_run_model("dcnv2", config, SPEC, Run("cohort_heads", 0), 1e-3, PAIR)


def test_the_validation_gate_compares_the_chosen_configuration_with_the_baseline_on_validation():
    from zoo.study.report import gate, validation_gate

    def scores(overall, cohorts, head=0.80, tail=0.90):
        return {"ne_overall": overall, "ne_cohorts": cohorts, "ne_head": head, "ne_tail": tail}

    curve = {"0.03": scores(0.834, 0.90), "0.1": scores(0.833, 0.95)}
    job = {"selection": {"select_on": "overall", "lambda": 0.1, "curve": curve}, "sweep_baseline": scores(0.8335, 0.91)}
    assert gate(job) == {"valid_chosen": 0.833, "valid_baseline": 0.8335, "serves": "c2al", "worse_cohorts": {},
                         "serves_guarded": "c2al"}
    assert validation_gate(gate(job)) == "; validation 0.83300 vs baseline 0.83350: a validation gate serves C2AL"
    # the head options tried at the chosen lambda: the best of them (here the plain heads lose) is the chosen one
    job["head_options"] = {"plain": curve["0.1"], "c2al|lambda=0.1|head_units=64": scores(0.8325, 0.85)}
    job["selection"]["options"] = {"head_units": [64]}
    assert validation_gate(gate(job)).startswith("; validation 0.83250 vs")
    job["sweep_baseline"]["ne_overall"] = 0.8320
    assert validation_gate(gate(job)).endswith("a validation gate serves the baseline")
    # selection on the cohorts' mean reads that score
    job = {"selection": {"select_on": "cohorts", "lambda": 0.03, "curve": curve}, "sweep_baseline": scores(0.8, 0.91)}
    assert validation_gate(gate(job)) == "; validation 0.90000 vs baseline 0.91000: a validation gate serves C2AL"
    # better overall but worse on the tail cohort: the guarded gate keeps the baseline and says why
    job = {"selection": {"select_on": "overall", "lambda": 0.1, "curve": {"0.1": scores(0.833, 0.9, 0.79, 0.93)}},
           "sweep_baseline": scores(0.8335, 0.91, 0.80, 0.90)}
    g = gate(job)
    assert (g["serves"], g["serves_guarded"], g["worse_cohorts"]) == ("c2al", "baseline", {"tail": [0.93, 0.90]})
    assert validation_gate(g) == ("; validation 0.83300 vs baseline 0.83350: a validation gate serves C2AL, the "
                                  "guarded gate the baseline (worse on validation: tail 0.9300 vs 0.9000)")


def test_the_gate_section_groups_test_effects_by_the_validation_decision():
    """Two jobs: the overall gate serves C2AL in one (significantly better overall and on the head) and
    keeps the baseline in the other (where C2AL was significantly worse overall): the gated mean NE_diff
    counts the kept job as 0, C2AL everywhere averages both. The guarded gate keeps the baseline in both."""
    from zoo.study.report import gate_section

    def row(diff, p):
        return {"ne_diff_mean": diff, "ttest": {"p": p}}

    def summary(serves, guarded, overall, head, tail):
        return {"gate": {"serves": serves, "serves_guarded": guarded}, "chosen": "c2al|lambda=0.3",
                "comparisons": {"c2al|lambda=0.3": {"overall": overall, "head": head, "tail": tail}}}

    jobs = [{"dataset": "s", "backbone": "dlrm"}, {"dataset": "s", "backbone": "ple"}]
    summaries = {"s__dlrm": summary("c2al", "baseline", row(-0.2, 0.01), row(-1.0, 0.001), row(0.1, 0.5)),
                 "s__ple": summary("baseline", "baseline", row(0.4, 0.02), row(0.3, 0.2), row(-0.5, 0.04))}
    lines = gate_section(jobs, summaries)
    assert lines[0] == "## The validation gates on the test split"
    assert lines[-3:-1] == [
        "| s | overall | 2 | 1 | overall 1 / 0, head 1 / 0, tail 0 / 0 | 1 | overall 0 / 1, head 0 / 0, tail 1 / 0 "
        "| -0.100% | +0.100% |",
        "| s | overall, head and tail | 2 | 0 | - | 2 | overall 1 / 1, head 1 / 0, tail 1 / 0 | +0.000% | +0.100% |"]
