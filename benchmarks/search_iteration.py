"""Seconds per search iteration (LLM/proposal + pre-check, and evaluation), optionally against an
older commit on the same machine in the same run.

    python benchmarks/search_iteration.py --llm smollm2-135m --iterations 3
    python benchmarks/search_iteration.py --strategy mutation --objective pareto --hw-metric flops --iterations 6 \
        --train-limit 2000 --ref 9bfc5ed                      # before/after, interleaved
    NASFORGE_CBM_DIR=path/to/channel-bench-macro python benchmarks/search_iteration.py --strategy random \
        --evaluator table:cbm-mobilenet --seed cbm-mobilenet --iterations 20 --ref 8715079 --rounds 2   # table mode

Runs a real search (seed `lenet` on a Fashion-MNIST subset by default, the corpus profiler, one
epoch) into a temporary folder and prints, per iteration and on average, the seconds spent proposing
(the LLM or random mutation, plus any sandboxed pre-check) and evaluating (profiling). With `--ref`,
the same search also runs on that commit's code (extracted beside this checkout, removed afterwards),
both sides alternating over `--rounds`, and the table gives both. Target on a 2-core CPU:
<= 60 s/iteration with an LLM.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r'''
import json, sys, tempfile, time
from search.loop import SearchConfig
from search.runner import load_run, run
kw = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory() as d:
    cfg = SearchConfig(out=d, **kw)
    t0 = time.time()
    run(cfg, progress=False)
    wall = time.time() - t0
    _, iters, seed = load_run(d)
print(json.dumps({"wall": wall, "iters": [{k: r[k] for k in ("it", "status", "llm_seconds", "profile_seconds")}
                                            for r in iters]}))
'''


def measure(tree: Path, kw: dict) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(kw)], capture_output=True, text=True, cwd=tree,
                         env={**os.environ, "PYTHONPATH": str(tree)}, timeout=7200)
    if res.returncode != 0:
        sys.exit(f"error: the search in {tree} failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--strategy", default="llm", help="what proposes (search run --strategy); with --ref on a commit "
                   "from before strategies existed, mutation/random runs there as its --llm random")
    p.add_argument("--llm", default="smollm2-135m")
    p.add_argument("--adapter", default=None)
    p.add_argument("--llm-url", default=None)
    p.add_argument("--seed", default="lenet")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--evaluator", default="profile", help="profile | table:SPACE (search run --evaluator; "
                   "a table needs NASFORGE_CBM_DIR or --benchmark-file)")
    p.add_argument("--benchmark-file", default=None)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=8000)
    p.add_argument("--max-new-tokens", type=int, default=1536)
    p.add_argument("--objective", default="accuracy", choices=["accuracy", "pareto"])
    p.add_argument("--hw-metric", default="latency_ms", choices=["latency_ms", "flops", "params"])
    p.add_argument("--ref", default=None, help="also run the search on this git commit's code, for comparison")
    p.add_argument("--rounds", type=int, default=1, help="runs per side (alternating) with --ref")
    args = p.parse_args()
    kw = {"llm": args.llm, "adapter": args.adapter, "llm_url": args.llm_url, "seed": args.seed,
          "dataset": args.dataset, "iterations": args.iterations, "train_limit": args.train_limit,
          "max_new_tokens": args.max_new_tokens, "objective": args.objective, "hw_metric": args.hw_metric,
          **({"strategy": args.strategy} if args.strategy != "llm" else {}),
          "evaluator": args.evaluator,
          **({"benchmark_file": args.benchmark_file} if args.benchmark_file else {})}
    sides = {"now": ROOT}
    # not under /tmp: older sandboxes hid a checkout there behind their private /tmp
    with tempfile.TemporaryDirectory(prefix=".search-before-", dir=ROOT) as tmp:
        if args.ref:
            arch = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", tmp], input=arch.stdout, check=True)
            sides = {f"before ({args.ref})": Path(tmp), "now": ROOT}
        got = {k: [] for k in sides}
        for r in range(args.rounds):
            for name, tree in (list(sides.items()) if r % 2 == 0 else list(reversed(sides.items()))):
                old = tree != ROOT and not (tree / "search" / "strategies").is_dir()  # before --strategy: --llm random
                side = {**{k: v for k, v in kw.items() if k != "strategy"}, "llm": "random"} if old and "strategy" in kw else kw
                got[name].append(measure(tree, side))
                print(f"round {r + 1}/{args.rounds}: {name} done", file=sys.stderr, flush=True)
    print(f"{args.strategy if args.strategy != 'llm' else args.llm}{'+' + args.adapter if args.adapter else ''} on {args.seed}/{args.dataset} (train limit "
          f"{args.train_limit}, objective {args.objective}, {args.iterations} iterations x {args.rounds} rounds)\n")
    print("| code | propose + pre-check s/it | evaluate s/it | total s/it | wall s (incl. seed) |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in got.items():
        its = [i for run in runs for i in run["iters"]]
        llm = statistics.mean(i["llm_seconds"] for i in its)
        prof = statistics.mean(i["profile_seconds"] for i in its)
        print(f"| {name} | {llm:.2f} | {prof:.2f} | {llm + prof:.2f} | {statistics.mean(r['wall'] for r in runs):.0f} |")
    if len(got) == 1:
        print("\nper iteration:")
        for i in got["now"][0]["iters"]:
            print(f"  {i['it']:>3} {i['status']:<12} propose {i['llm_seconds']:.1f} s, evaluate {i['profile_seconds']:.1f} s")


if __name__ == "__main__":
    main()
