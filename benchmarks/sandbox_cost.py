"""Seconds per candidate in the sandbox: a reused worker (before) vs a fresh process per candidate (now).

    python benchmarks/sandbox_cost.py                       # before = commit 9bfc5ed's sandbox
    python benchmarks/sandbox_cost.py --ref 9bfc5ed --validate 30 --profiles 3 --train-limit 2000

Both sides run this checkout's handlers (mutator analysis, corpus profiler, proxy recipe); only
`mutator/sandbox.py` and `mutator/worker.py` differ: "before" takes them from `--ref` (a long-lived
worker that runs every candidate in the same interpreter), "now" is the fork server (a fresh, isolated
process per candidate). Measured per candidate, median over the calls, both sides in one run and
interleaved in rounds (this machine is noisy):

- validate: build `--seed` on the meta device and run it forward (what `mutator generate` does per variant);
- profile: a Fashion-MNIST proxy evaluation of `--seed` (the corpus recipe with `--train-limit`).

The table's last line is the new sandbox's extra time per candidate as a share of a proxy evaluation
(target: <= 10 %).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time
from mutator.sandbox import WorkerPool
from mutator.generate import resolve_seed
from corpus.data import prepare, info
from corpus.train import Recipe
args = json.loads(sys.argv[1])
_, source = resolve_seed(args["seed"])
d = info("fashion-mnist")
spec = {"in_shape": [1, d["channels"], *d["size"]], "classes": d["classes"], "class_name": None}
pool = WorkerPool(1, timeout_s=600, memory_mb=6144, threads_per_worker=args["threads"])
mode = getattr(pool, "containment", {}).get("mode", "bubblewrap" if getattr(pool, "isolated", False) else "none")
pool.call("mutator.analysis:validate", {"source": source, "spec": spec})  # start-up, not counted
out = {"mode": mode, "validate": [], "profile": []}
for _ in range(args["validate"]):
    t = time.perf_counter()
    r = pool.call("mutator.analysis:validate", {"source": source, "spec": spec})
    assert r["status"] == "ok", r
    out["validate"].append(time.perf_counter() - t)
payload = {"source": source, "data_path": str(prepare("fashion-mnist")), "classes": d["classes"], "class_name": None,
           "recipe": Recipe(train_limit=args["train_limit"]).to_dict(), "device": "cpu"}
for _ in range(args["profiles"]):
    t = time.perf_counter()
    r = pool.call("corpus.pipeline:evaluate", payload)
    assert r["status"] == "ok", r
    out["profile"].append(time.perf_counter() - t)
    out["accuracy"] = r["accuracy"]
pool.close()
print(json.dumps(out))
'''


def before_tree(ref: str, dest: Path) -> Path:
    """This checkout's packages with the sandbox of `ref`."""
    for pkg in ("mutator", "corpus", "search", "finetune"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("mutator/sandbox.py", "mutator/worker.py"):
        old = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{f}"], capture_output=True, text=True, check=True)
        (dest / f).write_text(old.stdout)
    (dest / "mutator" / "landlock.py").unlink(missing_ok=True)
    return dest


def measure(tree: Path, args) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(vars(args))], capture_output=True, text=True,
                         cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, timeout=3600)
    if res.returncode != 0:
        sys.exit(f"error: measuring {tree} failed: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", default="9bfc5ed", help="git commit whose sandbox is 'before'")
    p.add_argument("--seed", default="lenet")
    p.add_argument("--validate", type=int, default=30, help="validate calls per round")
    p.add_argument("--profiles", type=int, default=2, help="proxy evaluations per round")
    p.add_argument("--train-limit", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads per worker (the search's profiler uses every core)")
    args = p.parse_args()
    # not under /tmp: the old sandbox's private /tmp hid a checkout there (the bug the new one fixed)
    with tempfile.TemporaryDirectory(prefix=".sandbox-before-", dir=ROOT) as tmp:
        trees = {"before": before_tree(args.ref, Path(tmp)), "now": ROOT}
        got = {k: {"validate": [], "profile": []} for k in trees}
        for r in range(args.rounds):
            for name, tree in (trees.items() if r % 2 == 0 else reversed(trees.items())):
                m = measure(tree, args)
                got[name]["mode"] = m["mode"]
                got[name]["validate"] += m["validate"]
                got[name]["profile"] += m["profile"]
                print(f"round {r + 1}/{args.rounds} {name}: done", file=sys.stderr, flush=True)
    med = {k: {s: statistics.median(v[s]) for s in ("validate", "profile")} for k, v in got.items()}
    print(f"seed {args.seed}, Fashion-MNIST, --train-limit {args.train_limit}, {args.threads} threads per worker; "
          f"median seconds per candidate "
          f"({args.rounds} rounds x {args.validate} validate / {args.profiles} profile calls)\n")
    print("| sandbox | mode | validate (meta build + forward) | proxy evaluation |")
    print("|---|---|---:|---:|")
    for k in ("before", "now"):
        print(f"| {k} ({'reused worker, ' + args.ref if k == 'before' else 'fresh process per candidate'}) "
              f"| {got[k]['mode']} | {med[k]['validate']:.3f} s | {med[k]['profile']:.2f} s |")
    extra = med["now"]["validate"] - med["before"]["validate"]
    extra_p = med["now"]["profile"] - med["before"]["profile"]
    print(f"\nextra per candidate: validate {extra * 1000:+.0f} ms; proxy evaluation {extra_p:+.2f} s = "
          f"{100 * extra_p / med['before']['profile']:+.1f} % of a proxy evaluation (target <= 10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
