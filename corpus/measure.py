"""Cost measurements of a network: parameters, FLOPs, latency, peak memory.

Conventions (also written into every dataset card):
- `flops`: fvcore's count for one sample's forward pass at the data set's input shape. fvcore counts
  one fused multiply-add as one flop (a 3x3 conv from C to K channels on an HxW output counts
  9*C*K*H*W / groups); operators fvcore has no rule for are listed in `flops_unsupported` rather
  than guessed (elementwise ops, pooling and activations are not counted).
- `params`: every parameter element (`numel`), trainable or not.
- `latency_ms`: median wall time of one forward pass in eval mode under `torch.inference_mode`,
  over `runs` (>= 30) timed runs after `warmup` untimed ones; CUDA timing uses device events. Batch
  1 and a larger batch (`latency_batch`, default 64).
- `peak_memory_mb`: on CUDA `torch.cuda.max_memory_allocated` during training; on CPU the peak
  resident set size of the worker during training minus its size before (sampled every 20 ms).
"""
from __future__ import annotations

import statistics
import threading
import time

import torch
import torch.nn as nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, in_shape, device="cpu") -> tuple[int, list[str]]:
    """(flops per sample, unsupported operator names). Raises if fvcore cannot trace the model."""
    from fvcore.nn import FlopCountAnalysis

    x = torch.zeros((1, *tuple(in_shape)[1:]), device=device)
    was_training = model.training
    model.eval()
    try:
        fca = FlopCountAnalysis(model, x)
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        fca.tracer_warnings("none")
        total = int(fca.total())
        unsupported = sorted(fca.unsupported_ops())
    finally:
        model.train(was_training)
    return total, unsupported


@torch.inference_mode()
def latency_ms(model: nn.Module, in_shape, batch: int, device="cpu", warmup: int = 10, runs: int = 30) -> float:
    """Median milliseconds of one forward pass at `batch` (see module docstring)."""
    from mutator.probe import first_tensor

    model.eval()
    x = torch.randn((batch, *tuple(in_shape)[1:]), device=device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
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
