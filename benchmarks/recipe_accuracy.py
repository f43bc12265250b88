"""Test accuracy and seconds of the default proxy recipe, per built-in seed and training-set size.

    python benchmarks/recipe_accuracy.py                                   # every seed, 1000/2000/8000/full
    python benchmarks/recipe_accuracy.py --seeds lenet,resnet-small --limits 1000,2000 --threads 1

Each cell trains the seed itself (fresh weights, torch seed 0) with `corpus.train.Recipe()`'s defaults
and `--train-limit` N (0: the full training split) exactly as `corpus build` does without flags, then
scores top-1 on the full test split. `seconds` is the training loop's wall time, `total` adds building
the network and the test pass. The batch size and step count come from `corpus.train.schedule`.
The seeds are trusted built-in code, so this runs in process (no sandbox). Prints one line per cell as
it finishes and a Markdown table at the end; a seed that cannot be built or trained is a row with its
error, not a number.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from corpus.data import info, load_prepared, prepare  # noqa: E402
from corpus.train import Recipe, evaluate, schedule, split_data, train  # noqa: E402
from mutator import seeds  # noqa: E402
from mutator.probe import build, load  # noqa: E402


def cell(seed: str, limit: int, data: dict, dataset: str, device: str) -> dict:
    recipe = Recipe(train_limit=limit, flip=info(dataset)["flip"])
    t0 = time.perf_counter()
    train_set, test_set = split_data(data, recipe, device)
    bs, steps = schedule(len(train_set), recipe)
    row = {"seed": seed, "images": len(train_set), "batch": bs, "steps": steps}
    try:
        torch.manual_seed(recipe.seed)
        spec = {"in_shape": [1, *data["x_train"].shape[1:]], "classes": info(dataset)["classes"]}
        model = build(load(seeds.seed_source(seed)), spec, device)
        res = train(model, train_set, recipe, device)
        row.update(accuracy=evaluate(model, test_set, recipe.eval_batch_size), seconds=res["train_seconds"])
    except Exception as exc:  # a seed that does not fit the data set: say so, no number
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    row["total"] = time.perf_counter() - t0
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default=",".join(seeds.SEEDS), help="comma-separated built-in seeds (default: all)")
    p.add_argument("--limits", default="1000,2000,8000,0", help="comma-separated --train-limit values (0: full)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: every core, like the profiler)")
    args = p.parse_args()
    names = [s for s in args.seeds.split(",") if s]
    unknown = [s for s in names if s not in seeds.SEEDS]
    if unknown:
        print(f"error: unknown seed {unknown[0]!r} (known: {', '.join(seeds.SEEDS)})", file=sys.stderr)
        return 2
    try:
        limits = [int(x) for x in args.limits.split(",") if x]
    except ValueError:
        print(f"error: --limits must be comma-separated integers, not {args.limits!r}", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    data = load_prepared(prepare(args.dataset), with_test_labels=True)  # trusted: scores itself
    print(f"{args.dataset}, default recipe, device {args.device}, {torch.get_num_threads()} threads", flush=True)
    rows = []
    for seed in names:
        for limit in limits:
            r = cell(seed, limit, data, args.dataset, args.device)
            rows.append(r)
            got = f"accuracy {r['accuracy']:.2%}, {r['seconds']:.1f} s" if "accuracy" in r else r["error"]
            print(f"{seed} n={r['images']} batch {r['batch']} steps {r['steps']}: {got} "
                  f"(total {r['total']:.1f} s)", flush=True)
    print("\n| seed | images | batch | steps | accuracy | train s | total s |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        acc = f"{r['accuracy']:.2%}" if "accuracy" in r else r["error"]
        secs = f"{r['seconds']:.1f}" if "seconds" in r else "—"
        print(f"| {r['seed']} | {r['images']:,} | {r['batch']} | {r['steps']} | {acc} | {secs} | {r['total']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
