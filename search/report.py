"""`python -m search report DIR` and `search export DIR`: plots, a markdown summary, a dataset.

    python -m search report runs/pareto-0     # report.md, report.png, and pareto.png when costs were measured

The header of report.md sums up the answers (`answer_stats`): format, well-formed rate (status ok,
duplicate or constraint: a network of the space), repeat rate (duplicate), repaired count and answers
asked per proposal.

The multi-objective section (any run whose seed has the hw metric): the accuracy-cost plane with
the final Pareto archive highlighted, the hypervolume after each iteration (normalised by the run's
own seed, reference point `search.pareto.HV_REF`), per-bin coverage, and every knowledge-base version.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from mutator.results import clean_text, finite
from search.runner import load_extras, load_run


def log_x_if_spread(ax, xs, factor: float = 8.0) -> str:
    """Log-scale the x axis when the positive costs span more than `factor` (one far-off candidate
    would squeeze everything else into a line); returns ' (log scale)' or ''."""
    xs = [x for x in xs if x and x > 0]
    if xs and max(xs) / min(xs) > factor:
        ax.set_xscale("log")
        return " (log scale)"
    return ""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def best_curve(iters: list[dict], seed_acc: float) -> list[float]:
    """Best accuracy after each iteration (the seed counts as the starting best)."""
    out, best = [], seed_acc
    for rec in iters:
        acc = finite((rec["metrics"] or {}).get("accuracy"))
        if rec["status"] == "ok" and acc is not None:
            best = max(best, acc)
        out.append(best)
    return out


WELL_FORMED = ("ok", "duplicate", "constraint")  # a network of the space: evaluated, already tried, or over a limit


def answer_stats(cfg, iters: list[dict]) -> dict:
    """How a run's proposals went, over `iters`: answer format (None for a strategy without an LLM), well-formed
    rate (status in WELL_FORMED), repeat rate (status duplicate), repaired count (diff/code answers
    fixed by the shape repair), mean answers asked per proposal (`extra.samples`, stores from before
    it: None) and mean LLM seconds per proposal (the stored `llm_seconds`: the proposal step, pre-check
    included where one runs, over `extra.proposals` proposals per iteration; None for random)."""
    n = len(iters)
    extras = [r["extra"] or {} for r in iters]
    samples = [e["samples"] for e in extras if e.get("samples") is not None]
    timed = [(r["llm_seconds"], e.get("proposals") or 1) for r, e in zip(iters, extras) if r["llm_seconds"] is not None]
    llm = cfg.uses_llm
    return {"format": cfg.answer_format if llm else None,
            "well_formed": sum(r["status"] in WELL_FORMED for r in iters) / n if n else None,
            "repeat": sum(r["status"] == "duplicate" for r in iters) / n if n else None,
            "repaired": sum(bool(e.get("repaired")) for e in extras),
            "samples": sum(samples) / len(samples) if samples else None,
            "llm_seconds": sum(s for s, _ in timed) / sum(k for _, k in timed) if llm and timed else None}


def _markdown_safe(text: str) -> str:
    """Text shown as text: HTML (`<script>`, `<img>`) escaped, no image link (`![`)."""
    return html.escape(text, quote=False).replace("![", "!&#91;")


def clip(text, width: int = 90) -> str:
    """One table cell: `|` and newlines neutralised, cut at a word boundary with an ellipsis past `width`,
    valid UTF-8, HTML escaped (a candidate chooses its error text, an LLM its answer)."""
    text = clean_text(text, 10 ** 6).replace("|", "/")
    if len(text) <= width:
        return _markdown_safe(text)
    cut = text[:width]
    if " " in cut and not text[width].isspace():
        cut = cut[:cut.rfind(" ")]
    return _markdown_safe(cut.rstrip(" ,;:.-") + "…")


def searched(cfg) -> tuple[str, str]:
    """(short, long) description of what a run searched: a benchmark space looked up in its table, or a
    seed trained on a data set. In benchmark mode the default seed is the space's own (as `search run`
    does), never the data-set seed the config still names."""
    space = cfg.evaluator_spec.table_space
    if space:
        from corpus.spaces import SPACES
        from search.loop import SearchConfig

        seed = SPACES.get(space, {}).get("seed", cfg.seed) if cfg.seed == SearchConfig().seed else cfg.seed
        acc = "one training seed's accuracy" if cfg.table_noise else "mean accuracy of 3 seeds"
        return (f"space {space} (table), seed {seed}",
                f"space `{space}`: Channel-Bench-Macro table lookups ({acc}, CIFAR-10), seed `{seed}`")
    return (f"seed {cfg.seed} on {cfg.dataset}",
            f"seed `{cfg.seed}` on {cfg.dataset} (train limit {cfg.train_limit}, {cfg.epochs} epoch"
            f"{f', accuracy the mean of {cfg.proxy_seeds} rng seeds' if cfg.proxy_seeds > 1 else ''})")


def front_with_seed(pts: list[tuple], seed_point: tuple | None) -> list[tuple]:
    """The (cost, accuracy) Pareto front of the candidates and the seed together, by cost."""
    from corpus.show import pareto_front

    allp = list(pts) + ([seed_point] if seed_point and None not in seed_point else [])
    return sorted(allp[i] for i in pareto_front(allp))


def report(folder: str) -> str:
    cfg, iters, seed = load_run(folder)
    out = Path(folder)
    plt = _plt()
    n = len(iters)
    seed_acc = seed.get("accuracy") or 0.0
    curve = best_curve(iters, seed_acc)
    counts: dict[str, int] = {}
    for r in iters:
        counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), dpi=110)
    axes[0].plot(range(0, n + 1), [100 * seed_acc] + [100 * c for c in curve], "b.-")
    axes[0].set(xlabel="iteration", ylabel="best accuracy so far (%)", title="best so far")
    valid = [sum(r["status"] == "ok" for r in iters[:i + 1]) / (i + 1) for i in range(n)]
    has_code = [sum(r["code"] is not None for r in iters[:i + 1]) / (i + 1) for i in range(n)]
    axes[1].plot(range(1, n + 1), [100 * v for v in valid], "g.-", label="valid (profiled ok)")
    axes[1].plot(range(1, n + 1), [100 * v for v in has_code], "c.--", label="has code")
    axes[1].set(xlabel="iteration", ylabel="% of iterations so far", title="valid-code rate", ylim=(-5, 105))
    axes[1].legend()
    pts = [((r["metrics"] or {}).get("flops"), (r["metrics"] or {}).get("accuracy")) for r in iters if r["status"] == "ok"]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if seed.get("flops"):
        axes[2].scatter([seed["flops"] / 1e6], [100 * seed_acc], c="k", marker="*", s=120, label="seed")
    if pts:
        axes[2].scatter([p[0] / 1e6 for p in pts], [100 * p[1] for p in pts], s=16, alpha=0.7, label="candidates")
        fp = front_with_seed(pts, (seed.get("flops"), seed.get("accuracy")))
        axes[2].plot([p[0] / 1e6 for p in fp], [100 * p[1] for p in fp], "r.-", label="Pareto front")
    log = log_x_if_spread(axes[2], [p[0] / 1e6 for p in pts] + [(seed.get("flops") or 0) / 1e6])
    axes[2].set(xlabel=f"MFLOPs per sample{log}", ylabel="accuracy (%)", title="accuracy vs FLOPs")
    axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    short, long = searched(cfg)
    fig.suptitle(f"{cfg.group}: {short}, rng {cfg.rng_seed}")
    fig.tight_layout()
    fig.savefig(out / "report.png")
    plt.close(fig)
    ans = answer_stats(cfg, iters)
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    asked = "n/a" if ans["samples"] is None else f"{ans['samples']:.2f}"
    llm_s = [r["llm_seconds"] or 0 for r in iters]
    prof_s = [r["profile_seconds"] or 0 for r in iters]
    lines = [f"# Search run {folder}", "",
             f"- configuration: `{cfg.group}` (llm `{cfg.llm}`, adapter `{cfg.adapter}`, improver `{cfg.improver_llm or 'same'}`{' at ' + cfg.improver_url if cfg.improver_url else ''})",
             f"- {long}, rng seed {cfg.rng_seed}, memory K={cfg.memory}",
             f"- iterations: {n}; statuses: {', '.join(f'{clip(k, 40)} {v}' for k, v in sorted(counts.items()))}",
             f"- answers: format {ans['format'] or '- (strategy ' + cfg.strategy + ', no LLM)'}; well-formed {pct(ans['well_formed'])} "
             f"({', '.join(WELL_FORMED)}); repeats {pct(ans['repeat'])} (duplicate); repaired {ans['repaired']}; "
             f"answers asked per proposal {asked}",
             f"- seed accuracy {100 * seed_acc:.2f}%, best {100 * (curve[-1] if curve else seed_acc):.2f}%",
             f"- mean seconds per iteration: LLM {sum(llm_s) / max(1, n):.1f}, profiling {sum(prof_s) / max(1, n):.1f}",
             "", "![report](report.png)", "",
             "| it | status | acc % | MFLOPs | problem | modification tried | outcome |",
             "|---:|---|---:|---:|---|---|---|"]
    for r in iters:
        m = r["metrics"] or {}
        acc, fl = finite(m.get("accuracy")), finite(m.get("flops"))
        acc = f"{100 * acc:.2f}" if acc is not None else ""
        fl = f"{fl / 1e6:.3f}" if fl is not None else ""
        lines.append(f"| {r['it']} | {clip(r['status'], 40)} | {acc} | {fl} | {clip(r['problem'])} "
                     f"| {clip(r['instruction'])} | {clip(r['outcome'])} |")
    lines += pareto_section(folder, cfg, iters, seed)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    extra = " and pareto.png" if (out / "pareto.png").exists() else ""
    return f"wrote {out / 'report.md'} and {out / 'report.png'}{extra}"


def pareto_section(folder: str, cfg, iters: list[dict], seed: dict) -> list[str]:
    """Markdown lines (and OUT/pareto.png) of the multi-objective view of one run; [] without costs."""
    from search.pareto import (HV_REF, UNITS, bin_text, cost_of, coverage, hv_curve, hypervolume, nondominated,
                               normalise, run_points)

    metric = cfg.hw_metric
    seed_cost = cost_of(seed, metric)
    if seed_cost is None or seed.get("accuracy") is None:
        return []
    ext = load_extras(folder)
    edges = ext["bin_edges"] or []
    pts = run_points(iters, seed, metric)
    F = normalise(pts, seed["accuracy"], seed_cost)
    front = nondominated(F.tolist())
    hv = hv_curve(iters, seed, metric, seed["accuracy"], seed_cost)
    scale, unit = (1e6, "M" + UNITS[metric]) if metric != "latency_ms" else (1.0, "ms")
    plt = _plt()
    fig, axes = plt.subplots(1, 3 if edges else 2, figsize=(15 if edges else 10, 4), dpi=110)
    ax = axes[0]
    ax.scatter([c / scale for _, c in pts[1:]], [100 * a for a, _ in pts[1:]], s=16, c="0.6", label="candidates")
    fp = sorted((pts[i][1], pts[i][0]) for i in front)
    ax.plot([c / scale for c, _ in fp], [100 * a for _, a in fp], "r.-", ms=9, label="Pareto archive")
    ax.scatter([seed_cost / scale], [100 * seed["accuracy"]], c="k", marker="*", s=120, label="seed", zorder=3)
    for e in edges if cfg.partition_metric == metric else []:
        ax.axvline(e / scale, color="b", alpha=0.25, ls="--")
    log = log_x_if_spread(ax, [c / scale for _, c in pts])
    ax.set(xlabel=f"{metric} ({unit}){log}", ylabel="accuracy (%)", title="accuracy vs cost (bins dashed)")
    ax.legend()
    axes[1].plot(range(0, len(iters) + 1), [hypervolume(F[:1])] + hv, "m.-")
    axes[1].set(xlabel="iteration", ylabel="hypervolume", title=f"HV (ref {HV_REF}, seed = (1, 1))")
    cov = coverage(iters, cfg.partition_metric, edges) if edges else []
    if edges:
        xs = [c["bin"] + 1 for c in cov]
        axes[2].bar([x - 0.2 for x in xs], [c["targeted"] for c in cov], 0.4, label="targeted")
        axes[2].bar([x + 0.2 for x in xs], [c["landed"] for c in cov], 0.4, label="profiled in bin")
        axes[2].set(xlabel="complexity bin", ylabel="candidates", title="coverage per bin", xticks=xs)
        axes[2].legend()
    for a in axes:
        a.grid(alpha=0.3)
    where = f" on {cfg.latency_device}" if metric == "latency_ms" else ""
    fig.suptitle(f"{cfg.group}: objective {cfg.objective}, hw metric {metric}{where}")
    fig.tight_layout()
    fig.savefig(Path(folder) / "pareto.png")
    plt.close(fig)
    lines = ["", "## Multi-objective view", "",
             f"- hw metric `{metric}`{f' (pre-check on `{cfg.latency_device}` where measured)' if where else ''}; "
             "objectives normalised by "
             f"the seed: error / seed error, cost / seed cost ({seed_cost:.4g} {UNITS[metric]}); HV reference point "
             f"{HV_REF} (seed alone: HV = 1)",
             f"- final HV {hv[-1] if hv else 1.0:.4f}; Pareto archive: {len(front)} networks "
             f"(of {len(pts)} incl. the seed)", "", "![pareto](pareto.png)", "",
             f"| archive member | accuracy % | {metric} |", "|---|---:|---:|"]
    for c, a in fp:
        lines.append(f"| {'seed' if (a, c) == pts[0] else ''} | {100 * a:.2f} | {c:.4g} |")
    if edges:
        lines += ["", f"Coverage per complexity bin ({cfg.partition_metric}):", "",
                  "| bin | range | targeted | profiled in bin | best acc % in bin |", "|---:|---|---:|---:|---:|"]
        for c in cov:
            best = f"{100 * c['best']:.2f}" if c["best"] is not None else "—"
            lines.append(f"| {c['bin'] + 1} | {bin_text(c['bin'], edges, cfg.partition_metric)} | {c['targeted']} | "
                         f"{c['landed']} | {best} |")
    if ext["kb"]:
        lines += ["", "Knowledge base versions:", ""]
        for v in ext["kb"]:
            lines.append(f"- v{v['version']} (after iteration {v['after_it']}, {clip(v['source'], 40)}):")
            lines += [f"    - {clip(h, 400)}" for h in v["items"]]
    if ext["screened"]:
        n = sum(s["status"] == "screened" for s in ext["screened"])
        lines += ["", f"Screening: {len(ext['screened'])} proposals not trained: {n} screened out by the "
                  f"zero-cost vote, {len(ext['screened']) - n} failed the pre-check."]
    return lines


def export(folder: str, to: str | None = None) -> str:
    import datasets

    cfg, iters, seed = load_run(folder)
    from corpus.candidate import Candidate
    from search.loop import proposer_name

    rows = []
    for r in iters:
        m, x = r["metrics"] or {}, r["extra"] or {}
        rows.append({"it": r["it"], "status": r["status"], "error": r["error"], "code": r["code"],
                     "raw_answer": r["raw_answer"], "prompt": json.dumps(r["prompt"]) if r["prompt"] else None,
                     "problem": r["problem"], "instruction": r["instruction"], "outcome": r["outcome"],
                     "accuracy": m.get("accuracy"), "proxy_seeds": cfg.proxy_seeds, "accuracy_std": m.get("accuracy_std"),
                     "flops": m.get("flops"), "params": m.get("params"),
                     "latency_ms": m.get("latency_ms"), "llm_seconds": r["llm_seconds"],
                     "profile_seconds": r["profile_seconds"], "best_accuracy": r["best_accuracy"],
                     "configuration": cfg.group, "rng_seed": cfg.rng_seed,
                     # provenance: who proposed it, from which iteration's network (None: the best so far), which network
                     "proposer": x.get("proposer") or proposer_name(cfg), "parent_it": x.get("parent_it"),
                     "answer_format": x.get("answer_format"), "widths": x.get("answer_widths"),
                     "fingerprint": x.get("fingerprint") or (Candidate(code=r["code"]).fingerprint if r["code"] else None)})
    dest = Path(to) if to else Path(folder) / "dataset"
    datasets.disable_progress_bars()
    datasets.Dataset.from_list(rows).save_to_disk(str(dest))
    return str(dest)
