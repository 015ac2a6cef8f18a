"""The study's statistics and its markdown report, from the jobs' records (:class:`zoo.study.job.Job`).

Per (dataset, backbone) and final configuration (the chosen C2AL, each variant), paired by seed
against the baseline on the test split, for the whole split and the configured head and tail
cohorts (the planted ones on the synthetic data):

* ``NE_diff = 100 (NE_variant - NE_base) / NE_base`` per seed, its mean and standard deviation;
* the two-sided paired t-test on the per-seed NE pairs (:func:`zoo.significance.paired_t_test`);
* the minimum detectable effect at 80 % power from the measured paired std
  (:func:`zoo.significance.minimum_detectable_effect`), in NE_diff percent;
* with an oracle (the synthetic data's true probabilities): the share of the oracle gap closed,
  ``(NE_base - NE_variant) / (NE_base - NE_oracle)`` per seed (:func:`zoo.metrics.gap_closed`).

The verdict at the top is computed from those numbers with the plan's fixed rules (p < 0.05), so it
says what the tables say, including "no significant effect".
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Mapping, Sequence

from zoo import metrics
from zoo.significance import minimum_detectable_effect, paired_t_test
from zoo.study.runs import Run, options_tuple
from zoo.study.variants import BASELINE, C2AL

ALPHA = 0.05
COHORT_SCOPES = ("head", "tail")
SCOPES = ("overall", *COHORT_SCOPES)
GATES = {"serves": "overall", "serves_guarded": "overall, head and tail"}  # gate() key -> what it compares
GOAL_GAP_SHARE = 0.10  # the goal: 10 % of the oracle gap on the planted cohorts


def _scope(result: Mapping[str, Any], scope: str, pair: Mapping[str, str]) -> Any:
    """The ``overall`` entry of an evaluation (or of a :func:`zoo.metrics.gap_closed` result), or the
    configured head / tail cohort's."""
    if scope == "overall":
        return result["overall"]
    return result["cohorts"].get(pair["axis"], {}).get(pair[scope])


def _stats(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def compare(job: Mapping[str, Any], config: str) -> dict[str, Any]:
    """One final configuration against the baseline, paired by seed (see the module docstring)."""
    test, pair = job["test"], job["configured_pair"]
    oracle = test.get("oracle")
    seeds = sorted(r["seed"] for r in job["runs"].values() if r["config"] == config and
                   f"{config}|seed={r['seed']}" in test)
    out: dict[str, Any] = {"config": config, "seeds": seeds}
    for scope in SCOPES:
        base = [_scope(test[Run(BASELINE, s).key], scope, pair) for s in seeds]
        var = [_scope(test[f"{config}|seed={s}"], scope, pair) for s in seeds]
        diffs = [100 * (v["ne"] - b["ne"]) / b["ne"] for b, v in zip(base, var)]
        mean, std = _stats(diffs)
        row = {"rows": base[0]["rows"], "ne_base": _stats([b["ne"] for b in base])[0],
               "ne_variant": _stats([v["ne"] for v in var])[0], "auc_base": _stats([b["auc"] for b in base])[0],
               "auc_variant": _stats([v["auc"] for v in var])[0], "ne_diff_runs": diffs, "ne_diff_mean": mean,
               "ne_diff_std": std, "ttest": paired_t_test([v["ne"] for v in var], [b["ne"] for b in base]),
               "mde_percent": minimum_detectable_effect(std, len(diffs)) if len(diffs) > 1 else float("nan")}
        if oracle is not None:
            o = _scope(oracle, scope, pair)
            shares = [_scope(metrics.gap_closed(test[Run(BASELINE, s).key], test[f"{config}|seed={s}"], oracle),
                             scope, pair) for s in seeds]
            share_mean, share_std = _stats(shares)
            row.update(ne_oracle=o["ne"], auc_oracle=o["auc"], gap_closed_runs=shares,
                       gap_closed_mean=share_mean, gap_closed_std=share_std)
        out[scope] = row
    return out


def significant(row: Mapping[str, Any]) -> int:
    """-1 significantly better (lower NE), +1 significantly worse, 0 neither (p >= ALPHA)."""
    p = row["ttest"]["p"]
    if p is None or p >= ALPHA:
        return 0
    return -1 if row["ne_diff_mean"] < 0 else 1


def summarize_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """The baseline's seed noise, every final configuration's comparison, epochs, diagnostics and the
    validation gate's decision (:func:`gate`)."""
    test, pair = job["test"], job["configured_pair"]
    seeds = sorted(r["seed"] for r in job["runs"].values() if r["variant"] == BASELINE)
    baseline = {}
    for scope in SCOPES:
        ne = [_scope(test[Run(BASELINE, s).key], scope, pair)["ne"] for s in seeds]
        mean, std = _stats(ne)
        baseline[scope] = {"ne_mean": mean, "ne_std": std}
    configs = list(dict.fromkeys(job["runs"][k]["config"] for k in job["finals"]
                                 if job["runs"][k]["variant"] != BASELINE))
    runs = list(job["runs"].values())
    return {
        "baseline": baseline,
        "comparisons": {c: compare(job, c) for c in configs},
        "chosen": next(c for c in configs if c.startswith(C2AL + "|")),
        "epochs": {"runs": len(runs), "hit_cap": sum(r["fit"]["hit_cap"] for r in runs),
                   "max_epochs_run": max(r["fit"]["epochs_run"] for r in runs),
                   "mean_epochs_run": statistics.fmean(r["fit"]["epochs_run"] for r in runs)},
        "diagnostics": diagnostics_summary(job),
        "gate": gate(job),
    }


def diagnostics_summary(job: Mapping[str, Any]) -> dict[str, Any]:
    """Mean over the chosen configuration's seeds of the gradient cosines at train end, and the
    attention density (first AttentionFM layer) at train begin and end, baseline vs chosen C2AL."""
    chosen = [r for k, r in job["runs"].items() if k in job["finals"] and r["variant"] == C2AL]
    base = [r for k, r in job["runs"].items() if k in job["finals"] and r["variant"] == BASELINE]
    out: dict[str, Any] = {"gradients": {}, "attention": {}}
    for key in ("gradients/aux_head/cosine", "gradients/aux_head/head/cosine", "gradients/aux_tail/cosine",
                "gradients/aux_tail/tail/cosine", "gradients/aux_head/head/parallel_coef",
                "gradients/aux_tail/tail/parallel_coef"):
        values = [r["diagnostics"][-1].get(key) for r in chosen if r["diagnostics"]]
        values = [v for v in values if isinstance(v, (int, float))]
        if values:
            out["gradients"][key] = _stats(values)
    for name, runs in (("baseline", base), ("c2al", chosen)):
        for when, index in (("begin", 0), ("end", -1)):
            for stat in ("near_zero_fraction", "normalized_entropy"):
                values = []
                for r in runs:
                    if not r["diagnostics"]:
                        continue
                    keys = sorted(k for k in r["diagnostics"][index] if k.startswith("attention/")
                                  and k.endswith("/" + stat))
                    if keys:
                        values.append(r["diagnostics"][index][keys[0]])
                if values:
                    out["attention"][f"{name}/{when}/{stat}"] = _stats(values)
    return out


def _machine(env: Mapping[str, Any], date: bool = False) -> str:
    text = f"{env.get('cpu')} x{env.get('cpu_count')}, accelerators {env.get('accelerators') or 'none'}"
    return text + (f", {env['date']}" if date and env.get("date") else "")


UNRECORDED_MACHINE = "an unrecorded machine"


def _job_machines(job: Mapping[str, Any], date: bool = False) -> list[str]:
    """Where the job's runs trained: each machine its record names, in order (a resumed job may name several)."""
    if not job.get("machines"):
        return [UNRECORDED_MACHINE]
    return list(dict.fromkeys(_machine(m, date) for m in job["machines"]))


def _job_revisions(job: Mapping[str, Any]) -> str:
    """The code revisions that trained the job's runs, with their run counts (runs recorded before
    revisions were are left out): `` Code: abc123 (22 runs).``, or empty when no run records one."""
    counts = Counter(run["revision"] for run in job["runs"].values() if run.get("revision") is not None)
    if not counts:
        return ""
    return " Code: " + ", ".join(f"{rev} ({n} run{'s' if n > 1 else ''})" for rev, n in counts.items()) + "."


def _machines(jobs: Sequence[Mapping[str, Any]]) -> str:
    """Each distinct machine and the jobs it trained: ``A x2, accelerators none (3 jobs: s/dcnv2, ...); B ...``."""
    by: dict[str, list[str]] = {}
    for job in jobs:
        for m in _job_machines(job):
            by.setdefault(m, []).append(f"{job['dataset']}/{job['backbone']}")
    why = f" ({UNRECORDED_MACHINE}: a job record older than per-job machines)" if UNRECORDED_MACHINE in by else ""
    if len(by) == 1:
        return next(iter(by)) + why
    return "; ".join(f"{m} ({len(names)} job{'s' if len(names) > 1 else ''}: {', '.join(names)})"
                     for m, names in by.items()) + why


def _pct(mean: float, std: float | None = None) -> str:
    if mean != mean:
        return "n/a"
    return f"{mean:+.3f}%" if std is None else f"{mean:+.3f} ± {std:.3f}%"


def _share(row: Mapping[str, Any]) -> str:
    if "gap_closed_mean" not in row or row["gap_closed_mean"] != row["gap_closed_mean"]:
        return "n/a"
    return f"{100 * row['gap_closed_mean']:+.1f} ± {100 * row['gap_closed_std']:.1f}%"


def verdict(jobs: Sequence[Mapping[str, Any]], summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The verdict lines: per dataset, what the chosen C2AL did per backbone, by the fixed rules."""
    lines = ["## Verdict", ""]
    for dataset in dict.fromkeys(j["dataset"] for j in jobs):
        ds = [j for j in jobs if j["dataset"] == dataset]
        cells = []
        for job in ds:
            s = summaries[f"{dataset}__{job['backbone']}"]
            c = s["comparisons"][s["chosen"]]
            effects = {scope: significant(c[scope]) for scope in SCOPES}
            words = []
            for scope in SCOPES:
                word = {-1: "better", 1: "worse", 0: "no significant effect"}[effects[scope]]
                words.append(f"{scope} {word} ({_pct(c[scope]['ne_diff_mean'])}, p {c[scope]['ttest']['p']})")
            goal = ""
            if "gap_closed_mean" in c["head"]:
                reached = (c["head"]["gap_closed_mean"] >= GOAL_GAP_SHARE and c["tail"]["gap_closed_mean"] >= GOAL_GAP_SHARE
                           and effects["overall"] <= 0)
                goal = (f"; oracle gap closed head {_share(c['head'])}, tail {_share(c['tail'])}: goal "
                        f"({GOAL_GAP_SHARE:.0%} on both, overall not significantly worse) "
                        f"{'reached' if reached else 'not reached'}")
            lam = job["selection"]["lambda"]
            cells.append(f"- {job['backbone']} (lambda {lam:g}{_options(job)}): " + "; ".join(words) + goal
                         + validation_gate(s["gate"]))
        lines += [f"**{dataset}**", ""] + cells + [""]
    return lines


def gate(job: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the chosen configuration beat the baseline on validation (the sweep seeds' mean of the
    score the selection minimizes). The study always trains and tests the chosen lambda; a user who
    keeps the baseline unless C2AL wins on validation would serve what ``serves`` names. The guarded
    gate (``serves_guarded``) also keeps the baseline where the chosen configuration's validation NE
    is worse on the head or the tail cohort (``worse_cohorts``)."""
    selection = job["selection"]
    key = "ne_overall" if selection["select_on"] == "overall" else "ne_cohorts"
    if selection.get("options"):  # a head option won: its sweep-seed scores are recorded under its configuration
        chosen = job["head_options"][Run(C2AL, 0, selection["lambda"], options_tuple(selection["options"])).config_key]
    else:
        chosen = selection["curve"][str(float(selection["lambda"]))]
    base = job["sweep_baseline"]
    serves = C2AL if chosen[key] < base[key] else BASELINE
    worse = {c: [chosen[f"ne_{c}"], base[f"ne_{c}"]] for c in COHORT_SCOPES if chosen[f"ne_{c}"] > base[f"ne_{c}"]}
    return {"valid_chosen": chosen[key], "valid_baseline": base[key], "serves": serves, "worse_cohorts": worse,
            "serves_guarded": serves if not worse else BASELINE}


def validation_gate(g: Mapping[str, Any]) -> str:
    """The verdict line's clause for a job's :func:`gate` decision."""
    kept = "C2AL" if g["serves"] == C2AL else "the baseline"
    clause = f"; validation {g['valid_chosen']:.5f} vs baseline {g['valid_baseline']:.5f}: a validation gate serves {kept}"
    if g["serves"] != g["serves_guarded"]:
        worse = ", ".join(f"{c} {v:.4f} vs {b:.4f}" for c, (v, b) in g["worse_cohorts"].items())
        clause += f", the guarded gate the baseline (worse on validation: {worse})"
    return clause


def gate_section(jobs: Sequence[Mapping[str, Any]], summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The validation gates as policies, scored on the test split per dataset: in how many jobs each
    serves C2AL, the chosen C2AL's significant test effects in those jobs and in the jobs where it keeps
    the baseline (did it turn away harm, or help?), and the gated model's mean test NE_diff over the
    jobs (0 where the baseline is served) beside C2AL's served everywhere. The test split is not read
    again: these are the chosen configuration's test comparisons, grouped by decisions taken on
    validation only."""
    lines = ["## The validation gates on the test split", "",
             "Serve C2AL only where its chosen configuration beats the baseline on validation: on overall NE "
             "(gate `overall`), or on overall NE without a worse head or tail cohort NE (gate `overall, head and "
             "tail`). Per dataset and gate: the jobs where it serves C2AL and where it keeps the baseline, with the "
             "chosen C2AL's significant test effects in each group (jobs significantly better / worse, p < 0.05, "
             "overall, head, tail), and the test NE_diff overall of the gated model (0 where it keeps the "
             "baseline) and of C2AL served everywhere, each averaged over the dataset's jobs.", "",
             "| dataset | gate on validation | jobs | gate serves C2AL | its test effects (better / worse: overall, "
             "head, tail) | gate keeps baseline | C2AL's test effects there | gated NE_diff overall, mean over jobs "
             "| C2AL always, mean over jobs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def effects(group: list[Mapping[str, Any]]) -> str:
        if not group:
            return "-"
        cells = []
        for scope in SCOPES:
            signs = [significant(s["comparisons"][s["chosen"]][scope]) for s in group]
            cells.append(f"{scope} {signs.count(-1)} / {signs.count(1)}")
        return ", ".join(cells)

    for dataset in dict.fromkeys(j["dataset"] for j in jobs):
        ds = [summaries[f"{dataset}__{j['backbone']}"] for j in jobs if j["dataset"] == dataset]
        always = [s["comparisons"][s["chosen"]]["overall"]["ne_diff_mean"] for s in ds]
        for decision, compared in GATES.items():
            serves = [s["gate"][decision] == C2AL for s in ds]
            served = [s for s, c2al in zip(ds, serves) if c2al]
            kept = [s for s, c2al in zip(ds, serves) if not c2al]
            gated = [d if c2al else 0.0 for d, c2al in zip(always, serves)]
            lines.append(f"| {dataset} | {compared} | {len(ds)} | {len(served)} | {effects(served)} | {len(kept)} "
                         f"| {effects(kept)} | {_pct(statistics.fmean(gated))} | {_pct(statistics.fmean(always))} |")
    return lines + [""]


def _options(job: Mapping[str, Any]) -> str:
    options = job["selection"].get("options") or {}
    return "".join(f", {k} {v}" for k, v in options.items())


def format_report(jobs: Sequence[Mapping[str, Any]], environment: Mapping[str, Any], plan: Mapping[str, Any],
                  title: str = "C2AL evidence study") -> tuple[str, dict[str, Any]]:
    """The markdown report and the summaries it was made from."""
    summaries = {f"{j['dataset']}__{j['backbone']}": summarize_job(j) for j in jobs}
    runs = sum(s["epochs"]["runs"] for s in summaries.values())
    capped = sum(s["epochs"]["hit_cap"] for s in summaries.values())
    lines = [f"# {title}", "",
             f"{len(jobs)} jobs (dataset x backbone), {runs} training runs, {capped} of them stopped by the epoch "
             f"cap ({plan['training']['max_epochs']}); seeds {plan['seeds']} (sweep {plan['sweep_seeds']}); lambda grid "
             f"{plan['lambdas']} selected on validation {plan['select_on']} NE; backend {environment.get('backend')}; "
             f"trained on {_machines(jobs)}; {environment.get('job_seconds', 0) / 60:.1f} min of training in all "
             "(the jobs' wall times summed).",
             ""]
    lines += verdict(jobs, summaries)
    lines += gate_section(jobs, summaries)
    for dataset in dict.fromkeys(j["dataset"] for j in jobs):
        ds = [j for j in jobs if j["dataset"] == dataset]
        pair = ds[0]["configured_pair"]
        rows = ds[0]["rows"]
        lines += [f"## {dataset}", "",
                  f"Rows train {rows['train']:,} / valid {rows['valid']:,} / test "
                  f"{ds[0]['test'][Run(BASELINE, plan['seeds'][0]).key]['overall']['rows']:,}; head / tail = configured "
                  f"pair {pair['head']} / {pair['tail']} on axis `{pair['axis']}`.", ""]
        for job in ds:
            lines += job_section(job, summaries[f"{dataset}__{job['backbone']}"])
    return "\n".join(lines) + "\n", summaries


def job_section(job: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    base = summary["baseline"]
    found = job["pairs"]["most"]
    lines = [f"### {job['backbone']}", "",
             f"Baseline test NE (mean ± std over seeds): overall {base['overall']['ne_mean']:.5f} ± "
             f"{base['overall']['ne_std']:.5f}, head {base['head']['ne_mean']:.4f} ± {base['head']['ne_std']:.4f}, "
             f"tail {base['tail']['ne_mean']:.4f} ± {base['tail']['ne_std']:.4f}. Discovered pair (seed-0 baseline): "
             f"{found['head']} / {found['tail']}; least {job['pairs']['least']['head']} / "
             f"{job['pairs']['least']['tail']}, random {job['pairs']['random']['head']} / {job['pairs']['random']['tail']}. "
             f"Epochs: mean {summary['epochs']['mean_epochs_run']:.1f}, max {summary['epochs']['max_epochs_run']}, "
             f"{summary['epochs']['hit_cap']} of {summary['epochs']['runs']} runs at the cap; {job['seconds'] / 60:.1f} min "
             f"on {' and '.join(_job_machines(job, date=True))}.{_job_revisions(job)}",
             "", "Validation curve (mean over the sweep seeds; baseline "
             f"{job['sweep_baseline']['ne_overall']:.5f} / {job['sweep_baseline']['ne_head']:.4f} / "
             f"{job['sweep_baseline']['ne_tail']:.4f}):", "",
             "| lambda | valid NE overall | head | tail |", "| --- | --- | --- | --- |"]
    for lam, s in job["selection"]["curve"].items():
        mark = " (chosen)" if float(lam) == job["selection"]["lambda"] else ""
        lines.append(f"| {float(lam):g}{mark} | {s['ne_overall']:.5f} | {s['ne_head']:.4f} | {s['ne_tail']:.4f} |")
    for name, s in job.get("head_options", {}).items():
        if name != "plain":
            lines.append(f"| {name} | {s['ne_overall']:.5f} | {s['ne_head']:.4f} | {s['ne_tail']:.4f} |")
    lines += ["", "| test, vs baseline | NE_diff overall | p | MDE | NE_diff head | p | gap closed head "
              "| NE_diff tail | p | gap closed tail |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for config, c in summary["comparisons"].items():
        lines.append(f"| {config} | {_pct(c['overall']['ne_diff_mean'], c['overall']['ne_diff_std'])} | "
                     f"{c['overall']['ttest']['p']} | {c['overall']['mde_percent']:.3f}% | "
                     f"{_pct(c['head']['ne_diff_mean'], c['head']['ne_diff_std'])} | {c['head']['ttest']['p']} | "
                     f"{_share(c['head'])} | {_pct(c['tail']['ne_diff_mean'], c['tail']['ne_diff_std'])} | "
                     f"{c['tail']['ttest']['p']} | {_share(c['tail'])} |")
    oracle = job["test"].get("oracle")
    if oracle is not None:
        c = summary["comparisons"][summary["chosen"]]
        lines += ["", f"Oracle (true probabilities) test NE: overall {c['overall']['ne_oracle']:.5f}, head "
                  f"{c['head']['ne_oracle']:.4f}, tail {c['tail']['ne_oracle']:.4f}."]
    diag = summary["diagnostics"]
    if diag["gradients"] or diag["attention"]:
        parts = [f"{k} {m:+.3f} ± {s:.3f}" for k, (m, s) in {**diag["gradients"], **diag["attention"]}.items()]
        lines += ["", "Diagnostics (chosen C2AL at train end; attention: first AttentionFM layer): " + "; ".join(parts) + "."]
    return lines + [""]

