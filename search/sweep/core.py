"""The sweep: triage of the runs (done, to resume, to start), their execution with one progress bar,
the journal, and `search compare` per evaluator at the end."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mutator import records
from search.sweep.executors import LocalExecutor, RayExecutor
from search.sweep.runs import child_env, run_state, stored_iterations
from search.sweep.servers import LlamaServers
from search.sweep.spec import Cell, Spec, SweepError, load_spec, run_parser

@dataclass(frozen=True)
class SweepConfig:
    spec: str
    out: str
    executor: str = "local"  # local | ray
    address: str | None = None  # Ray cluster (None: RAY_ADDRESS, else a local instance)
    parallel: int = 0  # runs at once (0: CPU cores, or the Ray cluster's CPUs)
    progress: bool = True
    server_timeout_s: float = 600.0  # for a gguf server to answer /v1/models
    evaluators: tuple[str, ...] | None = None  # run only these evaluator entries (None: all)
    configurations: tuple[str, ...] | None = None  # run only these configurations (None: all)


# ---------------------------------------------------------------- the sweep

def lock(out: Path):
    """One sweep per folder at a time (released by the kernel when the holder dies)."""
    import fcntl

    f = open(out / ".sweep.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise SweepError(f"another sweep is running in {out}") from None
    return f


def leftover_runs(out: Path) -> list[int]:
    """Processes on this machine running `search run` into out/runs: an earlier sweep's runs outlive a
    kill -9 only briefly (a Ray worker notices its driver is gone within seconds), never on purpose."""
    needle = (str(out / "runs") + os.sep).encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[1:4] == [b"-m", b"search", b"run"] and any(a.startswith(needle) for a in args):
            pids.append(int(proc.name))
    return pids


def triage(cells, out: Path, journal: Path, past: list[dict]) -> tuple[list, list, dict]:
    """(cells to run with their mode, cells done, iterations stored per run)."""
    last_end = {r["run"]: r for r in past if r.get("event") == "end"}
    todo, done, counts = [], [], {}
    for cell in cells:
        folder = out / "runs" / cell.name
        state, n = run_state(folder)
        if state == "invalid":
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for suffix in ("", "-journal", "-wal", "-shm"):
                src = folder / f"run.sqlite{suffix}"
                if src.exists():
                    src.rename(folder / f"run.sqlite{suffix}.invalid-{stamp}")
            records.append(journal, {"event": "invalid_store", "run": cell.name, "time": time.time(),
                                     "moved_to": str(folder / f"run.sqlite.invalid-{stamp}")})
            state, n = "missing", 0
        counts[cell.name] = min(n, cell.iterations)
        end = last_end.get(cell.name)
        finished = state == "started" and (n >= cell.iterations or (
            end is not None and end.get("rc") == 0 and end.get("flags") == dict(cell.flags)
            and end.get("iterations") == n))
        if finished:
            done.append(cell)
        else:
            todo.append((cell, "resume" if state == "started" else "fresh", n))
    return todo, done, counts


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "no output"


def sweep(cfg: SweepConfig) -> dict:
    """Run (or continue) the sweep; see the module docstring. Returns {"runs", "ran", "done", "compare"}."""
    if cfg.executor not in ("local", "ray"):
        raise SweepError(f"--executor must be local or ray, not {cfg.executor!r}")
    if cfg.parallel < 0:
        raise SweepError("--parallel must be >= 0 (0: every core)")
    spec = load_spec(cfg.spec, cfg.executor, cfg.address, cfg.evaluators, cfg.configurations)
    out = Path(cfg.out).absolute()  # the runs' --out, also where a Ray task's working directory differs
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "sweep.jsonl"
    with lock(out):
        wait_for_leftovers(out)
        try:
            past = records.read(journal, required=("event",), what="sweep record")
        except records.JournalError as exc:
            raise SweepError(str(exc)) from None
        print(f"config: {cfg}", file=sys.stderr)
        records.append(journal, {"event": "sweep", "time": time.time(), "config": dataclasses.asdict(cfg),
                                 "spec": spec.raw, "runs": len(spec.cells), "versions": records.versions("torch")})
        todo, done, counts = triage(spec.cells, out, journal, past)
        ran, failed = execute(cfg, spec, todo, len(done), counts, out, journal)
        compared = {}
        for ev in spec.evaluators:  # only evaluators whose runs all finished: a partial compare misleads
            cells = [c for c in spec.cells if c.ev == ev]
            if not any(c.name in failed for c in cells):
                compared[ev] = compare_runs(out, ev, cells, journal)
    if failed:
        first = next(iter(failed))
        raise SweepError(f"{len(failed)} of {len(spec.cells)} runs failed (first: {first}: {failed[first]}); "
                         f"logs in {out / 'logs'}; run the sweep again to retry them")
    return {"runs": len(spec.cells), "ran": ran, "done": len(spec.cells) - len(failed), "compare": compared}


def wait_for_leftovers(out: Path, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while (pids := leftover_runs(out)) and time.time() < deadline:
        time.sleep(0.5)
    if pids:
        raise SweepError(f"runs of an earlier sweep still write into {out / 'runs'} (pids "
                         f"{', '.join(map(str, pids[:5]))}): stop them, then run the sweep again")


def execute(cfg: SweepConfig, spec: Spec, todo: list, done: int, counts: dict, out: Path,
            journal: Path) -> tuple[list[str], dict]:
    """Serve the gguf models, run the cells of todo (cell, mode, iterations stored) `parallel` at a time
    with one progress bar, journal each start and end; stop servers and runs on any exit.
    Returns (runs that ran, {failed run: its log's last line})."""
    from tqdm import tqdm

    parser, logs = run_parser(), out / "logs"
    logs.mkdir(exist_ok=True)
    servers, executor = LlamaServers(logs, cfg.server_timeout_s), None
    bar = tqdm(total=sum(c.iterations for c in spec.cells), initial=sum(counts.values()), desc="sweep",
               unit="it", disable=not cfg.progress, mininterval=1.0, dynamic_ncols=True)
    ran, failed, pending, running = [], {}, list(todo), {}

    def postfix():
        bar.set_postfix_str(f"runs {done}/{len(spec.cells)}" + (f", failed {len(failed)}" if failed else ""))

    try:
        urls = {name: servers.start(name, s) for name, s in spec.servers.items()
                if any(c.config == name for c, _, _ in todo)}
        executor = LocalExecutor(cfg.parallel) if cfg.executor == "local" else RayExecutor(cfg.parallel, cfg.address)
        env = child_env(max(1, (os.cpu_count() or 1) // executor.parallel) if cfg.executor == "local" else 1)
        postfix()
        while pending or running:
            while pending and len(running) < executor.parallel:
                cell, mode, n = pending.pop(0)
                served = {"llm_url": urls[cell.config]} if cell.config in urls else None
                argv = ["run", *cell.argv(parser, out, served), *(["--resume"] if mode == "resume" else [])]
                pid = executor.submit(cell.name, argv, str(logs / f"{cell.name}.log"), env)
                records.append(journal, {"event": "start", "run": cell.name, "mode": mode, "iterations": n,
                                         "argv": argv, "pid": pid, "time": time.time()})
                running[cell.name] = (cell, time.time())
            time.sleep(0.5)
            finished = executor.poll()
            for name, (cell, _) in running.items():  # progress: iterations stored so far
                now = stored_iterations(out / "runs" / name)
                if now is not None and min(now, cell.iterations) > counts[name]:
                    bar.update(min(now, cell.iterations) - counts[name])
                    counts[name] = min(now, cell.iterations)
            for name, rc in finished:
                cell, t0 = running.pop(name)
                n = stored_iterations(out / "runs" / name) or 0
                records.append(journal, {"event": "end", "run": name, "rc": rc, "iterations": n,
                                         "flags": dict(cell.flags), "seconds": time.time() - t0, "time": time.time()})
                ran.append(name)
                if rc == 0:
                    done += 1
                    bar.write(f"done {name}: {n} iterations in {time.time() - t0:.0f} s")
                else:
                    failed[name] = _last_line(logs / f"{name}.log")
                    bar.write(f"failed {name} (exit {rc}): {failed[name]}")
                postfix()
    finally:
        bar.close()
        if executor is not None:
            executor.close()
        servers.close()
    return ran, failed


def compare_runs(out: Path, ev: str, cells: list[Cell], journal: Path) -> str:
    from search.compare import compare

    dest = out / f"compare-{ev}"
    compare([str(out / "runs" / c.name) for c in cells], str(dest))
    records.append(journal, {"event": "compare", "evaluator": ev, "out": str(dest), "time": time.time()})
    return str(dest)
