"""`python -m search report DIR` and `search export DIR`: plots, a markdown summary, a dataset."""
from __future__ import annotations

import json
from pathlib import Path

from search.runner import load_run


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def best_curve(iters: list[dict], seed_acc: float) -> list[float]:
    """Best accuracy after each iteration (the seed counts as the starting best)."""
    out, best = [], seed_acc
    for rec in iters:
        m = rec["metrics"] or {}
        if rec["status"] == "ok" and m.get("accuracy") is not None:
            best = max(best, m["accuracy"])
        out.append(best)
    return out


def report(folder: str) -> str:
    from corpus.show import pareto_front

    cfg, iters, seed = load_run(folder)
    out = Path(folder)
    plt = _plt()
    n = len(iters)
    seed_acc = seed.get("accuracy") or 0.0
    curve = best_curve(iters, seed_acc)
    counts: dict[str, int] = {}
    for r in iters:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
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
        fp = sorted(pts[i] for i in pareto_front(pts))
        axes[2].plot([p[0] / 1e6 for p in fp], [100 * p[1] for p in fp], "r.-", label="Pareto front")
    axes[2].set(xlabel="MFLOPs per sample", ylabel="accuracy (%)", title="accuracy vs FLOPs")
    axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{cfg.group} on {cfg.dataset}, seed {cfg.seed}, rng {cfg.rng_seed}")
    fig.tight_layout()
    fig.savefig(out / "report.png")
    plt.close(fig)
    llm_s = [r["llm_seconds"] or 0 for r in iters]
    prof_s = [r["profile_seconds"] or 0 for r in iters]
    lines = [f"# Search run {folder}", "",
             f"- configuration: `{cfg.group}` (llm `{cfg.llm}`, adapter `{cfg.adapter}`, improver `{cfg.improver_llm or 'same'}`)",
             f"- seed `{cfg.seed}` on {cfg.dataset} (train limit {cfg.train_limit}, {cfg.epochs} epoch), rng seed {cfg.rng_seed}, memory K={cfg.memory}",
             f"- iterations: {n}; statuses: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}",
             f"- seed accuracy {100 * seed_acc:.2f}%, best {100 * (curve[-1] if curve else seed_acc):.2f}%",
             f"- mean seconds per iteration: LLM {sum(llm_s) / max(1, n):.1f}, profiling {sum(prof_s) / max(1, n):.1f}",
             "", "![report](report.png)", "",
             "| it | status | acc % | MFLOPs | problem | modification tried | outcome |",
             "|---:|---|---:|---:|---|---|---|"]
    for r in iters:
        m = r["metrics"] or {}
        acc = f"{100 * m['accuracy']:.2f}" if m.get("accuracy") is not None else ""
        fl = f"{m['flops'] / 1e6:.3f}" if m.get("flops") is not None else ""
        cell = lambda s: (s or "").replace("|", "/").replace("\n", " ")[:90]  # noqa: E731
        lines.append(f"| {r['it']} | {r['status']} | {acc} | {fl} | {cell(r['problem'])} | {cell(r['instruction'])} | {cell(r['outcome'])} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return f"wrote {out / 'report.md'} and {out / 'report.png'}"


def export(folder: str, to: str | None = None) -> str:
    import datasets

    cfg, iters, seed = load_run(folder)
    rows = []
    for r in iters:
        m = r["metrics"] or {}
        rows.append({"it": r["it"], "status": r["status"], "error": r["error"], "code": r["code"],
                     "raw_answer": r["raw_answer"], "prompt": json.dumps(r["prompt"]) if r["prompt"] else None,
                     "problem": r["problem"], "instruction": r["instruction"], "outcome": r["outcome"],
                     "accuracy": m.get("accuracy"), "flops": m.get("flops"), "params": m.get("params"),
                     "latency_ms": m.get("latency_ms"), "llm_seconds": r["llm_seconds"],
                     "profile_seconds": r["profile_seconds"], "best_accuracy": r["best_accuracy"],
                     "configuration": cfg.group, "rng_seed": cfg.rng_seed})
    dest = Path(to) if to else Path(folder) / "dataset"
    datasets.disable_progress_bars()
    datasets.Dataset.from_list(rows).save_to_disk(str(dest))
    return str(dest)
