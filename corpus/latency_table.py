"""Per-device latency lookup tables for the benchmark spaces: look latency up instead of measuring.

    python -m corpus latency-table --space cbm-resnet --device cuda --out lat.json   # measure once
    python -m search run --evaluator table:cbm-resnet --latency-table lat.json \\
        --objective pareto --hw-metric latency_ms ...                                 # search anywhere

HW-NAS-Bench (Li et al., ICLR 2021) publishes measured latencies of every NAS-Bench-201 and FBNet
architecture on six devices, so that hardware-aware searches need not own the hardware. Those two
spaces are cell/block spaces that a channel-width mutator does not reach, so nasforge cannot use
that file; it uses the same idea for the spaces it does search (the Channel-Bench-Macro tables,
`corpus.table`): a file of batch-1 latencies per configuration key, one column per device.

File formats (`load`):
- JSON `{"2222222": 3.14, ...}` (one device) or `{"2222222": {"rtx3090": 1.2, "pi4": 48.0}, ...}`;
- CSV with a header `key,<device>,<device>,...` and one row per key.
With more than one device column, `--latency-column` picks one. Values are milliseconds, finite and
positive; anything else is an error naming the file and the key.

`build` measures a table here, on the device it is given (median batch-1 latency in eval mode, the
corpus's `corpus.measure.latency_ms`, each network built from the space's seed by the mutator in
the sandbox), resumable through a JSONL journal beside the output. Keys the file lacks make a
candidate fail with a message saying so (a sampled table restricts the search to its sample).
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import os
from pathlib import Path

from corpus.errors import TableError
from corpus.handlers import EVALUATE
from corpus.spaces import SPACES, SPEC, key_of, widths_of


def _ms(value, path, key) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v) or v <= 0:
        raise TableError(f"{path}: latency of {key!r} is {value!r}, not a positive number of milliseconds")
    return v


def load(path: str, column: str | None = None) -> tuple[dict[str, float], str]:
    """(key -> latency ms, the device column's name) from a JSON or CSV latency table."""
    p = Path(path)
    if not p.is_file():
        raise TableError(f"no latency table at {p}")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TableError(f"{p} is not a readable latency table ({exc})") from None
    rows: dict[str, dict] = {}
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TableError(f"{p} is not valid JSON ({exc})") from None
        for k, v in data.items():
            rows[str(k)] = v if isinstance(v, dict) else {"latency_ms": v}
    else:
        reader = csv.reader(text.splitlines())
        header = next(reader, None)
        if not header or len(header) < 2 or header[0].strip().lower() != "key":
            raise TableError(f"{p}: a CSV latency table needs a header 'key,<device>,...'")
        for line in reader:
            if not line:
                continue
            if len(line) != len(header):
                raise TableError(f"{p}: row {line[:1]} has {len(line)} fields, the header {len(header)}")
            rows[line[0].strip()] = dict(zip((h.strip() for h in header[1:]), line[1:]))
    if not rows:
        raise TableError(f"{p} has no latencies")
    devices = sorted({d for v in rows.values() for d in v})
    if column is None:
        if len(devices) > 1:
            raise TableError(f"{p} has latencies for {', '.join(devices)}: pick one with --latency-column")
        column = devices[0]
    elif column not in devices:
        raise TableError(f"{p} has no column {column!r} (it has {', '.join(devices)})")
    out = {k: _ms(v[column], p, k) for k, v in rows.items() if column in v and v[column] not in ("", None)}
    if not out:
        raise TableError(f"{p} has no latencies in column {column!r}")
    return out, column


def build(space: str, out: str, device: str = "cpu", sample: int = 0, seed: int = 0, runs: int = 30,
          label: str | None = None, progress: bool = True) -> dict:
    """Measure the batch-1 latency of the space's configurations (all, or a seeded sample of
    `sample`) on `device`; write `out` as JSON {key: {label: ms}}. Resumes from `out`.jsonl."""
    import random

    from tqdm import tqdm

    from corpus.pipeline import device_name
    from mutator import seeds
    from mutator.calls import analyze, realize
    from mutator.records import JournalError, append, read
    from mutator.sandbox import WorkerPool

    if space not in SPACES:
        raise TableError(f"unknown benchmark space {space!r} (known: {', '.join(SPACES)})")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TableError("--device cuda, but CUDA is not available here")
    elif device != "cpu":
        raise TableError(f"--device must be cpu or cuda, not {device!r}")
    label = label or device_name(device)
    choices = SPACES[space]["choices"]
    keys = ["".join(str(i + 1) for i in idx) for idx in itertools.product(*(range(len(c)) for c in choices))]
    if 0 < sample < len(keys):
        keys = sorted(random.Random(seed).sample(keys, sample))
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    journal = dest.with_name(dest.name + ".jsonl")
    done: dict[str, float] = {}
    try:
        measured = read(journal, required=("key", "latency_ms", "space", "device"), what="latency record")
    except JournalError as exc:
        raise TableError(str(exc)) from None
    for r in measured:  # a line torn by a kill is measured again
        if (r.get("space"), r.get("device")) != (space, label):
            raise TableError(f"{journal} holds latencies of {r.get('space')} on {r.get('device')}, not of "
                             f"{space} on {label}: pass another --out")
        done[r["key"]] = float(r["latency_ms"])
    source = seeds.seed_source(SPACES[space]["seed"])
    # timing on all cores, as the pre-check does; host memory bounded on CUDA too (by the watchdog, not RLIMIT_AS)
    pool = WorkerPool(1, timeout_s=600, memory_mb=6144,
                      threads_per_worker=os.cpu_count() or 1, gpu=device != "cpu")
    try:
        a = analyze(pool, source, SPEC)
        if not a.ok:
            raise TableError(f"the {space} seed cannot be analysed: {a.error}")
        seed_key = key_of(a.seed_widths, space)  # a search starts from the seed: always in the table
        if seed_key not in keys:
            keys = sorted(keys + [seed_key])
        todo = [k for k in keys if k not in done]
        bar = tqdm(total=len(todo), desc=f"latency {space} on {label}", unit="net", disable=not progress)
        for i in range(0, len(todo), 16):
            chunk = todo[i:i + 16]
            for key, r in zip(chunk, realize(pool, source, SPEC, a, [widths_of(k, space) for k in chunk])):
                if not r.ok:  # a crashed or timed-out request fails every configuration of its chunk
                    raise TableError(f"configuration {key} of {space} does not build: {r.status}: {r.error}")
                m = pool.call(EVALUATE, {"source": r.source, "spec": SPEC, "device": device, "latency_runs": runs,
                                         "flops": False, "latency": "batch1", "train": False})
                if m.get("status") != "ok" or not m.get("latency_ms"):
                    raise TableError(f"configuration {key} of {space} was not timed: {m.get('error')}")
                done[key] = m["latency_ms"]
                append(journal, {"key": key, "latency_ms": m["latency_ms"], "space": space, "device": label})
                bar.update(1)
        bar.close()
    finally:
        pool.close()
    wanted = set(keys)
    table = {k: {label: done[k]} for k in sorted(done) if k in wanted}
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(json.dumps(table, indent=0))
    tmp.replace(dest)
    return {"out": str(dest), "rows": len(table), "new": len(todo), "device": label}
