"""Training images/s of `corpus profile` (the sandboxed proxy) against a conventional DataLoader loop, one run.

    python benchmarks/profile_throughput.py                      # vgg-small, 10,000 Fashion-MNIST images
    python benchmarks/profile_throughput.py --seed resnet-small --repeats 3 --threads 2
    python benchmarks/profile_throughput.py --fast --batch-size 32   # at search run's default batch

Arms, interleaved in rounds (this machine is noisy), the same seed network, data subset, batch and steps:
- profile: `corpus.evaluator.Evaluator` (what `python -m corpus profile` runs: a sandboxed fork-server
  worker, Landlock/namespaces, seccomp, the watchdog), its row's `train_seconds`; with `--fast` also with
  the recipe's CPU options `channels_last` and `channels_last` + `bf16` (bf16 autocast; off by default);
- proxy in process: `corpus.train.train` with the same recipe, no sandbox (what the sandbox costs);
- conventional: a `Dataset` with per-sample transforms (pad, random crop, flip, to float, normalise) and a
  `DataLoader` (2 workers, shuffle, drop_last), SGD step with the same optimizer, loss and batch.
The recipe is the default one at `--train-limit` images with `--min-steps 0`: exactly one epoch, the batch
the default picks (`corpus.train.schedule`: 128 at 10,000 images). images/s = optimizer steps x batch /
training seconds, for every arm; so the ratio compares the same work. (Counting `--train-limit` images per
`train_seconds` is wrong where `min_steps` lengthens the run: at 10,000 images the default's 150-step floor
trains 19,200 images, and such a count reads about half the true rate.)
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from corpus.data import info, load_prepared, prepare  # noqa: E402
from corpus.evaluator import Evaluator, recipe_for  # noqa: E402
from corpus.train import Recipe, schedule, split_data, train  # noqa: E402
from mutator import seeds  # noqa: E402
from train_throughput import make_model, time_conventional  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", default="vgg-small", help="built-in seed network (default vgg-small)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=0,
                   help="training batch (default 0: the corpus default's rule; search run's default is 32)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads everywhere (default 0: every core)")
    p.add_argument("--device", default="cpu",
                   help="cpu | cuda: every arm on it (on CUDA the proxy uses channels-last and bf16 autocast always, "
                        "the conventional loop fp32 with pinned-memory DataLoader batches; benchmarks/cuda_check.sh)")
    p.add_argument("--fast", action="store_true",
                   help="also profile with the recipe's CPU options: channels_last, and channels_last + bf16")
    args = p.parse_args()
    if args.seed not in seeds.SEEDS:
        print(f"error: --seed {args.seed!r} is not a built-in seed ({', '.join(seeds.SEEDS)})", file=sys.stderr)
        return 2
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    import os

    os.environ["NASFORGE_THREADS"] = str(threads)  # the sandboxed worker's threads
    if args.batch_size < 0:
        print("error: --batch-size must be >= 0", file=sys.stderr)
        return 2
    if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
        print(f"error: --device {args.device}: cpu, or cuda where a CUDA device is available", file=sys.stderr)
        return 2
    dev = args.device
    recipe = Recipe(**recipe_for(args.dataset, train_limit=args.train_limit, batch_size=args.batch_size, min_steps=0))
    raw = load_prepared(prepare(args.dataset), with_test_labels=True)
    train_set, _ = split_data(raw, recipe, dev)
    bs, steps = schedule(len(train_set), recipe)
    spec = {"in_shape": [1, *raw["x_train"].shape[1:]], "classes": info(args.dataset)["classes"], "class_name": None}
    src = seeds.seed_source(args.seed)
    print(f"{args.seed} on {args.dataset}: {len(train_set):,} images, batch {bs}, {steps} steps "
          f"({steps * bs:,} images per run), {threads} threads, {args.repeats} rounds, {dev}", flush=True)
    res = {"profile (sandbox)": [], "proxy in process": [], "conventional": []}
    variants = {"profile (sandbox)": {}}
    if args.fast:
        variants["profile (sandbox), channels_last"] = {"channels_last": True}
        variants["profile (sandbox), channels_last + bf16"] = {"channels_last": True, "bf16": True}
        res = {**{k: [] for k in variants}, **res}
    with Evaluator(args.dataset, recipe.to_dict(), device=dev) as ev:
        ev.payload["latency"] = "none"
        for r in range(args.repeats):
            for name, more in variants.items():
                rec = {**recipe.to_dict(), **more}
                ev.recipe = rec
                row = ev.evaluate(src, limits={})
                if row["status"] != "ok":
                    print(f"error: the profile failed: {row['status']} {row.get('error')}", file=sys.stderr)
                    return 1
                res[name].append(steps * bs / row["train_seconds"])
            torch.manual_seed(recipe.seed)
            out = train(make_model(args.seed, spec).to(dev), train_set, recipe, dev)
            res["proxy in process"].append(steps * bs / out["train_seconds"])
            # the conventional loop, the same number of steps, its first steps timed too (warmup 0)
            res["conventional"].append(time_conventional(make_model(args.seed, spec).to(dev), train_set, recipe, steps, 0,
                                                         bs))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} img/s" for k, v in res.items()), flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\n| arm | images/s (median of {args.repeats}) | runs | vs conventional |\n|---|---:|---|---:|")
    for k, v in res.items():
        print(f"| {k} | {med[k]:,.0f} | {', '.join(f'{x:,.0f}' for x in v)} | {med[k] / med['conventional']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
