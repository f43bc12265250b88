"""Wall time of a small sweep of trained runs: each run's evaluation worker on every core (before) vs the
cores shared out among the parallel runs (now: NASFORGE_THREADS = cores // --parallel).

    python benchmarks/sweep_threads.py                      # 2 seeds x 4 iterations of lenet, --parallel 2
    python benchmarks/sweep_threads.py --seeds 4 --iterations 6 --seed vgg-small --rounds 2

Both sides run the same spec (`--strategy mutation` on Fashion-MNIST, the search's default recipe) with this
checkout's `search sweep`, into fresh folders, interleaved in rounds (this machine is noisy). "before"
exports NASFORGE_THREADS = the number of cores (what every run used before the change), "now" leaves
it unset (the sweep then gives each run cores // parallel). Reported per side: the median over rounds
of the sweep's wall time, and the median per-candidate evaluation seconds from the run stores.
"""
import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(side: str, args, folder: Path) -> tuple[float, float]:
    folder.mkdir(parents=True)
    spec = folder / "spec.yaml"
    spec.write_text(f"defaults: {{iterations: {args.iterations}, dataset: fashion-mnist, seed: {args.seed}}}\n"
                    "configurations: {random: {strategy: mutation}}\n"
                    f"seeds: {args.seeds}\nevaluators: [profile]\n")
    env = dict(os.environ)
    env.pop("NASFORGE_THREADS", None)
    if side == "before":
        env["NASFORGE_THREADS"] = str(os.cpu_count() or 1)
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "search", "sweep", str(spec), "--out", str(folder / "out"),
                          "--parallel", str(args.parallel)], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"{side}: sweep failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
    secs = []
    for store in (folder / "out" / "runs").glob("*/*/run.sqlite"):
        with sqlite3.connect(store) as c:
            secs += [r[0] for r in c.execute("select profile_seconds from iterations where profile_seconds > 0")]
    return wall, statistics.median(secs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", default="lenet")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    got = {"before": [], "now": []}
    with tempfile.TemporaryDirectory(prefix="sweep-threads-") as tmp:
        for r in range(args.rounds):
            for side in ("before", "now"):
                got[side].append(one(side, args, Path(tmp) / f"{side}-{r}"))
    cores = os.cpu_count() or 1
    print(f"{args.seeds} runs x {args.iterations} iterations of `--strategy mutation --seed {args.seed}` (Fashion-MNIST), "
          f"--parallel {args.parallel}, {cores} cores, {args.rounds} round(s)\n")
    print("| side | threads per run | sweep wall s | s per candidate evaluation |")
    print("|---|---:|---:|---:|")
    for side, threads in (("before", cores), ("now", max(1, cores // args.parallel))):
        walls, evals = zip(*got[side])
        print(f"| {side} | {threads} | {statistics.median(walls):.1f} | {statistics.median(evals):.2f} |")
    b, n = (statistics.median(w for w, _ in got[s]) for s in ("before", "now"))
    print(f"\nsweep wall time now / before: {n / b:.2f}")


if __name__ == "__main__":
    main()
