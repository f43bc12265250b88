"""How many single-literal width edits `mutator repair` turns back into a working network.

    python benchmarks/repair_rate.py                      # every built-in seed and test-zoo file
    python benchmarks/repair_rate.py --only lenet,lenet_view.py --factors 0.5,1.5

For every built-in seed (`mutator/seeds/`, LEMUR format, 3x32x32, 10 classes) and every test-zoo
file (`tests/fixtures/zoo/index.json`), the width analysis lists the width literals; each one is
changed *alone* (to 0.5x its value, or 1.5x where that rounds back; a multiple of 8, at least 8) without the literals
coupled to it. An edit that still builds and runs forward is not broken and not counted. A broken
one is repaired (`mutator.repair`, sandboxed, no parent given) and counts as repaired when the
repair keeps the edited literal at its new value and the repaired file builds and runs forward on
the CPU at the declared shape, giving (batch, classes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def targets(only: set[str]):
    from mutator import seeds

    out = []
    for name in seeds.SEEDS:
        out.append((name, seeds.seed_source(name), {"in_shape": [1, 3, 32, 32], "classes": 10, "class_name": None}))
    zoo = ROOT / "tests" / "fixtures" / "zoo"
    for e in json.loads((zoo / "index.json").read_text()):
        label = f"{e['file']}:{e['class_name']}"
        out.append((label, (zoo / e["file"]).read_text(),
                    {"in_shape": e["in_shape"], "classes": e["classes"], "class_name": e["class_name"]}))
    return [t for t in out if not only or t[0] in only or t[0].split(":")[0] in only]


def edits(analysis: dict, factors: list[float], each: bool):
    """(literal index, old, new) per width literal: the first factor that changes it (every one with each)."""
    out = []
    by_index = {l["index"]: l for l in analysis["literals"]}
    for g in analysis["groups"]:
        for i in g["literals"]:
            if by_index[i]["kind"] != "width":  # a group's forward literal (view) is not a width
                continue
            v = by_index[i]["value"]
            seen = {v}
            for f in factors:
                nv = max(8, int(round(v * f / 8)) * 8)
                if nv not in seen:
                    seen.add(nv)
                    out.append((i, v, nv))
                    if not each:
                        break
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--factors", default="0.5,1.5",
                   help="width factors: each literal gets the first one that changes its value")
    p.add_argument("--each", action="store_true", help="one edit per literal and factor instead")
    p.add_argument("--only", default="", help="comma-separated seed names or zoo file names")
    p.add_argument("--workers", type=int, default=2, help="sandbox workers")
    p.add_argument("--timeout-s", type=float, default=300.0, help="time limit per sandboxed request")
    p.add_argument("--json", default=None, help="also write every case as JSON lines here")
    args = p.parse_args()
    from mutator.literals import Rewriter
    from mutator.repair import RepairResult
    from mutator.sandbox import WorkerPool

    factors = [float(f) for f in args.factors.split(",")]
    rows, cases = [], []
    t0 = time.time()
    with WorkerPool(args.workers, timeout_s=args.timeout_s) as pool:
        for label, source, spec in targets({s for s in args.only.split(",") if s}):
            a = pool.call("mutator.analysis:analyze", {"source": source, "spec": spec, "divisor": 8})
            if a.get("status") != "ok":
                rows.append((label, 0, 0, 0, 0, f"analysis failed: {a.get('error')}"))
                continue
            rw = Rewriter(source)
            todo = [(i, v, nv, rw({i: nv})) for i, v, nv in edits(a, factors, args.each)]
            checks = pool.map("mutator.analysis:validate", [{"source": s, "spec": spec} for *_, s in todo])
            broken = [c for c, r in zip(todo, checks) if r.get("status") != "ok"]
            results = pool.map("mutator.repair:repair_handler",
                               [{"source": s, "spec": spec} for *_, s in broken])
            fixed = [RepairResult.from_dict(r, s) for (*_, s), r in zip(broken, results)]
            runs = pool.map("mutator.analysis:validate",
                            [{"source": f.source, "spec": spec, "device": "cpu"} for f in fixed])
            ok, notes = 0, {}
            for (i, v, nv, s), f, run in zip(broken, fixed, runs):
                kept = f.status == "repaired" and Rewriter(f.source).literals[i].value == nv
                good = kept and run.get("status") == "ok"
                ok += good
                why = ("ok" if good else f.reason if f.status != "repaired" else
                       "edit reverted" if not kept else f"repaired file fails on CPU: {run.get('error')}")
                if not good:
                    notes[why[:90]] = notes.get(why[:90], 0) + 1
                cases.append({"file": label, "literal": i, "line": rw.literals[i].line, "old": v, "new": nv,
                              "status": f.status, "kept": kept, "runs": run.get("status") == "ok",
                              "changes": [str(c) for c in f.changes], "reason": f.reason, "ok": good})
            note = "; ".join(f"{n} x {w}" for w, n in notes.items())
            rows.append((label, len(todo), len(todo) - len(broken), len(broken), ok, note))
            print(f"  {label}: {ok}/{len(broken)} ({time.time() - t0:.0f} s)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text("".join(json.dumps(c) + "\n" for c in cases))
    print(f"| file | edits | still build | broken | repaired and building | |\n|---|---:|---:|---:|---:|---|")
    for label, n, fine, nb, ok, note in rows:
        pct = f"{100 * ok / nb:.0f} %" if nb else "-"
        print(f"| {label} | {n} | {fine} | {nb} | {ok} ({pct}) | {note} |")
    n, nb, ok = sum(r[1] for r in rows), sum(r[3] for r in rows), sum(r[4] for r in rows)
    print(f"| **total** | {n} | {n - nb} | {nb} | **{ok} ({100 * ok / max(1, nb):.1f} %)** | |")
    print(f"factors {args.factors}, {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
