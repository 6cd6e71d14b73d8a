"""Landlock, the kernel's unprivileged access control, through ctypes (standard library only).

A process restricts itself, and everything it later starts, to the files and TCP ports a
ruleset allows (https://docs.kernel.org/userspace-api/landlock.html). Each kernel supports an
ABI version; newer versions handle more rights. :func:`restrict` handles what the running
kernel knows and returns what it applied, so a caller can record it:

- ABI 1: reading, writing, executing, creating and removing files and folders;
- ABI 2: linking or renaming a file into another folder (``refer``);
- ABI 3: truncating files; ABI 5: ``ioctl`` on devices;
- ABI 4: binding and connecting TCP sockets, by port;
- ABI 6: scopes: no signals to, and no abstract unix sockets of, processes outside the domain.

The syscall numbers (444-446) are the same on every architecture Linux added them to late.
"""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False  # not from typing: the launcher imports this module, and typing is slow
if TYPE_CHECKING:
    from collections.abc import Iterable

CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

BIND_TCP = 1 << 0  # ABI 4
CONNECT_TCP = 1 << 1

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

# What each ABI version added, to handle no right the kernel does not know.
_FS_BY_ABI = {
    1: (1 << 13) - 1,
    2: REFER,
    3: TRUNCATE,
    5: IOCTL_DEV,
}
# The rights a file (not a folder) can hold.
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = EXECUTE | READ_FILE | READ_DIR
WRITE = (
    READ
    | WRITE_FILE
    | REMOVE_DIR
    | REMOVE_FILE
    | MAKE_DIR
    | MAKE_REG
    | MAKE_SOCK
    | MAKE_FIFO
    | MAKE_SYM
    | REFER
    | TRUNCATE
)  # never MAKE_CHAR or MAKE_BLOCK: no device nodes


class LandlockError(OSError):
    """The kernel refused a Landlock call (or has no Landlock)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


_libc: ctypes.CDLL | None = None


def _syscall(number: int, *args: object) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    result = int(_libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        errno = ctypes.get_errno()
        raise LandlockError(errno, os.strerror(errno))
    return result


def abi_version() -> int:
    """The Landlock ABI of the running kernel; 0 where it has none (or it is turned off)."""
    if not os.uname().sysname == "Linux":
        return 0
    try:
        return _syscall(CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    except (LandlockError, AttributeError):
        return 0


def fs_rights(abi: int) -> int:
    """Every filesystem right the given ABI handles."""
    rights = 0
    for version, bits in _FS_BY_ABI.items():
        if abi >= version:
            rights |= bits
    return rights


def restrict(
    read: Iterable[str],
    write: Iterable[str],
    connect_ports: Iterable[int] | None,
    is_scoped: bool = True,
) -> dict[str, object]:
    """Restrict this process (and its future children) for good; return what was applied.

    ``read`` paths may be read and executed, ``write`` paths also written; every other path is
    denied. ``connect_ports``: the only TCP ports it may connect to (binding a TCP port is then
    denied too); None leaves the network alone. Paths that do not exist are skipped. Needs
    ``PR_SET_NO_NEW_PRIVS`` set first (or CAP_SYS_ADMIN).
    """
    abi = abi_version()
    if abi < 1:
        raise LandlockError(38, "this kernel has no Landlock")
    handled_fs = fs_rights(abi)
    handled_net = BIND_TCP | CONNECT_TCP if abi >= 4 and connect_ports is not None else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 and is_scoped else 0
    attr = _RulesetAttr(handled_fs, handled_net, scoped)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16  # older kernels reject the longer struct
    ruleset = _syscall(CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        for paths, rights in ((read, READ), (write, WRITE | IOCTL_DEV)):
            for path in paths:
                _allow_path(ruleset, path, rights & handled_fs)
        ports = sorted(set(connect_ports or ())) if handled_net else []
        for port in ports:
            rule = _NetPort(CONNECT_TCP, port)
            _syscall(ADD_RULE, ruleset, RULE_NET_PORT, ctypes.byref(rule), ctypes.c_uint32(0))
        _syscall(RESTRICT_SELF, ruleset, ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return {
        "abi": abi,
        "filesystem": True,
        "tcp": ports if handled_net else None,
        "scoped": bool(scoped),
    }


def _allow_path(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            rights &= FILE_RIGHTS
        rule = _PathBeneath(rights, fd)
        _syscall(ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(fd)
