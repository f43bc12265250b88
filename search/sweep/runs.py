"""Run folders and the processes of a sweep's runs: a run's state from its store, the environment
and process group a run starts in, and how a run notices that its sweep is gone."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]  # the checkout the runs import `search` from


# ---------------------------------------------------------------- run folders

def run_state(folder: Path) -> tuple[str, int]:
    """(state, iterations stored): missing (no store), invalid (not a readable run store), unstarted
    (never got past its start: `search run` replaces it), started."""
    from search.store import RunStore, StoreError

    if not (folder / "run.sqlite").exists():
        return "missing", 0
    try:
        store = RunStore(folder, create=False)  # read-write: a kill -9's hot journal is rolled back
    except StoreError:
        return "invalid", 0
    try:
        n = store.db.execute("SELECT COUNT(*) FROM iterations").fetchone()[0]
        if not store.started():
            return "unstarted", 0
        return ("started", n) if store.meta("config") is not None else ("invalid", 0)
    except sqlite3.DatabaseError:
        return "invalid", 0
    finally:
        store.close()


def stored_iterations(folder: Path) -> int | None:
    """Iterations in a run's store, read-only (while its run writes it); None when unreadable now."""
    path = folder / "run.sqlite"
    try:
        if path.stat().st_size == 0:
            return None
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT COUNT(*) FROM iterations").fetchone()[0]
    except (OSError, sqlite3.Error):
        return None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the sweep dies (kill -9 included), so no run outlives it."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def child_env(threads: int | None = None) -> dict:
    """The runs' environment. threads: each run's training/measuring threads (`NASFORGE_THREADS`, read by
    `corpus.evaluator`), the cores shared out among the parallel runs, so that N runs on C cores do not
    start N x C threads and thrash (a value the user exported wins)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads and "NASFORGE_THREADS" not in os.environ:
        env["NASFORGE_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def start_run(argv: list[str], log: str, env: dict, cwd: str | None = None):
    """`python -m search ARGV` with its output appended to log (after a header line): (process, log file)."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    f = open(log, "ab")
    f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} python -m search {' '.join(argv)}\n".encode())
    f.flush()
    return subprocess.Popen([sys.executable, "-m", "search", *argv], stdout=f, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, cwd=cwd, preexec_fn=_die_with_parent), f


def process_identity(pid: int) -> tuple[str, int, str] | None:
    """(host, pid, start time in clock ticks): names one process for as long as the host runs, pid
    reuse included; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return socket.gethostname(), pid, stat.rsplit(")", 1)[1].split()[19]


def driver_gone(driver: tuple[str, int, str] | None) -> bool:
    """True when the sweep that started a Ray task is known dead: only on the sweep's own host (a local
    Ray instance); on a cluster's other nodes Ray ends the job's tasks when its driver is lost."""
    return driver is not None and driver[0] == socket.gethostname() and process_identity(driver[1]) != driver


def run_task(argv: list[str], log: str, env: dict, cwd: str, driver: tuple[str, int, str] | None = None) -> int:
    """A Ray task: one run on the task's node, from the task's thread (its death kills the run), in the
    driver's working directory (relative paths in flags mean the same there: a shared file system).
    Ray notices a killed driver only seconds later and its worker (and with it the run) lives on till
    then; so on the driver's host the task watches the driver itself and kills the run at once, before a
    resumed sweep can start a second writer of the same store."""
    p, f = start_run(argv, log, env, cwd)
    with f:
        while True:
            try:
                return p.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if driver_gone(driver):
                    p.kill()
                    return p.wait()
