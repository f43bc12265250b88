"""`python -m search compare DIR...`: runs grouped by configuration, with significance tests.

Per run, over N iterations (N = the fewest iterations of any run compared, so every run gets the
same budget): valid rate (status ok: new candidates evaluated), well-formed rate (status ok,
duplicate or constraint: the answer named a network of the space), repeat rate (status duplicate:
every answer of the proposal repeated a network already tried), mean LLM seconds per proposal (the
stored proposal time, pre-check included where one runs; `-` for `--llm random`), best accuracy
after 5, 10 and N iterations (the seed counts as the starting best), area under the best-so-far
curve (its mean over the N iterations), and iterations to reach a threshold (default: the best seed
accuracy + 1 point). Per group: the answer format (`-` for random), and mean ± standard deviation
(and the median best, with its 95 % percentile-bootstrap interval `median [lo, hi]`, `search.stats`) over
its runs (seeds). Each group is tested against every `--baseline` group (default `random` if present,
else the first) with a two-sided Mann-Whitney U test on best-after-N whose p is exact (the permutation
distribution of U, midranks under ties; `search.stats.permutation_p`): one column `p vs <baseline>`
each, and beside it the Holm-adjusted p (`Holm p vs <baseline>`) over the family of every distinct
pair of groups tested in this one compare; then the probability of superiority vs the first
baseline, P(a run of the row is better than a baseline run) + half the ties (> 0.5: the row is
better). `--baseline best` tests every group against the strongest non-LLM group (stored `strategy`
other than `llm`, or `--llm random`; strongest: the best median best-after-N, the lowest median rank
in benchmark mode) and that group against the next strongest; a column names each row's baseline.
compare.json keeps per group `p_vs` (raw), `p_holm_vs`, `superiority_vs`, `median_ci`, `baseline`
(the group the row's superiority and `p_vs_baseline` are against) and `p_vs_baseline`. The curves are
plotted as the group mean with a min-max band.

    python -m search compare runs/pareto-* runs/accuracy-* runs/random-* --baseline random,accuracy --out runs/cmp

Benchmark mode (every run looked up the same `table:SPACE`): each run's best after N as its rank in
the table (1 = best; 1 + the configurations strictly better), tested as ranks, and a reference row: the
exact median best-of-N rank of uniform sampling (N draws without replacement from the table,
`search.stats.expected_median_best_rank`), beside its exact mean (`corpus.table.expected_best_rank`).
Uniform sampling is neither random search (mutation from the seed) nor any run: it is what the table
alone says of N blind draws. With a FLOPs budget (every run's `--max-flops` the same; different
budgets are refused) the table is cut to the configurations whose `flops` (the table's count, the
`flops` of every stored row: conv + linear multiply-adds at 16x16) are within it: ranks, the size, the
optimum and uniform sampling's ranks are among those, candidates over it and a seed over it do not
count as a best. (The search itself holds `--max-flops` against its pre-check's count at 32x32, about
4x the table's; a note says so when the runs' rows show it.)

Multi-objective table (whenever every run's seed has the hw metric), over the same N iterations:
hypervolume and IGD (pymoo; objectives normalised by the median seed accuracy and cost of the
compared runs, HV reference point `search.pareto.HV_REF`, IGD reference front = the non-dominated
union of all compared runs' points, seeds included), the best accuracy under cost budgets
(multiples of the seed's cost), the cost reduction at similar accuracy relative to each baseline
group (the lowest cost among a run's networks within 1 point of the baseline runs' median best
accuracy, against the baseline runs' median of the same), the complexity bins covered, and
Mann-Whitney U p-values of HV and IGD against each baseline across seeds.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from search.loop import SearchError
from search.report import _plt, best_curve, log_x_if_spread
from search.runner import load_run
from search.stats import (bootstrap_median_ci, expected_median_best_rank, holm, is_exact, permutation_p,
                          superiority)


def _fmt(vals, pct=False, digits=2):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    k = 100 if pct else 1
    mean = statistics.mean(vals) * k
    sd = statistics.stdev(vals) * k if len(vals) > 1 else 0.0
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _p(a, b):
    return permutation_p([x for x in a if x is not None], [x for x in b if x is not None])


def pareto_table(runs: list[tuple], n: int, bases: list[str], metric: str, budgets=(0.5, 0.75, 1.0)) -> dict | None:
    """Per-run HV, IGD, best accuracy under budgets, cost at similar accuracy; see the module docstring."""
    from search.pareto import HV_REF, bin_of, cost_of, hypervolume, igd, nondominated, normalise, run_points

    seeds = [r[3] for r in runs]
    if any(cost_of(seed, metric) is None or seed.get("accuracy") is None for seed in seeds):
        return None
    seed_acc = statistics.median(seed["accuracy"] for seed in seeds)
    seed_cost = statistics.median(cost_of(seed, metric) for seed in seeds)
    owner = next((r for r in runs if r[4]), None)  # bins: the first binned run's edges, on its metric
    edges, emetric = (owner[4], owner[1].partition_metric) if owner else (None, None)
    per = []
    for d, cfg, iters, seed, _ in runs:
        pts = run_points(iters[:n], seed, metric)
        bins = None if not edges else len({bin_of(cost_of(r["metrics"] or {}, emetric), edges) for r in iters[:n]
                                            if r["status"] == "ok"} - {None})
        per.append({"dir": d, "group": cfg.group, "pts": pts, "F": normalise(pts, seed_acc, seed_cost),
                    "bins": bins,
                    "best": max(a for a, _ in pts)})
    allF = [f for r in per for f in r["F"].tolist()]
    ref_front = [allF[i] for i in nondominated(allF)]
    for r in per:
        r["hv"] = hypervolume(r["F"])
        r["igd"] = igd(r["F"], ref_front)
        r["under"] = [max((a for a, c in r["pts"] if c <= k * seed_cost), default=None) for k in budgets]

    def low_cost(r, target):  # cheapest network within 1 point of the target accuracy
        return min((c for a, c in r["pts"] if a >= target - 0.01 - 1e-9), default=None)

    targets = {}
    for b in bases:
        brs = [r for r in per if r["group"] == b]
        if not brs:
            continue
        target = statistics.median(r["best"] for r in brs)
        base_costs = [low_cost(r, target) for r in brs]
        base_cost = statistics.median(c for c in base_costs if c is not None)
        targets[b] = {"accuracy": target, "cost": base_cost}
        for r in per:
            c = low_cost(r, target)
            r[f"reduction_{b}"] = None if c is None else 1 - c / base_cost
    groups: dict[str, list[dict]] = {}
    for r in per:
        groups.setdefault(r["group"], []).append(r)
    stats = {}
    for g, rs in groups.items():
        st = {"hv": [r["hv"] for r in rs], "igd": [r["igd"] for r in rs], "bins": [r["bins"] for r in rs],
              "under": [[r["under"][i] for r in rs] for i in range(len(budgets))]}
        for b in targets:
            st[f"reduction_{b}"] = [r[f"reduction_{b}"] for r in rs]
            st[f"p_hv_{b}"] = _p(st["hv"], [r["hv"] for r in groups[b]]) if g != b else None
            st[f"p_igd_{b}"] = _p(st["igd"], [r["igd"] for r in groups[b]]) if g != b else None
        stats[g] = st
    return {"metric": metric, "edges_metric": emetric, "seed_accuracy": seed_acc, "seed_cost": seed_cost, "hv_ref": HV_REF,
            "budgets": list(budgets), "reference_front": ref_front, "targets": targets, "groups": stats,
            "edges": edges, "runs": [{k: v for k, v in r.items() if k not in ("F",)} for r in per]}


def pareto_lines(pt: dict) -> list[str]:
    from search.pareto import UNITS

    m, unit = pt["metric"], UNITS[pt["metric"]]
    bases = list(pt["targets"])
    lines = ["", f"Multi-objective ({m}): objectives (error / seed error, {m} / seed {m}) with the median seed "
             f"accuracy {100 * pt['seed_accuracy']:.2f}% and cost {pt['seed_cost']:.4g} {unit}; HV reference point "
             f"{tuple(pt['hv_ref'])} (the seed alone: HV 1); IGD reference front: the non-dominated union of all "
             f"runs compared ({len(pt['reference_front'])} points)."]
    for b, t in pt["targets"].items():
        lines.append(f"Cost at similar accuracy vs `{b}`: lowest {m} among networks with accuracy >= "
                     f"{100 * t['accuracy']:.2f}% - 1 point (baseline median: {t['cost']:.4g} {unit}); "
                     "reduction = 1 - run / baseline.")
    head = (["configuration", "runs", "HV", "IGD"] + [f"best acc % at {m} <= {k:g}x seed" for k in pt["budgets"]]
            + [f"{m} reduction vs {b} %" for b in bases]
            + ([f"{pt['edges_metric']} bins covered"] if pt["edges"] else [])
            + [f"p HV vs {b}" for b in bases] + [f"p IGD vs {b}" for b in bases])
    lines += ["", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    fmt_p = lambda p: "—" if p is None else f"{p:.3g}"  # noqa: E731

    def some(vals, digits=2):  # runs without a qualifying network are left out of the mean, and counted
        k = sum(v is not None for v in vals)
        return _fmt(vals, True, digits) + ("" if k == len(vals) else f" ({k} of {len(vals)} runs)")

    for g, st in pt["groups"].items():
        cells = [g, str(len(st["hv"])), _fmt(st["hv"], digits=3), _fmt(st["igd"], digits=3)]
        cells += [some(u) for u in st["under"]]
        cells += [some(st[f"reduction_{b}"], 1) for b in bases]
        if pt["edges"]:
            cells.append(_fmt(st["bins"], digits=1) + f" of {len(pt['edges']) + 1}")
        cells += [fmt_p(st[f"p_hv_{b}"]) for b in bases] + [fmt_p(st[f"p_igd_{b}"]) for b in bases]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_fronts(pt: dict, path) -> None:
    from search.pareto import nondominated

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    k = pt["seed_cost"]
    groups = {}
    for r in pt["runs"]:
        groups.setdefault(r["group"], []).extend(r["pts"])
    for i, (g, pts) in enumerate(groups.items()):
        col = f"C{i}"
        ax.scatter([c / k for _, c in pts], [100 * a for a, _ in pts], s=10, alpha=0.35, color=col)
        front = sorted((pts[j][1], pts[j][0]) for j in nondominated([(-a, c) for a, c in pts]))
        ax.plot([c / k for c, _ in front], [100 * a for _, a in front], ".-", color=col, label=f"{g} (front of all seeds)")
    e0 = 1 - pt["seed_accuracy"]
    ref = sorted(pt["reference_front"], key=lambda f: f[1])
    ax.plot([f[1] for f in ref], [100 * (1 - f[0] * e0) for f in ref], "k--", lw=1, label="reference front (union)")
    ax.scatter([1], [100 * pt["seed_accuracy"]], c="k", marker="*", s=120, label="seed", zorder=3)
    log = log_x_if_spread(ax, [c / k for pts in groups.values() for _, c in pts])
    ax.set(xlabel=f"{pt['metric']} / seed's{log}",
           ylabel="accuracy (%)", title="Pareto fronts per configuration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


CHECKPOINTS = (5, 10)  # best accuracy after these many iterations too, where N is larger


def table_ranks(tab: dict, budget: float | None):
    """(the table's mean accuracies inside the FLOPs budget, best first; rank_of(accuracy as a fraction): 1 + the
    number of those configurations strictly better), the rank every benchmark-mode compare reports."""
    import bisect

    means = sorted((v["mean"] for v in tab.values() if budget is None or v["flops"] <= budget), reverse=True)
    neg = [-m for m in means]
    return means, lambda acc: bisect.bisect_left(neg, -(100 * acc) - 1e-6) + 1


def benchmark(runs: list[tuple], n: int) -> dict | None:
    """The table every run looked up (None when the runs did not all use one table): its size, optimum,
    rank function and uniform sampling's exact median and mean best-of-n rank, all among the configurations
    inside the runs' common FLOPs budget when they have one (see the module docstring)."""
    from corpus.table import expected_best_rank, load_table, table_path

    spaces = {r[1].evaluator_spec.table_space for r in runs}
    if len(spaces) != 1 or next(iter(spaces)) is None:
        return None
    budgets = list(dict.fromkeys(r[1].max_flops for r in runs))
    if len(budgets) > 1:
        (d1, b1), (d2, b2) = [next((r[0], b) for r in runs if r[1].max_flops == b) for b in budgets[:2]]
        text = lambda b: "none" if b is None else f"{b:g}"  # noqa: E731
        raise SearchError(f"the runs have different FLOPs budgets: {d1} --max-flops {text(b1)}, {d2} --max-flops "
                          f"{text(b2)}; compare runs of one budget")
    budget = budgets[0]
    space = next(iter(spaces))
    tab = load_table(str(table_path(space, runs[0][1].benchmark_file)))
    means, rank_of = table_ranks(tab, budget)
    if not means:
        raise SearchError(f"no configuration of {space} is inside --max-flops {budget:.4g} (the table's FLOPs)")
    return {"space": space, "size": len(means), "table_size": len(tab), "max_flops": budget,
            "optimum": means[0] / 100, "rank_of": rank_of,
            "uniform_median_rank": expected_median_best_rank(len(means), n),
            "uniform_mean_rank": expected_best_rank(len(means), n),
            "random_expected_rank": expected_best_rank(len(means), n)}  # the old key of the mean, kept


def within(iters: list[dict], budget: float | None) -> list[dict]:
    """iters with the candidates over a FLOPs budget (the table's count) marked as not counting for the best."""
    if budget is None:
        return iters
    return [r if r["status"] != "ok" or ((r["metrics"] or {}).get("flops") or float("inf")) <= budget
            else {**r, "status": "over_budget"} for r in iters]


def precheck_ratio(runs: list[tuple], n: int) -> float | None:
    """Median pre-check FLOPs / table FLOPs over the runs' evaluated candidates (None without pre-checks):
    in benchmark mode the search holds --max-flops against the pre-check's count."""
    ratios = [m["pre_flops"] / m["flops"] for r in runs for it in r[2][:n] if it["status"] == "ok"
              for m in [it["metrics"] or {}] if m.get("pre_flops") and m.get("flops")]
    return statistics.median(ratios) if ratios else None


def run_stats(cfg, iters: list[dict], seed: dict, n: int, thr: float, bench: dict | None) -> dict:
    """One run over its first n iterations: rates, best-so-far curve and what follows from it."""
    from search.report import answer_stats

    budget = bench["max_flops"] if bench else None
    seed_acc = seed.get("accuracy") or 0.0
    if budget is not None and (seed.get("flops") is None or seed["flops"] > budget):
        seed_acc = 0.0  # a seed over the budget is not an answer inside it
    curve = best_curve(within(iters[:n], budget), seed_acc)
    ans = answer_stats(cfg, iters[:n])
    return {"rng_seed": cfg.rng_seed, "format": ans["format"], "curve": curve, "best": curve[-1],
            "at": {k: curve[k - 1] for k in CHECKPOINTS if k < n}, "auc": sum(curve) / n,
            "reach": next((i + 1 for i, v in enumerate(curve) if v >= thr), None),
            "valid": sum(r["status"] == "ok" for r in iters[:n]) / n, "well_formed": ans["well_formed"],
            "repeat": ans["repeat"], "llm_seconds": ans["llm_seconds"]}


def measured_on(runs, n: int) -> dict[str, list[str]]:
    """{device setting (the profiler's `device_name`, e.g. "cpu: AMD EPYC (2 threads)"): [configuration
    labels whose runs have measurements from it]} over the first n iterations of trained runs."""
    out: dict[str, set[str]] = {}
    for _, cfg, iters, _, _ in runs:
        for it in iters[:n]:
            name = (it.get("metrics") or {}).get("device_name")
            if name:
                out.setdefault(name, set()).add(cfg.group)
    return {k: sorted(v) for k, v in sorted(out.items())}


def non_llm(cfg) -> bool:
    """A run whose proposals come from no language model: a stored `strategy` that neither generates nor scores
    with one (not llm, not scored), or `--llm random` (old runs)."""
    from search.strategies.traits import takes_scorer, uses_llm

    strategy = getattr(cfg, "strategy", "llm")
    if getattr(cfg, "scorer", None) or takes_scorer(strategy):
        return False
    return not uses_llm(strategy) or cfg.llm == "random"


def pick_baselines(groups: dict, runs: list[tuple], baseline: str | None, good) -> tuple[dict, dict, list[str]]:
    """({group: the baselines it is tested against}, {group: the baseline of its superiority and
    p_vs_baseline, None when it has none}, the baselines in order). `--baseline a,b`: every group against
    each; `best` (a keyword, even where a group is named so): every group against the strongest non-LLM
    group (the highest median of `good`), and that one against the next strongest."""
    if baseline == "best":
        free = [g for g in groups if all(non_llm(r[1]) for r in runs if r[1].group == g)]
        if not free:
            raise SearchError(f"--baseline best: no non-LLM configuration among {', '.join(groups)} "
                              "(a stored strategy other than llm, or --llm random)")
        free.sort(key=lambda g: -statistics.median(good(r) for r in groups[g]))  # stable: ties keep the run order
        base_of = {g: next((b for b in free if b != g), None) for g in groups}
        return {g: [b] if b else [] for g, b in base_of.items()}, base_of, free[:1]
    bases = [b for b in (baseline or "").split(",") if b] or ["random" if "random" in groups else next(iter(groups))]
    unknown = [b for b in bases if b not in groups]
    if unknown:
        raise SearchError(f"--baseline {','.join(unknown)}: no such configuration (have {', '.join(groups)}; "
                          "or `best`)")
    return {g: list(bases) for g in groups}, {g: bases[0] for g in groups}, bases


def _rank(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def compare(dirs: list[str], out: str | None = None, threshold: float | None = None, baseline: str | None = None,
            hw_metric: str | None = None, budgets=None) -> str:
    from search.runner import load_extras

    runs = []
    for d in dirs:
        if not (Path(d) / "run.sqlite").is_file():  # e.g. an earlier compare's --out matched by runs/cbm-*
            print(f"note: skipping {d}: not a search run (no run.sqlite)", file=sys.stderr)
            continue
        cfg, iters, seed = load_run(d)
        if iters:
            runs.append((d, cfg, iters, seed, load_extras(d)["bin_edges"]))
    if not runs:
        raise SearchError("no runs with iterations to compare")
    n = min(len(r[2]) for r in runs)
    thr = threshold if threshold is not None else max(r[3].get("accuracy") or 0 for r in runs) + 0.01
    bench = benchmark(runs, n)
    groups: dict[str, list[dict]] = {}
    for d, cfg, iters, seed, _ in runs:
        groups.setdefault(cfg.group, []).append({"dir": d, **run_stats(cfg, iters, seed, n, thr, bench)})
    # the tested score per run: the best-of-N rank in benchmark mode (lower is better), else the best accuracy;
    # `good` is the same with higher = better, for the effect size and for ranking groups
    score = (lambda r: bench["rank_of"](r["best"])) if bench else (lambda r: r["best"])
    good = (lambda r: -score(r)) if bench else score
    vs, base_of, bases = pick_baselines(groups, runs, baseline, good)
    base = bases[0]
    pair_of = lambda g, b: tuple(sorted((g, b), key=list(groups).index))  # noqa: E731
    # the Holm family: each pair of groups tested in this compare, once (a vs b and b vs a are one test)
    pairs = list(dict.fromkeys(pair_of(g, b) for g, bs in vs.items() for b in bs if b != g))
    raw = {pr: permutation_p([score(r) for r in groups[pr[0]]], [score(r) for r in groups[pr[1]]]) for pr in pairs}
    adj = dict(zip(raw, holm(list(raw.values()))))
    checks = [k for k in CHECKPOINTS if k < n]
    fam = sum(p is not None for p in raw.values())
    how = ("exact permutation p" if all(is_exact(len(groups[a]), len(groups[b])) for a, b in pairs) else
           "permutation p (exact, or 100,000 seeded relabellings for pairs of more than about 50 + 50 runs)")
    against = ("the strongest non-LLM configuration of the runs (`--baseline best`; the strongest is tested against "
               "the next strongest)" if baseline == "best" else f"baselines = {', '.join(bases)}")
    lines = [f"Runs compared at N = {n} iterations each; threshold for 'reach' = {100 * thr:.2f}% accuracy; "
             f"{against}: Mann-Whitney U on best after N{', as ranks' if bench else ''}, {how} "
             f"(two-sided); Holm p: adjusted over the K = {fam} comparisons of this compare; P(superior): a run "
             f"of the row better than a run of {'its baseline' if baseline == 'best' else base} (+ half the ties; "
             "> 0.5: the row better); medians with 95% percentile-bootstrap intervals [lo, hi]", ""]
    settings = measured_on(runs, n)
    if len(settings) > 1:  # a thread count or device changes what a trained network measures
        lines += [f"note: these runs were measured on {len(settings)} device settings ("
                  + "; ".join(f"{k}: {', '.join(v)}" for k, v in settings.items())
                  + "): thread count and device change measured accuracy and latency.", ""]
    if bench:
        m = bench["size"]
        med_u, mean_u = bench["uniform_median_rank"], bench["uniform_mean_rank"]
        if bench["max_flops"] is not None:
            lines += [f"FLOPs budget {bench['max_flops']:.4g} (the table's count: conv + linear multiply-adds at "
                      f"16x16): {m:,} of {bench['table_size']:,} configurations inside; ranks, optimum and uniform "
                      f"sampling's ranks are among those, and a seed over the budget does not count as a best.", ""]
            ratio = precheck_ratio(runs, n)
            if ratio is not None and abs(ratio - 1) > 0.01:
                lines += [f"note: these runs held --max-flops against the pre-check's FLOPs (32x32 input, median "
                          f"{ratio:.2f}x the table's count), not against the table's count used here.", ""]
        lines += [f"Benchmark {bench['space']}: {m:,} configurations, "
                  f"{'optimum inside the budget' if bench['max_flops'] is not None else 'global optimum'} "
                  f"{100 * bench['optimum']:.2f}%; uniform sampling's exact best-of-{n} rank ({n} draws without "
                  f"replacement from the {m:,}): median {med_u} (top {100 * med_u / m:.2f}%), mean {mean_u:.1f} "
                  f"(top {100 * mean_u / m:.2f}%)", ""]
    if baseline == "best":
        tests = ["baseline", "p vs baseline", "Holm p", "P(superior) vs baseline"]
    else:
        tests = [h for b in bases for h in (f"p vs {b}", f"Holm p vs {b}")] + [f"P(superior) vs {base}"]
    head = (["configuration", "runs", "format", "valid rate %", "well-formed %", "repeat rate %", "LLM s / proposal"]
            + [f"best acc after {k} %" for k in checks] + [f"best acc after N={n} %"]
            + (["median best rank [95% CI]", "median percentile", "ranks"] if bench else
               ["median best % [95% CI]"])
            + ["AUC best-so-far %"] + ([] if bench else ["runs reaching", "mean its to reach"]) + tests)
    lines += ["| " + " | ".join(head) + " |",
              "|" + "".join("---|" if h in ("configuration", "format", "ranks", "baseline") else "---:|" for h in head)]
    fmt_p = lambda p: "—" if p is None else f"{p:.3g}"  # noqa: E731
    table = {}
    for g, rs in groups.items():
        best = [r["best"] for r in rs]
        reach = [r["reach"] for r in rs if r["reach"] is not None]
        p_vs = {b: None if g == b else raw[pair_of(g, b)] for b in vs[g]}
        p_holm = {b: None if g == b else adj[pair_of(g, b)] for b in vs[g]}
        sup = {b: None if g == b else superiority([good(r) for r in rs], [good(r) for r in groups[b]]) for b in vs[g]}
        sc = [score(r) for r in rs]
        med, ci = statistics.median(sc), bootstrap_median_ci(sc)
        formats = sorted({r["format"] or "-" for r in rs})
        llm_s = [r["llm_seconds"] for r in rs]
        table[g] = {"runs": len(rs), "format": "/".join(formats), "valid": [r["valid"] for r in rs],
                    "well_formed": [r["well_formed"] for r in rs], "repeat": [r["repeat"] for r in rs],
                    "llm_seconds": llm_s, "best": best, "best_at": {k: [r["at"][k] for r in rs] for k in checks},
                    "auc": [r["auc"] for r in rs], "reach": [r["reach"] for r in rs],
                    "baseline": base_of[g], "p_vs": p_vs, "p_vs_baseline": p_vs.get(base_of[g]),
                    "p_holm_vs": p_holm, "superiority_vs": sup,
                    "median_ci": {"of": "rank" if bench else "accuracy", "median": med, "lo": ci[0], "hi": ci[1],
                                  "level": 0.95}}
        cells = [g, str(len(rs)), table[g]["format"], _fmt(table[g]["valid"], True, 1),
                 _fmt(table[g]["well_formed"], True, 1), _fmt(table[g]["repeat"], True, 1),
                 "-" if all(v is None for v in llm_s) else _fmt(llm_s, digits=1)]
        cells += [_fmt(table[g]["best_at"][k], True) for k in checks] + [_fmt(best, True)]
        if bench:
            table[g]["ranks"] = sc
            cells += [f"{_rank(med)} [{_rank(ci[0])}, {_rank(ci[1])}]", f"{100 * med / bench['size']:.2f}%",
                      ",".join(map(str, sorted(sc)))]
        else:
            cells.append(f"{100 * med:.2f} [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]")
        cells.append(_fmt(table[g]["auc"], True))
        if not bench:
            cells += [f"{len(reach)}/{len(rs)}", f"{statistics.mean(reach) if reach else float('nan'):.1f}"]
        if baseline == "best":
            b = base_of[g]
            cells += ["—"] * 4 if b is None else [b, fmt_p(p_vs[b]), fmt_p(p_holm[b]), f"{sup[b]:.2f}"]
        else:
            cells += [c for b in bases for c in (fmt_p(p_vs[b]), fmt_p(p_holm[b]))]
            cells.append("—" if sup[base] is None else f"{sup[base]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if bench:  # the reference row: what the table alone says of n uniform draws (exact, no runs)
        cells = ["uniform sampling (exact, from the table)"] + ["—"] * (len(head) - 1)
        at = head.index("median best rank [95% CI]")
        cells[at:at + 3] = [f"{med_u}", f"{100 * med_u / m:.2f}%", f"mean {mean_u:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    dest = Path(out) if out else Path(runs[0][0]).resolve().parent
    dest.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for g, rs in groups.items():
        xs = list(range(1, n + 1))
        curves = [[100 * v for v in r["curve"]] for r in rs]
        mean = [statistics.mean(c[i] for c in curves) for i in range(n)]
        ax.plot(xs, mean, ".-", label=f"{g} ({len(rs)} runs)")
        ax.fill_between(xs, [min(c[i] for c in curves) for i in range(n)],
                        [max(c[i] for c in curves) for i in range(n)], alpha=0.2)
    where = ""
    if bench:  # which benchmark (and budget) the curves are of: four cells' plots look alike otherwise
        where = bench["space"] + (f", FLOPs <= {bench['max_flops']:.3g}" if bench.get("max_flops") else "") + ": "
    elif len({(r[1].dataset, Path(str(r[1].seed)).name) for r in runs}) == 1:  # trained: the task and seed
        where = f"{runs[0][1].dataset}, seed {Path(str(runs[0][1].seed)).name}: "
    ax.set(xlabel="iteration", ylabel="best accuracy so far (%)", title=f"{where}search curves: mean, min-max band")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(dest / "compare_curves.png")
    plt.close(fig)
    metric = hw_metric or next((r[1].hw_metric for r in runs if r[1].objective == "pareto"), "latency_ms")
    pt = pareto_table(runs, n, bases, metric, tuple(budgets or (0.5, 0.75, 1.0)))
    pics = "![curves](compare_curves.png)"
    if pt:
        lines += pareto_lines(pt)
        plot_fronts(pt, dest / "compare_pareto.png")
        pics += "\n\n![fronts](compare_pareto.png)"
    text = "\n".join(lines)
    (dest / "compare.md").write_text(text + "\n\n" + pics + "\n")
    extra = {k: v for k, v in (bench or {}).items() if k != "rank_of"}
    (dest / "compare.json").write_text(json.dumps({"n": n, "threshold": thr, "baseline": base, "baselines": bases,
                                                   "baseline_mode": "best" if baseline == "best" else "named",
                                                   "test": "Mann-Whitney U, exact permutation p, two-sided",
                                                   "holm_family": [list(pr) for pr in pairs], "groups": table,
                                                   "benchmark": extra or None, "pareto": pt},
                                                  indent=1))
    return text + f"\n\nwrote {dest / 'compare.md'}, {dest / 'compare.json'}, {dest / 'compare_curves.png'}" + \
        (f", {dest / 'compare_pareto.png'}" if pt else "")
