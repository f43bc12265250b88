"""`python -m corpus show DIR`: status counts, metric ranges, best rows, accuracy-vs-FLOPs plot."""
from __future__ import annotations

from pathlib import Path

from corpus.build import CorpusError


def load_corpus(folder: str):
    import datasets

    p = Path(folder)
    if not p.is_dir():
        raise CorpusError(f"no such corpus folder: {folder}")
    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as exc:  # missing or damaged arrow/state files
        raise CorpusError(f"{folder} is not a readable corpus ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(ds, datasets.Dataset) or "status" not in ds.column_names:
        raise CorpusError(f"{folder} is not a nasforge corpus (no status column)")
    return ds


def dominates(a, b) -> bool:
    """a, b: objective vectors to minimise."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def nondominated(vectors) -> list[int]:
    """Indices of the non-dominated vectors (minimisation); of equal vectors the first is kept.
    The one Pareto-front rule of the project (corpus plots, search archive, report, compare)."""
    keep = []
    for i, v in enumerate(vectors):
        if any(dominates(w, v) or (tuple(w) == tuple(v) and j < i) for j, w in enumerate(vectors) if j != i):
            continue
        keep.append(i)
    return keep


def pareto_front(points):
    """Indices of (cost, accuracy) points no other point beats on both (lower cost, higher acc), by cost."""
    return sorted(nondominated([(c, -a) for c, a in points]), key=lambda i: (points[i][0], -points[i][1]))


def show(folder: str, plot: str | None = None) -> int:
    ds = load_corpus(folder)
    rows = ds.remove_columns([c for c in ("code",) if c in ds.column_names]).to_list()
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"{folder}: {len(rows)} rows ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    ok = [r for r in rows if r["status"] == "ok" and r["accuracy"] is not None]
    if not ok:
        print("no successfully profiled rows")
        return 0

    def rng(key, fmt):
        vals = [r[key] for r in ok if r[key] is not None]
        return f"{fmt(min(vals))} .. {fmt(max(vals))}" if vals else "n/a"

    print(f"  accuracy       {rng('accuracy', lambda v: f'{100 * v:.2f} %')}")
    print(f"  MFLOPs         {rng('flops', lambda v: f'{v / 1e6:.2f}')}")
    print(f"  params         {rng('params', lambda v: f'{v:,}')}")
    print(f"  latency b1 ms  {rng('latency_ms', lambda v: f'{v:.3f}')}")
    print(f"  train s        {rng('train_seconds', lambda v: f'{v:.1f}')}")
    print("best rows:")
    print(f"  {'id':<32} {'acc %':>7} {'MFLOPs':>9} {'params':>10} {'lat ms':>8}  widths")
    for r in sorted(ok, key=lambda r: -r["accuracy"])[:10]:
        fl = f"{r['flops'] / 1e6:.2f}" if r["flops"] is not None else "n/a"
        lat = f"{r['latency_ms']:.3f}" if r["latency_ms"] is not None else "n/a"
        params = f"{r['params']:,}" if r["params"] is not None else "n/a"
        print(f"  {r['id']:<32} {100 * r['accuracy']:>7.2f} {fl:>9} {params:>10} {lat:>8}  {r['widths']}")
    pts = [(r["flops"], r["accuracy"]) for r in ok if r["flops"] is not None]
    if pts:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        front = pareto_front(pts)
        fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
        ax.scatter([p[0] / 1e6 for p in pts], [100 * p[1] for p in pts], s=14, alpha=0.6, label="variants")
        fp = sorted(pts[i] for i in front)
        ax.plot([p[0] / 1e6 for p in fp], [100 * p[1] for p in fp], "r.-", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("MFLOPs per sample (fvcore, 1 multiply-add = 1 flop)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{Path(folder).name}: {len(pts)} networks")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = Path(plot) if plot else Path(folder) / "accuracy_vs_flops.png"
        fig.savefig(out)
        plt.close(fig)
        print(f"plot: {out}")
    return 0
