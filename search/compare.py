"""`python -m search compare DIR...`: runs grouped by configuration, with a significance test.

Per run: valid-candidate rate, best accuracy after N iterations (N = the fewest iterations of any
run compared, so every run gets the same budget), area under the best-so-far curve (its mean over
the N iterations), and iterations to reach a threshold (default: the best seed accuracy + 1 point).
Per group: mean, standard deviation and median over its runs (seeds). Each group is tested against
the baseline group (`random` if present, else the first) with a two-sided Mann-Whitney U test on
best-after-N (scipy). The curves are plotted as the group mean with a min-max band.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from search.loop import SearchError
from search.report import _plt, best_curve
from search.runner import load_run


def _fmt(vals, pct=False, digits=2):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    k = 100 if pct else 1
    mean = statistics.mean(vals) * k
    sd = statistics.stdev(vals) * k if len(vals) > 1 else 0.0
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def compare(dirs: list[str], out: str | None = None, threshold: float | None = None) -> str:
    from scipy.stats import mannwhitneyu

    runs = []
    for d in dirs:
        cfg, iters, seed = load_run(d)
        if iters:
            runs.append((d, cfg, iters, seed))
    if not runs:
        raise SearchError("no runs with iterations to compare")
    n = min(len(it) for _, _, it, _ in runs)
    thr = threshold if threshold is not None else max(s.get("accuracy") or 0 for *_, s in runs) + 0.01
    groups: dict[str, list[dict]] = {}
    for d, cfg, iters, seed in runs:
        curve = best_curve(iters[:n], seed.get("accuracy") or 0.0)
        reach = next((i + 1 for i, v in enumerate(curve) if v >= thr), None)
        groups.setdefault(cfg.group, []).append({
            "dir": d, "rng_seed": cfg.rng_seed, "curve": curve, "best": curve[-1],
            "valid": sum(r["status"] == "ok" for r in iters[:n]) / n,
            "auc": sum(curve) / n, "reach": reach})
    base = "random" if "random" in groups else next(iter(groups))
    spaces = {cfg.evaluator for _, cfg, _, _ in runs}
    bench = None
    if len(spaces) == 1 and next(iter(spaces)).startswith("table:"):
        from corpus.table import TableEvaluator, expected_best_rank, load_table, table_path

        space = next(iter(spaces)).split(":", 1)[1]
        tab = load_table(str(table_path(space, runs[0][1].benchmark_file)))
        means = sorted((v["mean"] for v in tab.values()), reverse=True)
        import bisect

        def rank_of(acc):  # 1 + number of configurations strictly better
            neg = [-m for m in means]
            return bisect.bisect_left(neg, -(100 * acc) - 1e-6) + 1

        bench = {"space": space, "size": len(means), "optimum": means[0] / 100, "rank_of": rank_of,
                 "random_expected_rank": expected_best_rank(len(means), n)}
    lines = [f"Runs compared at N = {n} iterations each; threshold for 'reach' = {100 * thr:.2f}% accuracy; "
             f"baseline = {base}", ""]
    if bench:
        m = bench["size"]
        lines += [f"Benchmark {bench['space']}: {m:,} configurations, global optimum {100 * bench['optimum']:.2f}%; "
                  f"random search's exact expected best-of-{n} rank: {bench['random_expected_rank']:.1f} "
                  f"(top {100 * bench['random_expected_rank'] / m:.2f}%)", "",
                  "| configuration | runs | valid rate % | best acc after N % | median best rank | median percentile | ranks | p vs baseline (Mann-Whitney U) |",
                  "|---|---:|---:|---:|---:|---:|---|---:|"]
    lines += [
             "| configuration | runs | valid rate % | best acc after N % | median best % | AUC best-so-far % | runs reaching | mean its to reach | p vs baseline (Mann-Whitney U) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"] if not bench else []
    table = {}
    for g, rs in groups.items():
        best = [r["best"] for r in rs]
        reach = [r["reach"] for r in rs if r["reach"] is not None]
        p = None
        if g != base and len(rs) > 0 and len(groups[base]) > 0:
            p = float(mannwhitneyu(best, [r["best"] for r in groups[base]], alternative="two-sided").pvalue)
        table[g] = {"runs": len(rs), "valid": [r["valid"] for r in rs], "best": best, "auc": [r["auc"] for r in rs],
                    "reach": [r["reach"] for r in rs], "p_vs_baseline": p}
        if bench:
            rk = [bench["rank_of"](b) for b in best]
            table[g]["ranks"] = rk
            if g != base and groups[base]:  # ranks: lower is better, so test them directly
                p = float(mannwhitneyu(rk, [bench["rank_of"](r["best"]) for r in groups[base]],
                                       alternative="two-sided").pvalue)
                table[g]["p_vs_baseline"] = p
            med = statistics.median(rk)
            lines.append(f"| {g} | {len(rs)} | {_fmt([r['valid'] for r in rs], True, 1)} | {_fmt(best, True)} | "
                         f"{med:.0f} | {100 * med / bench['size']:.2f}% | {','.join(map(str, sorted(rk)))} | "
                         f"{'—' if p is None else f'{p:.3g}'} |")
            continue
        lines.append(f"| {g} | {len(rs)} | {_fmt([r['valid'] for r in rs], True, 1)} | {_fmt(best, True)} | "
                     f"{100 * statistics.median(best):.2f} | {_fmt([r['auc'] for r in rs], True)} | "
                     f"{len(reach)}/{len(rs)} | {statistics.mean(reach) if reach else float('nan'):.1f} | "
                     f"{'—' if p is None else f'{p:.3g}'} |")
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
    ax.set(xlabel="iteration", ylabel="best accuracy so far (%)", title="search curves: mean, min-max band")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(dest / "compare_curves.png")
    plt.close(fig)
    text = "\n".join(lines)
    (dest / "compare.md").write_text(text + "\n\n![curves](compare_curves.png)\n")
    extra = {k: v for k, v in (bench or {}).items() if k != "rank_of"}
    (dest / "compare.json").write_text(json.dumps({"n": n, "threshold": thr, "baseline": base, "groups": table,
                                                   "benchmark": extra or None}, indent=1))
    return text + f"\n\nwrote {dest / 'compare.md'}, {dest / 'compare.json'}, {dest / 'compare_curves.png'}"
