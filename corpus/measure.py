"""Cost measurements of a network: parameters, FLOPs, latency, peak memory.

Conventions (also written into every dataset card):
- `flops`: one sample's forward pass at the data set's input shape, **one fused multiply-add counts
  as one flop** (a 3x3 conv from C to K channels on an HxW output counts 9*C*K*H*W / groups).
  Counted on the very forward pass that produced the row's predictions: the trained module in eval
  mode over the test split (`ForwardFlops`, torch's `FlopCounterMode` at the aten dispatcher, which
  counts 2 per multiply-add: halved here, then divided by the number of images), or before training,
  the shape check's batch-1 forward where nothing is trained. The dispatcher sees every convolution
  and matrix product, inside a custom `autograd.Function` too, and the model cannot tell it from an
  ordinary call through `torch.jit.is_tracing()` or its callers' frames. Added to that: fvcore's count
  of the operators the dispatcher has no rule for (normalisation, upsampling, adaptive pooling:
  FVCORE_ONLY), so an honest network's `flops` is fvcore's count, as before this split.
  Elementwise ops, pooling and activations are not counted; operators fvcore has no rule for are
  listed in `flops_unsupported`.
- `flops_check`: "ok" when fvcore's count of the convolutions and matrix products (traced with
  `torch.jit.trace` at batch 1) and the dispatcher's agree within FLOPS_TOLERANCE, and the forward
  that produced the predictions costs what the batch-1 check did; else what disagreed. A row whose
  check is not "ok" fails any FLOPs limit (`corpus.pipeline.violation`): its count is not trusted.
- `params`: every parameter element (`numel`), trainable or not, of the module that was trained and
  tested (counted after training); `params_check` is "ok" when the count after training equals the
  count before, else both (a network that adds parameters during training fails a parameter limit).
- `latency_ms`: median wall time of one forward pass in eval mode under `torch.inference_mode`,
  over `runs` (>= 30) timed runs after `warmup` untimed ones; CUDA timing uses device events. Batch
  1 and a larger batch (`latency_batch`, default 64).
- `peak_memory_mb`: on CUDA `torch.cuda.max_memory_allocated` during training; on CPU the peak
  resident set size of the worker during training minus its size before (sampled every 20 ms).

Not covered: work done outside torch operators (numpy, Python arithmetic) is invisible to both
counters, and a model that inspects the dispatcher's mode stack can tell it is counted; it then
runs the counted path for its predictions too, so its accuracy is that path's.
"""
from __future__ import annotations

import math
import statistics
import threading
import time

import torch
import torch.nn as nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


FLOPS_TOLERANCE = 0.01  # relative: the two counters agree exactly on the operators both count
# fvcore handles the dispatcher has no rule for (`by_operator` names): the part of fvcore's count added as is
FVCORE_ONLY = frozenset({"batch_norm", "group_norm", "layer_norm", "instance_norm", "upsample_nearest2d",
                         "upsample_bilinear2d", "adaptive_avg_pool2d", "grid_sampler"})


def count_flops(model: nn.Module, in_shape, device="cpu") -> tuple[int, list[str]]:
    """fvcore's (flops per sample, unsupported operator names). Raises if fvcore cannot trace the model."""
    total, unsupported, _ = fvcore_flops(model, in_shape, device)
    return total, unsupported


def _sdpa_macs(inputs, outputs) -> int:
    """fvcore handle for `scaled_dot_product_attention`: Q K^T and the weighted sum of V, as the dispatcher."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(t) for t in inputs[:3])
    return int(math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1]))


def fvcore_flops(model: nn.Module, in_shape, device="cpu") -> tuple[int, list[str], int]:
    """(flops per sample, unsupported operator names, the part of the flops in FVCORE_ONLY operators),
    fvcore's count of a batch-1 forward in eval mode. Raises if fvcore cannot trace the model."""
    from fvcore.nn import FlopCountAnalysis

    x = torch.zeros((1, *tuple(in_shape)[1:]), device=device)
    was_training = model.training
    model.eval()
    try:
        fca = FlopCountAnalysis(model, x).set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        fca.tracer_warnings("none")
        total = int(fca.total())
        unsupported = sorted(fca.unsupported_ops())
        only = sum(int(n) for op, n in fca.by_operator().items() if op in FVCORE_ONLY)
    finally:
        model.train(was_training)
    return total, unsupported, only


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


class ForwardFlops:
    """Context manager: multiply-adds of the torch operators run inside it, counted at the aten
    dispatcher (module docstring). `macs` after the block: FlopCounterMode's count halved.

        with ForwardFlops() as f:
            preds = predict(model, test_set)
        per_sample = f.macs / len(test_set)
    """

    def __init__(self):
        from torch.utils.flop_counter import FlopCounterMode

        cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
        self._mode = FlopCounterMode(display=False, custom_mapping={cpu_sdpa: _cpu_sdpa} if cpu_sdpa else {})
        self.macs = None

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self.macs = self._mode.get_total_flops() // 2
        return False


def agree(a: float, b: float, tolerance: float = FLOPS_TOLERANCE) -> bool:
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


def flops_check(fvcore: int | None, batch1: int, counted: int, why_not: str | None = None) -> str:
    """"ok", or the disagreement in one line (module docstring): fvcore's count of convolutions and
    matrix products (None: `why_not`), the dispatcher's at batch 1, and per sample on the counted forward."""
    bad = []
    if fvcore is None:
        bad.append(f"fvcore did not count ({why_not})")
    elif not agree(fvcore, batch1):
        bad.append(f"fvcore counts {fvcore:,} multiply-adds, the forward pass {batch1:,}")
    if not agree(batch1, counted):
        bad.append(f"the tested forward pass costs {counted:,} per sample, the batch-1 check {batch1:,}")
    return "; ".join(bad) or "ok"


@torch.inference_mode()
def latency_ms(model: nn.Module, in_shape, batch: int, device="cpu", warmup: int = 10, runs: int = 30) -> float:
    """Median milliseconds of one forward pass at `batch` (see module docstring)."""
    from mutator.probe import first_tensor

    model.eval()
    x = torch.randn((batch, *tuple(in_shape)[1:]), device=device)
    cuda = torch.device(device).type == "cuda"
    if cuda and x.ndim == 4:
        from corpus.train import channels_last_ok

        if channels_last_ok(model, x):  # a network that views a convolution's output runs in the default layout
            x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(warmup):
        first_tensor(model(x))
    times = []
    for _ in range(runs):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


class PeakMemory:
    """Context manager: peak memory (MB) of the block, as described in the module docstring."""

    def __init__(self, device="cpu", interval: float = 0.02):
        self.cuda = torch.device(device).type == "cuda"
        self.interval = interval
        self.peak_mb = None

    def __enter__(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        import psutil

        self._proc = psutil.Process()
        self._base = self._proc.memory_info().rss
        self._peak = self._base
        self._stop = threading.Event()

        def watch():
            while not self._stop.wait(self.interval):
                self._peak = max(self._peak, self._proc.memory_info().rss)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self.peak_mb = (self._peak - self._base) / 2**20
        return False
