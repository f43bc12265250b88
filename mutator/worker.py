"""Child-process side of `mutator.sandbox`: `python -m mutator.worker READ_FD WRITE_FD`.

Reads JSON requests {"handler": "module:function", "payload": ...}, answers each with the handler's
JSON-able result. Handlers live in this project only (the name is checked), so a request cannot
name arbitrary code. Python exceptions, `sys.exit` and `KeyboardInterrupt` raised by model code are
answered as {"status": "error"}; anything that kills the process is seen by the parent as a crash.
"""
import importlib
import json
import os
import resource
import sys
import traceback
from multiprocessing.connection import Connection

ALLOWED = ("mutator.", "corpus.", "search.", "finetune.")


def _limit_self() -> None:
    mb = int(os.environ.get("NASFORGE_MEMORY_MB", "0"))
    if mb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _init_is_bwrap() -> bool:
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip() == "bwrap"
    except OSError:
        return False


def reap() -> None:
    """Kill every process the model code started. In our own PID namespace (bwrap) that is every
    process but init and this one, daemons included; without namespaces, our descendants."""
    me = os.getpid()
    if os.environ.get("NASFORGE_PIDNS") == "1" and _init_is_bwrap():
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in (1, me):
                try:
                    os.kill(int(entry), 9)
                except (ProcessLookupError, PermissionError):
                    pass
        return
    try:
        import psutil
    except ImportError:
        return
    for child in psutil.Process(me).children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass


def short_error(exc: BaseException) -> str:
    """One line naming the exception and where in the candidate's code it happened."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith("<candidate"):
            where = f" (line {frame.lineno})"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{where}: {msg}"[:500]


READY = b'{"ready": true}'


def main() -> None:
    _limit_self()
    devnull = open(os.devnull, "w")
    sys.stdout = sys.stderr = devnull
    recv = Connection(int(sys.argv[1]), writable=False)
    send = Connection(int(sys.argv[2]), readable=False)
    import torch  # noqa: F401  (imported once, before any request)

    send.send_bytes(READY)  # the parent's time limits start now, not while torch loads
    while True:
        try:
            req = json.loads(recv.recv_bytes())
        except EOFError:
            return
        handler = req.get("handler", "")
        try:
            if not handler.startswith(ALLOWED) or ":" not in handler:
                raise ValueError(f"unknown handler {handler!r}")
            mod, fn = handler.split(":", 1)
            out = getattr(importlib.import_module(mod), fn)(req.get("payload"))
        except MemoryError:
            out = {"status": "oom", "error": "MemoryError: over the worker's memory limit"}
        except BaseException as exc:  # model code may raise SystemExit or KeyboardInterrupt
            out = {"status": "error", "error": short_error(exc)}
        sys.stdout = sys.stderr = devnull  # model code may have replaced them
        reap()
        try:
            data = json.dumps(out).encode()
        except (TypeError, ValueError) as exc:
            data = json.dumps({"status": "error", "error": f"unserialisable result: {exc}"}).encode()
        send.send_bytes(data)


if __name__ == "__main__":
    main()
