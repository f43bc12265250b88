"""Profile a folder of variants into a Hugging Face dataset, resumably.

    python -m corpus build --variants variants --dataset fashion-mnist --out corpus_fm --train-limit 2000

Every finished row is appended to `OUT/rows.jsonl` (flushed and fsynced) as it arrives: that
journal is the source of truth. After the run, and again on every resume, the `datasets` dataset
in OUT is rewritten from the journal (staged in a temporary folder, then moved into place file by
file, so a kill leaves the previous dataset or the new one, and the journal in any case). Re-running
the same command profiles only the variants the journal does not have; a torn last journal line
(from `kill -9`) is dropped.

Zero-cost proxies (corpus.zerocost): `--zero-cost` adds the `zc_*` columns, computed before training;
`--zero-cost-only` computes them and skips training (accuracy, latency and memory are None). Each row
records its mode in `zero_cost` (off / on / only). On resume, a journal row counts as done only if it
has what this run asks for (training, proxies); a row that lacks one is profiled again with both
(mode on), so a row is never replaced by one with fewer columns: resuming a trained corpus with
`--zero-cost-only` therefore trains those rows again (a note says how many).

Seed policy (`--proxy-seeds K`, default 1; `corpus.evaluator.evaluate_seeds`): every network is trained
K times, with the recipe's rng seeds S..S+K-1 (S: `--rng-seed`), the same seeds for every network;
`accuracy` is the mean of the K runs, `accuracy_std` their sample std and `accuracies` the list (both
null for K = 1), `train_seconds` the sum, and a network that fails under any seed is that run's failed
row. Every row records its `proxy_seeds`, the card a "Seed policy" section. A journal written before
these columns existed loads with `proxy_seeds` 1; a resume does not profile a journal row again for
another K (the card counts such rows).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from corpus.data import DataError, info, prepare

COLUMNS = ["id", "parent", "code", "sha256", "widths", "status", "error", "accuracy", "proxy_seeds", "accuracy_std",
           "accuracies", "train_seconds",
           "flops", "flops_unsupported", "flops_check", "params", "params_check", "latency_ms", "latency_batch_ms",
           "latency_batch",
           "peak_memory_mb", "final_loss", "device_name", "dataset", "recipe", "versions", "profiled_at",
           "zero_cost", "class_name", "zc_synflow", "zc_naswot", "zc_snip", "zc_grad_norm", "zc_grasp", "zc_seconds",
           "zc_error"]  # the zc_* names are corpus.zerocost.COLUMNS


from corpus.errors import CorpusError  # noqa: E402  (defined with the package's other errors)


@dataclass(frozen=True)
class BuildConfig:
    variants: str
    dataset: str
    out: str
    epochs: float = 1.0
    batch_size: int = 0  # 0: corpus.train.auto_batch of the training-set size
    min_steps: int = 150
    train_limit: int = 0
    workers: int = 1
    device: str = "auto"
    timeout_s: float = 1800.0
    executor: str = "local"
    data_dir: str | None = None
    use_model_recipe: bool = False
    seed: int = 0
    latency_batch: int = 64
    memory_mb: int = 8192
    push_to_hub: str | None = None
    zero_cost: bool = False
    zero_cost_only: bool = False
    zero_cost_batch: int = 64
    proxy_seeds: int = 1  # training runs per network, rng seeds seed..seed+K-1 (corpus.evaluator.evaluate_seeds)
    # Recipe.channels_last and Recipe.bf16 on a CPU: auto | on | off (corpus.evaluator.resolve_fast_cpu; auto on a
    # corpus with rows is what its rows used); recorded in every row's recipe
    fast_cpu: str | bool = "auto"
    # also profile the seed network itself (the variants folder's config.json names it), as a row whose id is the
    # seed's label: the reference a family's networks are described against (`finetune --task score|prefer`,
    # `search run --strategy scored` describe candidates against the seed)
    with_seed: bool = False


def zero_cost_mode(cfg) -> str:
    """off | on (proxies and training) | only (proxies, no training): see the module docstring."""
    return "only" if cfg.zero_cost_only else "on" if cfg.zero_cost else "off"


def _lacks(row: dict, mode: str) -> bool:
    """Whether a journal row lacks what a run in `mode` asks for (training, proxies)."""
    has = row.get("zero_cost") or "off"
    return (mode != "only" and has == "only") or (mode != "off" and has == "off")


def resolve_device(device: str) -> str:
    from corpus.evaluator import resolve_device as resolve

    return resolve(device)


def versions() -> dict:
    from mutator.records import versions as of

    return of("torch", "fvcore", "libcst", "datasets", "numpy")


def recipe_of(cfg) -> dict:
    from corpus.evaluator import fast_cpu, recipe_for

    return recipe_for(cfg.dataset, cfg.epochs, cfg.batch_size, cfg.train_limit, cfg.seed, min_steps=cfg.min_steps,
                      **fast_cpu(getattr(cfg, "fast_cpu", "off")))


def fast_cpu_of(cfg, rows) -> str:
    """`--fast-cpu` resolved to on/off: auto is what a resumed corpus's rows were trained with (so that a corpus
    keeps one arithmetic), else on where the CPU has bf16 instructions."""
    from corpus.evaluator import resolve_fast_cpu

    if cfg.fast_cpu == "auto":
        for row in rows:
            try:
                old = json.loads(row.get("recipe") or "{}")
            except (TypeError, ValueError):
                continue
            if isinstance(old, dict) and old:
                return "on" if old.get("bf16") and old.get("channels_last") else "off"
    return resolve_fast_cpu(cfg.fast_cpu)


def schedule_note(recipe: dict, data_path: str) -> str:
    """What `corpus.train.schedule` gives this build: images, batch size, optimizer steps, passes."""
    import torch

    from corpus.train import Recipe, schedule

    r = Recipe(**recipe)
    n = len(torch.load(data_path, mmap=True, weights_only=True)["y_train"])
    n = min(n, r.train_limit) if r.train_limit > 0 else n
    bs, steps = schedule(n, r)
    return (f"{n:,} training images, batch {bs}, {steps} optimizer steps "
            f"({steps * bs / n:.2f} passes over the images)")


# a row's keys that the parent writes itself; every other one is a measurement `journal_row` checks
PARENT_KEYS = ("id", "parent", "code", "sha256", "widths", "dataset", "recipe", "latency_batch", "versions",
               "profiled_at", "zero_cost", "class_name")


def journal_row(row: dict) -> dict:
    """A row as the journal and the Arrow table may hold it: its measurements checked against
    `mutator.results.ROW_SCHEMA` (a row that breaks it is that variant's `invalid_result`, never the
    end of the build), every string valid UTF-8. Applied on write and again on reading, so a journal
    poisoned before this check existed still builds (its bad rows become `invalid_result`). The seed
    policy's columns (`corpus.evaluator.seed_columns`) are the parent's too, checked there: a row
    journalled before they existed has `proxy_seeds` 1."""
    from corpus.evaluator import seed_columns
    from mutator.results import STATUSES, valid_strings, validate_row

    out = valid_strings(validate_row(row, statuses=STATUSES | {"missing"}, keep=PARENT_KEYS))
    return {**out, **seed_columns(row if isinstance(row, dict) else {}, out)}


def read_journal(path: Path) -> list[dict]:
    """The journaled rows (`mutator.records`: a torn last line is profiled again), each `journal_row`."""
    from mutator.records import JournalError, read

    try:
        return [journal_row(r) for r in read(path, required=("id", "status"), what="row")]
    except JournalError as exc:
        raise CorpusError(str(exc)) from None


def append_row(path: Path, row: dict) -> None:
    from mutator.records import append

    append(path, journal_row(row))


def load_variants(folder: str) -> list[dict]:
    from mutator.generate import UserError, read_manifest

    d = Path(folder)
    if not d.is_dir():
        raise CorpusError(f"--variants {folder} is not a folder")
    if not (d / "manifest.jsonl").exists():
        raise CorpusError(f"{folder} has no manifest.jsonl (make one with python -m mutator generate)")
    try:
        rows = read_manifest(d)
    except UserError as exc:
        raise CorpusError(str(exc)) from None
    if not rows:
        raise CorpusError(f"{folder}/manifest.jsonl lists no variants")
    return rows


def seed_entry(folder: str, variants: list[dict]) -> dict:
    """The seed network of a variants folder as one more entry (`--with-seed`): its source from the folder's
    config.json (`mutator generate`'s `--seed`: a built-in name, or a file path as given there, else beside the
    folder), its widths from the manifest; id = its label, the variants' `parent`."""
    from mutator.generate import UserError, resolve_seed

    d = Path(folder)
    try:
        seed = json.loads((d / "config.json").read_text())["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CorpusError(f"--with-seed: {folder}/config.json does not name the seed (written by python -m mutator "
                          f"generate)") from None
    candidates = [seed] if not str(seed).endswith(".py") or Path(seed).exists() else [seed, str(d / Path(seed).name)]
    for name in candidates:
        try:
            parent, source = resolve_seed(str(name))
            break
        except UserError as exc:
            why = str(exc)
    else:
        raise CorpusError(f"--with-seed: {why}")
    label = str(seed)
    mine = [v for v in variants if v.get("parent") == label]
    if not mine:
        raise CorpusError(f"--with-seed: no variant in {folder} has the seed {label!r} as its parent")
    return {"id": label, "parent": label, "source": source, "widths": mine[0].get("seed_widths"),
            "class_name": mine[0].get("class_name"), "in_shape": mine[0].get("in_shape"),
            "classes": mine[0].get("classes")}


def base_row(variant: dict, code: str, cfg, recipe: dict) -> dict:
    return {"id": variant["id"], "parent": variant.get("parent"), "code": code,
            "sha256": hashlib.sha256(code.encode()).hexdigest(), "widths": variant.get("widths"),
            "dataset": cfg.dataset, "recipe": json.dumps(recipe, sort_keys=True),
            "latency_batch": cfg.latency_batch, "class_name": variant.get("class_name"),
            "proxy_seeds": getattr(cfg, "proxy_seeds", 1)}


def build(cfg: BuildConfig, progress: bool = True) -> dict:
    from tqdm import tqdm

    from corpus.evaluator import check_proxy_seeds

    if cfg.executor not in ("local", "ray"):
        raise CorpusError(f"--executor must be local or ray, not {cfg.executor!r}")
    check_proxy_seeds(cfg.proxy_seeds)
    try:
        info(cfg.dataset)
    except DataError as exc:
        raise CorpusError(str(exc)) from None
    variants = load_variants(cfg.variants)
    if cfg.with_seed:
        variants = [seed_entry(cfg.variants, variants), *variants]
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise CorpusError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "rows.jsonl"
    mode = zero_cost_mode(cfg)
    latest = {r["id"]: r for r in read_journal(journal)}
    redo = {i for i, r in latest.items() if _lacks(r, mode)}
    done = set(latest) - redo
    if redo & {v["id"] for v in variants}:
        print(f"note: {len(redo)} journal rows lack the training or proxies this run asks for; "
              f"profiling them again with training and proxies (zero_cost=on)", file=sys.stderr)
    try:
        data_path = str(prepare(cfg.dataset, cfg.data_dir))
    except DataError as exc:
        raise CorpusError(str(exc)) from None
    check_fits_dataset(cfg, [v for v in variants if v["id"] not in done])
    cfg = dataclasses.replace(cfg, fast_cpu=fast_cpu_of(cfg, latest.values()))
    recipe = recipe_of(cfg)
    note = schedule_note(recipe, data_path)
    seeds = "" if cfg.proxy_seeds == 1 else \
        f"; {cfg.proxy_seeds} runs per network, rng seeds {cfg.seed}..{cfg.seed + cfg.proxy_seeds - 1} (--proxy-seeds)"
    print(f"proxy training: {note}{seeds}", file=sys.stderr)
    (out / "build_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    vers = versions()
    todo = [v for v in variants if v["id"] not in done]
    classes = info(cfg.dataset)["classes"]
    counts: dict[str, int] = {}
    vdir = Path(cfg.variants)
    jobs = []
    for v in todo:
        path = vdir / v.get("file", f"{v['id']}.py")
        try:
            code = v["source"] if "source" in v else path.read_text()  # the seed's own (--with-seed)
        except (OSError, UnicodeDecodeError) as exc:
            row = base_row(v, "", cfg, recipe)
            row.update(status="missing", error=f"cannot read {path.name}: {exc}", versions=json.dumps(vers),
                       profiled_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
            append_row(journal, row)
            counts["missing"] = counts.get("missing", 0) + 1
            continue
        payload = {"source": code, "data_path": data_path, "classes": classes,
                   "class_name": v.get("class_name"), "recipe": recipe, "device": device,
                   "use_model_recipe": cfg.use_model_recipe, "latency_batch": cfg.latency_batch,
                   "zero_cost": "on" if v["id"] in redo else mode, "zero_cost_batch": cfg.zero_cost_batch}
        jobs.append((v, code, payload))
    bar = tqdm(total=len(jobs), desc=f"profiling on {cfg.dataset}", unit="net", disable=not progress)
    ticker = Ticker(bar, note, len(jobs)) if progress and jobs else None
    try:
        for v, code, res in _execute(cfg, device, jobs):
            row = base_row(v, code, cfg, recipe)
            for k in COLUMNS:
                if k in res:
                    row[k] = res[k]
            row["status"] = res.get("status") or "crash"
            row["zero_cost"] = "on" if v["id"] in redo else mode
            row["versions"] = json.dumps(vers)
            row = journal_row({**row, "profiled_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            append_row(journal, row)
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            if ticker:
                ticker.finished(counts.get("ok", 0), sum(n for s, n in counts.items() if s != "ok"))
            bar.update(1)
    finally:
        if ticker:
            ticker.stop()
        bar.close()
        rows = read_journal(journal)
        if rows:
            write_dataset(out, rows, cfg, recipe, vers, note)
    if cfg.push_to_hub:
        import datasets

        datasets.load_from_disk(str(out)).push_to_hub(cfg.push_to_hub)
    corpus_counts: dict[str, int] = {}
    for r in {r["id"]: r for r in rows}.values():
        corpus_counts[r["status"]] = corpus_counts.get(r["status"], 0) + 1
    first_error = next((r.get("error") for r in rows if r["status"] != "ok" and r.get("error")), None)
    return {"profiled": len(jobs), "skipped": len(done), "counts": counts, "rows": len(rows), "out": str(out),
            "corpus_counts": corpus_counts, "first_error": first_error}


def check_fits_dataset(cfg, variants: list[dict]) -> None:
    """Before any profiling: each seed's variants (one per parent and class name) must build and run
    forward at the data set's input shape and number of classes when the manifest says they were made
    for another (`in_shape`, `classes` written by `mutator generate`); a CorpusError naming both
    shapes and the fix otherwise. A model that reads its input channels and classes (LEMUR's
    `in_shape`, `num_classes=`) passes; a 3-channel CIFAR model on a 1-channel data set does not."""
    from mutator.calls import validate
    from mutator.sandbox import WorkerPool

    from corpus.data import DATASETS

    d = info(cfg.dataset)
    want = [d["channels"], *d["size"]]
    firsts: dict[tuple, dict] = {}
    for v in variants:
        shape = v.get("in_shape")
        if isinstance(shape, list) and len(shape) == 4 and (shape[1:] != want or v.get("classes") != d["classes"]):
            firsts.setdefault((v.get("parent"), v.get("class_name")), v)
    if not firsts:
        return
    with WorkerPool(1, timeout_s=min(cfg.timeout_s, 300)) as pool:
        for v in firsts.values():
            try:
                code = v["source"] if "source" in v else (Path(cfg.variants) / v.get("file", f"{v['id']}.py")).read_text()
            except (OSError, UnicodeDecodeError):
                continue  # its row says `missing`
            spec = {"in_shape": [1, *want], "classes": d["classes"], "class_name": v.get("class_name")}
            check = validate(pool, code, spec)
            if check.status != "invalid":  # ok, or a crash / time-out: the profiling counts those
                continue
            made = v["in_shape"][1:]
            fits = [n for n in DATASETS if [info(n)["channels"], *info(n)["size"]] == made]
            fix = f"profile on {' or '.join(fits)}" if fits else "profile on a data set of that shape"
            name = f" ({v['class_name']})" if v.get("class_name") else ""
            raise CorpusError(
                f"{v.get('parent')}{name}: its variants were made for {'x'.join(map(str, made))} inputs and "
                f"{v.get('classes')} classes, {cfg.dataset} has {'x'.join(map(str, want))} images and {d['classes']} "
                f"classes, and they do not run at it ({check.error}); {fix}, or make the model take its input "
                f"channels and classes (in_channels=, num_classes=) and generate again with --in-shape "
                f"1,{','.join(map(str, want))} --classes {d['classes']}")


class Ticker:
    """The progress bar's postfix while networks train: the planned optimizer steps per network, the
    time since the last network finished (or the start), and from the networks finished so far the
    wall time per network and an estimate of what is left.
    Measured in this process (the sandboxed worker sends nothing until its network is done), refreshed
    every second by a daemon thread."""

    def __init__(self, bar, note: str, total: int, every_s: float = 1.0):
        import threading

        self.bar, self.total = bar, total
        self.steps = next((part.split(" optimizer")[0].split()[-1] for part in note.split(", ")
                           if "optimizer steps" in part), "?")
        self.t0 = self.started = time.monotonic()
        self.done, self.ok, self.failed = 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def text(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        parts = [f"ok {self.ok}", f"failed {self.failed}",
                 f"net {self.done + 1}: {self.steps} steps, {_clock(now - self.started)} so far"]
        if self.done:  # wall time per finished network, parallel workers included
            per = (now - self.t0) / self.done
            left = max(0.0, per * (self.total - self.done) - (now - self.started))
            parts.append(f"{_clock(per)}/net, ETA {_clock(left)}")
        return ", ".join(parts)

    def finished(self, ok: int, failed: int) -> None:
        self.done, self.ok, self.failed = self.done + 1, ok, failed
        self.started = time.monotonic()
        self.bar.set_postfix_str(self.text(), refresh=False)

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            if self.done < self.total:
                self.bar.set_postfix_str(self.text())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _execute(cfg, device, jobs):
    """Yield (variant, code, result row) as each finishes, on local sandbox workers or Ray; each row
    under the seed policy (`corpus.evaluator.evaluate_seeds`: K requests of a network, one after the
    other on one worker's turn at a time, the workers busy with different networks)."""
    if not jobs:
        return
    if cfg.executor == "ray":
        from corpus.ray_executor import run_ray

        yield from run_ray(cfg, device, jobs)
        return
    from corpus.handlers import EVALUATE  # registered before the workers start: they are told of it
    from mutator.sandbox import WorkerPool, imap_threads

    from corpus.evaluator import worker_threads

    # the cores (or NASFORGE_THREADS) shared out: more torch threads than free cores spin against each other
    # (lenet's 300 steps took 32 s instead of 1.4 s with 2 threads beside one busy core)
    workers = max(1, cfg.workers)
    pool = WorkerPool(workers, timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb,
                      threads_per_worker=max(1, worker_threads() // workers), gpu=device != "cpu")
    try:
        from corpus.evaluator import evaluate_seeds, score

        def run_one(payload: dict) -> dict:  # accuracy from the predictions, here: the labels never enter the sandbox
            return score(pool.call(EVALUATE, payload), payload)

        for i, res in imap_threads(pool.size, [p for _, _, p in jobs], lambda p: evaluate_seeds(run_one, p, cfg.proxy_seeds)):
            v, code, _ = jobs[i]
            yield v, code, res
    finally:
        pool.close()


CARD = """---
tags: [neural-architecture-search, nasforge]
---
# nasforge corpus: {n} networks profiled on {dataset}

Made by `python -m corpus build` ({config}).
Networks built by {built_by}, at input shape {in_shape} (batch, channels, height, width) and
{classes} classes: the data set's.
Each row is one network (a channel-width variant written by `python -m mutator generate`), with its
full source code and what one fixed proxy-training recipe measured.

## Columns
- `id`, `parent`, `widths`: variant id, the seed it came from, its width values (source order).
- `code`, `sha256`: the full source, and its SHA-256.
- `status`: `ok`, or why not: `build_error`, `shape_error`, `train_error`, `nan`, `oom`, `timeout`,
  `crash`, `missing`, `invalid_result` (the network's process answered something that is not a
  result: a non-finite number, text where a number goes, ...; `error` names the field).
  `error`: a short message. A failed row has null metrics, never made-up ones.
- `accuracy`: top-1 on the full {dataset} test split after proxy training, a fraction in [0, 1],
  computed outside the network's process from the classes it predicted (the sandbox never holds
  the test labels); the mean over the row's `proxy_seeds` training runs (see Seed policy).
- `proxy_seeds`: K, the training runs (rng seeds) behind `accuracy`; `accuracy_std`: the sample
  standard deviation of their accuracies, `accuracies`: the K accuracies in seed order (both null
  when K = 1, and on a failed row).
- `train_seconds`: wall time of the training loop (summed over the K runs). `final_loss`: the last
  training batch's loss (the first run's, as every measurement below).
- `flops`: one sample's forward pass at the data set's input shape;
  **one fused multiply-add counts as one flop**; counted at torch's dispatcher on the trained
  network's forward pass over the test split (the one its accuracy comes from), plus fvcore's
  count of normalisation, upsampling and adaptive pooling; elementwise ops, pooling and activations
  are not counted; operators fvcore has no rule for are listed in `flops_unsupported`.
- `flops_check`: `ok` when fvcore's count (traced at batch 1) agrees with the dispatcher's within
  1 % and the tested forward costs what the batch-1 one did; else what disagreed (such a row fails
  any FLOPs budget).
- `params`: number of parameter elements of the trained network; `params_check`: `ok` when that
  equals the count before training, else both counts.
- `latency_ms` / `latency_batch_ms`: median milliseconds of a forward pass at batch 1 /
  `latency_batch`, eval mode, {runs} timed runs after 10 warm-up runs (device events on CUDA), on
  `device_name`.
- `peak_memory_mb`: on CUDA, peak allocated memory during training; on CPU, the peak resident set
  size of the worker process during training above its size before.
- `dataset`, `recipe` (JSON), `versions` (JSON), `profiled_at`.
- `class_name`: the class or factory function in `code` that builds the network (`--class-name` of
  `python -m mutator generate`); empty: the file's `Net`, or its only nn.Module class.
- `zero_cost`: `off`, `on` (zero-cost proxies, then training) or `only` (proxies and no training:
  `accuracy`, latency and memory are null, status `ok` means the network built and was scored).
- `zc_synflow`, `zc_naswot`, `zc_snip`, `zc_grad_norm`, `zc_grasp`: zero-cost proxies at
  initialisation on one batch of training images (conventions in `corpus/zerocost.py`: synflow and
  naswot are natural logs); `zc_seconds` their wall time; `zc_error` which proxy failed and why.

## Seed policy
{seed_policy}

## Recipe
{recipe_doc}
{schedule}
Recipe values: `{recipe}`

## Status counts
{counts}

## Environment
{versions}
"""


def seed_policy(cfg, rows: list[dict]) -> str:
    """The card's "Seed policy" paragraph: the rng seeds every network of the corpus was trained with."""
    s, k = cfg.seed, getattr(cfg, "proxy_seeds", 1)
    seeds = f"rng seed {s}" if k == 1 else f"rng seeds {s}..{s + k - 1}"
    text = (f"Every network of this corpus is trained with the same {seeds} (`--rng-seed {s} --proxy-seeds {k}`): "
            "common random numbers, the same initialisation seed, training subset, batch order and augmentation "
            "draws for every network, so two networks differ by their architecture, not their luck. ")
    if getattr(cfg, "use_model_recipe", False):
        text += ("(With `--use-model-recipe` a network's own training draws its batches from torch's generator "
                 "after its initialisation: the seed is shared, the batch order is not.) ")
    if k == 1:
        text += ("`accuracy` is that one training run's, and one run's accuracy varies with the rng seed "
                 "(`benchmarks/proxy_fidelity.md` measures by how much): `--proxy-seeds K` averages K runs.")
    else:
        text += (f"`accuracy` is the mean over the {k} runs (`accuracy_std` their sample standard deviation, "
                 "`accuracies` each run's, in seed order), `train_seconds` their sum, every other measurement the "
                 "first run's. A network that fails under any of the seeds is a failed row: the status and error of "
                 "its first failing run (the error names the seed).")
    other: dict[int, int] = {}
    for r in rows:
        if r.get("proxy_seeds", 1) != k:
            other[r.get("proxy_seeds", 1)] = other.get(r.get("proxy_seeds", 1), 0) + 1
    if other:
        text += (" The exception: rows profiled into this folder by earlier runs with another number of seeds, "
                 "which a resume keeps as they are: "
                 + ", ".join(f"{n} with proxy_seeds {kk}" for kk, n in sorted(other.items()))
                 + " (their `proxy_seeds` and `recipe` columns say how they were trained).")
    return text


def write_dataset(out: Path, rows: list[dict], cfg, recipe: dict, vers: dict, schedule: str = "") -> None:
    """Rewrite the dataset in OUT from the journal rows (last row per id wins); `schedule`: what the
    recipe's rule gave this corpus (`schedule_note`), stated in the card."""
    import datasets

    from corpus import train

    datasets.disable_progress_bars()
    latest = {}
    for r in map(journal_row, rows):  # one bad row must not lose the others (the journal's are checked already)
        latest[r["id"]] = r
    rows = list(latest.values())
    table = {c: [r.get(c) for r in rows] for c in COLUMNS}
    for c in ("widths",):
        table[c] = [list(v) if v else [] for v in table[c]]
    features = datasets.Features({
        **{c: datasets.Value("string") for c in ("id", "parent", "code", "sha256", "status", "error",
                                                 "device_name", "dataset", "recipe", "versions", "profiled_at")},
        "widths": datasets.Sequence(datasets.Value("int64")),
        "flops_unsupported": datasets.Sequence(datasets.Value("string")),
        **{c: datasets.Value("float64") for c in ("accuracy", "train_seconds", "latency_ms", "latency_batch_ms",
                                                  "peak_memory_mb", "final_loss", "zc_synflow", "zc_naswot",
                                                  "zc_snip", "zc_grad_norm", "zc_grasp", "zc_seconds")},
        "zero_cost": datasets.Value("string"), "zc_error": datasets.Value("string"),
        "flops_check": datasets.Value("string"), "params_check": datasets.Value("string"),
        "class_name": datasets.Value("string"),
        **{c: datasets.Value("int64") for c in ("flops", "params", "latency_batch", "proxy_seeds")},
        "accuracy_std": datasets.Value("float64"), "accuracies": datasets.Sequence(datasets.Value("float64")),
    })
    table["flops_unsupported"] = [v or [] for v in table["flops_unsupported"]]
    ds = datasets.Dataset.from_dict(table, features=features)
    stage = out / ".staging"
    shutil.rmtree(stage, ignore_errors=True)
    ds.save_to_disk(str(stage))
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    names = sorted({r.get("class_name") or "" for r in rows})
    built_by = ", ".join(f"`{n}`" if n else "the file's `Net` (or its only nn.Module class)" for n in names) \
        + " (column `class_name`; pass it as `--class-name` to any command that takes one of these files)"
    meta = info(cfg.dataset)
    card = CARD.format(n=len(rows), dataset=cfg.dataset, config=json.dumps(dataclasses.asdict(cfg)),
                       built_by=built_by, in_shape=[1, meta["channels"], *meta["size"]], classes=meta["classes"],
                       recipe_doc=train.__doc__.split("\n\n", 1)[1].strip(), recipe=json.dumps(recipe),
                       schedule=f"\nThis corpus: {schedule}.\n" if schedule else "", seed_policy=seed_policy(cfg, rows),
                       runs=30, counts="\n".join(f"- {k}: {v}" for k, v in sorted(counts.items())),
                       versions="\n".join(f"- {k}: {v}" for k, v in vers.items()))
    (stage / "README.md").write_text(card)
    # state.json last: a reader sees the old or the new file list, with the journal intact either way
    names = sorted(os.listdir(stage), key=lambda n: n == "state.json")
    for old in out.glob("data-*.arrow"):
        if not (stage / old.name).exists():
            old.unlink()
    for name in names:
        os.replace(stage / name, out / name)
    shutil.rmtree(stage, ignore_errors=True)


def main_build(cfg: BuildConfig) -> int:
    print(f"config: {cfg}", file=sys.stderr)
    res = build(cfg)
    c = ", ".join(f"{k}: {v}" for k, v in sorted(res["counts"].items())) or "nothing new"
    print(f"profiled {res['profiled']} variants ({c}); {res['skipped']} already in the corpus; "
          f"{res['rows']} rows in {res['out']}")
    if res["rows"] and not res["corpus_counts"].get("ok"):
        # a corpus with no usable row is a failed build, whatever the reason: say it where the user looks
        failed = ", ".join(f"{k}: {v}" for k, v in sorted(res["corpus_counts"].items()))
        why = " ".join(str(res["first_error"] or "").split())[:200]
        print(f"error: every network failed ({failed}){f'; e.g. {why}' if why else ''}; each row's error is in "
              f"{Path(res['out']) / 'rows.jsonl'}", file=sys.stderr)
        return 1
    return 0
