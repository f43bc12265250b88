"""Sandbox side of `mutator.sandbox`: a fork server, `python -m mutator.worker CTRL_FD RESULT_FD`.

The worker (the "zygote") runs only this project's code: it imports torch once, then for every
request {"id", "handler", "payload", "timeout_s"} forks a fresh child that runs the handler on the
untrusted model code, so no candidate ever sees what an earlier one did to the interpreter (a
patched `torch.Tensor.__eq__` dies with its process). Before the handler runs, the child:

- closes every inherited file descriptor but its own result pipe (it cannot write to the parent's
  channel, nor to another candidate's), points stdin/stdout/stderr at /dev/null, starts a session;
- gets a fresh scratch folder as its working directory, HOME and TMPDIR;
- is limited: RLIMIT_AS (memory per process), RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_CORE=0, a process
  count where it has its own user namespace; PR_SET_PDEATHSIG (dies with the worker);
- drops every capability and sets no_new_privs;
- restricts itself with Landlock where the kernel has it (`mutator.landlock`): reads only beneath
  the interpreter, its libraries, the project and the data cache; writes only to its scratch
  folder; no TCP; no signals to processes outside (ABI >= 6).

The worker is a child subreaper: every process the candidate starts, double-forked daemons
included, stays its descendant, and all of them are killed when the request ends. It sums their
resident memory every 0.2 s: over the budget, all of them are killed and the result is `oom`
(RLIMIT_AS alone is per process, so forks could multiply it).

The child answers on its own pipe with one JSON document {"id": ..., "result": ...}; the worker
accepts exactly that (the right id, one document, nothing else; decoded by
`mutator.results.decode_frame`: duplicate keys, NaN or 1e999, or nesting too deep for the decoder
make it that candidate's `invalid_result`, never the worker's end), and forwards it to the parent on
the control channel with the same id. A candidate can lie about itself (the measuring code runs in
its process), never about another one. Python exceptions, `sys.exit` and `KeyboardInterrupt` from
model code are answered as {"status": "error"}; a child that dies, hangs or floods is `crash`,
`timeout` or `oom`.
"""
import ctypes
import importlib
import json
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import Connection

from mutator.results import FrameError, decode_frame, failure

ALLOWED = ("mutator.", "corpus.", "search.", "finetune.")
READY = b'{"ready": true'  # the ready message starts with this; the rest reports the containment
MAX_RESULT = 64 << 20  # a candidate's answer larger than this is a crash
WARM = ("torch", "torch._dynamo", "mutator.probe", "mutator.analysis", "corpus", "search", "finetune", "corpus.pipeline",
        "corpus.measure", "corpus.train", "corpus.zerocost", "fvcore.nn", "search.precheck")

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS, _PR_SET_CHILD_SUBREAPER = 1, 4, 38, 36
_PR_CAPBSET_DROP = 24


def short_error(exc: BaseException) -> str:
    """One line naming the exception and where in the candidate's code it happened."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith("<candidate"):
            where = f" (line {frame.lineno})"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{where}: {msg}"[:500]


def _settings() -> dict:
    return json.loads(os.environ.get("NASFORGE_SANDBOX", "{}"))


def _descendants(root: int) -> list[int]:
    """Every descendant of `root`, from /proc."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            parent[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _memory_kib(pid: int) -> int:
    """Proportional set size: pages shared with the worker (torch) count once across processes."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def _kill_descendants() -> None:
    """Kill every process below the worker (it is a subreaper: orphans come back to it)."""
    me = os.getpid()
    for _ in range(50):
        pids = _descendants(me)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        while True:  # reap zombies
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not pids:
            return
        time.sleep(0.01)


def _drop_capabilities() -> None:
    for cap in range(64):
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # fails harmlessly without CAP_SETPCAP

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    if _libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset: cannot drop capabilities")


def _enter_candidate(result_fd: int, scratch: str, timeout_s: float, cfg: dict) -> None:
    """Everything between fork and the untrusted code, in the child. Order matters."""
    os.setsid()
    _libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)  # the worker must read our memory use in /proc
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != cfg["_zygote"]:
        os._exit(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, result_fd)
    os.closerange(result_fd + 1, cfg["_max_fd"])
    os.chdir(scratch)
    os.environ.update(HOME=scratch, TMPDIR=scratch)
    tempfile.tempdir = scratch
    mb = int(cfg.get("memory_mb", 0))
    if mb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(timeout_s * max(1, int(cfg.get("threads", 1)) + 1) + 10)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 30, 1 << 30))
    if cfg.get("userns"):
        resource.setrlimit(resource.RLIMIT_NPROC, (512, 512))
    try:
        _drop_capabilities()
    except OSError:
        if cfg.get("require_caps_dropped"):
            raise
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if cfg.get("landlock"):
        from mutator.landlock import restrict

        restrict(read=cfg["read"], write=[scratch, "/dev/null"])


def _run_child(req: dict, result_fd: int, scratch: str, cfg: dict) -> None:
    """The forked child: isolate, run the handler, write one answer, exit. Never returns."""
    try:
        _enter_candidate(result_fd, scratch, float(req["timeout_s"]), cfg)
        handler = req.get("handler", "")
        if not handler.startswith(ALLOWED) or ":" not in handler:
            raise ValueError(f"unknown handler {handler!r}")
        mod, fn = handler.split(":", 1)
        out = getattr(importlib.import_module(mod), fn)(req.get("payload"))
    except MemoryError:
        out = {"status": "oom", "error": "MemoryError: over the worker's memory limit"}
    except BaseException as exc:  # model code may raise SystemExit or KeyboardInterrupt
        out = {"status": "error", "error": short_error(exc)}
    try:  # allow_nan=False: a non-finite number is no measurement (the worker would refuse it anyway)
        data = json.dumps({"id": req["id"], "result": out}, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        data = json.dumps({"id": req["id"], "result": {"status": "error",
                                                       "error": f"unserialisable result: {exc}"}}).encode()
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(result_fd, view):]
    finally:
        os._exit(0)


def _collect(pid: int, fd: int, req: dict, cfg: dict, ctrl_fd: int) -> dict:
    """Read the child's answer with its deadline and the memory budget of its whole process tree."""
    timeout_s = float(req["timeout_s"])
    deadline = time.monotonic() + timeout_s
    budget_kib = int(cfg.get("memory_mb", 0)) << 10
    buf, eof, status, why = bytearray(), False, None, None
    os.set_blocking(fd, False)
    next_check = time.monotonic() + 0.2  # RLIMIT_AS bounds each process meanwhile
    while True:
        now = time.monotonic()
        ready, _, _ = select.select([fd, ctrl_fd], [], [], max(0.0, min(0.2, deadline - now)))
        if ctrl_fd in ready:  # the parent is gone (it sends nothing while a request runs): so are we
            _kill_descendants()
            os._exit(0)
        if fd in ready:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                eof = True
            elif chunk:
                buf += chunk
                if len(buf) > MAX_RESULT:
                    why = ("crash", f"answer larger than {MAX_RESULT >> 20} MB")
                    break
        if status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
        if eof and status is not None:
            break
        if status is not None and not eof:
            _kill_descendants()  # a grandchild holds the pipe open: the candidate is over
        now = time.monotonic()
        if budget_kib and now >= next_check:
            next_check = now + 0.2
            used = sum(_memory_kib(p) for p in _descendants(os.getpid()))
            if used > budget_kib:
                why = ("oom", f"the candidate's processes used {used >> 10} MB together, "
                              f"over the limit of {budget_kib >> 10} MB")
                break
        if now >= deadline and not (eof and status is not None):
            why = ("timeout", f"no answer within {timeout_s:.0f} s")
            break
    _kill_descendants()
    if status is None:
        try:
            status = os.waitpid(pid, 0)[1]
        except ChildProcessError:
            status = 0
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk or len(buf) > MAX_RESULT:
                break
            buf += chunk
    except (BlockingIOError, OSError):
        pass
    os.close(fd)
    if why:
        return {"status": why[0], "error": why[1]}
    if buf:  # the candidate's own frame: it may lie about itself, never break us (mutator.results)
        try:
            msg = decode_frame(bytes(buf))
        except FrameError as exc:
            return {"status": "crash", "error": "malformed answer from the candidate's process"} if exc.malformed \
                else failure(str(exc))
        if msg.get("id") == req["id"] and isinstance(msg.get("result"), dict) and set(msg) == {"id", "result"}:
            return msg["result"]
        return {"status": "crash", "error": "malformed answer from the candidate's process"}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGXCPU:
            return {"status": "timeout", "error": "CPU time limit exceeded (SIGXCPU)"}
        return {"status": "crash", "error": f"worker killed by {name}"}
    return {"status": "crash", "error": f"worker died (exit {os.WEXITSTATUS(status)})"}


def _warm(req: dict) -> None:
    """A handler may name trusted preparation (`fn.warm(payload)`, e.g. loading the data set) that the
    worker runs once before forking, so every candidate inherits it instead of redoing it."""
    handler = req.get("handler", "")
    if not handler.startswith(ALLOWED) or ":" not in handler:
        return
    mod, fn = handler.split(":", 1)
    warm = getattr(getattr(importlib.import_module(mod), fn, None), "warm", None)
    if callable(warm):
        warm(req.get("payload"))


def _serve_one(req: dict, cfg: dict, ctrl_fd: int) -> dict:
    try:
        _warm(req)
    except Exception:  # noqa: BLE001  (the handler meets the same problem in the child and reports it)
        pass
    scratch = os.path.join(cfg["scratch"], f"c{int(req['id'])}")
    shutil.rmtree(scratch, ignore_errors=True)
    os.mkdir(scratch, 0o700)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _run_child(req, w, scratch, cfg)
    os.close(w)
    try:
        return _collect(pid, r, req, cfg, ctrl_fd)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _probe_landlock(cfg: dict) -> int:
    """Landlock ABI usable here: 0 when the kernel lacks it or refuses (tested in a throw-away child)."""
    from mutator.landlock import abi_version, restrict

    abi = abi_version()
    if abi < 1:
        return 0
    pid = os.fork()
    if pid == 0:
        try:
            restrict(read=cfg["read"], write=[cfg["scratch"]])
            os._exit(0)
        except BaseException:
            os._exit(1)
    return abi if os.waitpid(pid, 0)[1] == 0 else 0


def main() -> None:
    ctrl = Connection(int(sys.argv[1]), writable=False)
    send = Connection(int(sys.argv[2]), readable=False)
    cfg = _settings()
    # The working directory is scratch space: never import from it.
    sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
    cfg.setdefault("scratch", os.environ.get("NASFORGE_SCRATCH") or os.getcwd())
    os.makedirs(cfg["scratch"], exist_ok=True)
    if cfg.get("tmpfs_scratch"):  # own mount namespace: scratch space that vanishes with us
        _libc.mount(b"tmpfs", cfg["scratch"].encode(), b"tmpfs", 0, b"size=2g,mode=0700")
    # No PR_SET_PDEATHSIG here: it fires when the parent *thread* that started us ends (pool threads
    # do). The control pipe's end of file tells us the parent is gone, also while a request runs.
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # candidates cannot open our /proc/<pid>/fd or memory
    for mod in WARM:
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001  (a missing optional module only costs its import later)
            pass
    cfg["_zygote"], cfg["_max_fd"] = os.getpid(), os.sysconf("SC_OPEN_MAX")
    cfg["landlock"] = _probe_landlock(cfg) if cfg.get("landlock", True) else 0
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)  # start-up errors went to the parent's log; from here on, nothing
    report = {"ready": True, "landlock": cfg["landlock"], "pid_ns": os.getpid() <= 2,
              "uid": os.getuid()}
    send.send_bytes(json.dumps(report).encode())
    while True:
        try:
            req = json.loads(ctrl.recv_bytes())
        except EOFError:
            return
        try:
            out = _serve_one(req, cfg, ctrl.fileno())
        except Exception as exc:  # noqa: BLE001  (one candidate's failure, never the server's end)
            _kill_descendants()
            out = {"status": "crash", "error": f"the worker could not serve the request ({type(exc).__name__})"}
        send.send_bytes(json.dumps({"id": req["id"], "result": out}).encode())


if __name__ == "__main__":
    main()
