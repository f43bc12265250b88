"""Validated variants per second of `mutator generate`, for each built-in seed.

    python benchmarks/mutator_throughput.py [--num 60] [--workers 2] [--seeds resnet18,vgg-small]

Each seed: analysis time (finding and grouping the width literals), then `--num` variants written
and validated (sandboxed workers, meta-device build and forward at 1x3x32x32). Workers are started
and warmed up (torch imported) before timing. Rate = variants written / generation seconds.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mutator import seeds  # noqa: E402
from mutator.generate import GenerateConfig, analyze_seed, generate, make_pool, spec_of  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num", type=int, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", default=",".join(seeds.SEEDS))
    args = p.parse_args()
    names = [s for s in args.seeds.split(",") if s]
    print(f"machine: {os.cpu_count()} cores; workers: {args.workers}")
    print(f"{'seed':<18}{'params':>12}{'widths':>8}{'analysis s':>12}{'variants':>10}{'failed':>8}"
          f"{'gen s':>8}{'var/s':>8}")
    for name in names:
        cfg = GenerateConfig(seed=name, num=args.num, workers=args.workers)
        pool = make_pool(cfg)
        try:
            pool.map("mutator.analysis:validate", [{"source": "x = 1", "spec": spec_of(cfg)}] * pool.size)
            t0 = time.perf_counter()
            a = analyze_seed(pool, seeds.seed_source(name), spec_of(cfg), cfg.divisor, name)
            t_an = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as d:
                cfg = GenerateConfig(seed=name, num=args.num, out=d, workers=args.workers)
                t0 = time.perf_counter()
                res = generate(cfg, progress=False, pool=pool, analysis=a)
                t_gen = time.perf_counter() - t0
        finally:
            pool.close()
        failed = res["invalid"] + res["timeout"] + res["crash"]
        gen_only = max(t_gen, 1e-9)
        print(f"{name:<18}{a.params:>12,}{len(a.groups):>8}{t_an:>12.2f}{res['written']:>10}"
              f"{failed:>8}{gen_only:>8.2f}{res['written'] / gen_only:>8.1f}")


if __name__ == "__main__":
    main()
