"""Per-job resource limits: the settings, their reasons in words, and the rlimits of a job.

Standard library only, and cheap to import (``os`` and ``resource``): the launcher inside the
sandbox loads this file on its own and calls :func:`apply_rlimits` just before it execs the job,
within the sandbox's start-up budget. What the supervisor does around the job (cgroups, counting
processes, measuring disk) is :mod:`trainflow.runner.enforcement`.

A job that exceeds a limit ends with a reason (``memory_limit``, ``process_limit``,
``disk_limit``, ``open_files_limit``) and a message that names the limit (:func:`message`),
which the scheduler records as the job's reason.
"""

from __future__ import annotations

try:
    import resource
except ImportError:  # not POSIX: no rlimits
    resource = None  # type: ignore[assignment]

MB = 1024 * 1024
MEMORY_LIMIT = "memory_limit"
PROCESS_LIMIT = "process_limit"
DISK_LIMIT = "disk_limit"
OPEN_FILES_LIMIT = "open_files_limit"
REASONS = (MEMORY_LIMIT, PROCESS_LIMIT, DISK_LIMIT, OPEN_FILES_LIMIT)
_FIELDS = ("memory_mb", "processes", "open_files", "disk_mb")


class Limits:
    """One job's limits; 0 means no limit. ``cgroup``: "" finds one, "off" uses none, a path is
    a delegated cgroup v2 folder to make job cgroups in."""

    __slots__ = ("cgroup", "disk_mb", "memory_mb", "open_files", "processes")

    def __init__(
        self, memory_mb: int = 0, processes: int = 0, open_files: int = 0, disk_mb: int = 0, cgroup: str = ""
    ) -> None:
        self.memory_mb = memory_mb
        self.processes = processes
        self.open_files = open_files
        self.disk_mb = disk_mb
        self.cgroup = cgroup

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limits) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(tuple(self.to_json().values()))

    def __repr__(self) -> str:
        return "Limits(" + ", ".join(f"{k}={v!r}" for k, v in self.to_json().items()) + ")"

    def to_json(self) -> dict[str, int | str]:
        return {**{name: getattr(self, name) for name in _FIELDS}, "cgroup": self.cgroup}

    @classmethod
    def from_json(cls, data: dict[str, object] | None) -> Limits:
        data = data or {}
        values = {name: _whole(data, name) for name in _FIELDS}
        return cls(**values, cgroup=str(data.get("cgroup") or ""))

    @property
    def is_unlimited(self) -> bool:
        return not (self.memory_mb or self.processes or self.open_files or self.disk_mb)


def _whole(data: dict[str, object], key: str) -> int:
    value = data.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"limits.{key} must be a whole number of at least 0, not {value!r}")
    return value


def message(reason: str, limits: Limits) -> str:
    """The job's reason, in words: ``memory limit of 4096 MB exceeded``."""
    if reason == MEMORY_LIMIT:
        return f"memory limit of {limits.memory_mb} MB exceeded"
    if reason == PROCESS_LIMIT:
        return f"process limit of {limits.processes} processes and threads reached"
    if reason == DISK_LIMIT:
        return f"disk limit of {limits.disk_mb} MB exceeded in the job's folder"
    if reason == OPEN_FILES_LIMIT:
        return f"open files limit of {limits.open_files} reached"
    raise ValueError(f"not a limit: {reason!r}")


# -- rlimits (in the job's own process, just before exec) ------------------------------------------


def rlimits_for(limits: Limits, *, has_memory_cgroup: bool, has_pids_cgroup: bool) -> dict[str, int]:
    """The rlimits the launcher applies: those no cgroup enforces, plus open files and file size."""
    wanted: dict[str, int] = {}
    if limits.memory_mb and not has_memory_cgroup:
        wanted["data_bytes"] = limits.memory_mb * MB
    if limits.processes and not has_pids_cgroup:
        wanted["processes"] = limits.processes
    if limits.open_files:
        wanted["open_files"] = limits.open_files
    if limits.disk_mb:
        wanted["file_size_bytes"] = limits.disk_mb * MB
    return wanted


def apply_rlimits(config: dict[str, int]) -> list[str]:
    """Lower this process's rlimits (soft and hard) as ``config`` says; return what was set.

    ``processes`` (``RLIMIT_NPROC``) is applied only inside a user namespace other than the
    machine's: the kernel counts it per user (and, since Linux 5.14, per user namespace), so
    outside one it would count every process the server's user runs, and it never binds root.
    """
    if resource is None:
        return []
    applied = []
    for key, value in sorted(config.items()):
        if key == "processes" and not in_own_user_namespace():
            continue
        which = _RLIMITS.get(key)
        if which is None or not isinstance(value, int) or value <= 0:
            raise ValueError(f"unknown rlimit {key!r} = {value!r}")
        number = getattr(resource, which)
        _, hard = resource.getrlimit(number)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(number, (value, value))
        applied.append(which)
    return applied


_RLIMITS = {
    "data_bytes": "RLIMIT_DATA",
    "processes": "RLIMIT_NPROC",
    "open_files": "RLIMIT_NOFILE",
    "file_size_bytes": "RLIMIT_FSIZE",
}


def in_own_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the machine's first one."""
    try:
        with open("/proc/self/uid_map") as f:
            mapping = f.read().split()
    except OSError:
        return False
    return mapping != ["0", "0", "4294967295"]
