"""The proxy trainer: one fixed recipe for every network, with the data path of the fastest
CIFAR trainers.

    acc, seconds = train_and_evaluate(model, data, Recipe(epochs=1), device="cpu")

The whole training set lives on the device as one uint8 tensor; each batch is gathered by index,
augmented on the device (random crop with zero padding of H//8 pixels and, where it makes sense,
horizontal flip, both per sample and vectorised) and normalised with the training set's per-channel
mean and standard deviation. No per-sample Python, no DataLoader. On CUDA: channels-last and bf16
autocast; on a CPU each is a recipe field (`channels_last`, `bf16`; off in `Recipe`, on by `--fast-cpu`,
whose default auto turns them on where the CPU has bf16 instructions: there the two give ~2x the images/s
of vgg-small and resnet-small, and issue 30's table found the ranking no worse). Optimiser: SGD with Nesterov momentum 0.9, weight
decay 5e-4 (not on BatchNorm/bias), label smoothing 0.1, peak learning rate 0.1 reached linearly over the
first 20 % of steps, then linear decay to zero; optionally (`ema` > 0) the weights are replaced at the
end by their exponential moving average over the steps after warm-up. Seeds fix the initial weights and the batch order.
Accuracy is top-1 on the full test split, as a fraction in [0, 1]. In the sandbox the test split has
no labels (`split_data`): `predict` gives the class indices, and the parent, which alone holds the
labels, scores them (`corpus.evaluator.score`).

Batch size and number of steps (`schedule`), for a training set of n images: the batch is
`batch_size`, or when that is 0 (the default) the largest power of two <= n / 64 within [32, 256]
(n = 1,000 or 2,000: 32; 8,000: 64; 16,384 and more: 256), and never more than n; an epoch is
n // batch steps (the last partial batch is dropped); training runs for `epochs` epochs but at least
`min_steps` (default 150) optimizer steps, repeating the subset as often as that takes. So a small
`train_limit` costs about min_steps x batch images and still trains (8 steps of batch 256 on 2,000
images left every network at chance), and the full set trains exactly `epochs` epochs.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class Recipe:
    epochs: float = 1.0
    batch_size: int = 0  # 0: auto_batch(n)
    min_steps: int = 150
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup: float = 0.2
    flip: bool = True
    crop: bool = True
    train_limit: int = 0
    seed: int = 0
    eval_batch_size: int = 1024
    ema: float = 0.0  # weight averaging: decay of an exponential moving average of the weights after warm-up (0: off)
    channels_last: bool = False  # on a CPU too (CUDA: always): ~1.3x the images/s of vgg/resnet-small here, fp32
    bf16: bool = False  # bf16 autocast of the training steps on a CPU too (CUDA: always); not the evaluation

    def to_dict(self) -> dict:
        return asdict(self)


def auto_batch(n: int) -> int:
    """The largest power of two <= n / 64 within [32, 256]: an epoch of a small subset has >= 32 steps."""
    b = 32
    while b < 256 and 2 * b * 64 <= n:
        b *= 2
    return b


def schedule(n: int, recipe: Recipe) -> tuple[int, int]:
    """(batch size, optimizer steps) of `recipe` on n training images: the rule in the module docstring."""
    if n < 1:
        raise ValueError("no training images")
    if recipe.batch_size < 0 or recipe.min_steps < 0 or recipe.epochs < 0:
        raise ValueError("batch_size, min_steps and epochs must be >= 0")
    bs = min(recipe.batch_size or auto_batch(n), n)
    return bs, max(1, round((n // bs) * recipe.epochs), recipe.min_steps)


class NaNLoss(Exception):
    pass


class GpuData:
    """A split held on the device as uint8, with its normalisation constants (`y` None: no labels)."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor | None, device, mean=None, std=None):
        self.x = x_uint8.to(device, non_blocking=True)
        self.y = None if y is None else y.to(device, non_blocking=True)
        if mean is None:
            xf = self.x.float().div_(255)
            mean = xf.mean(dim=(0, 2, 3))
            std = xf.std(dim=(0, 2, 3)).clamp_min(1e-3)
        self.mean = mean.to(device).view(1, -1, 1, 1)
        self.std = std.to(device).view(1, -1, 1, 1)

    def __len__(self):
        return len(self.x)

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        return (xb.float().div_(255) - self.mean) / self.std


def augment(xb: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding) and horizontal flip, each sample its own draw, on the device."""
    b, _, h, w = xb.shape
    if pad > 0:
        xp = F.pad(xb, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), device=xb.device, generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (b,), device=xb.device, generator=gen)
        rows = (torch.arange(h, device=xb.device)[None] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(w, device=xb.device)[None] + dx[:, None])[:, None, None, :]
        bidx = torch.arange(b, device=xb.device)[:, None, None, None]
        cidx = torch.arange(xb.shape[1], device=xb.device)[None, :, None, None]
        xb = xp[bidx, cidx, rows, cols]
    if flip:
        mask = torch.rand(b, device=xb.device, generator=gen) < 0.5
        xb = torch.where(mask[:, None, None, None], xb.flip(3), xb)
    return xb


def param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def first_tensor(out):
    from mutator.probe import first_tensor as ft

    return ft(out)


def channels_last_ok(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether `model` runs on a channels-last batch, tried once (remembered on the model) on two images of
    `x` in eval mode without gradients (no BatchNorm statistic moves, no rng is drawn). A network that
    `.view`s a convolution's output cannot (the view needs the default layout): it is put back in the
    default format and trained as it is. True: the model is left in channels-last format."""
    known = getattr(model, "_nasforge_channels_last", None)
    if known is not None:
        return known
    was = model.training
    model.to(memory_format=torch.channels_last)
    model.eval()
    try:
        with torch.no_grad():
            model(x[:2].contiguous(memory_format=torch.channels_last))
        ok = True
    except RuntimeError:  # the view error; any other fault shows again in the real forward
        ok = False
        model.to(memory_format=torch.contiguous_format)
    model.train(was)
    model._nasforge_channels_last = ok
    return ok


def train(model: nn.Module, train: GpuData, recipe: Recipe, device, on_step=None) -> dict:
    """Train in place; returns {"train_seconds", "steps", "batch_size", "final_loss"}. Raises NaNLoss."""
    cuda = torch.device(device).type == "cuda"
    amp = cuda or recipe.bf16
    last = (cuda or recipe.channels_last) and len(train) > 0 and train.x.ndim == 4 and \
        channels_last_ok(model, train.normalize(train.x[:2]))
    model.train()
    n = len(train)
    bs, total = schedule(n, recipe)
    steps_per_epoch = n // bs  # drop the last partial batch: same step shapes every time
    warm = max(1, int(total * recipe.warmup))
    opt = torch.optim.SGD(param_groups(model, recipe.weight_decay), lr=recipe.lr,
                          momentum=recipe.momentum, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    crit = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    gen = torch.Generator(device=train.x.device).manual_seed(recipe.seed)
    pad = train.x.shape[-2] // 8 if recipe.crop else 0
    check_every = 25 if cuda else 1
    if not 0.0 <= recipe.ema < 1.0:
        raise ValueError(f"ema must be in [0, 1), not {recipe.ema}")
    averaged = None  # (live tensor, its average): parameters and floating buffers (BatchNorm statistics)
    t0 = time.perf_counter()
    step, loss = 0, None
    while step < total:
        perm = torch.randperm(n, device=train.x.device, generator=gen)
        for i in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[i * bs:(i + 1) * bs]
            xb = train.normalize(augment(train.x[idx], pad, recipe.flip, gen))
            if last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=amp):
                loss = crit(first_tensor(model(xb)), train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if recipe.ema and step >= warm:
                with torch.no_grad():
                    if averaged is None:
                        averaged = [(t, t.detach().clone()) for t in (*model.parameters(), *model.buffers())
                                    if t.is_floating_point()]
                    else:
                        for live, avg in averaged:
                            avg.lerp_(live, 1.0 - recipe.ema)
            if step % check_every == 0 or step == total:
                if not math.isfinite(loss.item()):
                    raise NaNLoss(f"loss is {loss.item()} at step {step}")
            if on_step:
                on_step(step, total)
    if averaged is not None:  # the model ends with the averaged weights
        with torch.no_grad():
            for live, avg in averaged:
                live.copy_(avg)
    if cuda:
        torch.cuda.synchronize()
    return {"train_seconds": time.perf_counter() - t0, "steps": total, "batch_size": bs,
            "final_loss": None if loss is None else float(loss.item())}


@torch.no_grad()
def predict(model: nn.Module, test: GpuData, batch_size: int = 1024) -> torch.Tensor:
    """The model's class (top-1 index, int64 on the CPU) for every image of `test`, in order; eval mode."""
    cuda = test.x.device.type == "cuda"
    last = getattr(model, "_nasforge_channels_last", None)
    if last is None:  # not trained here: on CUDA, channels-last where the network takes it
        last = cuda and len(test) > 0 and test.x.ndim == 4 and channels_last_ok(model, test.normalize(test.x[:2]))
    model.eval()
    out_all = []
    for i in range(0, len(test), batch_size):
        xb = test.normalize(test.x[i:i + batch_size])
        if last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = first_tensor(model(xb))
        if out is None or out.ndim != 2 or len(out) != len(xb):
            raise ValueError(f"output shape {None if out is None else tuple(out.shape)} for a batch of {len(xb)}")
        out_all.append(out.argmax(-1).cpu())
    return torch.cat(out_all)


def evaluate(model: nn.Module, test: GpuData, batch_size: int = 1024) -> float:
    """Top-1 accuracy on a labelled split (trusted callers: benchmarks, tests; the sandbox uses `predict`)."""
    return (predict(model, test, batch_size) == test.y.cpu()).float().mean().item()


def split_data(data: dict, recipe: Recipe, device):
    """Device-resident train (stratified `train_limit` subset) and full test split (labelled only where
    `data` has `y_test`: never in the sandbox, see `corpus.data.prepare`)."""
    from corpus.data import stratified_indices

    idx = torch.as_tensor(stratified_indices(data["y_train"].numpy(), recipe.train_limit, recipe.seed))
    train_set = GpuData(data["x_train"][idx], data["y_train"][idx], device)
    test_set = GpuData(data["x_test"], data.get("y_test"), device, train_set.mean, train_set.std)
    return train_set, test_set
