"""One candidate, one sandboxed request: every measurement of a network in a single pass.

    pool.call("corpus.pipeline:evaluate", {"source": code, "spec": {"in_shape": [1, 1, 28, 28], "classes": 10},
                                           "data_path": path, "recipe": Recipe().to_dict(), "device": "cpu",
                                           "limits": {"flops": 2e6}})

`evaluate(payload)` is a sandbox-worker handler; the model code it runs is untrusted. The stages, in
order, each stopping the pass with its status when it fails:

    parse + build (build_error) -> shape check (shape_error; its forward is counted at the dispatcher)
    -> params, FLOPs (fvcore, cross-checked) -> latency (latency_error) -> zero-cost proxies
    (zero_cost_error; a proxy that cannot be scored is None with its reason) -> limits (constraint:
    "1.2e+06 FLOPs > limit 1e+06") -> training (train_error / nan / oom) -> predictions on the test
    split (counted again) -> params after training, limits again on the counts of the trained module

Payload keys: `source`; `spec` (`in_shape`, `classes`, `class_name`; the data set's shape when
omitted); `device` (training and, unless `latency_device`, timing); `data_path` (a
`corpus.data.prepare` file; needed to train); `recipe` (`corpus.train.Recipe` fields); `train`
(default True: False stops after the limits, the pre-check of screening and latency tables);
`flops` (default True); `latency` ("both": batch 1 and `latency_batch`; "batch1"; "none");
`latency_runs`; `zero_cost` ("off", "on", "only": proxies and no training); `zero_cost_batch`;
`zero_cost_data` ("train": a batch of training images, "random": N(0, 1) images, the data-free
default without `data_path`); `seed`; `limits` ({"flops", "params", "latency_ms"}: maxima);
`use_model_recipe`, `prm` (a LEMUR model's own training). The row's numbers are measured or None,
never invented; conventions in `corpus.measure` (`flops`, `flops_check`, `params`, `params_check`).

The test labels never enter this process (`corpus.data.prepare` keeps them out of the prepared file):
a trained row carries `predictions`, the class index of every test image (`encode_predictions`), and
the parent computes `accuracy` from them (`corpus.evaluator.score`); `accuracy` here stays None.
"""
from __future__ import annotations

import os
import time

import torch

ROW_KEYS = ("status", "error", "accuracy", "train_seconds", "flops", "flops_unsupported", "flops_check", "params",
            "params_check", "latency_ms", "latency_batch_ms", "latency_device", "peak_memory_mb", "final_loss",
            "device_name")
LIMITS = (("flops", "FLOPs"), ("params", "parameters"), ("latency_ms", "ms latency"))
_DATA: dict = {}


def data(path: str) -> dict:
    """The prepared data set, loaded once per process (the worker loads it before forking)."""
    if path not in _DATA:
        from corpus.data import load_prepared

        _DATA.clear()
        _DATA[path] = load_prepared(path)
    return _DATA[path]


def device_name(device: str) -> str:
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


def violation(row: dict, limits: dict | None) -> str | None:
    """The first limit a measured row exceeds, as text; None when within every limit. Under a FLOPs
    (parameter) limit, a row whose `flops_check` (`params_check`) is set and not "ok" fails too: its
    counters disagree (`corpus.measure`), so no count of it can be trusted to be within the limit."""
    for key, unit in LIMITS:
        limit = (limits or {}).get(key)
        if limit is None:
            continue
        if row.get(key) is not None and row[key] > limit:
            return f"{row[key]:,.4g} {unit} > limit {limit:,.4g}"
        check = row.get(f"{key}_check") if key in ("flops", "params") else None
        if check not in (None, "ok"):
            return f"{unit} not verified under the limit {limit:,.4g}: {check}"
    return None


def encode_predictions(preds: torch.Tensor, classes: int) -> str:
    """Class indices as base64 of uint8 (classes <= 256) or little-endian uint16: about 13 kB for 10,000
    images. `corpus.evaluator.decode_predictions` reads them back."""
    import base64

    import numpy as np

    dtype = np.uint8 if classes <= 256 else np.dtype("<u2")
    return base64.b64encode(preds.numpy().astype(dtype).tobytes()).decode("ascii")


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" \
        or "out of memory" in text or "can't allocate memory" in text


def evaluate(payload: dict) -> dict:
    from corpus.measure import ForwardFlops, PeakMemory, count_params, flops_check, fvcore_flops, latency_ms
    from corpus.train import NaNLoss, Recipe, predict, split_data, train
    from mutator.probe import ModelError, build, first_tensor, load
    from mutator.worker import short_error

    recipe = Recipe(**payload.get("recipe", {}))
    device = payload.get("device", "cpu")
    lat_device = payload.get("latency_device") or device
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    row = dict.fromkeys(ROW_KEYS)
    row["device_name"], row["latency_device"] = device_name(device), device_name(lat_device)
    ds = data(payload["data_path"]) if payload.get("data_path") else None
    spec = dict(payload.get("spec") or {})
    if ds is not None:
        spec.setdefault("in_shape", [1, *ds["x_train"].shape[1:]])
    spec.setdefault("classes", payload.get("classes"))
    spec.setdefault("class_name", payload.get("class_name"))
    in_shape, classes = list(spec["in_shape"]), int(spec["classes"])
    seed = int(payload.get("seed", recipe.seed))
    want_train = payload.get("train", True) and payload.get("zero_cost") != "only"
    if want_train and ds is None:
        raise ValueError("training needs a data_path")

    stage = "build_error"
    t0 = time.perf_counter()
    try:
        torch.manual_seed(seed)
        model = build(load(payload["source"]), spec, device)
        row["params"] = count_params(model)
        stage = "shape_error"
        with torch.no_grad(), ForwardFlops() as counted:  # a plain forward: the model cannot tell it is counted
            out = first_tensor(model.eval()(torch.zeros(in_shape, device=device)))
        if out is None or list(out.shape) != [1, classes]:
            raise ModelError(f"output shape {None if out is None else tuple(out.shape)}, expected (1, {classes})")
        batch1 = fv_only = None
        if payload.get("flops", True):
            batch1, fv_macs, fv_why = counted.macs, None, None
            try:
                fv_total, row["flops_unsupported"], fv_only = fvcore_flops(model, in_shape, device)
                fv_macs = fv_total - fv_only
            except Exception as exc:  # fvcore cannot trace some models: the dispatcher's count stands, unchecked
                fv_why = short_error(exc)
            row["flops"] = batch1 + (fv_only or 0)
            row["flops_check"] = flops_check(fv_macs, batch1, batch1, fv_why)
        stage = "latency_error"
        mode = payload.get("latency", "none" if payload.get("zero_cost") == "only" else "both")
        runs = int(payload.get("latency_runs", 30))
        if mode != "none":  # the weights' values do not change the time: measured before training
            timed = model if lat_device == device else model.to(lat_device)
            row["latency_ms"] = round(latency_ms(timed, in_shape, 1, lat_device, runs=runs), 4)
            if mode == "both":
                lb = int(payload.get("latency_batch", 64))
                row["latency_batch_ms"] = round(latency_ms(timed, in_shape, lb, lat_device, runs=runs), 4)
            if timed is not model or lat_device != device:
                model.to(device)
        train_set = test_set = None
        if ds is not None and (want_train or payload.get("zero_cost_data") == "train"):
            train_set, test_set = split_data(ds, recipe, device)
        if payload.get("zero_cost") in ("on", "only"):
            stage = "zero_cost_error"
            from corpus.zerocost import data_batch, random_batch, scores

            n = int(payload.get("zero_cost_batch", 64))
            if train_set is not None and payload.get("zero_cost_data", "train") == "train":
                xb, yb = data_batch(train_set, n, seed)
            else:
                xb, yb = random_batch(in_shape, classes, n, seed, device)
            row.update(scores(model, xb, yb, seed))
        why = violation(row, payload.get("limits"))
        if why:
            row["status"], row["error"] = "constraint", why
            return row
        if want_train:
            stage = "train_error"
            with PeakMemory(device) as mem:
                if payload.get("use_model_recipe"):
                    res = _model_recipe(model, train_set, recipe, payload.get("prm") or {})
                else:
                    res = train(model, train_set, recipe, device)
            row["peak_memory_mb"] = round(mem.peak_mb, 2)
            row["train_seconds"], row["final_loss"] = round(res["train_seconds"], 3), res["final_loss"]
            with ForwardFlops() as counted:  # the forward that the accuracy comes from
                preds = predict(model, test_set, recipe.eval_batch_size)
            if len(preds) != len(test_set) or (len(preds) and not 0 <= int(preds.min()) <= int(preds.max()) < classes):
                raise ModelError(f"predictions outside 0..{classes - 1}")
            if batch1 is not None:
                per_sample = round(counted.macs / max(1, len(test_set)))
                row["flops"] = per_sample + (fv_only or 0)
                row["flops_check"] = flops_check(fv_macs, batch1, per_sample, fv_why)
            before, row["params"] = row["params"], count_params(model)
            row["params_check"] = "ok" if row["params"] == before else \
                f"{before:,} parameters before training, {row['params']:,} after"
            why_over = violation(row, payload.get("limits"))
            if why_over:  # the trained module's counts: a network that grew or hid cost stops here
                row["status"], row["error"] = "constraint", why_over
                return row
            row["predictions"] = encode_predictions(preds, classes)
        row["status"] = "ok"
    except NaNLoss as exc:
        row["status"], row["error"] = "nan", str(exc)
    except ModelError as exc:
        row["status"], row["error"] = stage, str(exc)
    except BaseException as exc:  # model code: SystemExit, KeyboardInterrupt, anything
        row["status"] = "oom" if _is_oom(exc) else stage
        row["error"] = short_error(exc)
    finally:
        row["seconds"] = round(time.perf_counter() - t0, 3)
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row


def _model_recipe(model, train_set, recipe, prm):
    """A LEMUR model's own `train_setup(prm)` and `learn(batches)`, on our batches (the recipe's batch size),
    as many whole passes as the recipe's steps take."""
    from mutator.probe import PRM_DEFAULTS, PrmDict

    if not (hasattr(model, "train_setup") and hasattr(model, "learn")):
        raise AttributeError("--use-model-recipe needs train_setup() and learn() on the model")
    p = PrmDict({**PRM_DEFAULTS, **prm})
    model.train_setup(p)
    from corpus.train import schedule

    n = len(train_set)
    bs, steps = schedule(n, recipe)

    def batches():
        perm = torch.randperm(n, device=train_set.x.device)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs]
            yield train_set.normalize(train_set.x[idx]), train_set.y[idx]

    t0 = time.perf_counter()
    for _ in range(-(-steps // (n // bs))):  # whole passes, at least the recipe's steps
        model.train()
        model.learn(batches())
    return {"train_seconds": time.perf_counter() - t0, "final_loss": None}


_WARMED: set = set()


def _warm(payload: dict) -> None:
    """Trusted preparation in the sandbox's worker before it forks a candidate: load the data set and,
    in a single-threaded CPU worker, evaluate the built-in `lenet` once on a small subset, so each
    candidate starts with warm kernels and tracers. Never with more threads: after any computation in
    the worker, a forked child that starts OpenMP threads can hang (measured here: GNU OpenMP, torch
    2.13), so a multi-threaded worker only loads the data. Never on CUDA (a forked child cannot use a
    CUDA context)."""
    if not payload.get("data_path"):
        return
    data(payload["data_path"])
    single = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) == 1
    if not single or "cpu" not in (payload.get("device", "cpu"), payload.get("latency_device") or "cpu") \
            or payload["data_path"] in _WARMED:
        return
    _WARMED.add(payload["data_path"])
    from mutator.seeds import seed_source

    warm = {k: v for k, v in payload.items() if k not in ("source", "spec", "class_name", "limits", "zero_cost")}
    warm["recipe"] = dict(payload.get("recipe") or {}, train_limit=256, epochs=1, min_steps=0)
    torch.set_num_threads(1)
    evaluate(dict(warm, source=seed_source("lenet"), device="cpu", latency_device="cpu",
                  classes=int((payload.get("spec") or {}).get("classes") or payload.get("classes") or 10)))


evaluate.warm = _warm  # the sandbox's worker runs this once per data set, before forking candidates
