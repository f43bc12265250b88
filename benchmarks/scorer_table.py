"""Issue 29's searches against the committed baselines of the same cell (protocol: benchmarks/scorer.md):
the rank of the best network after 20 and after 5 evaluations per run, medians with bootstrap 95 %
intervals, and the protocol's exact permutation tests (Mann-Whitney U) with Holm over the tests printed.

    NASFORGE_CBM_DIR=path/to/channel-bench-macro python benchmarks/scorer_table.py --cell mobilenet \
        --runs tuned=headline/scorer/runs/scored-tuned-on-resnet-mobilenet-s* --runs frozen=...

`--runs NAME=GLOB`: the run folders of one configuration (any number of seeds; fewer than the protocol's 10
are marked partial). Baselines: benchmarks/headline/baselines/<cell>/compare.json (the baselines sweep's
committed compare; ranks after 5 from its best accuracy after 5, looked up in the table).
"""
from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.stats import bootstrap_median_ci, holm, permutation_p  # noqa: E402

SPACE = {"mobilenet": "cbm-mobilenet", "mobilenet-budget": "cbm-mobilenet",
         "resnet": "cbm-resnet", "resnet-budget": "cbm-resnet"}


def rank_of_accuracy(table: dict, rank: dict, acc: float) -> int:
    """The table rank of a best accuracy (a fraction, as runs store it)."""
    key = min(table, key=lambda k: abs(table[k]["mean"] / 100 - acc))
    return rank[key]


def run_ranks(folder: str, rank: dict) -> tuple[int, int] | None:
    from search.runner import load_run

    iters = load_run(folder)[1]
    keys = [(r["metrics"]["table_key"], r["metrics"]["accuracy"]) for r in iters
            if r.get("status") == "ok" and r.get("metrics", {}).get("table_key")]
    if len(iters) < 20 or not keys:
        return None
    best = lambda rows: min(rank[k] for k, _ in rows)  # noqa: E731
    first5 = [(r["metrics"]["table_key"], 0) for r in iters[:5]
              if r.get("status") == "ok" and r.get("metrics", {}).get("table_key")]
    return best(keys), (best(first5) if first5 else None)


def fmt(v: list[int]) -> str:
    if not v:
        return "–"
    ci = bootstrap_median_ci(v)
    return f"{statistics.median(v):g} [{ci[0]:g}, {ci[1]:g}]" if ci else f"{statistics.median(v):g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", required=True, choices=sorted(SPACE))
    ap.add_argument("--runs", action="append", default=[], help="NAME=GLOB of run folders")
    a = ap.parse_args()
    from corpus.table import load_table, ranks, table_path

    table = load_table(str(table_path(SPACE[a.cell])))
    rank = ranks(table)
    base = json.loads((ROOT / "benchmarks" / "headline" / "baselines" / a.cell / "compare.json").read_text())
    groups = {}
    for g, v in base["groups"].items():
        r20 = [int(x) for x in v["ranks"]]
        r5 = [rank_of_accuracy(table, rank, x) for x in v["best_at"]["5"]]
        groups[g] = (r20, r5)
    strongest = min(groups, key=lambda g: (statistics.median(groups[g][0]), statistics.fmean(groups[g][0])))
    mine = {}
    for spec in a.runs:
        name, _, pattern = spec.partition("=")
        got = [run_ranks(f, rank) for f in sorted(glob.glob(pattern))]
        got = [x for x in got if x is not None]
        mine[name] = ([x[0] for x in got], [x[1] for x in got])
    tests = []
    for name, (r20, r5) in mine.items():
        if not r20 or name == "frozen":  # the control is tested against, not tested (the protocol's families)
            continue
        tests.append((name, "random", 20, permutation_p(r20, groups["random"][0])))
        if "frozen" in mine and name != "frozen" and mine["frozen"][0]:
            tests.append((name, "frozen", 20, permutation_p(r20, mine["frozen"][0])))
        tests.append((name, strongest, 20, permutation_p(r20, groups[strongest][0])))
        tests.append((name, strongest, 5, permutation_p(r5, groups[strongest][1])))
    adj = holm([t[3] for t in tests])
    n_min = min((len(v[0]) for v in mine.values()), default=0)
    print(f"Cell `{a.cell}`: median rank of the best after 20 and after 5 evaluations [bootstrap 95 % interval]; "
          f"baselines from the committed sweep (10 seeds). Scorer runs: "
          + ", ".join(f"{k} {len(v[0])}" for k, v in mine.items())
          + (" seeds: **partial (the protocol has 10 per configuration); the tests below are not its decision.**"
             if n_min < 10 else " seeds."))
    print("\n| configuration | after 20 | after 5 | ranks after 20 (seed order) |\n|---|---:|---:|---|")
    for name, (r20, r5) in mine.items():
        print(f"| scored, {name} | {fmt(r20)} | {fmt(r5)} | {', '.join(map(str, r20))} |")
    for g, (r20, r5) in groups.items():
        print(f"| `{g}`{' (strongest)' if g == strongest else ''} | {fmt(r20)} | {fmt(r5)} | {', '.join(map(str, r20))} |")
    print("\n| test | evaluations | p (exact permutation, two-sided) | Holm over these |\n|---|---:|---:|---:|")
    for (name, ref, at, p), q in zip(tests, adj):
        print(f"| {name} vs {ref} | {at} | {p:.3g} | {q:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
