"""One study job: every run of one (dataset, backbone), validation-only selection, the test split read once.

Order of a job (each run is recorded in the job's JSON as soon as it ends, with its weights, so an
interrupted job resumes where it stopped):

1. the baseline on every seed;
2. cohort discovery on the seed-0 baseline's validation predictions: the most-divergent pair (C2AL's),
   the least-divergent and a random one (the pair ablations);
3. the lambda sweep: C2AL with ``lambda_head = lambda_tail`` in the plan's grid on the sweep seeds;
   the lambda with the best mean validation NE (:func:`select`) is chosen, then the plan's head
   options at that lambda, kept only when they beat the plain heads on validation;
4. the chosen C2AL configuration on every seed, and the plan's variants at the chosen lambda;
5. only then the test split is opened (:class:`SealedSplit`), and each final run (the baseline, the
   chosen configuration and the variants, every seed) and the oracle are evaluated on it exactly once.
   Sweep runs that were not chosen are never evaluated on the test split.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from typing import Any, Callable, Mapping

import numpy as np

from zoo import cohorts
from zoo.spec import COHORT_KEY_PREFIX, FeatureSpec
from zoo.study.plan import Plan
from zoo.study.runs import (Run, build_run_model, cohort_masks, evaluate, inputs_of,
                            input_names, options_tuple, predict, targets, train_run)
from zoo.study.variants import BASELINE, C2AL, VARIANTS

PAIR_STRATEGIES = {C2AL: "most", "least_pair": "least", "random_pair": "random"}


class SealedSplitError(RuntimeError):
    """The test split was read before the selection was final, or twice for one run."""


class SealedSplit:
    """The test split's arrays, unreadable until :meth:`unseal`; each run may read it once.

    ``reads`` lists the run keys that read it, in order.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self._arrays = arrays
        self.sealed = True
        self.reads: list[str] = []

    def unseal(self) -> None:
        self.sealed = False

    def read(self, run_key: str) -> Mapping[str, np.ndarray]:
        if self.sealed:
            raise SealedSplitError(f"test split: read for '{run_key}' before the selection was final")
        if run_key in self.reads:
            raise SealedSplitError(f"test split: '{run_key}' read it a second time")
        self.reads.append(run_key)
        return self._arrays


def select(curve: Mapping[float, Mapping[str, float]], select_on: str) -> float:
    """The lambda with the smallest mean validation score: ``overall`` NE, or ``cohorts`` (the mean of
    the head and tail cohorts' NE). Ties go to the smaller lambda."""
    key = "ne_overall" if select_on == "overall" else "ne_cohorts"
    return min(sorted(curve), key=lambda lam: curve[lam][key])


# What makes two environment records one machine for a job's record (the date and code revision do not).
SAME_MACHINE_KEYS = ("cpu", "cpu_count", "accelerators", "backend", "keras", "tensorflow", "jax")


def same_machine(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in SAME_MACHINE_KEYS)


def _filename(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)


class Job:
    """The runs of one (dataset, backbone); see the module docstring.

    Args:
      plan: the study plan.
      dataset: the plan's dataset name.
      backbone: a registered backbone.
      model_cfg: its model config (:func:`zoo.config.load_model_config`).
      spec: the dataset's resolved spec.
      train, valid: the splits' arrays.
      test: the test split, sealed.
      work_dir: where the job's JSON and weights live.
      log: progress printer.
      machine: what this process trains on (an environment record: processor, accelerators, versions,
        code revision). The job's ``machines`` lists each machine that trained one of its runs, once
        (:data:`SAME_MACHINE_KEYS`), and each run records the index of its machine there and the code
        revision that trained it; a job resumed with nothing left to train records nothing.
    """

    def __init__(self, plan: Plan, dataset: str, backbone: str, model_cfg: Mapping[str, Any], spec: FeatureSpec,
                 train: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray], test: SealedSplit,
                 work_dir: str, log: Callable[[str], None] = print, machine: Mapping[str, Any] | None = None):
        self.plan, self.dataset, self.backbone, self.model_cfg, self.spec = plan, dataset, backbone, model_cfg, spec
        self.train, self.valid, self.test, self.log, self.machine = train, valid, test, log, machine
        self.dir = os.path.join(work_dir, f"{dataset}__{backbone}")
        os.makedirs(os.path.join(self.dir, "weights"), exist_ok=True)
        self.path = os.path.join(self.dir, "job.json")
        self.record: dict[str, Any] = {"dataset": dataset, "backbone": backbone, "runs": {}, "seconds": 0.0}
        if os.path.exists(self.path):
            with open(self.path) as fh:
                self.record = json.load(fh)
        self.record["rows"] = {"train": len(train[spec.label]), "valid": len(valid[spec.label])}
        self.record["configured_pair"] = {k: (spec.c2al or {}).get(k) for k in ("axis", "head", "tail")}
        self._start = time.time() - self.record["seconds"]

    # -- bookkeeping --------------------------------------------------------------------------------
    def save(self) -> None:
        self.record["seconds"] = round(time.time() - self._start, 1)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.record, fh)
        os.replace(tmp, self.path)

    def _machine_index(self) -> int | None:
        """The index of this process's machine in the record's ``machines``, added on first use."""
        if self.machine is None:
            return None
        machines = self.record.setdefault("machines", [])
        for i, m in enumerate(machines):
            if same_machine(m, self.machine):
                return i
        machines.append(dict(self.machine))
        return len(machines) - 1

    def _weights(self, run: Run) -> str:
        return os.path.join(self.dir, "weights", _filename(run.key) + ".weights.h5")

    def pair_of(self, run: Run) -> dict[str, Any] | None:
        if run.variant == BASELINE:
            return None
        return self.record["pairs"][PAIR_STRATEGIES.get(run.variant, "most")]

    def do(self, run: Run) -> dict[str, Any]:
        """Trains ``run`` unless the record has it; returns its record (validation metrics only)."""
        if run.key in self.record["runs"]:
            return self.record["runs"][run.key]
        pair = self.pair_of(run)
        diagnostics = self._diagnostics(run, pair)
        model, fitted = train_run(self.backbone, self.model_cfg, self.spec, self.train, self.valid, run, pair,
                                  self.plan.protocol, self.plan.training["batch_size"],
                                  float(self.plan.training["learning_rate"]), callbacks=(diagnostics,),
                                  dtype_policy=self.plan.dtype_policy)
        p_valid = predict(model, self.spec, self.valid)
        model.save_weights(self._weights(run))
        entry = {"variant": run.variant, "seed": run.seed, "lambda": run.lam, "options": dict(run.options),
                 "config": run.config_key, "pair": pair, "fit": fitted.to_dict(),
                 "valid": evaluate(self.spec, self.valid, p_valid), "machine": self._machine_index(),
                 "revision": (self.machine or {}).get("revision"),
                 "diagnostics": [{k: v for k, v in r.items() if k != "abs_y"} for r in diagnostics.history]}
        self.record["runs"][run.key] = entry
        self.save()
        o = entry["valid"]["overall"]
        self.log(f"{self.dataset} {self.backbone} {run.key}: valid NE {o['ne']:.5f} AUC {o['auc']:.4f} "
                 f"({fitted.epochs_run} epochs, best {fitted.best_epoch}{', CAP' if fitted.hit_cap else ''}, "
                 f"{fitted.seconds:.0f} s)")
        return entry

    def _diagnostics(self, run: Run, pair):
        """Attention density (DHEN/Wukong) and, for C2AL runs, the gradient alignment at the tap, on
        the first validation rows at train begin, after every epoch and at train end."""
        from zoo.diagnostics import C2ALDiagnostics

        rows = min(self.plan.diagnostics_rows, len(self.valid[self.spec.label]))
        probe = {k: v[:rows] for k, v in self.valid.items()}
        steps = -(-len(self.train[self.spec.label]) // self.plan.training["batch_size"])
        kwargs: dict[str, Any] = {}
        ablation = (VARIANTS[run.variant].ablation if run.variant != BASELINE and VARIANTS[run.variant].heads
                    and run.method is None else None)
        if ablation not in (None, "reweight", "ple_towers"):  # models with auxiliary heads on the tap
            head, tail = cohort_masks(self.spec, probe, pair)
            kwargs = dict(probe_y=targets(self.spec, probe, run, pair),
                          lambdas={"aux_head": run.lam, "aux_tail": run.lam},
                          probe_cohorts={"head": head[:, 0] > 0, "tail": tail[:, 0] > 0})
        names = input_names(self.spec, run, self.model_cfg, pair)  # + a served-tower run's routing feature
        return C2ALDiagnostics(inputs_of(self.spec, probe, names), every_n_steps=steps, max_abs_y=0, **kwargs)

    def discover(self) -> None:
        """Cohort discovery on the seed-0 baseline's validation predictions (once per job)."""
        if "pairs" in self.record:
            return
        run = Run(BASELINE, self.plan.seeds[0])
        model = build_run_model(self.backbone, self.model_cfg, self.spec, run, 1e-3,
                                dtype_policy=self.plan.dtype_policy)
        _load_weights(model, self._weights(run))
        p_valid = predict(model, self.spec, self.valid)
        axis = self.spec.axis(self.spec.c2al["axis"])
        opts = self.plan.discovery
        hist = cohorts.CohortHistograms(list(axis.cohorts), bins=opts["bins"])
        hist.update(p_valid, self.valid[COHORT_KEY_PREFIX + axis.name][:, 0], labels=self.valid[self.spec.label][:, 0])
        found = cohorts.from_histograms(hist, axis, metric=opts["metric"], min_fraction=opts["min_fraction"])
        self.record["discovery"] = found.to_dict()
        self.record["pairs"] = {s: cohorts.choose_pair(found, s, seed=0) for s in ("most", "least", "random")}
        self.save()

    # -- the job ------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        plan = self.plan
        for seed in plan.seeds:
            self.do(Run(BASELINE, seed))
        self.discover()
        curve = self.sweep()
        chosen = select(curve, plan.select_on)
        options = self.head_options(chosen)
        self.record["selection"] = {"select_on": plan.select_on, "curve": {str(k): v for k, v in curve.items()},
                                    "lambda": chosen, "options": dict(options)}
        finals = [Run(BASELINE, s) for s in plan.seeds] + [Run(C2AL, s, chosen, options) for s in plan.seeds]
        if self.dataset in plan.variant_datasets:
            finals += [Run(v, s, chosen) for v in plan.variants if VARIANTS[v].applies_to(self.backbone)
                       for s in plan.seeds]
        for run in finals:
            self.do(run)
        self.record["finals"] = self._with_staged_variants([r.key for r in finals], chosen)
        self.save()
        self.evaluate_test(finals)
        return self.record

    def _with_staged_variants(self, keys: list[str], chosen: float) -> list[str]:
        """``keys`` (the baseline and the chosen C2AL first) with the variant finals an earlier, staged
        invocation (``--variants``) tested at the same chosen lambda: staging adds variants to a job, it
        does not replace them. The variants follow :data:`VARIANTS`' order, whatever the staging."""
        runs, tested = self.record["runs"], self.record.get("test", {})
        earlier = [k for k in self.record.get("finals", []) if k in tested  # a final is always a recorded run
                   and runs[k]["variant"] not in (BASELINE, C2AL) and runs[k]["lambda"] == chosen]
        head = [k for k in keys if runs[k]["variant"] in (BASELINE, C2AL)]
        variants = [k for k in dict.fromkeys(earlier + keys) if k not in head]
        return head + sorted(variants, key=lambda k: list(VARIANTS).index(runs[k]["variant"]))

    def sweep(self) -> dict[float, dict[str, float]]:
        """Validation NE (mean over the sweep seeds) of every lambda of the grid, with the paired baseline's."""
        axis, head, tail = (self.record["configured_pair"][k] for k in ("axis", "head", "tail"))
        curve: dict[float, dict[str, float]] = {}
        for lam in self.plan.lambdas:
            runs = [self.do(Run(C2AL, s, float(lam))) for s in self.plan.sweep_seeds]
            curve[float(lam)] = _scores(runs, axis, head, tail)
        self.record["sweep_baseline"] = _scores([self.record["runs"][Run(BASELINE, s).key]
                                                 for s in self.plan.sweep_seeds], axis, head, tail)
        return curve

    def head_options(self, lam: float) -> tuple:
        """The best of the plain heads and the plan's head options at ``lam`` (validation only)."""
        axis, head, tail = (self.record["configured_pair"][k] for k in ("axis", "head", "tail"))
        key = "ne_overall" if self.plan.select_on == "overall" else "ne_cohorts"
        plain = _scores([self.do(Run(C2AL, s, lam)) for s in self.plan.sweep_seeds], axis, head, tail)
        best, best_score = (), plain[key]
        tried = {"plain": plain}
        for option in self.plan.head_options:
            opts = options_tuple(option)
            if dict(opts).get("tap") == "interaction_output" and self._taps_coincide():
                continue  # z is h for this backbone: the same run as the plain heads
            scores = _scores([self.do(Run(C2AL, s, lam, opts)) for s in self.plan.sweep_seeds], axis, head, tail)
            tried[Run(C2AL, 0, lam, opts).config_key] = scores
            if scores[key] < best_score:
                best, best_score = opts, scores[key]
        self.record["head_options"] = tried
        return best

    def _taps_coincide(self) -> bool:
        """Whether the backbone's over-arch is the identity (then ``z`` is ``h``)."""
        from zoo.model import BACKBONE_LAYER

        model = build_run_model(self.backbone, self.model_cfg, self.spec, Run(BASELINE, 0), 1e-3)
        marker = object()
        try:
            return model.get_layer(BACKBONE_LAYER).over_arch(marker) is marker
        except Exception:  # an over-arch that computes something cannot take the marker
            return False

    def evaluate_test(self, finals: list[Run]) -> None:
        """Opens the test split and evaluates each final run (and the oracle) on it once."""
        self.test.unseal()
        results = self.record.setdefault("test", {})
        if self.spec_oracle() is not None and "oracle" not in results:
            arrays = self.test.read("oracle")
            results["oracle"] = evaluate(self.spec, arrays, arrays[self.spec_oracle()][:, 0])
        for run in finals:
            if run.key in results:
                continue
            model = build_run_model(self.backbone, self.model_cfg, self.spec, run, 1e-3, self.pair_of(run), self.train,
                                    self.plan.dtype_policy)
            model = getattr(model, "routed", model)  # D-Train: the served (routed) model holds the weights
            _load_weights(model, self._weights(run))
            recorded = self.record["runs"][run.key]["valid"]["overall"]["ne"]
            reloaded = evaluate(self.spec, self.valid, predict(model, self.spec, self.valid))["overall"]["ne"]
            if not abs(reloaded - recorded) <= 1e-6 * max(1.0, abs(recorded)):
                raise RuntimeError(f"{run.key}: the reloaded weights give validation NE {reloaded}, the run "
                                   f"recorded {recorded}; {self._weights(run)} is not this run's")
            arrays = self.test.read(run.key)
            results[run.key] = evaluate(self.spec, arrays, predict(model, self.spec, arrays))
        self.save()

    def spec_oracle(self) -> str | None:
        return getattr(self.spec, "oracle", None)


def _load_weights(model, path: str) -> None:
    """A run's saved weights into its rebuilt model. The file holds the trained optimizer's state too;
    a compiled model's optimizer is built first so that it takes it (Keras warns and skips it into an
    unbuilt optimizer)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    model.load_weights(path)


def _scores(runs, axis, head, tail) -> dict[str, float]:
    """Mean validation NE overall, on the head and tail cohorts and their mean, over runs."""
    overall = [r["valid"]["overall"]["ne"] for r in runs]
    heads = [r["valid"]["cohorts"][axis][head]["ne"] for r in runs]
    tails = [r["valid"]["cohorts"][axis][tail]["ne"] for r in runs]
    return {"ne_overall": statistics.fmean(overall), "ne_head": statistics.fmean(heads),
            "ne_tail": statistics.fmean(tails), "ne_cohorts": (statistics.fmean(heads) + statistics.fmean(tails)) / 2,
            "seeds": len(runs)}
