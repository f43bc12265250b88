"""Training images/s: the proxy trainer vs a conventional DataLoader loop vs the compute ceiling.

    python benchmarks/train_throughput.py [--seed vgg-small] [--dataset fashion-mnist] [--steps 60]

All three run in this one process, on the same seed network (fresh weights from the same torch
seed), the same data, batch size, optimizer (SGD, Nesterov momentum, same learning-rate) and loss:
- proxy: `corpus.train.train` (uint8 data on the device, per-batch vectorised crop/flip/normalise);
- conventional: a `Dataset` returning one sample at a time with per-sample transforms (pad, random
  crop, flip, to float, normalise), a `DataLoader` with 2 workers and shuffling, the usual step;
- ceiling: the same steps on batches already prepared (augmented, normalised) in memory.
Each is warmed up for `--warmup` steps, then timed over `--steps` steps; the table shows images/s
and the ratios. Repeat with `--repeats` and the median is reported (this machine is noisy).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from corpus.data import load_prepared, prepare  # noqa: E402
from corpus.train import GpuData, Recipe, augment, param_groups, train  # noqa: E402
from mutator import seeds  # noqa: E402
from mutator.probe import build, load  # noqa: E402


class PerSample(torch.utils.data.Dataset):
    def __init__(self, x, y, mean, std, pad, flip):
        self.x, self.y, self.mean, self.std, self.pad, self.flip = x, y, mean.view(-1, 1, 1), std.view(-1, 1, 1), pad, flip

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i].float().div(255)
        img = F.pad(img, (self.pad,) * 4)
        dy, dx = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        h, w = self.x.shape[-2:]
        img = img[:, dy:dy + h, dx:dx + w]
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img - self.mean) / self.std, self.y[i]


def make_model(seed_name, spec):
    torch.manual_seed(0)
    return build(load(seeds.seed_source(seed_name)), spec, "cpu")


def step_fn(model, recipe):
    opt = torch.optim.SGD(param_groups(model, recipe.weight_decay), lr=0.05, momentum=0.9, nesterov=True)
    crit = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    model.train()

    device = next(model.parameters()).device

    def step(xb, yb):
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)  # no-ops on a CPU
        loss = crit(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_conventional(model, data, recipe, steps, warmup, bs):
    mean = data.mean.view(-1).cpu()
    std = data.std.view(-1).cpu()
    ds = PerSample(data.x.cpu(), data.y.cpu(), mean, std, data.x.shape[-2] // 8, recipe.flip)
    cuda = next(model.parameters()).is_cuda
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=2, drop_last=True,
                                     persistent_workers=True, pin_memory=cuda)
    step = step_fn(model, recipe)
    it = iter(dl)
    n = 0
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(dl)
            xb, yb = next(it)
        step(xb, yb)
        n += len(yb) if i >= warmup else 0
    if cuda:
        torch.cuda.synchronize()  # the queued steps are part of the time
    return n / (time.perf_counter() - t0)


def time_ceiling(model, data, recipe, steps, warmup, bs):
    gen = torch.Generator().manual_seed(0)
    batches = []
    for i in range(16):
        idx = torch.randint(0, len(data), (bs,), generator=gen)
        batches.append((data.normalize(augment(data.x[idx], data.x.shape[-2] // 8, recipe.flip, gen)), data.y[idx]))
    step = step_fn(model, recipe)
    for i in range(warmup):
        step(*batches[i % len(batches)])
    t0 = time.perf_counter()
    for i in range(steps):
        step(*batches[i % len(batches)])
    return steps * bs / (time.perf_counter() - t0)


def time_proxy(model, data, recipe, steps, warmup, bs):
    # steps + warmup steps of the real trainer, timing only the last `steps` (via its step callback)
    marks = {}

    def on_step(s, total):
        if s == warmup:
            marks["t0"] = time.perf_counter()

    r = Recipe(**{**recipe.to_dict(), "epochs": (steps + warmup) / (len(data) // bs), "lr": 0.05})
    train(model, data, r, "cpu", on_step=on_step)
    return steps * bs / (time.perf_counter() - marks["t0"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", default="vgg-small")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=20000)
    args = p.parse_args()
    raw = load_prepared(prepare(args.dataset))
    n = min(args.train_limit, len(raw["y_train"]))
    data = GpuData(raw["x_train"][:n], raw["y_train"][:n], "cpu")
    spec = {"in_shape": [1, *raw["x_train"].shape[1:]], "classes": 10, "class_name": None}
    recipe = Recipe(batch_size=args.batch_size)
    print(f"seed {args.seed} on {args.dataset} {tuple(spec['in_shape'][1:])}, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    results = {"conventional": [], "proxy": [], "ceiling": []}
    fns = {"conventional": time_conventional, "proxy": time_proxy, "ceiling": time_ceiling}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            results[name].append(fn(make_model(args.seed, spec), data, recipe, args.steps, args.warmup, args.batch_size))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{'loop':<14}{'img/s (median)':>16}{'runs':>30}")
    for k in fns:
        print(f"{k:<14}{med[k]:>16,.0f}{'  '.join(f'{v:,.0f}' for v in results[k]):>30}")
    print(f"proxy / ceiling      = {med['proxy'] / med['ceiling']:.2f}   (target >= 0.90)")
    print(f"proxy / conventional = {med['proxy'] / med['conventional']:.2f}   (target >= 1.5 on CPU)")


if __name__ == "__main__":
    main()
