"""How the supervisor enforces a job's limits: cgroups, rlimits, and measuring from outside.

Standard library only (the supervisor imports it). Each limit is enforced by the strongest
mechanism the machine offers, chosen once per job and logged once at its start
(:meth:`JobLimits.describe`):

- **cgroups**, when the supervisor can create one: a cgroup v2 subtree delegated to the server
  (``TRAINFLOW_JOB_CGROUP``, or the parent of the server's own cgroup when it is writable and
  has the ``memory`` and ``pids`` controllers), else the v1 ``memory`` and ``pids`` hierarchies
  (writable by root). One cgroup per job; the job's first process joins it before it execs
  (:meth:`JobLimits.preexec`), so everything it starts is inside. The kernel kills on memory
  (``memory.max`` / ``memory.limit_in_bytes``) and refuses forks (``pids.max``); the supervisor
  reads the OOM-kill and pids ``max`` counters to name the reason, kills whatever is left at the
  end and removes the cgroup.
- **rlimits** (:func:`trainflow.runner.limits.apply_rlimits`, in the job's first process)
  otherwise: ``RLIMIT_DATA`` for memory (per process; unlike ``RLIMIT_AS`` it ignores
  reserved-but-unwritable address space, which CUDA and glibc's malloc arenas reserve by the
  gigabyte), ``RLIMIT_NPROC`` for processes (only inside a user namespace of the job's own) and,
  always, ``RLIMIT_NOFILE`` and ``RLIMIT_FSIZE``. Without a pids cgroup the supervisor counts
  the job's processes and threads itself, and without a memory cgroup it adds up their memory
  (PSS), and ends the job at the limit.
- **the supervisor**, for disk: it adds up what the job's folders hold every couple of seconds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from trainflow.runner.limits import (
    DISK_LIMIT,
    MB,
    MEMORY_LIMIT,
    OPEN_FILES_LIMIT,
    PROCESS_LIMIT,
    Limits,
    rlimits_for,
)

DISK_EVERY_S = 2.0  # how often the job's folders are measured (more rarely when a walk is slow)
PROCESSES_EVERY_S = 0.5
MEMORY_EVERY_S = 1.0
JOB_FOLDERS = ("work", "output", "tmp", "home", "checkpoint", "venv-build")  # the last: a venv being built

# What a process prints when an allocation or an open() fails at its rlimit (read from the end of
# the job's log when no cgroup counted the event).
_OUT_OF_MEMORY = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
_OUT_OF_FILES = ("Too many open files",)
_FILE_TOO_LARGE = ("File too large",)  # RLIMIT_FSIZE, where SIGXFSZ is ignored (Python does)


# -- cgroups --------------------------------------------------------------------------------------


class Cgroup:
    """One job's cgroup(s): a v2 folder, or a v1 folder in each of the memory and pids hierarchies."""

    def __init__(self, version: int, memory: Path | None, pids: Path | None) -> None:
        self.version = version
        self.memory = memory
        self.pids = pids

    @property
    def folders(self) -> list[Path]:
        return list(dict.fromkeys(p for p in (self.memory, self.pids) if p is not None))

    def describe(self) -> str:
        return f"cgroup v{self.version} " + ", ".join(str(p) for p in self.folders)

    def attach(self, pid: int) -> None:
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid))

    def oom_kills(self) -> int:
        if self.memory is None:
            return 0
        if self.version == 2:
            return _counter(self.memory / "memory.events", "oom_kill")
        return _counter(self.memory / "memory.oom_control", "oom_kill")

    def fork_refusals(self) -> int:
        return 0 if self.pids is None else _counter(self.pids / "pids.events", "max")

    def pids_inside(self) -> list[int]:
        pids: set[int] = set()
        for folder in self.folders:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in (folder / "cgroup.procs").read_text().split())
        return sorted(pids)

    def kill_all(self, tries: int = 50) -> bool:
        """SIGKILL every process left inside; whether it is empty now."""
        if self.version == 2 and self.memory is not None and (self.memory / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.memory / "cgroup.kill").write_text("1")
        for _ in range(tries):
            left = self.pids_inside()
            if not left:
                return True
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        return not self.pids_inside()

    def remove(self) -> None:
        self.kill_all()
        for folder in self.folders:
            for _ in range(50):  # the kernel frees a cgroup a moment after its last process exits
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        break
                    time.sleep(0.02)


def _counter(path: Path, name: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    return 0


def own_cgroups(text: str) -> dict[str, str]:
    """``/proc/self/cgroup`` as {controller: path}; the v2 entry is under ``""``."""
    found = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            found[controller] = path
    return found


def cgroup_mounts(text: str) -> dict[str, tuple[str, Path]]:
    """``/proc/self/mountinfo``'s cgroup mounts as {controller: (mounted root, mount point)}."""
    found: dict[str, tuple[str, Path]] = {}
    for line in text.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, mount_point, fstype, options = fields[3], Path(_unescape(fields[4])), tail[0], tail[2]
        if fstype == "cgroup2":
            found.setdefault("", (root, mount_point))
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in ("memory", "pids"):
                    found.setdefault(option, (root, mount_point))
    return found


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _folder(mounts: dict[str, tuple[str, Path]], own: dict[str, str], controller: str) -> Path | None:
    """Where this process's cgroup of ``controller`` is in the file system, if it is mounted."""
    if controller not in mounts or controller not in own:
        return None
    root, mount_point = mounts[controller]
    path = own[controller]
    if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None
    relative = path[len(root) :] if root != "/" else path
    return mount_point / relative.lstrip("/")


def find_cgroup_parent(configured: str = "") -> tuple[int, Path | None, Path | None] | None:
    """Where job cgroups can be made: (version, memory parent, pids parent), or None."""
    if configured == "off" or not Path("/proc/self/cgroup").exists():
        return None
    try:
        own = own_cgroups(Path("/proc/self/cgroup").read_text())
        mounts = cgroup_mounts(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return None
    if configured:
        parent = Path(configured)
        return (2, parent, parent) if _v2_usable(parent) else None
    v2 = _folder(mounts, own, "")
    if v2 is not None and v2 != mounts[""][1] and _v2_usable(v2.parent):
        return 2, v2.parent, v2.parent
    memory, pids = _folder(mounts, own, "memory"), _folder(mounts, own, "pids")
    memory = memory if memory is not None and _v1_usable(memory) else None
    pids = pids if pids is not None and _v1_usable(pids) else None
    if memory is None and pids is None:
        return None
    return 1, memory, pids


def _v2_usable(parent: Path) -> bool:
    """A writable v2 folder whose children get the memory and pids controllers (enabling them)."""
    try:
        controllers = (parent / "cgroup.controllers").read_text().split()
        if not {"memory", "pids"} <= set(controllers) or not os.access(parent, os.W_OK):
            return False
        enabled = (parent / "cgroup.subtree_control").read_text().split()
        missing = [c for c in ("memory", "pids") if c not in enabled]
        if missing:
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
    except OSError:
        return False
    return True


def _v1_usable(folder: Path) -> bool:
    return (folder / "cgroup.procs").exists() and os.access(folder, os.W_OK)


def make_cgroup(name: str, limits: Limits) -> Cgroup | None:
    """A fresh cgroup named ``name`` holding ``limits``; None where none can be made."""
    if not (limits.memory_mb or limits.processes):
        return None
    found = find_cgroup_parent(limits.cgroup)
    if found is None:
        return None
    version, memory_parent, pids_parent = found
    made: list[Path] = []
    try:
        memory = pids = None
        if limits.memory_mb and memory_parent is not None:
            memory = memory_parent / name
            memory.mkdir()
            made.append(memory)
            _set_memory(memory, version, limits.memory_mb * MB)
        if limits.processes and pids_parent is not None:
            pids = pids_parent / name
            if pids != memory:
                pids.mkdir()
                made.append(pids)
            (pids / "pids.max").write_text(str(limits.processes))
        if memory is None and pids is None:
            return None
        return Cgroup(version, memory, pids)
    except OSError:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        return None


def _set_memory(folder: Path, version: int, limit: int) -> None:
    if version == 2:
        (folder / "memory.max").write_text(str(limit))
        with contextlib.suppress(OSError):  # no swap, or swap accounting off: nothing to limit
            (folder / "memory.swap.max").write_text("0")
        with contextlib.suppress(OSError):  # an OOM kill ends the whole job, not one of its workers
            (folder / "memory.oom.group").write_text("1")
        return
    (folder / "memory.limit_in_bytes").write_text(str(limit))
    with contextlib.suppress(OSError):  # memory plus swap, where swap is accounted
        (folder / "memory.memsw.limit_in_bytes").write_text(str(limit))


# -- measuring the job from outside ---------------------------------------------------------------


def folder_bytes(folders: list[Path]) -> int:
    """Disk used by the files under ``folders`` (blocks, hard links once, links not followed)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(f) for f in folders]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
                if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                total += getattr(info, "st_blocks", 0) * 512 or info.st_size
    return total


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    session: int
    threads: int


def read_processes(proc: Path = Path("/proc")) -> dict[int, ProcessInfo]:
    found = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(proc):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"{entry.path}/stat", "rb") as f:
                    data = f.read()
                # The command name may hold spaces and parentheses: the fields follow the last ")".
                fields = data[data.rindex(b")") + 2 :].split()
                pid = int(entry.name)
                found[pid] = ProcessInfo(pid, int(fields[1]), int(fields[3]), int(fields[17]))
    return found


def job_processes(root: int, processes: dict[int, ProcessInfo]) -> list[ProcessInfo]:
    """The job's processes: ``root``'s descendants and whatever shares its session."""
    children: dict[int, list[int]] = {}
    for info in processes.values():
        children.setdefault(info.ppid, []).append(info.pid)
    mine = {root} if root in processes else set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in mine:
                mine.add(child)
                stack.append(child)
    mine.update(info.pid for info in processes.values() if info.session == root)
    return [processes[pid] for pid in sorted(mine)]


def proportional_memory(pid: int) -> int:
    """The process's share of the memory it uses (PSS), in bytes; 0 if it is gone."""
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    return 0


def private_tmpfs_bytes(processes: list[ProcessInfo]) -> int:
    """What the job's own ``/tmp`` and ``/dev/shm`` hold, where its sandbox gave it private ones.

    They live in memory, and no process's PSS shows them: read through ``/proc/<pid>/root``
    (the job's view of the file system), each file system once, never this process's own.
    """
    own = set()
    for path in ("/tmp", "/dev/shm"):  # noqa: S108 - this process's own, to leave them out
        with contextlib.suppress(OSError):
            own.add(os.stat(path).st_dev)
    seen: set[int] = set()
    total = 0
    for info in processes:  # all in one sandbox see the same two: stop once both are found
        if len(seen) == 2:
            break
        for path in ("tmp", "dev/shm"):
            folder = f"/proc/{info.pid}/root/{path}"
            with contextlib.suppress(OSError):
                device = os.stat(folder).st_dev
                if device in own or device in seen:
                    continue
                seen.add(device)
                usage = os.statvfs(folder)
                total += (usage.f_blocks - usage.f_bfree) * usage.f_frsize
    return total


def cgroup_name(jobs_dir: Path, job_id: object, supervisor_pid: int | None) -> str:
    """A job's cgroup: named after its server (by the jobs folder), the job and its supervisor,
    so no two servers on a machine (nor two runs of one job) share one. Without a pid: the
    prefix of every cgroup of that job."""
    import hashlib

    server = hashlib.sha256(str(jobs_dir.resolve()).encode()).hexdigest()[:8]
    return f"trainflow-{server}-job{job_id}-" + (str(supervisor_pid) if supervisor_pid else "")


def remove_leftover_cgroups(limits: Limits, jobs_dir: Path, job_id: object) -> int:
    """Kill what is left in the cgroups of a job whose supervisor vanished, and remove them."""
    found = find_cgroup_parent(limits.cgroup) if (limits.memory_mb or limits.processes) else None
    if found is None:
        return 0
    version, memory_parent, pids_parent = found
    prefix = cgroup_name(jobs_dir, job_id, None)
    removed = 0
    for parent, is_memory in ((memory_parent, True), (pids_parent, False)):
        if parent is None or (version == 2 and not is_memory):
            continue  # v2: one folder holds both
        with contextlib.suppress(OSError):
            for entry in os.scandir(parent):
                if entry.is_dir(follow_symlinks=False) and entry.name.startswith(prefix):
                    folder = Path(entry.path)
                    Cgroup(version, folder, folder if version == 2 else None).remove()
                    removed += 1
    return removed


def describe_enforcement(limits: Limits) -> str:
    """One line for the server's start: each job's limits and what will hold each on this machine."""
    probe = JobLimits(limits, Path("."), "")
    found = find_cgroup_parent(limits.cgroup) if (limits.memory_mb or limits.processes) else None
    if found is not None:
        version, memory, pids = found
        probe.cgroup = Cgroup(
            version, memory if limits.memory_mb else None, pids if limits.processes else None
        )
    return (
        probe.describe()
        .replace("trainflow: limits: ", "Each job's limits: ", 1)
        .replace("; cgroup", "; its cgroup goes under cgroup", 1)
    )


# -- the supervisor's side ------------------------------------------------------------------------


class JobLimits:
    """One job's limits as the supervisor enforces them, from its start to its cleanup."""

    def __init__(self, limits: Limits, job_dir: Path, name: str) -> None:
        self.limits = limits
        self.job_dir = job_dir
        self.name = name
        self.cgroup: Cgroup | None = None
        self.reason: str | None = None
        self._next_disk = 0.0
        self._next_processes = 0.0
        self._next_memory = 0.0
        self.peak_processes = 0
        self.disk_bytes = 0

    @property
    def has_memory_cgroup(self) -> bool:
        return self.cgroup is not None and self.cgroup.memory is not None

    @property
    def has_pids_cgroup(self) -> bool:
        return self.cgroup is not None and self.cgroup.pids is not None

    def start(self) -> None:
        """Make the job's cgroup, where one can be made."""
        self.cgroup = make_cgroup(self.name, self.limits)

    def mechanisms(self) -> dict[str, str]:
        """Which mechanism enforces each limit (for the log and status.json)."""
        found = {}
        cgroup = f"cgroup v{self.cgroup.version}" if self.cgroup else ""
        if self.limits.memory_mb:
            found["memory"] = cgroup if self.has_memory_cgroup else "rlimit (per process) + supervisor"
        if self.limits.processes:
            found["processes"] = (
                cgroup if self.has_pids_cgroup else "rlimit (in the job's user namespace) + supervisor"
            )
        if self.limits.open_files:
            found["open_files"] = "rlimit"
        if self.limits.disk_mb:
            found["disk"] = "supervisor + rlimit (file size)"
        return found

    def describe(self) -> str:
        """One line for the job's log, naming the limits and what enforces each."""
        limits = self.limits
        shown = {
            "memory": f"{limits.memory_mb} MB of memory",
            "processes": f"{limits.processes} processes and threads",
            "open_files": f"{limits.open_files} open files",
            "disk": f"{limits.disk_mb} MB of disk",
        }
        parts = [f"{shown[key]} ({how})" for key, how in self.mechanisms().items()]
        where = f"; {self.cgroup.describe()}" if self.cgroup else ""
        return "trainflow: limits: " + (", ".join(parts) if parts else "none") + where

    def rlimits(self) -> dict[str, int]:
        """The ``limits`` the launcher applies with :func:`apply_rlimits`."""
        return rlimits_for(
            self.limits, has_memory_cgroup=self.has_memory_cgroup, has_pids_cgroup=self.has_pids_cgroup
        )

    def preexec(self) -> None:
        """In the job's first process, before it execs: join the job's cgroup.

        If it cannot, the job must not run unbounded: this process says why on its stderr (the
        job's log) and exits 126 before the job starts.
        """
        if self.cgroup is not None:
            try:
                self.cgroup.attach(os.getpid())
            except OSError as e:
                os.write(2, f"trainflow: could not put the job in its cgroup: {e}\n".encode())
                os._exit(126)

    def check(self, pid: int | None, now: float | None = None) -> str | None:
        """The limit the job has exceeded, if any; called often, measures at its own pace."""
        if self.reason is not None:
            return self.reason
        now = time.monotonic() if now is None else now
        self.reason = self._check_cgroup() or self._check_disk(now)
        if self.reason is None and pid and now >= min(self._next_processes, self._next_memory):
            self.reason = self._check_processes(pid, now)
        return self.reason

    def _check_cgroup(self) -> str | None:
        if self.cgroup is None:
            return None
        if self.cgroup.oom_kills():
            return MEMORY_LIMIT
        if self.cgroup.fork_refusals():
            return PROCESS_LIMIT
        return None

    def _check_disk(self, now: float) -> str | None:
        if not self.limits.disk_mb or now < self._next_disk:
            return None
        started = time.monotonic()
        used = folder_bytes([self.job_dir / name for name in JOB_FOLDERS])
        limit = self.limits.disk_mb * MB
        # Past half the limit, look four times as often. A folder of millions of files takes a
        # while to walk: then walk it less often.
        every = DISK_EVERY_S if used < limit // 2 else DISK_EVERY_S / 4
        self._next_disk = now + max(every, 20 * (time.monotonic() - started))
        self.disk_bytes = used
        return DISK_LIMIT if used > limit else None

    def _check_processes(self, pid: int, now: float) -> str | None:
        wants_count = self.limits.processes and not self.has_pids_cgroup
        wants_memory = self.limits.memory_mb and not self.has_memory_cgroup
        if not wants_count:
            self._next_processes = float("inf")
        if not wants_memory:
            self._next_memory = float("inf")
        if not (wants_count or wants_memory):
            return None
        mine = job_processes(pid, read_processes())
        if wants_count and now >= self._next_processes:
            self._next_processes = now + PROCESSES_EVERY_S
            count = sum(info.threads for info in mine)
            self.peak_processes = max(self.peak_processes, count)
            if count >= self.limits.processes:
                return PROCESS_LIMIT
        if wants_memory and now >= self._next_memory:
            self._next_memory = now + MEMORY_EVERY_S
            used = sum(proportional_memory(info.pid) for info in mine) + private_tmpfs_bytes(mine)
            if used > self.limits.memory_mb * MB:
                return MEMORY_LIMIT
        return None

    def final_reason(self, exit_code: int | None, signal_number: int | None) -> str | None:
        """After the job's exit: the limit that ended it, if one did."""
        if self.reason is not None:
            return self.reason
        reason = self._check_cgroup()
        if reason is None and signal_number == getattr(signal, "SIGXFSZ", None) and self.limits.disk_mb:
            reason = DISK_LIMIT
        if reason is None and self.limits.disk_mb:
            self._next_disk = 0.0
            reason = self._check_disk(time.monotonic())
        if reason is None and exit_code:
            reason = self._read_failure()
        self.reason = reason
        return reason

    def _read_failure(self) -> str | None:
        """A job that failed at an rlimit usually says so last on stderr; read its log's end."""
        wants_memory = self.limits.memory_mb and not self.has_memory_cgroup
        if not (wants_memory or self.limits.open_files or self.limits.disk_mb):
            return None
        for line in reversed(_last_stderr_lines(self.job_dir / "logs.ndjson")):
            if wants_memory and any(text in line for text in _OUT_OF_MEMORY):
                return MEMORY_LIMIT
            if self.limits.disk_mb and any(text in line for text in _FILE_TOO_LARGE):
                return DISK_LIMIT
            if self.limits.open_files and any(text in line for text in _OUT_OF_FILES):
                return OPEN_FILES_LIMIT
        return None

    def kill_all(self) -> None:
        """SIGKILL every process in the job's cgroup (those that left its process group too)."""
        if self.cgroup is not None:
            self.cgroup.kill_all(tries=5)

    def close(self) -> None:
        """Kill whatever the job left in its cgroup and remove it."""
        if self.cgroup is not None:
            self.cgroup.remove()


def _last_stderr_lines(path: Path, count: int = 20, tail: int = 64 * 1024) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail))
            data = f.read()
    except OSError:
        return []
    lines = []
    for raw in data.splitlines()[-200:]:
        with contextlib.suppress(ValueError):
            record = json.loads(raw)
            if isinstance(record, dict) and record.get("stream") == "stderr":
                lines.append(str(record.get("line", "")))
    return lines[-count:]
