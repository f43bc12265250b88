"""Profile one network: build, FLOPs, params, proxy training, accuracy, latency, peak memory.

`profile(payload)` is a sandbox-worker handler (`corpus.profile:profile`); the model code it runs
is untrusted. It always returns a row: a failure is a row with its `status` and a short `error`,
and the numbers it could not measure are None, never invented.

Statuses: ok; build_error (the source does not load or build); shape_error (the forward pass fails
or gives the wrong output shape); train_error (an exception while training or evaluating); nan
(the loss became NaN or infinite); oom (out of memory); set by the parent: timeout, crash.

`payload["zero_cost"]` = "on" adds the zero-cost proxy columns (corpus.zerocost, computed on a copy
before training, on `zero_cost_batch` training images); "only" returns after them: no training,
accuracy, latency or memory (None), status ok.
"""
from __future__ import annotations

import os
import time

import torch

_DATA: dict = {}


def _data(path: str) -> dict:
    if path not in _DATA:
        from corpus.data import load_prepared

        _DATA.clear()
        _DATA[path] = load_prepared(path)
    return _DATA[path]


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" \
        or "out of memory" in text or "can't allocate memory" in text


def profile(payload: dict) -> dict:
    from corpus.measure import PeakMemory, count_flops, count_params, latency_ms
    from corpus.train import NaNLoss, Recipe, evaluate, split_data, train
    from mutator.probe import ModelError, build, first_tensor, load
    from mutator.worker import short_error

    recipe = Recipe(**payload["recipe"])
    device = payload.get("device", "cpu")
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    row = {"status": None, "error": None, "accuracy": None, "train_seconds": None, "flops": None,
           "flops_unsupported": None, "params": None, "latency_ms": None, "latency_batch_ms": None,
           "peak_memory_mb": None, "final_loss": None, "device_name": _device_name(device)}
    data = _data(payload["data_path"])
    in_shape = [1, *data["x_train"].shape[1:]]
    spec = {"in_shape": in_shape, "classes": payload["classes"], "class_name": payload.get("class_name")}

    stage = "build_error"
    try:
        torch.manual_seed(recipe.seed)
        model = build(load(payload["source"]), spec, device)
        row["params"] = count_params(model)
        stage = "shape_error"
        with torch.no_grad():
            out = first_tensor(model.eval()(torch.zeros(in_shape, device=device)))
        if out is None or list(out.shape) != [1, spec["classes"]]:
            got = None if out is None else tuple(out.shape)
            raise ModelError(f"output shape {got}, expected (1, {spec['classes']})")
        try:
            row["flops"], row["flops_unsupported"] = count_flops(model, in_shape, device)
        except Exception as exc:  # fvcore cannot trace some models: record why, never a made-up count
            row["error"] = f"flops not counted: {short_error(exc)}"
        stage = "train_error"
        train_set, test_set = split_data(data, recipe, device)
        if payload.get("zero_cost") in ("on", "only"):  # "on": proxies, then training; "only": no training
            from corpus.zerocost import data_batch, scores

            xb, yb = data_batch(train_set, int(payload.get("zero_cost_batch", 64)), recipe.seed)
            row.update(scores(model, xb, yb, recipe.seed))
            if payload["zero_cost"] == "only":
                row["status"] = "ok"
                return row
        with PeakMemory(device) as mem:
            if payload.get("use_model_recipe"):
                res = _model_recipe(model, train_set, recipe, payload.get("prm") or {})
            else:
                res = train(model, train_set, recipe, device)
        row["peak_memory_mb"] = round(mem.peak_mb, 2)
        row["train_seconds"], row["final_loss"] = round(res["train_seconds"], 3), res["final_loss"]
        row["accuracy"] = evaluate(model, test_set, recipe.eval_batch_size)
        stage = "latency_error"
        lb = int(payload.get("latency_batch", 64))
        row["latency_ms"] = round(latency_ms(model, in_shape, 1, device, runs=payload.get("latency_runs", 30)), 4)
        row["latency_batch_ms"] = round(latency_ms(model, in_shape, lb, device, runs=payload.get("latency_runs", 30)), 4)
        row["status"] = "ok"
    except NaNLoss as exc:
        row["status"], row["error"] = "nan", str(exc)
    except ModelError as exc:
        row["status"], row["error"] = stage, str(exc)
    except BaseException as exc:  # model code: SystemExit, KeyboardInterrupt, anything
        row["status"] = "oom" if _is_oom(exc) else stage
        row["error"] = short_error(exc)
    finally:
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu: {name} ({torch.get_num_threads()} threads)"


def _model_recipe(model, train_set, recipe, prm):
    """A LEMUR model's own `train_setup(prm)` and `learn(batches)`, on our batches, one pass per epoch."""
    from mutator.probe import PRM_DEFAULTS, PrmDict

    if not (hasattr(model, "train_setup") and hasattr(model, "learn")):
        raise AttributeError("--use-model-recipe needs train_setup() and learn() on the model")
    p = PrmDict({**PRM_DEFAULTS, **prm})
    model.train_setup(p)
    bs = recipe.batch_size
    n = len(train_set)

    def batches():
        perm = torch.randperm(n, device=train_set.x.device)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs]
            yield train_set.normalize(train_set.x[idx]), train_set.y[idx]

    t0 = time.perf_counter()
    for _ in range(max(1, round(recipe.epochs))):
        model.train()
        model.learn(batches())
    return {"train_seconds": time.perf_counter() - t0, "final_loss": None}


_WARMED: set = set()


def _warm(payload: dict) -> None:
    """Trusted preparation in the sandbox's worker before it forks a candidate: load the data set and,
    on the CPU, profile the built-in `lenet` once on a small subset, so each candidate starts with warm
    kernels and tracers. Single-threaded, so no thread pool exists when the worker forks (OpenMP's
    threads do not survive a fork); never on CUDA (a forked child cannot use a CUDA context)."""
    _data(payload["data_path"])
    if payload.get("device", "cpu") != "cpu" or payload["data_path"] in _WARMED:
        return
    _WARMED.add(payload["data_path"])
    from mutator.seeds import seed_source

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    recipe = dict(payload["recipe"], train_limit=256, epochs=1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        torch.set_num_threads(1)
        profile(dict(payload, source=seed_source("lenet"), class_name=None, recipe=recipe, zero_cost="off"))
    finally:
        if threads > 0:
            os.environ["OMP_NUM_THREADS"] = str(threads)
            torch.set_num_threads(threads)


profile.warm = _warm  # the sandbox's worker loads the data set once, before forking each candidate
