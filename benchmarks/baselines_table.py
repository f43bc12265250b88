"""The baselines experiment's table (protocol: benchmarks/baselines.md), from a finished sweep.

    NASFORGE_CBM_DIR=path/to/channel-bench-macro python -m search sweep benchmarks/headline/baselines.yaml --out headline/baselines
    python benchmarks/baselines_table.py headline/baselines > benchmarks/baselines_result.md
    python -m search sweep benchmarks/headline/baselines_fm.yaml --out headline/baselines-fm
    python benchmarks/baselines_table.py --fm headline/baselines-fm > benchmarks/baselines_fm_result.md

Per cell (mobilenet, mobilenet-budget, resnet, resnet-budget): every strategy's per-run best-of-20
ranks come from the sweep's own `search compare` output (`DIR/compare-<cell>/compare.json`), every
LLM configuration's from the committed headline compare outputs (`benchmarks/headline/best-<cell>/
compare.json`: same cells, rng seeds 0-9, 20 evaluations; their run stores are gone). Ranks of a budget
cell are among the configurations within the budget in both; the script checks that the two outputs
agree on the table (size, optimum) before it puts them in one table.

Printed: the median rank with its bootstrap 95 % interval, the two Holm families of the protocol
((a) tpe, gp, evolution vs uniform random, 12 tests; (b) every LLM configuration vs the strongest
non-LLM strategy of its cell), each with raw and Holm-adjusted exact permutation p (Mann-Whitney U)
and P(superior), and each strategy's own seconds per iteration (median of the stored
`strategy_seconds`). Nothing is tuned here: the decision rule is the protocol's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.stats import bootstrap_median_ci, holm, permutation_p, superiority  # noqa: E402

CELLS = ("mobilenet", "mobilenet-budget", "resnet", "resnet-budget")
STRATEGIES = ("random", "mutation", "largest", "evolution", "tpe", "gp", "surrogate")
FAMILY_A = ("tpe", "gp", "evolution")
LLM_GROUPS = {"frozen": "frozen SmolLM2-135M", "frozen-genius": "frozen, GENIUS prompt",
              "tuned": "tuned (recipe 1)", "tuned-best-on-resnet": "tuned (recipe 2)",
              "tuned-best-on-mobilenet": "tuned (recipe 2)"}
ALPHA = 0.05


def load(path: Path) -> dict:
    if not path.is_file():
        sys.exit(f"error: {path} is missing (run the sweep to the end first: it writes one compare per cell)")
    return json.loads(path.read_text())


def strategy_seconds(sweep: Path, cell: str, name: str) -> float | None:
    """Median of the stored `strategy_seconds` over every iteration of the cell's runs of `name`."""
    from search.runner import load_run

    secs = []
    for run in sorted((sweep / "runs" / cell).glob(f"{name}-*")):
        _, iters, _ = load_run(str(run))
        secs += [(r["extra"] or {}).get("strategy_seconds") for r in iters]
    secs = [s for s in secs if s is not None]
    return statistics.median(secs) if secs else None


def trained(sweep: Path, cell: str, name: str) -> tuple[int, int]:
    """(iterations that trained a new network, iterations) over the cell's runs of `name`: the rest are repeats of
    a network already tried (`duplicate`: uniform sampling draws with replacement), failures or limits."""
    from search.runner import load_run

    done = total = 0
    for run in sorted((sweep / "runs" / cell).glob(f"{name}-*")):
        _, iters, _ = load_run(str(run))
        done, total = done + sum(r["status"] == "ok" for r in iters), total + len(iters)
    return done, total


def strongest(ranks: dict[str, list[int]]) -> str:
    """The protocol's strongest non-LLM strategy: the lowest median rank, ties by the smaller mean."""
    return min(ranks, key=lambda g: (statistics.median(ranks[g]), statistics.fmean(ranks[g])))


def fmt_p(p: float | None) -> str:
    return "–" if p is None else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


FM_CELLS = ("lenet", "vgg-small", "resnet-small")
FM_LLM = {"frozen": "frozen SmolLM2-135M", "frozen-genius": "frozen, GENIUS prompt"}


def fm_main(sweep: Path, llm_compare: Path) -> int:
    """The Fashion-MNIST families (protocol: benchmarks/baselines.md, third amendment): best accuracy after
    20, higher is better; LLM rows from the committed fm-<family>/compare.json."""
    cells, missing = {}, []
    for cell in FM_CELLS:
        path = sweep / f"compare-{cell}" / "compare.json"
        if not path.is_file():
            missing.append(cell)
            continue
        new, old = load(path), load(llm_compare / f"fm-{cell}" / "compare.json")
        strat = {g: new["groups"][g]["best"] for g in STRATEGIES if g in new["groups"]}
        llm = {g: v["best"] for g, v in old["groups"].items() if g in FM_LLM or g.startswith("tuned")}
        cells[cell] = {"strategies": strat, "llm": llm, "committed_random": old["groups"].get("random", {}).get("best")}
    if not cells:
        sys.exit(f"error: no compare-<family>/compare.json of {', '.join(FM_CELLS)} in {sweep}")
    fam_c, fam_d = [], []
    for cell, c in cells.items():
        for g in FAMILY_A:
            fam_c.append((cell, g, "random", permutation_p(c["strategies"][g], c["strategies"]["random"])))
        s = c["strategies"]
        c["strongest"] = max(s, key=lambda g: (statistics.median(s[g]), statistics.fmean(s[g])))
        for g in c["llm"]:
            fam_d.append((cell, g, c["strongest"], permutation_p(c["llm"][g], s[c["strongest"]])))
    tests = {(cell, g, ref): (p, q) for (cell, g, ref, p), q in
             list(zip(fam_c, holm([t[3] for t in fam_c]))) + list(zip(fam_d, holm([t[3] for t in fam_d])))}
    partial = f" **Partial: no runs yet of {', '.join(missing)}; the Holm families below hold only the families " \
              "shown (not final).**" if missing else ""
    out = ["# Baselines on the headline's Fashion-MNIST families: results", "",
           f"Sweep `{sweep}`; protocol: benchmarks/baselines.md (third and fourth amendments). Best = the best proxy accuracy "
           "(%) after 20 trained candidates, 5 rng seeds; p: two-sided exact permutation test on the Mann-Whitney U "
           f"statistic; Holm over (c) tpe/gp/evolution vs random ({len(fam_c)} tests) and (d) every LLM configuration "
           f"vs its family's strongest non-LLM strategy ({len(fam_d)} tests). P(sup): a run of the row beats one of "
           "the reference (higher best; ties count half). Trained: iterations that trained a new network, of all "
           "iterations of the row's runs (the rest repeat a network already tried, failed or broke a limit; uniform "
           "`random` draws with replacement)." + partial, ""]
    for cell, c in cells.items():
        out += [f"## {cell}", "", f"Strongest non-LLM strategy (highest median best): **{c['strongest']}**.", "",
                "| strategy / configuration | median best % [95% CI] | best % per seed (0-4) | trained | reference | p | "
                "Holm p | P(sup) |",
                "|---|---:|---|---:|---|---:|---:|---:|"]
        rows = [(g, c["strategies"][g], False) for g in STRATEGIES if g in c["strategies"]] + \
               [(g, c["llm"][g], True) for g in c["llm"]]
        for g, best, is_llm in rows:
            lo, hi = bootstrap_median_ci(best)
            ref = c["strongest"] if is_llm else ("random" if g in FAMILY_A else None)
            p, q = tests.get((cell, g, ref), (None, None))
            sup = superiority(best, c["strategies"][ref]) if ref else None
            name = f"{g} ({FM_LLM.get(g, 'tuned on the other two families')}, committed)" if is_llm else g
            ok, total = (0, 0) if is_llm else trained(sweep, cell, g)
            out.append(f"| {name} | {100 * statistics.median(best):.2f} [{100 * lo:.2f}, {100 * hi:.2f}] | "
                       f"{', '.join(f'{100 * b:.2f}' for b in best)} | {f'{ok}/{total}' if total else '–'} | "
                       f"{ref or '–'} | {fmt_p(p)} | {fmt_p(q)} | "
                       f"{'–' if sup is None else f'{sup:.2f}'} |")
        if c["committed_random"] is not None:
            out += ["", "The committed headline's `random` row of this family (the old `--llm random`, today's "
                        f"`mutation`): {', '.join(f'{100 * b:.2f}' for b in c['committed_random'])}; `mutation` here: "
                        f"{', '.join(f'{100 * b:.2f}' for b in c['strategies']['mutation'])} (same seeds; one training "
                        "thread here, two there)."]
        out.append("")
    out += ["## Decision rule", ""]
    for g in FAMILY_A:
        won = [cell for (cell, gg, ref, p) in fam_c if gg == g and tests[(cell, gg, ref)][1] < ALPHA and
               statistics.median(cells[cell]["strategies"][g]) > statistics.median(cells[cell]["strategies"]["random"])]
        out.append(f"- `{g}` beats uniform random (higher median best, Holm p < {ALPHA}) in {len(won)} of "
                   f"{len(cells)} families run ({', '.join(won) or 'none'}).")
    beaten = [(cell, g, ref) for (cell, g, ref, p) in fam_d if tests[(cell, g, ref)][1] < ALPHA and
              statistics.median(cells[cell]["llm"][g]) > statistics.median(cells[cell]["strategies"][ref])]
    out.append(f"- LLM configurations that beat their family's strongest non-LLM strategy after Holm: "
               f"{', '.join(f'{g} in {cell} (vs {ref})' for cell, g, ref in beaten) or 'none'}.")
    n = min((len(v) for c in cells.values() for v in c["strategies"].values()), default=0)
    if n:  # what these sizes can show at all: every run of one side above every run of the other
        floor = permutation_p([1.0] * n, [0.0] * n)
        out.append(f"- Power: with {n} runs a side the smallest two-sided exact p is {floor:.4f}; Holm multiplies the "
                   f"smallest of family (c) by {len(fam_c)} ({min(1.0, floor * len(fam_c)):.3f}) and of (d) by "
                   f"{len(fam_d)} ({min(1.0, floor * len(fam_d)):.3f})"
                   + (": no test of (c) can pass 0.05 at these sizes, so (c) is reported, not a test that could be "
                      "passed." if floor * len(fam_c) >= ALPHA else "."))
    print("\n".join(out))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="the baselines sweep's --out folder")
    ap.add_argument("--llm-compare", default=str(ROOT / "benchmarks" / "headline"),
                    help="folder of the committed best-<cell>/compare.json outputs (LLM rows)")
    ap.add_argument("--fm", action="store_true",
                    help="the Fashion-MNIST families' sweep (benchmarks/headline/baselines_fm.yaml) instead")
    a = ap.parse_args()
    sweep = Path(a.sweep)
    if a.fm:
        return fm_main(sweep, Path(a.llm_compare))
    cells = {}
    for cell in CELLS:
        new = load(sweep / f"compare-{cell}" / "compare.json")
        llm, old = {}, None
        for name in (cell, f"best-{cell}"):
            old = load(Path(a.llm_compare) / name / "compare.json")
            for k in ("size", "table_size", "optimum"):
                if new["benchmark"][k] != old["benchmark"][k]:
                    sys.exit(f"error: {cell}: the sweep's and the committed compare {name} disagree on {k} "
                             f"({new['benchmark'][k]} vs {old['benchmark'][k]}): not one table")
            for g in LLM_GROUPS:
                if g in old["groups"]:
                    if g in llm and llm[g] != old["groups"][g]["ranks"]:
                        sys.exit(f"error: {cell}: {g}'s ranks differ between the committed compare outputs")
                    llm[g] = old["groups"][g]["ranks"]
        strat = {g: new["groups"][g]["ranks"] for g in STRATEGIES if g in new["groups"]}
        cells[cell] = {"strategies": strat, "llm": llm, "bench": new["benchmark"],
                       "committed_random": old["groups"].get("random", {}).get("ranks")}

    # family (a): tpe, gp, evolution vs uniform random in every cell; family (b): LLM vs the strongest
    fam_a, fam_b = [], []
    for cell, c in cells.items():
        for g in FAMILY_A:
            fam_a.append((cell, g, "random", permutation_p(c["strategies"][g], c["strategies"]["random"])))
        best = strongest(c["strategies"])
        c["strongest"] = best
        for g in c["llm"]:
            fam_b.append((cell, g, best, permutation_p(c["llm"][g], c["strategies"][best])))
    adj_a = holm([t[3] for t in fam_a])
    adj_b = holm([t[3] for t in fam_b])
    tests = {(cell, g, ref): (p, q) for (cell, g, ref, p), q in
             list(zip(fam_a, adj_a)) + list(zip(fam_b, adj_b))}

    out = ["# Baselines on the headline's Channel-Bench-Macro cells: results", "",
           f"Sweep `{sweep}`; protocol: benchmarks/baselines.md. Rank = the best-of-20 network's rank in the table "
           "(1 = the optimum; in a budget cell among the configurations within the budget). p: two-sided exact "
           "permutation test on the Mann-Whitney U statistic; Holm over the protocol's family (a: tpe/gp/evolution "
           f"vs random, {len(fam_a)} tests; b: every LLM configuration vs its cell's strongest non-LLM strategy, "
           f"{len(fam_b)} tests). P(sup): probability that a run of the row beats one of the reference (rank lower).", ""]
    for cell, c in cells.items():
        b = c["bench"]
        out += [f"## {cell}", "",
                f"{b['size']:,} configurations{' within ' + format(int(b['max_flops']), ',') + ' FLOPs' if b.get('max_flops') else ''}; "
                f"uniform sampling's exact median best-of-20 rank {b.get('uniform_median_rank', '–')}; "
                f"strongest non-LLM strategy: **{c['strongest']}**.", "",
                "| strategy / configuration | median rank [95% CI] | ranks (seeds 0-9) | reference | p | Holm p | P(sup) | strategy s / iteration |",
                "|---|---:|---|---|---:|---:|---:|---:|"]
        rows = [(g, c["strategies"][g], False) for g in STRATEGIES if g in c["strategies"]] + \
               [(g, c["llm"][g], True) for g in c["llm"]]
        for g, ranks, is_llm in rows:
            lo, hi = bootstrap_median_ci(ranks)
            ref = c["strongest"] if is_llm else ("random" if g in FAMILY_A else None)
            p, q = tests.get((cell, g, ref), (None, None))
            sup = superiority([-r for r in ranks], [-r for r in c["strategies"][ref]]) if ref else None
            secs = None if is_llm else strategy_seconds(sweep, cell, g)
            name = f"{g} ({LLM_GROUPS[g]}, committed)" if is_llm else g
            out.append(f"| {name} | {statistics.median(ranks):g} [{lo:g}, {hi:g}] | {', '.join(map(str, ranks))} "
                       f"| {ref or '–'} | {fmt_p(p)} | {fmt_p(q)} | {'–' if sup is None else f'{sup:.2f}'} "
                       f"| {'–' if secs is None else f'{secs:.3f}'} |")
        if c["committed_random"] is not None and not cell.endswith("budget"):
            same = c["committed_random"] == c["strategies"].get("random")
            out += ["", f"Uniform `random` here {'reproduces' if same else 'does NOT reproduce'} the committed headline's "
                        f"`--llm random` runs of this cell rank for rank."]
        out.append("")

    out += ["## Decision rule", ""]
    wins = {g: [cell for (cell, gg, ref, p), q in zip(fam_a, adj_a) if gg == g and q is not None and q < ALPHA
                and statistics.median(cells[cell]["strategies"][g]) < statistics.median(cells[cell]["strategies"]["random"])]
            for g in FAMILY_A}
    for g in FAMILY_A:
        out.append(f"- `{g}` beats uniform random (lower median, Holm p < {ALPHA}) in {len(wins[g])} of 4 cells "
                   f"({', '.join(wins[g]) or 'none'}): target (>= 3) {'reached' if len(wins[g]) >= 3 else 'not reached'}.")
    for sp in ("mobilenet", "resnet"):
        m = statistics.median(cells[sp]["strategies"]["surrogate"])
        out.append(f"- `surrogate`, unconstrained {sp}: median rank {m:g} (target <= 50: {'reached' if m <= 50 else 'not reached'}).")
    m = statistics.median(cells["mobilenet"]["strategies"]["largest"])
    out.append(f"- `largest`, unconstrained mobilenet: median rank {m:g} (target <= 70: {'reached' if m <= 70 else 'not reached'}).")
    for cell in ("mobilenet-budget", "resnet-budget"):
        m = statistics.median(cells[cell]["strategies"]["random"])
        out.append(f"- in-budget `random`, {cell}: median rank {m:g} (uniform sampling inside the budget: "
                   f"{cells[cell]['bench'].get('uniform_median_rank', '–')}).")
    for g in STRATEGIES:
        secs = [strategy_seconds(sweep, cell, g) for cell in CELLS]
        secs = [x for x in secs if x is not None]
        if secs:
            limit = 2.0 if g == "gp" else 0.2
            out.append(f"- `{g}`'s own seconds per iteration (median per cell, slowest cell): {max(secs):.3f} s "
                       f"(target <= {limit:g} s: {'reached' if max(secs) <= limit else 'not reached'}).")
    beaten = [(cell, g, ref) for (cell, g, ref, p), q in zip(fam_b, adj_b)
              if q is not None and q < ALPHA and statistics.median(cells[cell]["llm"][g]) < statistics.median(cells[cell]["strategies"][ref])]
    out.append(f"- LLM configurations that beat their cell's strongest non-LLM strategy after Holm: "
               f"{', '.join(f'{g} in {cell} (vs {ref})' for cell, g, ref in beaten) or 'none'}.")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
