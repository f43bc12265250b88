"""Run untrusted model code in long-lived child processes with time and memory limits.

    pool = WorkerPool(workers=2, timeout_s=60, memory_mb=6144)
    results = pool.map("mutator.probe:analyze", payloads)   # one JSON-able result per payload
    pool.close()

Every model file this project touches (a seed, a generated variant, an LLM's answer) is untrusted.
It only ever runs inside a worker: `python -m mutator.worker`, started in its own session, with
RLIMIT_AS (memory), RLIMIT_CORE=0, its stdout/stderr sent to /dev/null (output floods cost nothing),
and, where Linux namespaces are allowed (Debian's `bubblewrap`), inside `bwrap` with no network, a
read-only root, a private /tmp and writes allowed only to its scratch folder. Workers are reused so
torch is imported once; a request that times out, or a worker that dies (segfault, `os._exit`, OOM
kill), gets a result with the matching status and the worker is replaced.

Requests and results cross the pipe as JSON, never pickle: a hostile child could craft a pickle.

Not covered: CPU time stolen from other processes while a request runs (the time limit bounds it),
and, without namespaces, network access and writes to the file system (the fallback says so once).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from multiprocessing.connection import Connection
from pathlib import Path

from mutator.worker import READY

MAX_MESSAGE = 64 << 20  # a worker's answer larger than this is treated as a crash
STARTUP_S = 300  # a worker that has not imported torch by then is broken, not slow
_BWRAP_CHECKED: dict[str, bool] = {}


def namespaces_available() -> bool:
    """True when bubblewrap can start a process with no network and a read-only root here."""
    if "ok" not in _BWRAP_CHECKED:
        exe = shutil.which("bwrap")
        ok = False
        if exe and os.environ.get("NASFORGE_NO_NAMESPACES") != "1":
            try:
                ok = subprocess.run(
                    [exe, *_bwrap_args(tempfile.gettempdir()), "true"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20,
                ).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
        _BWRAP_CHECKED["ok"] = ok
    return _BWRAP_CHECKED["ok"]


def _bwrap_args(scratch: str, gpu: bool = False) -> list[str]:
    # a GPU needs the host's device nodes (/dev/nvidia*); otherwise a minimal /dev
    dev = ["--dev-bind", "/dev", "/dev"] if gpu else ["--dev", "/dev"]
    return [
        "--unshare-all", "--die-with-parent", "--new-session",
        "--ro-bind", "/", "/", *dev, "--proc", "/proc", "--tmpfs", "/tmp",
        "--bind", scratch, scratch, "--chdir", scratch,
    ]


class _Worker:
    def __init__(self, memory_mb: int, isolate: bool, threads: int, gpu: bool = False):
        self.scratch = tempfile.mkdtemp(prefix="nasforge-worker-")
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        cmd = [sys.executable, "-m", "mutator.worker", str(req_r), str(res_w)]
        if isolate:
            cmd = [shutil.which("bwrap"), *_bwrap_args(self.scratch, gpu), *cmd]
        env = dict(os.environ)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   NASFORGE_SCRATCH=self.scratch, NASFORGE_MEMORY_MB=str(memory_mb),
                   PYTHONDONTWRITEBYTECODE="1", NASFORGE_PIDNS="1" if isolate else "0")
        # The worker must import this package even when it is not installed (tests, a checkout).
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            cmd, pass_fds=(req_r, res_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, cwd=self.scratch, env=env,
        )
        os.close(req_r)
        os.close(res_w)
        self.send = Connection(req_w, readable=False)
        self.recv = Connection(res_r, writable=False)
        self.started = False

    def _wait_ready(self) -> None:
        """Wait for the worker's ready message: importing torch can take long on a busy machine, and
        that must not count against a candidate's time limit."""
        if not self.recv.poll(STARTUP_S):
            raise OSError(f"worker did not start within {STARTUP_S} s")
        if self.recv.recv_bytes(MAX_MESSAGE) != READY:
            raise OSError("worker sent something else than its ready message")
        self.started = True

    def call(self, handler: str, payload, timeout_s: float) -> dict:
        try:
            if not self.started:
                self._wait_ready()
            self.send.send_bytes(json.dumps({"handler": handler, "payload": payload}).encode())
            if not self.recv.poll(timeout_s):
                self.kill()
                return {"status": "timeout", "error": f"no answer within {timeout_s:.0f} s"}
            return json.loads(self.recv.recv_bytes(MAX_MESSAGE))
        except (EOFError, OSError, ValueError) as exc:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            self.kill()
            sig = -code if code is not None and code < 0 else (code - 128 if code and code > 128 else 0)
            if sig in signal.Signals._value2member_map_:
                return {"status": "crash", "error": f"worker killed by {signal.Signals(sig).name}"}
            return {"status": "crash", "error": f"worker died ({type(exc).__name__}, exit {code})"}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for conn in (self.send, self.recv):
            try:
                conn.close()
            except OSError:
                pass
        shutil.rmtree(self.scratch, ignore_errors=True)


class WorkerPool:
    """A fixed number of sandboxed workers; `map` spreads requests over them, in order."""

    def __init__(self, workers: int = 1, timeout_s: float = 120.0, memory_mb: int = 6144,
                 isolate: str = "auto", threads_per_worker: int = 1, gpu: bool = False):
        """memory_mb=0: no address-space limit (CUDA reserves far more address space than it uses,
        so GPU workers rely on the GPU's own out-of-memory errors)."""
        if isolate not in ("auto", "namespaces", "none"):
            raise ValueError(f"isolate must be auto, namespaces or none, not {isolate!r}")
        use_ns = isolate != "none" and namespaces_available()
        if isolate == "namespaces" and not use_ns:
            raise RuntimeError("Linux namespaces are not available (install bubblewrap)")
        if isolate == "auto" and not use_ns:
            warnings.warn("namespaces unavailable: untrusted code runs with process limits only "
                          "(no network or file-system isolation)", RuntimeWarning, stacklevel=2)
        self.isolated = use_ns
        self.timeout_s = timeout_s
        self._spec = (memory_mb, use_ns, threads_per_worker, gpu)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        for _ in range(max(1, workers)):
            self._add()
        self.size = len(self._all)

    def _add(self) -> None:
        w = _Worker(*self._spec)
        self._all.append(w)
        self._idle.put(w)

    def call(self, handler: str, payload, timeout_s: float | None = None) -> dict:
        w = self._idle.get()
        try:
            out = w.call(handler, payload, timeout_s or self.timeout_s)
        finally:
            if not w.alive():
                self._all.remove(w)
                w.kill()
                w = _Worker(*self._spec)
                self._all.append(w)
            self._idle.put(w)
        return out

    def imap(self, handler: str, payloads, timeout_s: float | None = None):
        """Yield (index, result) as results arrive, all workers busy at once."""
        payloads = list(payloads)
        done: queue.Queue = queue.Queue()
        todo: queue.Queue = queue.Queue()
        for i, p in enumerate(payloads):
            todo.put((i, p))

        def run():
            while True:
                try:
                    i, p = todo.get_nowait()
                except queue.Empty:
                    return
                done.put((i, self.call(handler, p, timeout_s)))

        threads = [threading.Thread(target=run, daemon=True) for _ in range(self.size)]
        for t in threads:
            t.start()
        for _ in payloads:
            yield done.get()
        for t in threads:
            t.join()

    def map(self, handler: str, payloads, timeout_s: float | None = None) -> list[dict]:
        out = [None] * len(payloads)
        for i, r in self.imap(handler, payloads, timeout_s):
            out[i] = r
        return out

    def close(self) -> None:
        for w in self._all:
            w.kill()
        self._all.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
