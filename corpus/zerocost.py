"""Zero-cost proxies: scores of an untrained network from one batch, in well under a second.

    python -c "from corpus.zerocost import score_source; \
               print(score_source(open('mutator/seeds/vgg_small.py').read(), (1, 1, 28, 28), 10))"

`scores(model, x, y, seed)` returns one float (or None, with the reason in `zc_error`) per proxy,
each computed on its own deep copy of the model: the caller's weights, buffers (BatchNorm running
statistics), gradients and the global random state are left exactly as they were, so a network
scored before training trains to the same accuracy as one that was not scored.

Proxies and conventions (after Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS",
ICLR 2021). "Weights" are the `weight` tensors of the convolution and linear layers
(`nn.Conv1d/2d/3d`, `nn.ConvTranspose*`, `nn.Linear`); other parameters are not scored. L is the
cross-entropy of the batch; the network is in training mode (BatchNorm on batch statistics,
dropout drawn from `seed`) except for SynFlow.
- `zc_synflow` (Tanaka et al. 2020): ln of sum |θ ⊙ ∂R/∂θ| with R = sum of the outputs of the
  network whose parameters are all replaced by their absolute values, on one all-ones input, in
  float64 and eval mode (at initialisation BatchNorm's running statistics make it an affine
  identity, so BatchNorm neither normalises the signal away nor flips signs). The log keeps deep
  networks comparable; a sum that overflows float64 or is 0 is reported as None.
- `zc_naswot` (Mellor et al. 2021): ln|K_H|, K_H[i, j] = number of ReLU units on which samples i
  and j agree (both active or both inactive), over every ReLU call in the forward pass: `nn.ReLU`
  modules, `F.relu`, `torch.relu` and `Tensor.relu(_)`, caught with a torch function mode (so
  functional ReLUs count, unlike in module-hook implementations). Other activations (GELU,
  SiLU, ReLU6, LeakyReLU) are not counted; a network without a ReLU gets None. Identical codes for
  two samples make K_H singular (ln 0): None.
Every None comes with its reason in `zc_error`; a failing proxy never fails the row.
- `zc_snip` (Lee et al. 2019): sum |θ ⊙ ∂L/∂θ|.
- `zc_grad_norm`: sum over layers of the L2 norm of ∂L/∂θ.
- `zc_grasp` (Wang et al. 2020): sum of -θ ⊙ (H g), g = ∂L/∂θ, H the Hessian of L (a Hessian-vector
  product by double back-propagation). Signed; higher is taken as better, as in Abdelfattah et al.
- `zc_seconds`: wall time of all proxies together.

API for search screening (untrusted code: call it inside a sandbox worker, i.e. through the
evaluation pipeline, `corpus.pipeline:evaluate` with `"zero_cost": "on"` or `"only"`):
    score_source(source, in_shape, classes, class_name=None, batch=64, seed=0, x=None, y=None) -> dict
      builds the network in this process and returns the proxies plus `params` and `flops`
      (random N(0, 1) images and labels drawn from `seed` unless a batch x, y is given).
    scores(model, x, y, seed=0) -> dict
    corpus.predictor.load_predictor(path).predict(rows) -> list[float]
"""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PROXIES = ("zc_synflow", "zc_naswot", "zc_snip", "zc_grad_norm", "zc_grasp")
COLUMNS = (*PROXIES, "zc_seconds", "zc_error")
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_RELUS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, _LAYERS) and m.weight is not None]


def _logits(out) -> torch.Tensor:
    from mutator.probe import first_tensor

    t = first_tensor(out)
    if t is None:
        raise ValueError("the forward pass returned no tensor")
    return t


def _loss_grads(model: nn.Module, x, y, create_graph=False):
    model.train()
    ws = _weights(model)
    loss = F.cross_entropy(_logits(model(x)), y)
    return ws, torch.autograd.grad(loss, ws, create_graph=create_graph, allow_unused=True)


def _log(value: float) -> float:
    if not 0 < value < math.inf:
        raise ValueError(f"sum is {value}, no log")
    return math.log(value)


def synflow(model: nn.Module, x: torch.Tensor) -> float:
    """ln sum |θ ⊙ ∂R/∂θ| on the absolute-valued network (see module docstring)."""
    try:
        net, dtype = copy.deepcopy(model).double(), torch.float64
        ones = torch.ones((1, *x.shape[1:]), dtype=dtype, device=x.device)
        net.eval()(ones)  # a model that makes float32 tensors in forward cannot run in float64
    except RuntimeError:
        net, dtype = copy.deepcopy(model).float(), torch.float32
        ones = torch.ones((1, *x.shape[1:]), dtype=dtype, device=x.device)
    net.eval()
    with torch.no_grad():
        for p in net.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    ws = _weights(net)
    out = _logits(net(ones))
    grads = torch.autograd.grad(out.sum(), ws, allow_unused=True)
    total = sum(float((w.detach() * g).abs().sum()) for w, g in zip(ws, grads) if g is not None)
    return _log(total)


class _ReluCodes(torch.overrides.TorchFunctionMode):
    """Accumulates K_H from the binary code of every ReLU call (see module docstring)."""

    def __init__(self, n: int):
        super().__init__()
        self.k = torch.zeros(n, n, dtype=torch.float64)
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _RELUS and isinstance(out, torch.Tensor) and out.dim() >= 1 and out.shape[0] == self.k.shape[0]:
            c = (out.detach().reshape(out.shape[0], -1) > 0).double().cpu()
            self.k += c @ c.t() + (1 - c) @ (1 - c).t()
            self.calls += 1
        return out


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """ln|K_H| over the ReLU activation codes of the batch (Mellor et al.)."""
    net = copy.deepcopy(model).train()
    codes = _ReluCodes(x.shape[0])
    with torch.no_grad(), codes:
        net(x)
    if codes.calls == 0:
        raise ValueError("no ReLU in the forward pass")
    sign, logdet = torch.linalg.slogdet(codes.k)
    if sign <= 0 or not math.isfinite(float(logdet)):
        raise ValueError("K_H is singular (samples share an activation code)")
    return float(logdet)


def snip_and_grad_norm(model: nn.Module, x, y) -> tuple[float, float]:
    net = copy.deepcopy(model)
    ws, grads = _loss_grads(net, x, y)
    pairs = [(w, g) for w, g in zip(ws, grads) if g is not None]
    snip = sum(float((w.detach() * g).abs().sum()) for w, g in pairs)
    norm = sum(float(g.norm()) for _, g in pairs)
    return snip, norm


def grasp(model: nn.Module, x, y) -> float:
    """sum -θ ⊙ Hg, one batch, Hessian-vector product by double back-propagation."""
    net = copy.deepcopy(model)
    ws, g = _loss_grads(net, x, y)
    g = [None if t is None else t.detach() for t in g]
    ws, g2 = _loss_grads(net, x, y, create_graph=True)
    z = sum((a * b).sum() for a, b in zip(g2, g) if a is not None and b is not None)
    if not isinstance(z, torch.Tensor) or not z.requires_grad:
        return 0.0  # no second-order path (e.g. a purely linear model): Hg = 0
    hg = torch.autograd.grad(z, ws, allow_unused=True)
    return float(sum((-w.detach() * h).sum() for w, h in zip(ws, hg) if h is not None))


def scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict:
    """Every proxy of `model` on the batch (x, y); the model and global RNG are left untouched."""
    from mutator.worker import short_error

    out = dict.fromkeys(COLUMNS)
    errors = []
    t0 = time.perf_counter()
    devices = [x.device] if x.device.type == "cuda" else []
    steps = [("zc_synflow", lambda: synflow(model, x)), ("zc_naswot", lambda: naswot(model, x)),
             ("zc_snip", lambda: snip_and_grad_norm(model, x, y)), ("zc_grasp", lambda: grasp(model, x, y))]
    for name, fn in steps:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            try:
                value = fn()
            except Exception as exc:  # model code: record which proxy failed and why, go on
                errors.append(f"{'snip/grad_norm' if name == 'zc_snip' else name[3:]}: {short_error(exc)}")
                continue
        if name == "zc_snip":
            out["zc_snip"], out["zc_grad_norm"] = value
        else:
            out[name] = value
    for k in PROXIES:  # a non-finite score is no score (see module docstring)
        if out[k] is not None and not math.isfinite(out[k]):
            errors.append(f"{k[3:]}: not finite ({out[k]})")
            out[k] = None
    out["zc_seconds"] = round(time.perf_counter() - t0, 4)
    out["zc_error"] = "; ".join(errors) or None
    return out


def data_batch(train_set, batch: int = 64, seed: int = 0):
    """`batch` normalised training images (no augmentation) and labels, drawn from `seed`."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(train_set), generator=g)[:batch].to(train_set.x.device)
    return train_set.normalize(train_set.x[idx]), train_set.y[idx]


def random_batch(in_shape, classes: int, batch: int = 64, seed: int = 0, device="cpu"):
    """N(0, 1) images and uniform labels drawn from `seed` (the data-free default batch)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *tuple(in_shape)[1:]), generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    return x.to(device), y.to(device)


def score_source(source: str, in_shape, classes: int, class_name: str | None = None, batch: int = 64,
                 seed: int = 0, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                 device: str = "cpu") -> dict:
    """Build `source` in this process (weights from `seed`) and return its proxies, params, flops.

    Raises mutator.probe.ModelError (or whatever the model code raises) when it does not build.
    """
    from corpus.measure import count_flops, count_params
    from mutator.probe import build, load

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(load(source), {"in_shape": list(in_shape), "classes": classes, "class_name": class_name},
                      device)
    if x is None:
        x, y = random_batch(in_shape, classes, batch, seed, device)
    row = {"params": count_params(model), "flops": None}
    try:
        row["flops"] = count_flops(model, in_shape, device)[0]
    except Exception:  # fvcore cannot trace every model: no count rather than a made-up one
        pass
    row.update(scores(model, x, y, seed))
    return row
