"""Run untrusted model code in a fresh, contained process per request, with time and memory limits.

    pool = WorkerPool(workers=2, timeout_s=60, memory_mb=6144)
    results = pool.map("mutator.analysis:validate", payloads)   # one JSON-able result per payload
    print(pool.containment)                                     # what this machine could contain
    pool.close()

Every model file this project touches (a seed, a generated variant, an LLM's answer) is untrusted.
It only ever runs inside `mutator.worker`, a fork server: each pool slot is one worker process that
imported torch once and forks a fresh child per request (see its docstring for what the child does
before running model code: closed descriptors, limits, no capabilities, Landlock). Each request has
its own result pipe and id, so one candidate can never change another's result; a request that
times out, crashes or floods gets a result with that status and the run goes on.

What is contained, by mode (`pool.containment` says which one this machine got; README "Sandbox"):

- "bubblewrap": a minimal read-only view (interpreter, libraries, the project's packages, the data
  cache's training files: the test labels live beside it in `cache/labels` and stay out, as do Debian's
  raw data sets under HIDDEN; no $HOME, /root, /etc/shadow), private /tmp, writes to scratch only, no network, own PID
  namespace, uid 65534 in a user namespace with no capabilities and no nested user namespaces.
- "unshare+landlock" (no bubblewrap): user, PID, network, IPC and mount namespaces from `unshare`;
  Landlock limits reads to the same paths and writes to scratch (a tmpfs; HIDDEN stays readable: it
  is under /usr); capabilities dropped; the
  seccomp filter keeps it from the host's Unix sockets by path (its mount view still has them).
- "landlock" (no namespaces): Landlock for files, TCP (ABI >= 4) and signals (ABI >= 6), the seccomp
  filter for every other socket (UDP, MPTCP, Unix by path); other processes are visible (NOT
  contained: every process's command line is readable; only a mount namespace could hide them) but
  cannot be signalled or traced.
- "none": time, memory, the seccomp filter, fresh process per candidate, process-tree kill; nothing
  else. A pool refuses this where `REQUIRE_CONTAINMENT` is set (`search run` unless `--unsafe-no-sandbox`).
In every mode: a fresh fork per request with its own id-checked pipe, a whitelisted environment, the
seccomp filter (`mutator.seccomp`: no SysV IPC, message queues, keyrings, memfd or io_uring, so no
state outlives a candidate or reaches the next), the tree's memory (PSS, memfd files, scratch tmpfs),
scratch (`scratch_mb`), process-and-thread and time limits, every descendant killed and the scratch
folder emptied (permissions restored) after the request, the worker exits when the parent does (its
control pipe closes), stale scratch folders of dead parents are removed. `containment["gaps"]` says in
a sentence each what a mode does not contain (the fallback's warning repeats it).

Never contained: a candidate lying about its own result (the measuring code runs in its process),
CPU time stolen from other processes while it runs (bounded by the time limit), memory spikes
shorter than 0.2 s across several processes (each process is still bounded by RLIMIT_AS, except on a
GPU, where the watchdog alone bounds host memory), processes started and ended within one 0.2 s round,
and GPU memory beyond torch's per-process cap (a hostile candidate can lift its own cap).

`NASFORGE_NO_NAMESPACES=1` skips bubblewrap and `unshare` (for a machine where they are installed but
broken): Landlock alone then contains files, TCP and signals, not processes (third column, with Landlock);
`NASFORGE_NO_LANDLOCK=1` skips Landlock, `NASFORGE_NO_SECCOMP=1` the seccomp filter. Where nothing at all
can be contained, a pool refuses to start where `REQUIRE_CONTAINMENT` is set (`search run` sets it unless
`--unsafe-no-sandbox`); elsewhere it warns.
A pool runs only registered handlers (`mutator.handlers`: the package that owns a handler registers it
with its result check and the modules to warm; the pool passes the names and modules to each worker at
start); `call` raises SandboxError for any other, so no result skips its check.
Every result is checked before `call` returns it (`mutator.handlers.check_result`): one JSON object,
valid UTF-8, a short status, one line of error text cut to `results.MAX_ERROR` characters (it goes into LLM
prompts), and the handler's registered check (an evaluation row's schema, a repair's fields); anything
else is that candidate's failed result (`invalid_result`), never an exception in the parent.
`NASFORGE_SANDBOX_READ=/a:/b` adds read-only paths a candidate may need (data outside the cache).
Requests and results cross pipes as JSON, never pickle: a hostile child could craft a pickle.
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
import time
import warnings
from multiprocessing.connection import Connection
from pathlib import Path

from mutator.handlers import check_result, lookup, start_config
from mutator.results import FrameError, decode_frame
from mutator.worker import READY

MAX_MESSAGE = 64 << 20  # a worker's answer larger than this is treated as a crash
STARTUP_S = 300  # a worker that has not imported torch by then is broken, not slow
GRACE_S = 30  # the worker enforces the time limit; the parent waits this much longer before killing it
SCRATCH_MB = 2048  # a candidate's scratch folder: a tmpfs of this size (its use counts as memory) or, on the host
# disk (Landlock alone), this many MB counted by the worker's watchdog
ENV_KEEP = ("PATH", "LANG", "LANGUAGE", "TZ", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
            "CUDA_HOME", "NVIDIA_VISIBLE_DEVICES", "NASFORGE_CACHE", "PYTORCH_CUDA_ALLOC_CONF")
_LAUNCH: dict[str, object] = {}  # how workers start on this machine, decided once per process
# Set by `search run` (LLM-written code) unless --unsafe-no-sandbox: then a pool that could contain
# nothing (no bubblewrap, namespaces or Landlock) refuses to start instead of warning.
REQUIRE_CONTAINMENT = False
HIDDEN = ("/usr/share/datasets",)  # empty under bubblewrap; readable where Landlock alone contains (it allows /usr)


def _root() -> Path:
    return Path(__file__).resolve().parents[1]


def read_paths() -> list[str]:
    """What a candidate may read: the interpreter and its libraries, the project's packages, the data
    cache, system libraries. Never $HOME, /root, /etc as a whole, the working directory or run folders."""
    home, cwd = os.path.realpath(Path.home()), os.path.realpath(os.getcwd())
    # never a temporary folder as a whole (other programs' files; bubblewrap's private /tmp goes there)
    temps = {"/tmp", "/var/tmp", "/dev/shm", os.path.realpath(tempfile.gettempdir())}
    paths = {"/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/proc", "/sys/devices/system/cpu",
             "/dev/urandom", "/dev/random", "/dev/zero", "/etc/ld.so.cache", "/etc/ld.so.conf",
             "/etc/ld.so.conf.d", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf"}
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.realpath(sys.executable))):
        paths.add(os.path.realpath(p))
    root = os.path.realpath(_root())
    for p in sys.path:
        rp = os.path.realpath(p or ".")
        if os.path.isdir(rp) and rp not in ("/", home, cwd, root, *temps) and not home.startswith(rp + "/") \
                and not any(t.startswith(rp + "/") for t in temps):
            paths.add(rp)
    # the project's packages (this one's siblings), never the checkout as a whole (runs, caches, notes)
    paths.update(str(p) for p in Path(root).iterdir() if (p / "__init__.py").is_file())
    cache = os.environ.get("NASFORGE_CACHE") or os.path.join(home, ".cache", "nasforge")
    # the prepared data sets only: their test labels live in the cache's `labels/` (corpus.data.prepare)
    os.makedirs(os.path.join(cache, "data"), exist_ok=True)
    paths.add(os.path.realpath(os.path.join(cache, "data")))
    paths.update(p for p in os.environ.get("NASFORGE_SANDBOX_READ", "").split(os.pathsep) if p)
    existing = sorted(p for p in paths if os.path.lexists(p))
    return [p for p in existing if not any(p.startswith(q + "/") for q in existing if q != p)]


def _bwrap_args(read: list[str], gpu: bool, disable_userns: bool = False, scratch_mb: int = SCRATCH_MB) -> list[str]:
    args = ["--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
            *(["--disable-userns"] if disable_userns else []), "--new-session", "--proc", "/proc",
            *(["--dev-bind", "/dev", "/dev", "--ro-bind", "/sys", "/sys"] if gpu else ["--dev", "/dev"]),
            "--size", str(scratch_mb << 20), "--tmpfs", "/tmp"]
    for p in read:
        if p in ("/proc", "/dev/urandom", "/dev/random", "/dev/zero") or (gpu and p.startswith("/sys")):
            continue
        if os.path.islink(p) and os.path.dirname(p) == "/":
            args += ["--symlink", os.readlink(p), p]  # /lib -> usr/lib on merged-/usr systems
        else:
            args += ["--ro-bind", p, p]
    # raw data sets under /usr (Debian's, test labels included): a candidate reads the prepared cache only
    args += [x for d in HIDDEN if os.path.isdir(d) for x in ("--tmpfs", d)]
    return [*args, "--chdir", "/tmp"]


def _bwrap_can_disable_userns(exe: str) -> bool:
    try:
        return "--disable-userns" in subprocess.run([exe, "--help"], capture_output=True, text=True,
                                                    timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False


def _unshare_works(exe: str) -> bool:
    try:
        return subprocess.run([exe, *_UNSHARE, "true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


_UNSHARE = ["--user", "--map-root-user", "--pid", "--net", "--ipc", "--uts", "--mount", "--fork", "--kill-child",
            "--mount-proc"]


def _clean_stale_scratch() -> None:
    """Remove scratch folders of pools whose process is gone (a search killed with -9)."""
    for d in Path(tempfile.gettempdir()).glob("nasforge-worker-*"):
        try:
            pid = int(d.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass


def namespaces_available() -> bool:
    """True when bubblewrap is installed, not switched off, and (once checked) starts the real worker."""
    if os.environ.get("NASFORGE_NO_NAMESPACES") == "1" or not shutil.which("bwrap"):
        return False
    return _LAUNCH.get("bwrap_failed") is None


class SandboxError(RuntimeError):
    pass


def _registered(handler: str) -> None:
    """Refuse a handler that no package registered: its result would have no check, no worker would run it."""
    if lookup(handler) is None:
        raise SandboxError(f"sandbox handler {handler!r} is not registered: import the module of its package that "
                           "registers it (mutator.handlers.register_handler) before calling it")


class _Worker:
    """One fork-server process, started under the launcher this machine supports."""

    def __init__(self, memory_mb: int, mode: str, threads: int, gpu: bool, gpu_memory_fraction: float = 0.0,
                 scratch_mb: int = SCRATCH_MB, max_tasks: int = 0):
        self.mode, self.seq = mode, 0
        read = read_paths()
        host_scratch = None
        if mode == "bwrap":
            scratch = "/tmp/nasforge"
            exe = shutil.which("bwrap")
            if "disable_userns" not in _LAUNCH:
                _LAUNCH["disable_userns"] = _bwrap_can_disable_userns(exe)
            prefix = [exe, *_bwrap_args(read, gpu, disable_userns=_LAUNCH["disable_userns"], scratch_mb=scratch_mb)]
        else:
            host_scratch = tempfile.mkdtemp(prefix=f"nasforge-worker-{os.getpid()}-")
            scratch = host_scratch
            prefix = [shutil.which("unshare"), *_UNSHARE] if mode == "unshare" else []
        self.host_scratch = host_scratch
        handlers = start_config()  # the registered handlers, the only ones this worker will run
        self.handlers = frozenset(handlers["handlers"])
        settings = {**handlers, "memory_mb": memory_mb, "threads": threads, "read": read, "scratch": scratch,
                    "scratch_mb": scratch_mb, "max_tasks": max_tasks, "gpu": gpu,
                    "gpu_memory_fraction": gpu_memory_fraction,
                    "userns": mode in ("bwrap", "unshare"), "tmpfs_scratch": mode == "unshare",
                    "landlock": os.environ.get("NASFORGE_NO_LANDLOCK") != "1",
                    "seccomp": os.environ.get("NASFORGE_NO_SECCOMP") != "1"}
        env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith("LC_")}
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONDONTWRITEBYTECODE="1",
                   NASFORGE_SANDBOX=json.dumps(settings), HOME=scratch, TMPDIR=scratch,
                   PYTHONPATH=os.pathsep.join([str(_root()), *filter(None, [os.environ.get("PYTHONPATH")])]))
        ctrl_r, ctrl_w = os.pipe()
        res_r, res_w = os.pipe()
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "mutator.worker", str(ctrl_r), str(res_w)],
            pass_fds=(ctrl_r, res_w), stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            start_new_session=True, cwd=host_scratch or "/", env=env,
        )
        os.close(ctrl_r)
        os.close(res_w)
        self.send = Connection(ctrl_w, readable=False)
        self.recv = Connection(res_r, writable=False)
        self.report: dict | None = None

    def start(self) -> dict:
        """Wait for the ready report: importing torch can take long on a busy machine, and that must
        not count against a candidate's time limit. Raises SandboxError saying why it did not start."""
        try:
            if self.recv.poll(STARTUP_S):
                msg = self.recv.recv_bytes(MAX_MESSAGE)
                if msg.startswith(READY):
                    self.report = json.loads(msg)
                    return self.report
        except (EOFError, OSError, ValueError):
            pass
        deadline = time.monotonic() + 5
        while not self.exited() and time.monotonic() < deadline:  # not reaped: `kill` below stays safe
            time.sleep(0.05)
        self.log.seek(0)
        lines = [ln.strip() for ln in self.log.read().decode(errors="replace").splitlines() if ln.strip()]
        self.kill()
        raise SandboxError(lines[-1] if lines else f"the worker did not start within {STARTUP_S} s")

    def call(self, handler: str, payload, timeout_s: float) -> dict:
        self.seq += 1
        try:
            if self.report is None:
                self.start()
            self.send.send_bytes(json.dumps({"id": self.seq, "handler": handler, "payload": payload,
                                             "timeout_s": timeout_s}).encode())
            if not self.recv.poll(timeout_s + GRACE_S):
                self.kill()
                return {"status": "timeout", "error": f"no answer within {timeout_s:.0f} s"}
            try:
                msg = decode_frame(self.recv.recv_bytes(MAX_MESSAGE))
            except FrameError:
                msg = None
            if msg is None or msg.get("id") != self.seq or not isinstance(msg.get("result"), dict):
                self.kill()
                return {"status": "crash", "error": "sandbox protocol error (answer without the request's id)"}
            return check_result(handler, msg["result"])
        except (EOFError, OSError, ValueError, SandboxError) as exc:
            self.kill()
            return {"status": "crash", "error": f"sandbox worker died ({type(exc).__name__})"}

    def exited(self) -> bool:
        """Whether the worker's process has ended, without reaping it (WNOWAIT): until `kill` reaps it, its pid
        -- its group's id -- cannot be given to another process, so the group kill reaches only this worker's."""
        if self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def alive(self) -> bool:
        return not self.exited()

    def kill(self) -> None:
        if self.proc.returncode is None:  # once reaped, the number may be another process's (pids wrap around)
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
        self.log.close()
        if self.host_scratch:
            shutil.rmtree(self.host_scratch, ignore_errors=True)


# what a candidate can do where a column of `_describe` is False
GAPS = {
    "files": "read every file its user can read and write outside its scratch folder",
    "network": "reach listeners on the host (UDP, Unix sockets by path, MPTCP; TCP too without Landlock ABI >= 4)",
    "signals": "signal other processes of its user",
    "processes": "see every process of the machine (command lines, /proc/PID/status) and count against the user's "
                 "process limit",
    "shared_state": "keep SysV shared memory, message queues, keys or memfd memory beyond its request (shared "
                    "memory can outlive the pool and reach the next candidate) and hold memory files",
}


def _describe(mode: str, report: dict) -> dict:
    """What this launcher contains here, for the docs table's columns."""
    ll = int(report.get("landlock") or 0)
    sc = bool(report.get("seccomp"))
    ns = mode in ("bwrap", "unshare")
    contained = {
        "files": mode == "bwrap" or ll >= 1,
        # bubblewrap's network namespace and mount view hide the host's listeners; unshare's view still has
        # the host's Unix sockets and Landlock alone covers TCP only: the seccomp filter does the rest
        "network": mode == "bwrap" or (sc and (mode == "unshare" or ll >= 4)),
        "signals": ns or ll >= 6,
        "processes": ns,
        "shared_state": sc,
    }
    not_contained = [k for k, v in contained.items() if not v]
    return {"mode": {"bwrap": "bubblewrap", "unshare": "unshare+landlock", "plain": "landlock" if ll else "none"}[mode],
            "landlock_abi": ll, "seccomp": sc, "contained": contained, "not_contained": not_contained,
            "gaps": [f"{k}: a candidate can {GAPS[k]}" for k in not_contained]}


class WorkerPool:
    """A fixed number of sandboxed fork servers; `map` spreads requests over them, in order.

    isolate: "auto" (bubblewrap where it starts the worker, else the fallback, with one warning line),
    "namespaces" (bubblewrap or an error), "none" (the fallback without bubblewrap)."""

    def __init__(self, workers: int = 1, timeout_s: float = 120.0, memory_mb: int = 6144,
                 isolate: str = "auto", threads_per_worker: int = 1, gpu: bool = False,
                 gpu_memory_fraction: float | None = None, scratch_mb: int = SCRATCH_MB, max_tasks: int = 0):
        """memory_mb: host memory of a candidate's process tree (PSS, memory files, scratch space in memory);
        0: no limit. Without a GPU each process is also bounded by RLIMIT_AS; with one (gpu=True) only the
        watchdog bounds it (CUDA reserves far more address space than it uses).
        gpu_memory_fraction: each candidate's share of every GPU for torch's allocator (default 0.9 divided
        among the workers); a hostile candidate can lift it in its own process.
        scratch_mb: what a candidate may write to its scratch folder (also bounds each file it writes).
        max_tasks: processes and threads of one candidate together (0: 256 and 4 per thread it is given)."""
        if isolate not in ("auto", "namespaces", "none"):
            raise ValueError(f"isolate must be auto, namespaces or none, not {isolate!r}")
        _clean_stale_scratch()
        self.timeout_s = timeout_s
        if gpu_memory_fraction is None:
            gpu_memory_fraction = 0.9 / max(1, workers) if gpu else 0.0
        self._spec = [memory_mb, None, threads_per_worker, gpu, gpu_memory_fraction, scratch_mb, max_tasks]
        first = self._first_worker(isolate)
        self._spec[1] = first.mode
        self.containment = _describe(first.mode, first.report or {})
        self.isolated = first.mode == "bwrap"
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = [first]
        self._idle.put(first)
        for _ in range(max(1, workers) - 1):
            self._add()
        self.size = len(self._all)

    def _first_worker(self, isolate: str) -> _Worker:
        """Start one worker with the strongest launcher that works, checked with the real worker (a
        venv or checkout that the sandbox cannot see fails here, with bubblewrap's reason)."""
        modes = []
        if isolate != "none" and namespaces_available():
            modes.append("bwrap")
        elif isolate == "namespaces":
            raise SandboxError("bubblewrap is not available (install it: apt-get install bubblewrap)"
                               if os.environ.get("NASFORGE_NO_NAMESPACES") != "1" else
                               "NASFORGE_NO_NAMESPACES=1 switches bubblewrap off")
        if isolate != "namespaces" and os.environ.get("NASFORGE_NO_NAMESPACES") != "1":
            if "unshare_ok" not in _LAUNCH:
                exe = shutil.which("unshare")
                _LAUNCH["unshare_ok"] = bool(exe) and _unshare_works(exe)
            modes += ["unshare"] if _LAUNCH["unshare_ok"] else []
        if isolate != "namespaces":
            modes.append("plain")
        why = None
        for mode in modes:
            w = _Worker(self._spec[0], mode, *self._spec[2:])
            try:
                w.start()
            except SandboxError as exc:
                if mode == "bwrap":
                    _LAUNCH["bwrap_failed"] = why = str(exc)
                    if isolate == "namespaces":
                        raise SandboxError(f"bubblewrap cannot start the worker: {exc} "
                                           "(set NASFORGE_NO_NAMESPACES=1 to use the fallback)") from None
                    continue
                if mode == "unshare":
                    _LAUNCH["unshare_ok"] = False
                    continue
                raise
            if mode == "plain" and not (w.report or {}).get("landlock") and REQUIRE_CONTAINMENT:
                w.kill()
                raise SandboxError("no isolation is available here (no bubblewrap, no user namespaces, no "
                                   "Landlock): LLM-written code would run with time and memory limits only; "
                                   "install bubblewrap, or pass --unsafe-no-sandbox to accept that")
            if mode != "bwrap" and isolate == "auto" and not _LAUNCH.get("warned"):
                _LAUNCH["warned"] = True
                d = _describe(mode, w.report or {})
                reason = f"bubblewrap failed: {why}" if why else "bubblewrap unavailable"
                missing = ", ".join(d["not_contained"]) or "nothing"
                gaps = "".join(f"; {g}" for g in d["gaps"])
                warnings.warn(f"sandbox: {reason}; fallback '{d['mode']}' does not contain: {missing}{gaps}",
                              RuntimeWarning, stacklevel=3)
            return w
        raise SandboxError("no way to start a sandbox worker here")

    def _add(self) -> None:
        w = _Worker(*self._spec)
        self._all.append(w)
        self._idle.put(w)

    def call(self, handler: str, payload, timeout_s: float | None = None) -> dict:
        """`handler`'s result for `payload`, checked (`mutator.handlers.check_result`); a candidate's failure
        is a result with its status. SandboxError for a handler that no package registered."""
        _registered(handler)
        w = self._idle.get()
        try:
            # registered after this worker started: a fresh one is told of it; a worker that died while idle
            # (killed from outside) is replaced before it can make this candidate a crash
            if handler not in w.handlers or not w.alive():
                w = self._replace(w)
            out = w.call(handler, payload, timeout_s or self.timeout_s)
        finally:
            if not w.alive():
                w = self._replace(w)
            self._idle.put(w)
        return out

    def _replace(self, w: _Worker) -> _Worker:
        if w in self._all:
            self._all.remove(w)
        w.kill()
        new = _Worker(*self._spec)
        self._all.append(new)
        return new

    def imap(self, handler: str, payloads, timeout_s: float | None = None):
        """Yield (index, result) as results arrive, all workers busy at once."""
        _registered(handler)  # here, not in the threads: they would die with it and leave us waiting
        yield from imap_threads(self.size, list(payloads), lambda p: self.call(handler, p, timeout_s))

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


class LazyPool:
    """A one-worker sandbox pool started on its first call (a run whose candidates never need the
    mutator starts no worker)."""

    def __init__(self, timeout_s: float = 300.0):
        self.timeout_s, self.pool = timeout_s, None

    def call(self, *args, **kw):
        if self.pool is None:
            self.pool = WorkerPool(1, timeout_s=self.timeout_s)
        return self.pool.call(*args, **kw)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def imap_threads(threads: int, items: list, fn):
    """Yield (index, fn(item)) as each finishes, `threads` at a time (daemon threads; `WorkerPool.call` is
    safe to share between them: `WorkerPool.imap`, and `corpus build`'s K runs per network). An exception
    in fn stops that thread and is raised here."""
    done: queue.Queue = queue.Queue()
    todo: queue.Queue = queue.Queue()
    for i, item in enumerate(items):
        todo.put((i, item))

    def run():
        while True:
            try:
                i, item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((i, fn(item), None))
            except BaseException as exc:  # noqa: BLE001  (raised in the caller's thread)
                done.put((i, None, exc))
                return

    workers = [threading.Thread(target=run, daemon=True) for _ in range(max(1, min(threads, len(items))))]
    for t in workers:
        t.start()
    for _ in items:
        i, res, exc = done.get()
        if exc is not None:
            raise exc
        yield i, res
    for t in workers:
        t.join()
