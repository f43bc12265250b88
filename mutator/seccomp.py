"""A seccomp filter for candidate processes: no SysV IPC, POSIX message queues, memfd, io_uring or
kernel keyrings; sockets only TCP over IPv4/IPv6 (Landlock or a network namespace decides where to)
and connected Unix socket pairs.

    from mutator.seccomp import deny_shared_state
    deny_shared_state()   # this thread and everything it starts, for good (needs no_new_privs)

Why these calls: each one reaches memory or state that neither RLIMIT_AS nor a per-process memory
count sees, or that outlives the candidate, or that Landlock does not govern:
- SysV shared memory, semaphores and message queues, POSIX message queues, keyrings: state that
  survives the process (a segment outlives a pool without an IPC namespace, and within a worker's
  namespace carries data from one candidate to the next), reachable by key or name on the host;
- memfd_create / memfd_secret: memory held by a file descriptor, which can travel in a socket's queue
  where no process's /proc shows it (torch's JIT falls back to anonymous memory when it fails);
- io_uring: its socket and file operations are not seen by this filter;
- chmod, chown and extended attributes by path: Landlock does not govern a file's metadata, so
  without them a candidate could `chmod 000` its scratch folder or, where the host's files are in
  view, any file of the same user (fchmod on a descriptor stays: opening it is Landlock's to allow);
- socket(): only AF_INET/AF_INET6 stream sockets with protocol 0 or TCP (no UDP, MPTCP, Unix sockets
  by path, netlink, ...); socketpair() only AF_UNIX stream or seqpacket (a datagram pair could
  `sendto` a named socket on the host).
A denied call fails with EPERM (EACCES for sockets); a system call of another architecture (i386
`int 0x80`, x32) kills the process.

It is a classic BPF program given to prctl(PR_SET_SECCOMP) through ctypes (no libseccomp needed), for
x86_64 and aarch64; `supported()` is False elsewhere and `deny_shared_state` raises OSError.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K, _AND_K = 0x20, 0x15, 0x35, 0x06, 0x54
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_X32_BIT = 0x40000000
_IPPROTO_TCP, _SOCK_TYPE_MASK = 6, 0xF

# arch -> (AUDIT_ARCH, socket, socketpair, denied call numbers)
_ARCH = {
    "x86_64": (0xC000003E, 41, 53, {
        "shmget": 29, "shmat": 30, "shmctl": 31, "semget": 64, "semop": 65, "semctl": 66, "shmdt": 67,
        "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "semtimedop": 220, "mq_open": 240,
        "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245,
        "add_key": 248, "request_key": 249, "keyctl": 250, "memfd_create": 319, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "memfd_secret": 447,
        "chmod": 90, "chown": 92, "lchown": 94, "setxattr": 188, "lsetxattr": 189, "removexattr": 197,
        "lremovexattr": 198, "fchownat": 260, "fchmodat": 268, "fchmodat2": 452, "setxattrat": 463,
        "removexattrat": 466}),
    "aarch64": (0xC00000B7, 198, 199, {
        "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182, "mq_timedreceive": 183, "mq_notify": 184,
        "mq_getsetattr": 185, "msgget": 186, "msgctl": 187, "msgrcv": 188, "msgsnd": 189, "semget": 190,
        "semctl": 191, "semtimedop": 192, "semop": 193, "shmget": 194, "shmctl": 195, "shmat": 196, "shmdt": 197,
        "add_key": 217, "request_key": 218, "keyctl": 219, "memfd_create": 279, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "memfd_secret": 447,
        "setxattr": 5, "lsetxattr": 6, "removexattr": 14, "lremovexattr": 15, "fchmodat": 53, "fchownat": 54,
        "fchmodat2": 452, "setxattrat": 463, "removexattrat": 466}),
}


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Insn))]


def _arg(i: int) -> int:
    """Offset of the low 32 bits of argument i in struct seccomp_data (little endian)."""
    return 16 + 8 * i


def supported() -> bool:
    return platform.machine() in _ARCH


def program(machine: str | None = None) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions."""
    audit, sock, pair, deny = _ARCH[machine or platform.machine()]
    p = [(_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, audit), (_RET_K, 0, 0, _KILL_PROCESS), (_LD_W_ABS, 0, 0, 0)]
    if audit == _ARCH["x86_64"][0]:
        p += [(_JGE_K, 0, 1, _X32_BIT), (_RET_K, 0, 0, _KILL_PROCESS)]
    for nr in sorted(deny.values()):
        p += [(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, _ERRNO | errno.EPERM)]
    refuse = (_RET_K, 0, 0, _ERRNO | errno.EACCES)
    sock_block = [
        (_LD_W_ABS, 0, 0, _arg(0)),
        (_JEQ_K, 1, 0, socket.AF_INET),
        (_JEQ_K, 0, 6, socket.AF_INET6),          # -> refuse
        (_LD_W_ABS, 0, 0, _arg(1)),
        (_AND_K, 0, 0, _SOCK_TYPE_MASK),
        (_JEQ_K, 0, 3, socket.SOCK_STREAM),       # -> refuse
        (_LD_W_ABS, 0, 0, _arg(2)),
        (_JEQ_K, 2, 0, 0),                        # -> allow
        (_JEQ_K, 1, 0, _IPPROTO_TCP),             # -> allow, else refuse
        refuse,
        (_RET_K, 0, 0, _ALLOW),
    ]
    pair_block = [
        (_LD_W_ABS, 0, 0, _arg(0)),
        (_JEQ_K, 0, 4, socket.AF_UNIX),           # -> refuse
        (_LD_W_ABS, 0, 0, _arg(1)),
        (_AND_K, 0, 0, _SOCK_TYPE_MASK),
        (_JEQ_K, 2, 0, socket.SOCK_STREAM),       # -> allow
        (_JEQ_K, 1, 0, socket.SOCK_SEQPACKET),    # -> allow, else refuse
        refuse,
        (_RET_K, 0, 0, _ALLOW),
    ]
    p += [(_JEQ_K, 0, len(sock_block), sock), *sock_block]
    p += [(_JEQ_K, 0, len(pair_block), pair), *pair_block]
    return [*p, (_RET_K, 0, 0, _ALLOW)]


def deny_shared_state() -> None:
    """Install the filter on the calling thread (inherited by every process and thread it starts).
    Call it single-threaded, after prctl(PR_SET_NO_NEW_PRIVS). Raises OSError when it cannot."""
    if not supported():
        raise OSError(errno.ENOSYS, f"no seccomp filter for {platform.machine()}")
    insns = program()
    arr = (_Insn * len(insns))(*[_Insn(*i) for i in insns])
    prog = _Prog(len(insns), ctypes.cast(arr, ctypes.POINTER(_Insn)))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(PR_SET_SECCOMP): " + os.strerror(err))
