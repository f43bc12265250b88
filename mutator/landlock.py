"""Landlock (Linux >= 5.13): let a process restrict itself to a list of paths, no TCP, no signals out.

    from mutator.landlock import abi_version, restrict
    restrict(read=["/usr", sys.prefix], write=[scratch])   # from now on, for this process and its children

Landlock is an unprivileged Linux security module: once `restrict` returns, this process and every
process it starts can open files only beneath the listed paths (`read`: read and execute, `write`:
everything), and, where the kernel's ABI has them, cannot bind or connect TCP sockets (ABI >= 4) and
cannot send signals or reach abstract Unix sockets outside its own domain (ABI >= 6). It cannot be
undone. Files opened before the call stay usable.

It is the kernel's documented ABI (Documentation/userspace-api/landlock.rst) called through ctypes:
the PyPI `landlock` package is an alpha (1.0.0.dev5) that covers file rules only, not the network
and scoping rules that matter here.

Not covered by Landlock: UDP and Unix sockets by path (use a network namespace), reading /proc of
other processes where ptrace would allow it (Landlock does deny ptrace across domains), CPU, memory.
"""
from __future__ import annotations

import ctypes
import os

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446  # the same on every architecture
_PR_SET_NO_NEW_PRIVS = 38
_RULE_PATH_BENEATH = 1

# access rights per file system ABI version (bit i = right i)
_FS_BITS = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1, 2, 4, 8
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class LandlockError(OSError):
    pass


def _call(*args) -> int:
    r = _libc.syscall(*args)
    if r < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, os.strerror(err))
    return r


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is not available."""
    try:
        return _call(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    except (LandlockError, AttributeError):
        return 0


def _fs_all(abi: int) -> int:
    return (1 << _FS_BITS[min(abi, 5)]) - 1


def restrict(read=(), write=(), abi: int | None = None) -> dict:
    """Restrict this process (and its future children) for good; returns what was restricted.

    read: paths readable and executable beneath them; write: paths with every right beneath them.
    Paths that do not exist are skipped. Raises LandlockError when the kernel refuses."""
    abi = abi_version() if abi is None else abi
    if abi < 1:
        raise LandlockError(0, "Landlock is not available in this kernel")
    fs = _fs_all(abi)
    attr = _RulesetAttr(fs, _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if abi >= 6 else 0)
    fd = _call(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    file_rights = _EXECUTE | _WRITE_FILE | _READ_FILE | (_TRUNCATE if abi >= 3 else 0) | (_IOCTL_DEV if abi >= 5 else 0)
    try:
        for paths, rights in ((read, _EXECUTE | _READ_FILE | _READ_DIR), (write, fs)):
            for path in paths:
                try:
                    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    allowed = rights if os.path.isdir(path) else rights & file_rights
                    rule = _PathBeneath(allowed, pfd)
                    _call(_SYS_ADD_RULE, ctypes.c_int(fd), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule),
                          ctypes.c_uint32(0))
                finally:
                    os.close(pfd)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise LandlockError(err, "prctl(PR_SET_NO_NEW_PRIVS): " + os.strerror(err))
        _call(_SYS_RESTRICT, ctypes.c_int(fd), ctypes.c_uint32(0))
    finally:
        os.close(fd)
    return {"abi": abi, "files": True, "tcp": abi >= 4, "signals": abi >= 6}
