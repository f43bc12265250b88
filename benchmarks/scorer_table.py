"""Issue 29's searches against the committed baselines of the same cell (protocol: benchmarks/scorer.md):
the rank of the best network after 20 and after 5 evaluations per run, medians with bootstrap 95 %
intervals, and the protocol's exact permutation tests (Mann-Whitney U) with Holm over the tests printed.

    NASFORGE_CBM_DIR=path/to/channel-bench-macro python benchmarks/scorer_table.py --cell mobilenet \
        --runs tuned=headline/scorer/runs/scored-tuned-on-resnet-mobilenet-s* --runs frozen=...

`--runs NAME=GLOB`: the run folders of one configuration (any number of seeds; fewer than the protocol's 10
are marked partial).

    NASFORGE_CBM_DIR=path/to/channel-bench-macro python benchmarks/scorer_table.py --protocol

`--protocol`: the protocol's decision over all four cells from the committed stores
(benchmarks/headline/scorer-runs/<cell>/scored-{tuned,frozen,gen,pool}-s*): family (e) tuned vs uniform `random`
and vs frozen in each cell, family (f) tuned vs the cell's strongest non-LLM strategy after 20 and after 5, (g)
gen vs tuned and vs the strongest (amendment 3), (j) pool vs the strongest after 20 and 5 (amendment 8), Holm over
each family of 8. A test whose cell has not run counts as p = 1, which can only raise the others' adjusted p
(Holm is monotone), so the adjusted p shown is an upper bound until every cell has run. Baselines: benchmarks/headline/baselines/<cell>/compare.json (the baselines sweep's
committed compare; ranks after 5 from its best accuracy after 5, ranked as compare ranks: among the
configurations inside the cell's FLOPs budget, 1 + those strictly better).
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

CONFIGS = ("tuned", "frozen", "gen", "pool")  # stores scored-<config>-s<seed> (scorer_runs.sh CONFIGS=...)
SPACE = {"mobilenet": "cbm-mobilenet", "mobilenet-budget": "cbm-mobilenet",
         "resnet": "cbm-resnet", "resnet-budget": "cbm-resnet"}


def run_ranks(folder: str, rank_of, budget: float | None) -> tuple[int, int] | None:
    """The rank of a run's best after 20 and after 5 evaluations, as `search compare` counts them (the seed's
    accuracy as the starting best, candidates over the budget not counting, ranks among the configurations
    inside the budget); None for a run of fewer than 20 iterations."""
    from search.compare import run_stats
    from search.runner import load_run

    cfg, iters, seed = load_run(folder)
    if len(iters) < 20:
        return None
    st = run_stats(cfg, iters, seed, 20, 1.0, {"max_flops": budget})
    return rank_of(st["best"]), rank_of(st["at"][5])


def seconds(pattern: str) -> list[float]:
    """The strategy's own seconds of every iteration of the runs (`llm_seconds`: drawing the pool, scoring its
    new members in one batched pass, the head), over the finished runs the glob names."""
    from search.runner import load_run

    return [r["llm_seconds"] for f in sorted(glob.glob(pattern)) if Path(f, "done").exists()
            for r in load_run(f)[1] if r.get("llm_seconds") is not None]


def fmt(v: list[int]) -> str:
    if not v:
        return "–"
    ci = bootstrap_median_ci(v)
    return f"{statistics.median(v):g} [{ci[0]:g}, {ci[1]:g}]" if ci else f"{statistics.median(v):g}"


def cell_data(cell: str, runs: list[str]) -> tuple[dict, str, dict]:
    """({baseline group: (ranks after 20, ranks after 5)}, the strongest of them, {NAME: (after 20, after 5)}
    of the `NAME=GLOB` run specs)."""
    from corpus.table import load_table, table_path
    from search.compare import table_ranks

    base = json.loads((ROOT / "benchmarks" / "headline" / "baselines" / cell / "compare.json").read_text())
    budget = base["benchmark"]["max_flops"]
    _, rank_of = table_ranks(load_table(str(table_path(SPACE[cell]))), budget)
    groups = {}
    for g, v in base["groups"].items():
        r20 = [int(x) for x in v["ranks"]]
        r5 = [rank_of(x) for x in v["best_at"]["5"]]
        groups[g] = (r20, r5)
    strongest = min(groups, key=lambda g: (statistics.median(groups[g][0]), statistics.fmean(groups[g][0])))
    mine = {}
    for spec in runs:
        name, _, pattern = spec.partition("=")
        got = [run_ranks(f, rank_of, budget) for f in sorted(glob.glob(pattern)) if Path(f, "done").exists()]
        got = [x for x in got if x is not None]
        mine[name] = ([x[0] for x in got], [x[1] for x in got])
    return groups, strongest, mine


def families(cells: dict) -> dict[str, list[dict]]:
    """The protocol's families from per-cell ranks: `cells` = {cell: {"tuned": (after 20, after 5),
    "frozen": (after 20, after 5), "baselines": {group: (after 20, after 5)}, and optionally "gen" and "pool"
    (after 20, after 5)}}: (e) and (f) of the protocol, (g) of amendment 3 (gen vs tuned and vs the strongest,
    after 20), (j) of amendment 8 (pool vs the strongest, after 20 and 5). The strongest baseline of a
    cell: the lowest median rank after 20 (mean to break ties). A test runs when each configuration it compares
    has 10 seeds (e, f: tuned and frozen both); a test not run counts as p = 1 in its family's Holm correction. Each test: cell, ref,
    at, tuned and reference ranks, p (None: not run), holm, verdict (yes: lower median and Holm p < 0.05;
    worse: higher median and Holm p < 0.05; no)."""
    out = {"e": [], "f": [], "g": [], "j": []}
    for cell, d in cells.items():
        (t20, t5), (f20, _) = d["tuned"], d["frozen"]
        (g20, _), (q20, q5) = d.get("gen") or ([], []), d.get("pool") or ([], [])
        base = d["baselines"]
        strongest = min(base, key=lambda g: (statistics.median(base[g][0]), statistics.fmean(base[g][0])))
        test = (lambda ref, at, a, b, ran: {"cell": cell, "ref": ref, "at": at, "a": a, "b": b,  # noqa: E731
                                            "p": permutation_p(a, b) if ran else None})
        ran = len(t20) >= 10 and len(f20) >= 10
        out["e"] += [test("random", 20, t20, base["random"][0], ran), test("frozen", 20, t20, f20, ran)]
        out["f"] += [test(strongest, 20, t20, base[strongest][0], ran), test(strongest, 5, t5, base[strongest][1], ran)]
        # (g) amendment 3 (two-sided: amendment 8): the generator added to the tuned scorer's pool
        out["g"] += [test("tuned", 20, g20, t20, len(g20) >= 10 and len(t20) >= 10),
                     test(strongest, 20, g20, base[strongest][0], len(g20) >= 10)]
        # (j) amendment 8: the tuned scorer choosing among the strongest baseline's own proposals too
        out["j"] += [test(strongest, 20, q20, base[strongest][0], len(q20) >= 10),
                     test(strongest, 5, q5, base[strongest][1], len(q20) >= 10)]
    for fam in out.values():
        for t, q in zip(fam, holm([1.0 if t["p"] is None else t["p"] for t in fam])):
            t["holm"] = q
            ma, mb = (statistics.median(t["a"]), statistics.median(t["b"])) if t["p"] is not None else (0, 0)
            t["verdict"] = None if t["p"] is None else \
                "yes" if ma < mb and q < 0.05 else "worse" if ma > mb and q < 0.05 else "no"
    return out


def protocol() -> int:
    """The protocol's two families over the four cells (module docstring)."""
    cells, rows = {}, []
    for cell in SPACE:
        store = ROOT / "benchmarks" / "headline" / "scorer-runs" / cell
        groups, strongest, mine = cell_data(cell, [f"{c}={store}/scored-{c}-s*" for c in CONFIGS])
        cells[cell] = {**mine, "baselines": groups}
        rows.append((cell, [len(mine[c][0]) for c in CONFIGS], [mine[c][0] for c in CONFIGS], strongest,
                     groups[strongest]))
    fams = families(cells)
    print("Issue 29's protocol (benchmarks/scorer.md, amendments 3 and 8 included): the scored configurations vs the "
          "references of each table cell; a test runs when its configurations have 10 seeds.\n")
    print("| cell | " + " | ".join(f"{c} runs" for c in CONFIGS) + " | " + " | ".join(f"{c}, after 20" for c in CONFIGS)
          + " | strongest non-LLM | its median after 20 |\n|---|" + "---:|" * (2 * len(CONFIGS)) + "---|---:|")
    for cell, n, r20, strongest, (s20, _) in rows:
        print(f"| {cell} | " + " | ".join(map(str, n)) + " | " + " | ".join(fmt(r) if r else "–" for r in r20)
              + f" | `{strongest}` | {fmt(s20)} |")
    print("\nSeconds per iteration (the strategy's own; target <= 5 s), median and max over every iteration of the "
          "finished runs:\n\n| cell | " + " | ".join(CONFIGS) + " |\n|---|" + "---:|" * len(CONFIGS))
    for cell in SPACE:
        store = ROOT / "benchmarks" / "headline" / "scorer-runs" / cell
        t = {c: seconds(f"{store}/scored-{c}-s*") for c in CONFIGS}
        print(f"| {cell} | " + " | ".join(f"{statistics.median(v):.1f} (max {max(v):.1f})" if v else "–"
                                          for v in t.values()) + " |")
    for key, label, tested in (("e", "(e) tuned vs uniform random and vs frozen", "tuned"),
                               ("f", "(f) tuned vs the strongest non-LLM strategy of the cell", "tuned"),
                               ("g", "(g) gen (tuned scorer + prefer generator) vs tuned and vs the strongest", "gen"),
                               ("j", "(j) pool (tuned scorer over the strongest's proposals too) vs the strongest",
                                "pool")):
        print_family(label, fams[key], "cell", lambda v: f"{statistics.median(v):g}", evaluations=True, tested=tested)
    return 0


def print_family(label: str, tests: list[dict], unit: str, median, evaluations: bool = False,
                 tested: str = "tuned") -> None:
    """One Holm family's tests as a table (`median`: a list of values -> the median as shown)."""
    print(f"\nFamily {label}: Holm over its {len(tests)} tests (a test not run counts as p = 1).\n")
    print(f"| {unit} | vs |{' evaluations |' if evaluations else ''} {tested} median | reference median | p | Holm | "
          f"better |\n|---|---|{'---:|' if evaluations else ''}---:|---:|---:|---:|---|")
    for t in tests:
        at = f" {t['at']} |" if evaluations else ""
        if t["p"] is None:
            print(f"| {t['cell']} | `{t['ref']}` |{at} – | – | not run | – | – |")
            continue
        print(f"| {t['cell']} | `{t['ref']}` |{at} {median(t['a'])} | {median(t['b'])} | {t['p']:.3g} | "
              f"{t['holm']:.3g} | {t['verdict']} |")


FM_FAMILIES = ("lenet", "vgg-small", "resnet-small")
FM_SEEDS = 5


def run_best(folder: str) -> tuple[float, float] | None:
    """A Fashion-MNIST run's best proxy accuracy after 20 and after 5 trained candidates (the seed's accuracy as
    the starting best, as `search compare` counts); None for a run of fewer than 20 iterations."""
    from search.compare import run_stats
    from search.runner import load_run

    cfg, iters, seed = load_run(folder)
    if len(iters) < 20:
        return None
    st = run_stats(cfg, iters, seed, 20, 1.0, {})
    return st["best"], st["at"][5]


def fm_families(families: dict) -> dict[str, list[dict]]:
    """Amendment 5's two Holm families from per-family best accuracies (higher is better): `families` = {family:
    {"tuned": (after 20, after 5), "frozen": (...), "baselines": {group: (after 20, after 5)}}}: (h) tuned vs
    uniform random in each family (3 tests: the issue's target), (i) tuned vs frozen and vs the family's strongest
    non-LLM strategy (the highest median best after 20, mean to break ties; 6 tests). A family runs when tuned,
    frozen and every baseline have 5 seeds; a test of a family not run counts as p = 1 in its correction. Each
    test: cell, ref, at, a, b, p (None: not run), holm, verdict (yes: higher median and Holm p < 0.05; worse:
    lower median and Holm p < 0.05; no)."""
    out = {"h": [], "i": []}
    for fam, d in families.items():
        base = d["baselines"]
        ran = bool(base) and "random" in base and all(len(v[0]) >= FM_SEEDS for v in base.values()) \
            and len(d["tuned"][0]) >= FM_SEEDS and len(d["frozen"][0]) >= FM_SEEDS
        strongest = max(base, key=lambda g: (statistics.median(base[g][0]), statistics.fmean(base[g][0]))) \
            if ran else "strongest"
        t20 = d["tuned"][0]
        test = (lambda ref, b: {"cell": fam, "ref": ref, "at": 20, "a": t20, "b": b,  # noqa: E731
                                "p": permutation_p(t20, b) if ran else None})
        out["h"].append(test("random", base.get("random", ([], []))[0]))
        out["i"] += [test("frozen", d["frozen"][0]), test(strongest, base.get(strongest, ([], []))[0])]
    for tests in out.values():
        for t, q in zip(tests, holm([1.0 if t["p"] is None else t["p"] for t in tests])):
            t["holm"] = q
            ma, mb = (statistics.median(t["a"]), statistics.median(t["b"])) if t["p"] is not None else (0, 0)
            t["verdict"] = None if t["p"] is None else \
                "yes" if ma > mb and q < 0.05 else "worse" if ma < mb and q < 0.05 else "no"
    return out


def fm_protocol(scorer_sweep: Path, baselines_sweep: Path) -> int:
    """Amendment 5's decision over the three Fashion-MNIST families (module docstring)."""
    fams, rows = {}, []
    for fam in FM_FAMILIES:
        cmp = baselines_sweep / f"compare-{fam}" / "compare.json"
        base = {}
        if cmp.is_file():
            for g, v in json.loads(cmp.read_text())["groups"].items():
                base[g] = ([float(x) for x in v["best"]], [float(x) for x in v["best_at"]["5"]])
        mine = {}
        for name, pattern in (("tuned", f"scored-tuned-without-{fam}-*"), ("frozen", "scored-frozen-*")):
            got = [run_best(f) for f in sorted(glob.glob(str(scorer_sweep / "runs" / fam / pattern)))
                   if Path(f, "done").exists()]
            got = [x for x in got if x is not None]
            mine[name] = ([x[0] for x in got], [x[1] for x in got])
        fams[fam] = {"tuned": mine["tuned"], "frozen": mine["frozen"], "baselines": base}
    fam_tests = fm_families(fams)
    tests = fam_tests["h"] + fam_tests["i"]
    pct = lambda v: fmt([round(100 * x, 2) for x in v])  # noqa: E731
    print("Issue 29's Fashion-MNIST stage (benchmarks/scorer.md, amendment 5): the best proxy accuracy (%) after 20 "
          "trained candidates [bootstrap 95 % interval]; references from issue 27's sweep "
          f"({baselines_sweep}); a family runs when every configuration has {FM_SEEDS} seeds.\n")
    print("| family | tuned runs | frozen runs | tuned | frozen | uniform random | strongest non-LLM | its median |\n"
          "|---|---:|---:|---:|---:|---:|---|---:|")
    for fam, d in fams.items():
        base = d["baselines"]
        strongest = next((t["ref"] for t in tests if t["cell"] == fam and t["ref"] not in ("random", "frozen")), "–")
        print(f"| {fam} | {len(d['tuned'][0])} | {len(d['frozen'][0])} | {pct(d['tuned'][0])} | {pct(d['frozen'][0])} | "
              f"{pct(base['random'][0]) if 'random' in base else 'not run'} | `{strongest}` | "
              f"{pct(base[strongest][0]) if strongest in base else '–'} |")
    for key, label in (("h", "(h) tuned vs uniform random"), ("i", "(i) tuned vs frozen and vs the strongest non-LLM")):
        print_family(label, fam_tests[key], "family", lambda v: f"{100 * statistics.median(v):.2f} %")
    won = sorted({t["cell"] for t in fam_tests["h"] if t["verdict"] == "yes"})
    waiting = [t["cell"] for t in fam_tests["h"] if t["p"] is None]
    verdict = "reached" if len(won) >= 2 else "not reached" if len(won) + len(waiting) < 2 else \
        f"not decided ({', '.join(waiting)} not run)"
    print(f"\nTarget (issue 29): tuned better than random in >= 2 of 3 families: {verdict} "
          f"({len(won)}: {', '.join(won) or 'none'}).")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", choices=sorted(SPACE))
    ap.add_argument("--runs", action="append", default=[], help="NAME=GLOB of run folders")
    ap.add_argument("--protocol", action="store_true", help="both families over all four cells, committed stores")
    ap.add_argument("--fm", nargs=2, metavar=("SCORER_SWEEP", "BASELINES_SWEEP"),
                    help="amendment 5's Fashion-MNIST decision: the scorer_fm.yaml sweep folder and the "
                         "baselines_fm.yaml sweep folder")
    a = ap.parse_args()
    if a.protocol:
        return protocol()
    if a.fm:
        return fm_protocol(Path(a.fm[0]), Path(a.fm[1]))
    if not a.cell:
        ap.error("--cell is required (or --protocol)")
    groups, strongest, mine = cell_data(a.cell, a.runs)
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
