"""The first process inside a job's sandbox: it locks itself down, then becomes the job.

Run by bubblewrap as ``python -I -S launcher.py CONFIG ARGV...`` (isolated, no site
packages: it starts in about ten milliseconds and trusts nothing from the job's environment).
Standard library only, and no import from the ``trainflow`` package: its siblings are loaded
from this file's folder. Every import counts against the sandbox's start-up budget (50 ms):
``json`` alone (through ``re``) costs more than the rest, so ``CONFIG`` is a JSON-shaped
document that :func:`encode` writes with ``marshal`` (built in; the launcher runs on the same
interpreter as the supervisor), and the report goes back the same way (:func:`decode`). A
``CONFIG`` that starts with ``{`` is read as JSON, for people.

``CONFIG`` holds:

- ``"limits"`` (optional): handed to ``limits.apply_rlimits`` first, while the process may
  still set any limit;
- ``"sandbox"``:

  - ``"identity"``: ``{"uid", "gid"}`` to switch to (with no supplementary groups), or null to
    keep the current one. The launcher first empties the capability bounding set, then
    switches, which drops the capabilities bubblewrap left it for this (CAP_SETUID,
    CAP_SETGID, CAP_SETPCAP);
  - ``"read"``, ``"write"``: the paths Landlock allows (read and execute; also write);
  - ``"tcp"``: the only TCP ports it may connect to (binding any is denied), or null;
  - ``"report_fd"`` (optional): a file descriptor to write one line to (:func:`encode`d),
    saying what was applied, before the job starts; ``"require_landlock"``: fail rather than run without it.

Then ``PR_SET_NO_NEW_PRIVS`` (no setuid binary or file capability can raise privileges again),
Landlock, the default dispositions of the signals the supervisor ignored, and ``execvp(ARGV)``.
With no ARGV it exits 0 after reporting (a probe). Any failure exits 126 with a message on
stderr, which is the job's log: the job never runs with less isolation than asked for.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # not ``signal`` (it imports ``enum``: milliseconds)
import ctypes
import errno
import marshal
import os
import sys

TYPE_CHECKING = False  # not from typing: importing it costs more than the rest of the launcher
if TYPE_CHECKING:
    from typing import Any

PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAPBSET_DROP = 24
FAILED = 126


def encode(document: Any) -> str:
    """A JSON-shaped document (dicts, lists, str, int, float, bool, None) as one line of text."""
    return marshal.dumps(document).hex()


def decode(text: str | bytes) -> Any:
    """The document :func:`encode` wrote (only ever read from the supervisor or this launcher)."""
    data = bytes.fromhex(text.decode() if isinstance(text, bytes) else text)
    return marshal.loads(data)  # noqa: S302 - written by trusted code: this launcher, before the job runs


def _siblings() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)


def set_no_new_privs() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(errno)}")


def drop_bounding_set() -> None:
    """Empty the capability bounding set, so that nothing exec'd later can hold a capability."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")  # EINVAL: no such cap


def has_seccomp_filter() -> bool:
    """Whether a seccomp filter holds this process (bubblewrap's ``--seccomp``)."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"Seccomp:"):
                return line.split()[1] == b"2"
    return False


def switch_identity(uid: int, gid: int) -> None:
    """Become uid/gid for good: real, effective and saved ids, no supplementary groups."""
    drop_bounding_set()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise OSError(f"could not switch to uid {uid} and gid {gid}")


def apply(config: dict[str, object]) -> dict[str, object]:
    """Apply the config's limits and sandbox to this process; return what was applied."""
    _siblings()
    applied: dict[str, object] = {}
    limits = config.get("limits")
    if limits:
        import limits as limits_module  # type: ignore[import-not-found]

        applied["limits"] = limits_module.apply_rlimits(limits)
    sandbox = config.get("sandbox")
    if not isinstance(sandbox, dict):
        return applied
    identity = sandbox.get("identity")
    if identity:
        switch_identity(int(identity["uid"]), int(identity["gid"]))
    applied["uid"], applied["gid"] = os.getuid(), os.getgid()
    set_no_new_privs()
    applied["no_new_privs"] = True
    applied["seccomp"] = has_seccomp_filter()
    import landlock  # type: ignore[import-not-found]

    try:
        applied["landlock"] = landlock.restrict(
            read=sandbox.get("read") or [],
            write=sandbox.get("write") or [],
            connect_ports=sandbox.get("tcp"),
        )
    except OSError as e:
        if sandbox.get("require_landlock"):
            raise
        applied["landlock"] = {"abi": 0, "error": str(e)}
    return applied


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -I -S launcher.py CONFIG [ARGV...]", file=sys.stderr)
        return 2
    try:
        if argv[1].startswith("{"):
            import json

            config = json.loads(argv[1])
        else:
            config = decode(argv[1])
        applied = apply(config)
        report_fd = (config.get("sandbox") or {}).get("report_fd")
        if report_fd is not None:
            os.write(int(report_fd), encode(applied).encode() + b"\n")
            os.close(int(report_fd))
    except Exception as e:  # noqa: BLE001 - the one boundary: say why and refuse to run the job
        print(f"trainflow: could not build the job's sandbox: {e}", file=sys.stderr, flush=True)
        return FAILED
    if len(argv) == 2:
        return 0
    # The supervisor started the sandbox with SIGTERM ignored (so only the job gets it), and
    # Python ignores SIGPIPE and SIGXFSZ: an ignored signal would stay ignored in the job.
    for signum in (_signal.SIGTERM, _signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT):
        _signal.signal(signum, _signal.SIG_DFL)
    try:
        os.execvp(argv[2], argv[2:])  # noqa: S606 - the job's own argv, as the supervisor gave it
    except OSError as e:
        print(f"trainflow: could not start the job: {e}", file=sys.stderr, flush=True)
        return 127
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
