"""Sandbox side of `mutator.sandbox`: a fork server, `python -m mutator.worker CTRL_FD RESULT_FD`.

The worker (the "zygote") runs only this project's code: it imports torch and the modules its start
config names once (`NASFORGE_SANDBOX`: "handlers", the registered ones it may run, and "warm"; see
`mutator.handlers`), then for every request {"id", "handler", "payload", "timeout_s"} of a registered
handler forks a fresh child that runs the handler on the untrusted model code, so no candidate ever
sees what an earlier one did to the interpreter (a patched `torch.Tensor.__eq__` dies with its process). Before the handler runs, the child:

- closes every inherited file descriptor but its own result pipe (it cannot write to the parent's
  channel, nor to another candidate's), points stdin/stdout/stderr at /dev/null, starts a session;
- gets a fresh scratch folder as its working directory, HOME and TMPDIR;
- is limited: RLIMIT_AS (memory per process; not on a GPU), RLIMIT_CPU, RLIMIT_FSIZE (scratch_mb at
  most), RLIMIT_MSGQUEUE=0, RLIMIT_CORE=0, a process count where it has its own user namespace;
  PR_SET_PDEATHSIG (dies with the worker); on a GPU, its share of each device for torch's allocator;
- drops every capability, sets no_new_privs and installs the seccomp filter (`mutator.seccomp`);
- restricts itself with Landlock where the kernel has it (`mutator.landlock`): reads only beneath
  the interpreter, its libraries, the project and the data cache; writes only to its scratch
  folder; no TCP; no signals to processes outside (ABI >= 6).

The worker is a child subreaper: every process the candidate starts, double-forked daemons
included, stays its descendant, and all of them are killed when the request ends. Every 0.2 s it
counts their processes and threads (over the limit: `crash`), their memory: PSS, memfd files they
hold open and what they wrote to a private scratch tmpfs (over the budget: `oom`; RLIMIT_AS alone is
per process, so forks could multiply it), and their scratch folder on the host disk (over scratch_mb:
`oom`). After each request it restores the scratch folder's permissions and empties it.

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
import stat
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import Connection

from mutator.results import FrameError, decode_frame, failure

READY = b'{"ready": true'  # the ready message starts with this; the rest reports the containment
MAX_RESULT = 64 << 20  # a candidate's answer larger than this is a crash
TASKS = 256  # processes and threads of one candidate, besides 4 per thread it is given (RLIMIT_NPROC does not
# bind in a user namespace: the watchdog counts them)
MAX_SCRATCH_ENTRIES = 20000  # files a candidate may leave in scratch (the watchdog walks them every 0.2 s)
WARM = ("torch", "torch._dynamo")  # imported before forking, then the start config's "warm" (`mutator.handlers`)

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
    return list(_tree(root))


def _tree(root: int) -> dict[int, int]:
    """Every descendant of `root` and its number of threads, from /proc."""
    parent, threads = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            parent[int(entry)], threads[int(entry)] = int(fields[1]), int(fields[17])
        except (OSError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out[c] = threads[c]
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


def _held_files(pids, scratch: str, scratch_dev: int, walked: set) -> tuple[int, int]:
    """KiB in memory-backed files (memfd) and in files on the scratch device that the candidate's
    processes hold open but the walk of its folder did not see (deleted, or behind a `chmod 000`):
    neither RLIMIT_AS, PSS nor that walk counts them."""
    seen, memory, on_disk = set(walked), 0, 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                target = os.readlink(path)
                mine = target.startswith(scratch + "/") or target.endswith(" (deleted)")
                if not (target.startswith("/memfd:") or mine):
                    continue
                st = os.stat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            if target.startswith("/memfd:"):
                memory += st.st_blocks // 2
            elif st.st_dev == scratch_dev:  # (a private tmpfs is counted whole, by statvfs)
                on_disk += st.st_blocks // 2
    return memory, on_disk


def _tmpfs_used_kib(path: str) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize >> 10


def _folder_kib(path: str, seen: set, limit: int = MAX_SCRATCH_ENTRIES) -> tuple[int, int]:
    """KiB of blocks beneath `path` and the number of entries (counting stops after `limit` entries);
    adds each file's (device, inode) to `seen`."""
    total, n, todo = 0, 0, [path]
    while todo and n <= limit:
        try:
            with os.scandir(todo.pop()) as it:
                for e in it:
                    n += 1
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks // 2
                    if stat.S_ISDIR(st.st_mode):
                        todo.append(e.path)
        except OSError:
            continue
    return total, n


def _wipe(path: str) -> None:
    """Empty and remove a candidate's folder, also where it took its own permissions away (chmod 000 of
    a full folder used to stay behind and fill scratch for the next candidate). Symbolic links are
    removed, never followed."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
        os.chmod(path, 0o700)
    except OSError:
        return
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            p = os.path.join(root, d)
            try:
                if stat.S_ISDIR(os.lstat(p).st_mode):
                    os.chmod(p, 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


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
    if mb > 0 and not cfg.get("gpu"):  # CUDA reserves far more address space than it uses: PSS watchdog only
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(timeout_s * max(1, int(cfg.get("threads", 1)) + 1) + 10)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    fsize = min(1 << 30, _scratch_mb(cfg) << 20, *([mb << 20] if mb > 0 else []))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))  # one file; the watchdog counts the sum
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
    if cfg.get("userns"):
        resource.setrlimit(resource.RLIMIT_NPROC, (max_tasks(cfg), max_tasks(cfg)))
    try:
        _drop_capabilities()
    except OSError:
        if cfg.get("require_caps_dropped"):
            raise
    cap_device_memory(cfg)  # before the filters: CUDA starts unrestricted, as it would without them
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if cfg.get("seccomp"):
        from mutator.seccomp import deny_shared_state

        deny_shared_state()
    if cfg.get("landlock"):
        from mutator.landlock import restrict

        restrict(read=cfg["read"], write=[scratch, "/dev/null"])


def _scratch_mb(cfg: dict) -> int:
    return int(cfg.get("scratch_mb") or 2048)


def max_tasks(cfg: dict) -> int:
    return int(cfg.get("max_tasks") or TASKS + 4 * max(1, int(cfg.get("threads", 1))))


def cap_device_memory(cfg: dict) -> float | None:
    """Give a GPU candidate `gpu_memory_fraction` of each device: torch's caching allocator raises
    out-of-memory beyond it. Returns the fraction set, None where there is nothing to cap. A candidate
    can lift its own cap (it runs in this process): this bounds a greedy model, not a hostile one."""
    frac = float(cfg.get("gpu_memory_fraction") or 0)
    if not cfg.get("gpu") or not 0 < frac <= 1:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    for i in range(torch.cuda.device_count()):
        torch.cuda.set_per_process_memory_fraction(frac, i)
    return frac


def _run_child(req: dict, result_fd: int, scratch: str, cfg: dict) -> None:
    """The forked child: isolate, run the handler, write one answer, exit. Never returns."""
    try:
        _enter_candidate(result_fd, scratch, float(req["timeout_s"]), cfg)
        handler = req.get("handler", "")
        if not _allowed(handler, cfg):
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


def _over_limits(cfg: dict, budget_kib: int, scratch_kib: int, scratch: str, scratch_dev: int,
                 tmpfs_base: int | None) -> tuple[str, str] | None:
    """The watchdog's round: the candidate's processes and threads, their memory (PSS, memfd files,
    its private tmpfs) and its scratch folder, each against its limit."""
    tree = _tree(os.getpid())
    tasks = sum(tree.values())
    if tasks > max_tasks(cfg):
        return "crash", f"the candidate ran {tasks} processes and threads, over the limit of {max_tasks(cfg)}"
    walked: set = set()
    if tmpfs_base is not None:
        on_disk, entries = max(0, _tmpfs_used_kib(scratch) - tmpfs_base), 0
        held_mem = _held_files(tree, scratch, -1, walked)[0]
        in_memory = on_disk
    else:
        on_disk, entries = _folder_kib(scratch, walked)
        held_mem, held_scratch = _held_files(tree, scratch, scratch_dev, walked)
        on_disk, in_memory = on_disk + held_scratch, 0
    if entries > MAX_SCRATCH_ENTRIES:
        return "oom", f"the candidate left more than {MAX_SCRATCH_ENTRIES} files in its scratch folder"
    if on_disk > scratch_kib:
        return "oom", f"the candidate wrote {on_disk >> 10} MB to its scratch folder, over the limit of " \
                      f"{scratch_kib >> 10} MB"
    if budget_kib:
        used = sum(_memory_kib(p) for p in tree) + held_mem + in_memory
        if used > budget_kib:
            return "oom", f"the candidate's processes used {used >> 10} MB together (memory, memory files and " \
                          f"scratch space in memory), over the limit of {budget_kib >> 10} MB"
    return None


def _collect(pid: int, fd: int, req: dict, cfg: dict, ctrl_fd: int) -> dict:
    """Read the child's answer with its deadline and the memory budget of its whole process tree."""
    timeout_s = float(req["timeout_s"])
    deadline = time.monotonic() + timeout_s
    budget_kib = int(cfg.get("memory_mb", 0)) << 10
    scratch_kib = _scratch_mb(cfg) << 10
    scratch = cfg["_request_scratch"]
    scratch_dev = os.stat(scratch).st_dev
    # a private tmpfs (bubblewrap, unshare) is memory: what the candidate writes there counts as such
    tmpfs_base = _tmpfs_used_kib(scratch) if cfg.get("_private_tmpfs") else None
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
        if now >= next_check:
            next_check = now + 0.2
            why = _over_limits(cfg, budget_kib, scratch_kib, scratch, scratch_dev, tmpfs_base)
            if why:
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


def _allowed(handler, cfg: dict) -> bool:
    """Only the handlers the pool registered (`mutator.handlers`, passed in the start config) run here."""
    return isinstance(handler, str) and ":" in handler and handler in cfg.get("handlers", ())


def _warm(req: dict, cfg: dict) -> None:
    """A handler may name trusted preparation (`fn.warm(payload)`, e.g. loading the data set) that the
    worker runs once before forking, so every candidate inherits it instead of redoing it."""
    handler = req.get("handler", "")
    if not _allowed(handler, cfg):
        return
    mod, fn = handler.split(":", 1)
    warm = getattr(getattr(importlib.import_module(mod), fn, None), "warm", None)
    if callable(warm):
        warm(req.get("payload"))


def _serve_one(req: dict, cfg: dict, ctrl_fd: int) -> dict:
    try:
        _warm(req, cfg)
    except Exception:  # noqa: BLE001  (the handler meets the same problem in the child and reports it)
        pass
    _empty_scratch(cfg["scratch"])
    scratch = cfg["_request_scratch"] = os.path.join(cfg["scratch"], f"c{int(req['id'])}")
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
        _empty_scratch(cfg["scratch"])


def _empty_scratch(root: str) -> None:
    """Every request starts with an empty scratch root (a candidate may have changed its permissions)."""
    os.chmod(root, 0o700)
    for name in os.listdir(root):
        _wipe(os.path.join(root, name))


def _probe_seccomp() -> bool:
    """True when the seccomp filter installs here (tested in a throw-away child)."""
    from mutator.seccomp import deny_shared_state, supported

    if not supported():
        return False
    pid = os.fork()
    if pid == 0:
        try:
            _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            deny_shared_state()
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


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
        opts = f"size={_scratch_mb(cfg)}m,mode=0700".encode()
        cfg["_private_tmpfs"] = _libc.mount(b"tmpfs", cfg["scratch"].encode(), b"tmpfs", 0, opts) == 0
    else:  # bubblewrap's /tmp is our own tmpfs
        cfg["_private_tmpfs"] = bool(cfg.get("userns"))
    # No PR_SET_PDEATHSIG here: it fires when the parent *thread* that started us ends (pool threads
    # do). The control pipe's end of file tells us the parent is gone, also while a request runs.
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # candidates cannot open our /proc/<pid>/fd or memory
    for mod in (*WARM, *cfg.get("warm", ())):
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001  (a missing optional module only costs its import later)
            pass
    cfg["_zygote"], cfg["_max_fd"] = os.getpid(), os.sysconf("SC_OPEN_MAX")
    cfg["landlock"] = _probe_landlock(cfg) if cfg.get("landlock", True) else 0
    cfg["seccomp"] = _probe_seccomp() if cfg.get("seccomp", True) else False
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)  # start-up errors went to the parent's log; from here on, nothing
    report = {"ready": True, "landlock": cfg["landlock"], "seccomp": cfg["seccomp"], "pid_ns": os.getpid() <= 2,
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
