"""Seconds per search iteration, split into LLM time and profiling time.

    python benchmarks/search_iteration.py --llm smollm2-135m --iterations 3
    python benchmarks/search_iteration.py --llm smollm2-135m --adapter adapters/lenet --iterations 3
    python benchmarks/search_iteration.py --llm random --iterations 3

Runs a real search (seed `lenet` on a Fashion-MNIST subset by default, the corpus profiler, one
epoch) into a temporary folder and prints, per iteration and on average, the seconds spent in the
LLM (Code Generator + Prompt Improver) and in profiling. Target on a 2-core CPU: <= 60 s/iteration.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.loop import SearchConfig  # noqa: E402
from search.runner import load_run, run  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llm", default="smollm2-135m")
    p.add_argument("--adapter", default=None)
    p.add_argument("--llm-url", default=None)
    p.add_argument("--seed", default="lenet")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=8000)
    p.add_argument("--max-new-tokens", type=int, default=1536)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cfg = SearchConfig(llm=args.llm, adapter=args.adapter, llm_url=args.llm_url, seed=args.seed,
                           dataset=args.dataset, iterations=args.iterations, train_limit=args.train_limit,
                           max_new_tokens=args.max_new_tokens, out=d)
        t0 = time.time()
        run(cfg, progress=False)
        wall = time.time() - t0
        _, iters, seed = load_run(d)
    print(f"{args.llm}{'+' + args.adapter if args.adapter else ''} on {args.seed}/{args.dataset} "
          f"(train limit {args.train_limit}); wall {wall:.0f} s incl. model load and seed profiling")
    print(f"{'it':>3} {'status':<12} {'LLM s':>8} {'profile s':>10} {'total s':>8}")
    for r in iters:
        print(f"{r['it']:>3} {r['status']:<12} {r['llm_seconds']:>8.1f} {r['profile_seconds']:>10.1f} "
              f"{r['llm_seconds'] + r['profile_seconds']:>8.1f}")
    llm = [r["llm_seconds"] for r in iters]
    prof = [r["profile_seconds"] for r in iters]
    print(f"mean {'':<12} {statistics.mean(llm):>8.1f} {statistics.mean(prof):>10.1f} "
          f"{statistics.mean(l + q for l, q in zip(llm, prof)):>8.1f}   (target <= 60 s on CPU)")


if __name__ == "__main__":
    main()
