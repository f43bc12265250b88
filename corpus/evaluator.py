"""The parent's side of the evaluation pipeline: one sandboxed request per candidate.

    with Evaluator("fashion-mnist", Recipe(train_limit=2000).to_dict(), limits={"flops": 2e6}) as ev:
        row = ev.evaluate(source)   # build, measure, check the limits, train, test: one request
        pre = ev.check(source)      # the same pipeline without training (screening, bin edges)
    with Checker({"in_shape": [1, 3, 32, 32], "classes": 10}) as c:   # no data set: build and measure only
        pre = c.check(source)

`Evaluator` is the `profile` kind of `corpus.evaluators` (`--evaluator profile`); it takes a
`corpus.candidate.Candidate` or bare source. Every row is `corpus.pipeline.evaluate`'s (statuses and conventions there) plus what makes it
reproducible: the source's `sha256`, the data set, the recipe (JSON) and the zero-cost mode. A request
that crashed or timed out in the sandbox is a row with that status, never an exception; so is an
answer that breaks the row's schema (`invalid_result`: the pool checks it, `mutator.results`). Used by
`search run` (its evaluator and pre-check) and `python -m corpus profile`; `corpus build` sends the
same requests through its own pool of workers, and scores them with `score` too.

`accuracy` is computed here, in the parent, never in the candidate's process: the sandboxed pipeline
returns the class it predicts for each test image (`predictions`), and `score` compares them with the
test labels, which only this process loads (`corpus.data.load_test_labels`; the sandbox cannot read
them). Predictions that are not one class in [0, classes) per test image make the row that candidate's
`invalid_result`; so does an `ok` trained row without them. `call(pool, payload)`: a pipeline request,
scored.

`--proxy-seeds K` (`evaluate_seeds`, the one place the policy is written): a candidate's accuracy is
the mean of K training runs under recipe seeds S..S+K-1, with their sample std (`accuracy_std`) and
list (`accuracies`); `proxy_seeds` is in every evaluated row. `check` never trains: it runs once.
"""
from __future__ import annotations

import hashlib
import json
import os

from corpus.candidate import Candidate, as_candidate
from corpus.data import info, prepare
from corpus.errors import CorpusError, DataError
from corpus.handlers import EVALUATE  # noqa: F401  (registers it with the sandbox before `call` uses it)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CorpusError("--device cuda asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise CorpusError(f"--device must be auto, cpu or cuda, not {device!r}")
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (x86 AVX512-BF16 or AMX-BF16, from Linux's /proc/cpuinfo): where
    bf16 autocast is ~2x fp32 for vgg/resnet-small; elsewhere oneDNN emulates bf16, slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[-1].split()))
    except OSError:
        pass
    return False


FAST_CPU = ("auto", "on", "off")  # the values of every --fast-cpu (corpus build, search run, finetune train)


def resolve_fast_cpu(value) -> str:
    """`--fast-cpu` as on or off: auto is on where the CPU has bf16 instructions (`cpu_has_bf16`); true/false
    (what earlier versions stored) are on/off. A run or corpus resolves it once and stores the answer."""
    if isinstance(value, bool) or value is None:
        return "on" if value else "off"
    if value == "auto":
        return "on" if cpu_has_bf16() else "off"
    if value in FAST_CPU:
        return value
    raise CorpusError(f"--fast-cpu must be auto, on or off, not {value!r}")


def fast_cpu(value) -> dict:
    """The recipe fields of `--fast-cpu` (`corpus.train.Recipe`: channels-last layout and bf16 autocast on a
    CPU; CUDA uses both always) for auto/on/off (`resolve_fast_cpu`); {} when off, so such a recipe is the one
    written before the option existed. Default auto: issue 30's table found the two no worse than fp32 for the
    proxy's noise and ranking by its protocol's rule (benchmarks/proxy_fidelity_result.md)."""
    return {"channels_last": True, "bf16": True} if resolve_fast_cpu(value) == "on" else {}


def recipe_for(dataset: str, epochs: float = 1.0, batch_size: int = 0, train_limit: int = 0, seed: int = 0,
               **more) -> dict:
    """The proxy-training recipe (`corpus.train.Recipe`) for a data set, as the dict the pipeline takes."""
    from corpus.train import Recipe

    if min(batch_size, train_limit, *(v for v in more.values() if isinstance(v, int)), 0) < 0 or epochs < 0:
        raise CorpusError("--batch-size, --min-steps, --epochs and --train-limit must be >= 0")
    try:
        flip = info(dataset)["flip"]
    except DataError as exc:
        raise CorpusError(str(exc)) from None
    return Recipe(epochs=epochs, batch_size=batch_size, train_limit=train_limit, seed=seed, flip=flip, **more).to_dict()


def worker_threads() -> int:
    """Threads for the evaluation worker: `NASFORGE_THREADS` (a sweep shares the cores out among its
    parallel runs), else every core."""
    try:
        n = int(os.environ.get("NASFORGE_THREADS") or 0)
    except ValueError:
        n = 0
    return n if n > 0 else os.cpu_count() or 1


_LABELS: dict = {}


def labels_of(data_path: str):
    """The test labels of a prepared data set as a numpy int64 array, loaded once per process."""
    if data_path not in _LABELS:
        from corpus.data import load_test_labels

        _LABELS[data_path] = load_test_labels(data_path).numpy()
    return _LABELS[data_path]


def decode_predictions(text: str, n: int, classes: int):
    """`corpus.pipeline.encode_predictions`' text as n class indices (numpy); ValueError saying why not."""
    import base64
    import binascii

    import numpy as np

    dtype = np.dtype(np.uint8) if classes <= 256 else np.dtype("<u2")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("predictions are not base64 text") from None
    if len(raw) != n * dtype.itemsize:
        raise ValueError(f"{len(raw) // dtype.itemsize:,} predictions for {n:,} test images")
    preds = np.frombuffer(raw, dtype=dtype)
    if n and int(preds.max()) >= classes:
        raise ValueError(f"a prediction is class {int(preds.max())}, outside 0..{classes - 1}")
    return preds


def score(row: dict, payload: dict) -> dict:
    """A pipeline row with `accuracy` computed from its `predictions` against the test labels, which
    only this process holds; `predictions` is dropped and the candidate's own `accuracy` ignored. A
    trained `ok` row whose predictions are missing or malformed is that candidate's `invalid_result`."""
    from mutator.results import ROW_SCHEMA, failure

    row = dict(row)
    preds = row.pop("predictions", None)
    row["accuracy"] = None
    if row.get("status") != "ok" or not trains(payload):
        return row
    classes = int((payload.get("spec") or {}).get("classes") or payload["classes"])
    labels = labels_of(payload["data_path"])  # outside the try: a missing label file is ours, not the candidate's
    try:
        if preds is None:
            raise ValueError("a trained row without predictions")
        row["accuracy"] = float((decode_predictions(preds, len(labels), classes) == labels).mean())
    except ValueError as exc:
        bad = {**dict.fromkeys(ROW_SCHEMA), **failure(str(exc))}
        bad.pop("predictions")
        return bad
    return row


def call(pool, payload: dict, timeout_s: float | None = None) -> dict:
    """One `corpus.pipeline:evaluate` request on a sandbox pool, scored here (`score`)."""
    return score(pool.call("corpus.pipeline:evaluate", payload, timeout_s), payload)


def check_proxy_seeds(k) -> int:
    """`--proxy-seeds K` as an int >= 1; CorpusError (one line) otherwise."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise CorpusError(f"--proxy-seeds must be >= 1 (training runs averaged per network), not {k!r}")
    return k


def trains(payload: dict) -> bool:
    """Whether a pipeline request trains the network (and so has an accuracy to average)."""
    return bool(payload.get("train", True) and payload.get("zero_cost") != "only" and payload.get("data_path"))


def evaluate_seeds(run_one, payload: dict, k: int = 1) -> dict:
    """The seed policy, written once (`--proxy-seeds K`; `Evaluator.evaluate`, `corpus build`'s workers
    and its Ray tasks use it): `run_one(payload) -> scored row` (`call`, or `score` of a pool's answer)
    runs the same request K times, with recipe seeds S, S+1, ..., S+K-1 (S: the payload's recipe seed),
    each a full request (fresh weights, subset, batch order and augmentation draws of that seed).

    The row: the first run's, with `accuracy` the mean of the K accuracies, `accuracy_std` their sample
    standard deviation, `accuracies` the list of the K (in seed order) and `train_seconds` their sum;
    every other measurement (FLOPs, params, latency, zero-cost proxies, ...) is the first run's.
    `proxy_seeds` is K on every row; with K = 1 `accuracy_std` and `accuracies` are None and the row is
    otherwise the single run's, unchanged. A request that does not train (zero-cost only, a check
    without training) and a first run that is not `ok` (a limit's `constraint`, a build error, ...) run
    once, whatever K. When a later seed's run is not `ok`, the row is that run's failure (its status,
    measurements, and its error prefixed with the seed): a network that trains under one seed only is
    a failed network, never a mean of fewer runs."""
    k = check_proxy_seeds(k)
    first = run_one(payload)
    policy = {"proxy_seeds": k, "accuracy_std": None, "accuracies": None}
    if k == 1 or not trains(payload) or first.get("status") != "ok":
        return {**first, **policy}
    recipe = dict(payload.get("recipe") or {})
    base = int(recipe.get("seed", 0))
    runs = [first]
    for i in range(1, k):
        p = {**payload, "recipe": {**recipe, "seed": base + i}}
        if "seed" in payload:  # the pipeline's own seed (init, proxies' batch) follows the recipe's
            p["seed"] = int(payload["seed"]) + i
        res = run_one(p)
        if res.get("status") != "ok":
            why = f"rng seed {base + i} (proxy seed {i + 1} of {k})"
            return {**res, **policy, "accuracy": None,
                    "error": f"{why}: {res['error']}" if res.get("error") else f"{why}: {res.get('status')}"}
        runs.append(res)
    import math
    import statistics

    accs = [r.get("accuracy") for r in runs]
    if any(a is None for a in accs):  # `score` gives every ok trained row one; a run_one that does not is wrong
        from mutator.results import failure

        return {**first, **policy, "accuracy": None, **failure("an ok trained run without an accuracy")}
    times = [r.get("train_seconds") for r in runs]
    return {**first, **policy, "accuracy": math.fsum(accs) / k, "accuracy_std": statistics.stdev(accs),
            "accuracies": accs,
            "train_seconds": None if any(t is None for t in times) else round(math.fsum(times), 3)}


def seed_columns(row: dict, valid: dict | None = None) -> dict:
    """The seed-policy columns of a stored row, checked (a journal written before they existed: one
    seed): `proxy_seeds` an int >= 1 (default 1), `accuracy_std` a finite number >= 0 or None,
    `accuracies` a list of K fractions or None; both None unless the row (as `valid`, the checked
    row, has it) is `ok` with an accuracy."""
    import math

    k = row.get("proxy_seeds")
    k = k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else 1
    std, accs = row.get("accuracy_std"), row.get("accuracies")
    valid = row if valid is None else valid
    if valid.get("status") != "ok" or valid.get("accuracy") is None:
        std = accs = None
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std < 0:
        std = None
    if not (isinstance(accs, list) and len(accs) == k and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 1 for a in accs)):
        accs = None
    return {"proxy_seeds": k, "accuracy_std": None if std is None else float(std),
            "accuracies": None if accs is None else [float(a) for a in accs]}


class _Pooled:
    """One sandbox worker that runs `corpus.pipeline:evaluate` (threads: `worker_threads()`), closed with the object."""

    def _start(self, timeout_s: float, memory_mb: int, gpu: bool) -> None:
        from mutator.sandbox import WorkerPool

        self.pool = WorkerPool(1, timeout_s=timeout_s, memory_mb=memory_mb,
                               threads_per_worker=worker_threads(), gpu=gpu)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Evaluator(_Pooled):
    """The `profile` kind of `corpus.evaluators` (`--evaluator profile`): build, measure, train, test."""

    trains, lookup_only, spaced, table, table_space = True, False, False, False, None

    @classmethod
    def from_spec(cls, spec, dataset: str, recipe: dict, data_dir: str | None = None, device: str = "auto",
                  latency_device: str | None = None, limits: dict | None = None, timeout_s: float = 900.0,
                  class_name: str | None = None, use_model_recipe: bool = False, latency_batch: int = 64,
                  proxy_seeds: int = 1, **_):
        """`__init__`'s arguments; the options of other evaluators (a benchmark file, ...) are ignored."""
        return cls(dataset, recipe, data_dir=data_dir, device=device, latency_device=latency_device, limits=limits,
                   timeout_s=timeout_s, class_name=class_name, use_model_recipe=use_model_recipe,
                   latency_batch=latency_batch, proxy_seeds=proxy_seeds)

    def __init__(self, dataset: str, recipe: dict, *, data_dir: str | None = None, device: str = "auto",
                 latency_device: str | None = None, limits: dict | None = None, zero_cost: str = "off",
                 zero_cost_batch: int = 64, zero_cost_data: str = "train", latency_batch: int = 64,
                 use_model_recipe: bool = False, class_name: str | None = None, timeout_s: float = 900.0,
                 memory_mb: int = 6144, proxy_seeds: int = 1):
        """limits: {"flops", "params", "latency_ms"} maxima checked before training (status `constraint`).
        latency_device: where latency is timed (default: the training device).
        proxy_seeds: K training runs per evaluated candidate, recipe seeds S..S+K-1 (`evaluate_seeds`)."""

        self.proxy_seeds = check_proxy_seeds(proxy_seeds)
        try:
            meta = info(dataset)
            self.data_path = str(prepare(dataset, data_dir))
        except DataError as exc:
            raise CorpusError(str(exc)) from None
        self.dataset = dataset
        self.device = resolve_device(device)
        self.payload = {"data_path": self.data_path, "classes": meta["classes"], "class_name": class_name,
                        "recipe": recipe, "device": self.device, "latency_device": latency_device,
                        "limits": limits or {}, "zero_cost": zero_cost, "zero_cost_batch": zero_cost_batch,
                        "zero_cost_data": zero_cost_data, "latency_batch": latency_batch,
                        "use_model_recipe": use_model_recipe}
        self._start(timeout_s, memory_mb, gpu="cuda" in (self.device, latency_device))

    @property
    def recipe(self) -> dict:
        """The proxy recipe every evaluation trains with (the worker's payload holds it: one place)."""
        return self.payload["recipe"]

    @recipe.setter
    def recipe(self, recipe: dict) -> None:  # another recipe for the next evaluations (benchmarks)
        self.payload["recipe"] = recipe

    def _row(self, code: str, res: dict, **extra) -> dict:
        return {**res, "status": res.get("status") or "crash", "code": code,
                "sha256": hashlib.sha256(code.encode()).hexdigest(), "dataset": self.dataset,
                "recipe": json.dumps(self.recipe, sort_keys=True), "zero_cost": self.payload["zero_cost"], **extra}

    def evaluate(self, cand: Candidate | str, class_name: str | None = None, limits: dict | None = None) -> dict:
        """The whole pipeline; a candidate over a limit stops before training (`constraint`).
        limits: instead of the evaluator's ({} for none, e.g. for a search's seed)."""
        code = as_candidate(cand).code
        payload = {**self.payload, "source": code}
        if limits is not None:
            payload["limits"] = limits
        if class_name:
            payload["class_name"] = class_name
        return self._row(code, evaluate_seeds(lambda p: call(self.pool, p), payload, self.proxy_seeds))

    __call__ = evaluate

    def check(self, cand: Candidate | str, zero_cost: bool = False, latency: bool = True, seed: int = 0) -> dict:
        """The pipeline without training: build, shape, params, FLOPs, batch-1 latency, and the zero-cost
        proxies on N(0, 1) images drawn from `seed` when asked (screening votes on them)."""
        code = as_candidate(cand).code
        payload = {**self.payload, "source": code, "train": False, "latency": "batch1" if latency else "none",
                   "limits": {}, "zero_cost": "on" if zero_cost else "off", "zero_cost_data": "random", "seed": seed}
        return self._row(code, call(self.pool, payload))



class Checker(_Pooled):
    """The pipeline without training and without a data set: a network at `spec` (in_shape, classes)."""

    def __init__(self, spec: dict, device: str = "cpu", zero_cost: bool = False, latency: bool = True, seed: int = 0,
                 timeout_s: float = 300.0, memory_mb: int = 6144):
        self.payload = {"spec": spec, "device": device, "train": False, "latency": "batch1" if latency else "none",
                        "zero_cost": "on" if zero_cost else "off", "zero_cost_data": "random", "seed": seed}
        self._start(timeout_s, memory_mb, gpu=device != "cpu")

    def check(self, cand: Candidate | str) -> dict:
        res = call(self.pool, {**self.payload, "source": as_candidate(cand).code})
        return {**res, "status": res.get("status") or "crash"}

    __call__ = check

