"""A small seccomp filter for job sandboxes: the few system calls a job never needs (stdlib only).

Bubblewrap loads it (``--seccomp FD``) just before it starts the launcher. It refuses, with
EPERM, what would widen the kernel's reach from inside the sandbox, not what a training job uses:

- a new user namespace (``unshare`` or ``clone`` with CLONE_NEWUSER): inside one a process holds
  every capability over the namespaces it then makes (network, mount), kernel code an
  unprivileged job otherwise never reaches. ``clone3`` answers ENOSYS, so the C library falls
  back to ``clone``, whose flags the filter can read. (Where the server is not root, bubblewrap's
  ``--disable-userns`` refuses them too.)
- kernel keyrings (``keyctl``, ``add_key``, ``request_key``): jobs of one uid would share them;
- ``bpf``, ``userfaultfd``, ``perf_event_open``, ``setns``, file handles (``open_by_handle_at``)
  and everything that mounts, loads modules, swaps, reboots or accounts processes.

Only on x86_64 and aarch64, the architectures whose system call numbers are listed here; any
other calling convention (32-bit x86 or x32 calls on x86_64) is refused outright.
"""

from __future__ import annotations

import os
import platform
import struct

# Classic BPF, as seccomp runs it: (code, jump if true, jump if false, k).
LOAD_WORD, JUMP_EQ, JUMP_GE, JUMP_SET, RETURN = 0x20, 0x15, 0x35, 0x45, 0x06
ALLOW = 0x7FFF0000
DENY = 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM
NO_SUCH_CALL = 0x00050000 | 38  # ENOSYS
CLONE_NEWUSER = 0x10000000
NR, ARCH, ARG0 = 0, 4, 16  # offsets in struct seccomp_data (little-endian: arg0's low half)

_BLOCKED = (
    "keyctl add_key request_key bpf userfaultfd perf_event_open setns open_by_handle_at "
    "name_to_handle_at mount umount2 pivot_root fsopen fsmount fsconfig fspick move_mount "
    "open_tree mount_setattr init_module finit_module delete_module kexec_load kexec_file_load "
    "swapon swapoff reboot acct"
).split()

ARCHITECTURES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {
            "unshare": 272, "clone": 56, "clone3": 435, "keyctl": 250, "add_key": 248,
            "request_key": 249, "bpf": 321, "userfaultfd": 323, "perf_event_open": 298, "setns": 308,
            "open_by_handle_at": 304, "name_to_handle_at": 303, "mount": 165, "umount2": 166,
            "pivot_root": 155, "fsopen": 430, "fsmount": 432, "fsconfig": 431, "fspick": 433,
            "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "init_module": 175,
            "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
            "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "unshare": 97, "clone": 220, "clone3": 435, "keyctl": 219, "add_key": 217,
            "request_key": 218, "bpf": 280, "userfaultfd": 282, "perf_event_open": 241, "setns": 268,
            "open_by_handle_at": 265, "name_to_handle_at": 264, "mount": 40, "umount2": 39,
            "pivot_root": 41, "fsopen": 430, "fsmount": 432, "fsconfig": 431, "fspick": 433,
            "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "init_module": 105,
            "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
            "swapon": 224, "swapoff": 225, "reboot": 142, "acct": 89,
        },
    ),
}  # fmt: skip


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine's architecture, as bubblewrap reads it; None if unknown."""
    known = ARCHITECTURES.get(machine or platform.machine())
    if known is None:
        return None
    arch, numbers = known
    code: list[tuple[int, int, int, int]] = [
        (LOAD_WORD, 0, 0, ARCH),
        (JUMP_EQ, 1, 0, arch),
        (RETURN, 0, 0, DENY),
        (LOAD_WORD, 0, 0, NR),
    ]
    if arch == 0xC000003E:  # x32 calls carry bit 30 on x86_64
        code += [(JUMP_GE, 0, 1, 0x40000000), (RETURN, 0, 0, DENY)]
    for name in ("unshare", "clone"):
        code += [
            (JUMP_EQ, 0, 4, numbers[name]),
            (LOAD_WORD, 0, 0, ARG0),
            (JUMP_SET, 0, 1, CLONE_NEWUSER),
            (RETURN, 0, 0, DENY),
            (RETURN, 0, 0, ALLOW),
        ]
    code += [(JUMP_EQ, 0, 1, numbers["clone3"]), (RETURN, 0, 0, NO_SUCH_CALL)]
    for name in _BLOCKED:
        code += [(JUMP_EQ, 0, 1, numbers[name]), (RETURN, 0, 0, DENY)]
    code.append((RETURN, 0, 0, ALLOW))
    return b"".join(struct.pack("<HBBI", *instruction) for instruction in code)


def filter_fd() -> int | None:
    """A new file descriptor holding the filter, at its start, for ``bwrap --seccomp``; the
    caller passes it to bubblewrap and closes it. None where no filter is known."""
    data = program()
    if data is None or not hasattr(os, "memfd_create"):
        return None
    fd = os.memfd_create("trainflow-seccomp", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
