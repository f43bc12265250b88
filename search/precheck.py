"""The pre-check: cheap measurements of a candidate before it is trained, in a sandboxed child.

    with PreChecker({"in_shape": [1, 1, 28, 28], "classes": 10}, device="cpu", zero_cost=True) as pc:
        row = pc.check(source)   # status, flops, params, latency_ms, latency_device, zc_score

`precheck(payload)` is a sandbox-worker handler (`search.precheck:precheck`, run by
`mutator.sandbox.WorkerPool` with a time and memory limit); the model code is untrusted. It builds
the network with random weights, checks the output shape, and measures with the corpus's own
functions (`corpus.measure`): parameters, fvcore FLOPs per sample, and the median batch-1 latency
in eval mode on `device` (30 timed runs after 10 warm-up; latency does not depend on the weights'
values, so an untrained network times the same as a trained one). With `zero_cost` it adds the
zero-cost proxies of `corpus.zerocost.scores` (SynFlow, NASWOT, SNIP, grad-norm, GraSP) on one
data-free batch (`corpus.zerocost.random_batch`: 64 N(0, 1) images and labels drawn from `seed`);
the loop turns them into a screening score by voting (`vote`). What it does not cover: the
sandbox's own limits (see `mutator.sandbox`), and on CUDA the GPU memory is not limited.
"""
from __future__ import annotations

import math
import os

ZC_KEYS = ("zc_synflow", "zc_naswot", "zc_snip", "zc_grad_norm")  # the voters (GraSP is stored, not used)


def vote(rows: list[dict | None]) -> list[float | None]:
    """Screening score of each candidate: its mean rank among the candidates over the proxies in
    ZC_KEYS (0 = worst, 1 = best; ties share their mean rank; a proxy missing for a candidate is
    skipped for it). The proxies live on different scales, so ranks among the candidates of one
    iteration are combined rather than raw values (Abdelfattah et al.'s voting); None: no proxy."""
    out: list[list[float]] = [[] for _ in rows]
    for k in ZC_KEYS:
        have = [(r[k], i) for i, r in enumerate(rows) if r and isinstance(r.get(k), (int, float))
                and math.isfinite(r[k])]
        if len(have) < 1:
            continue
        vals = sorted(v for v, _ in have)
        for v, i in have:
            lo, hi = vals.index(v), len(vals) - 1 - vals[::-1].index(v)
            out[i].append((lo + hi) / 2 / max(1, len(vals) - 1))
    return [sum(v) / len(v) if v else None for v in out]


def precheck(payload: dict) -> dict:
    """The corpus pipeline without training: build, shape, params, FLOPs, batch-1 latency, proxies."""
    from corpus.pipeline import evaluate

    return evaluate({"source": payload["source"], "spec": payload["spec"], "device": payload.get("device", "cpu"),
                     "train": False, "flops": payload.get("flops", True), "seed": int(payload.get("seed", 0)),
                     "latency": "batch1" if payload.get("latency", True) else "none",
                     "latency_runs": int(payload.get("latency_runs", 30)),
                     "zero_cost": "on" if payload.get("zero_cost") else "off", "zero_cost_data": "random",
                     "zero_cost_batch": int(payload.get("zc_batch", 64))})


class PreChecker:
    """The pre-check on its own sandboxed worker (one at a time, like the profiler)."""

    def __init__(self, spec: dict, device: str = "cpu", zero_cost: bool = False, timeout_s: float = 300.0,
                 memory_mb: int = 6144, seed: int = 0, latency: bool = True):
        """latency=False skips the timing (when no objective, bin or limit uses latency)."""
        from mutator.sandbox import WorkerPool

        self.spec, self.device, self.zero_cost, self.seed, self.latency = spec, device, zero_cost, seed, latency
        self.pool = WorkerPool(1, timeout_s=timeout_s, memory_mb=0 if device != "cpu" else memory_mb,
                               threads_per_worker=os.cpu_count() or 1, gpu=device != "cpu")

    def check(self, source: str) -> dict:
        res = self.pool.call("search.precheck:precheck", {"source": source, "spec": self.spec, "device": self.device,
                                                           "zero_cost": self.zero_cost, "seed": self.seed,
                                                           "latency": self.latency})
        return {**res, "status": res.get("status") or "crash"}

    __call__ = check

    def close(self) -> None:
        self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
