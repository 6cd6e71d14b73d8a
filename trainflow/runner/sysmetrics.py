"""A job's own CPU, memory and GPU use, sampled by its supervisor from outside the job.

Standard library only (the supervisor imports it). Every ``every_s`` seconds the supervisor
reads ``/proc`` for the job's processes: the job's first process (bubblewrap's, for a sandboxed
job), its descendants and whatever shares its session, found by parent pid in this PID
namespace, so a sandboxed job's PID namespace is no obstacle; and, where the job has a cgroup,
every process in it (one that started a session of its own and lost its parent has left the
tree, not the cgroup). Figures are the job's, not the machine's:

- ``cpu_percent``: CPU time the job's processes used since the last sample, per second of wall
  time, as a percentage of one core (a job keeping two cores busy reads 200). Each process counts
  its own time and that of the children it has waited for, so time spent in a short-lived child
  is not lost when the child exits.
- ``rss_mb``: the resident memory of the job's processes, summed (shared pages count in each).
- ``gpus``: per device the job was given (:mod:`trainflow.runner.nvml`), its utilisation and the
  memory the job holds; none without NVML.

A sample is an event (``system``) in the job's stream, and goes to the job's MLflow run under
MLflow's own system-metric keys (:mod:`trainflow.runner.runlog`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trainflow.runner.enforcement import ProcessInfo, job_processes
from trainflow.runner.nvml import GpuReading, Nvml, open_nvml, visible_devices

NVML_LIBRARY = "libnvidia-ml.so.1"
MB = 1024 * 1024
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcessStat:
    info: ProcessInfo
    cpu_ticks: int  # its own CPU time and its waited-for children's, in clock ticks
    rss_bytes: int


@dataclass(frozen=True)
class Sample:
    """What the job used, at ``ts``."""

    ts: float
    cpu_percent: float
    rss_mb: float
    processes: int
    gpus: list[GpuReading] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        """The ``system`` event's fields (besides ``type`` and ``ts``)."""
        found: dict[str, Any] = {
            "cpu_percent": round(self.cpu_percent, 1),
            "rss_mb": round(self.rss_mb, 1),
            "processes": self.processes,
        }
        if self.gpus:
            found["gpus"] = [
                {
                    "device": gpu.device,
                    "id": gpu.id,
                    "utilization_percent": round(gpu.utilization_percent, 1),
                    "memory_used_mb": round(gpu.memory_used_mb, 1),
                    "memory_total_mb": round(gpu.memory_total_mb, 1),
                }
                for gpu in self.gpus
            ]
        return found


def read_stats(proc: str = "/proc") -> dict[int, ProcessStat]:
    """Every process this PID namespace shows: its parent, session, CPU time and memory."""
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
                info = ProcessInfo(pid, int(fields[1]), int(fields[3]), int(fields[17]))
                ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
                found[pid] = ProcessStat(info, ticks, int(fields[21]) * _PAGE)
    return found


class SystemSampler:
    """Samples one job's processes at its own pace; the supervisor asks it on every loop."""

    def __init__(self, every_s: float, devices: list[str], nvml_library: str = NVML_LIBRARY) -> None:
        self.every_s = every_s
        self.devices = devices
        self.nvml_library = nvml_library
        self.nvml: Nvml | None = None
        self._is_nvml_tried = False
        self._last: tuple[float, dict[int, int]] | None = None  # (monotonic, ticks per pid)
        self._next = 0.0

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> SystemSampler | None:
        """The sampler a job's spec asks for (``"system_metrics": {"every_s", "nvml"}``); None: off,
        as for a spec that does not ask (the server's executors always say)."""
        config = spec.get("system_metrics") or {}
        every = float(config.get("every_s") or 0)
        if every <= 0:
            return None
        devices = visible_devices((spec.get("env") or {}).get("CUDA_VISIBLE_DEVICES"))
        return cls(every, devices, str(config.get("nvml", NVML_LIBRARY) or ""))

    def start(self, root: int, now: float | None = None, also: Iterable[int] = ()) -> None:
        """The job has started as ``root``: take the baseline the first CPU figure is measured from.

        ``also``: pids known to be the job's besides ``root``'s tree (its cgroup's, where it has
        one: a process that left the tree by starting a session of its own is still in there).
        """
        now = time.monotonic() if now is None else now
        stats = read_stats()
        self._last = (now, self._ticks(self._mine(root, stats, also), stats))
        self._next = now + self.every_s

    def is_due(self, now: float) -> bool:
        return self._last is not None and now >= self._next

    def sample(self, root: int, now: float | None = None, also: Iterable[int] = ()) -> Sample:
        """The job's use since the last sample (or the start); ``also`` as for :meth:`start`."""
        now = time.monotonic() if now is None else now
        stats = read_stats()
        mine = self._mine(root, stats, also)
        ticks = self._ticks(mine, stats)
        previous_at, previous = self._last or (now, ticks)
        elapsed = max(now - previous_at, 1e-3)
        # In all, not per process: a child that exited and was waited for leaves the set, and its
        # whole time reappears in its parent's children's time, so the sum moves by what it used
        # since the last sample. A process that left the job (its time gone with it) can make the
        # sum fall: that interval then reads as no more than what the rest used, never below 0.
        used = max(sum(ticks.values()) - sum(previous.values()), 0)
        self._last = (now, ticks)
        self._next = now + self.every_s
        rss = sum(stats[info.pid].rss_bytes for info in mine if info.pid in stats)
        return Sample(
            ts=time.time(),
            cpu_percent=100.0 * used / _TICKS / elapsed,
            rss_mb=rss / MB,
            processes=len(mine),
            gpus=self._gpus({info.pid for info in mine}),
        )

    def _gpus(self, pids: set[int]) -> list[GpuReading]:
        if not self._is_nvml_tried:
            self._is_nvml_tried = True
            self.nvml = open_nvml(self.nvml_library, self.devices)
        if self.nvml is None:
            return []
        try:
            return self.nvml.read(pids)
        except OSError:
            return []

    def close(self) -> None:
        if self.nvml is not None:
            self.nvml.close()
            self.nvml = None

    @staticmethod
    def _mine(root: int, stats: dict[int, ProcessStat], also: Iterable[int]) -> list[ProcessInfo]:
        mine = job_processes(root, {pid: stat.info for pid, stat in stats.items()})
        seen = {info.pid for info in mine}
        return mine + [stats[pid].info for pid in sorted(set(also) - seen) if pid in stats]

    @staticmethod
    def _ticks(mine: list[ProcessInfo], stats: dict[int, ProcessStat]) -> dict[int, int]:
        return {info.pid: stats[info.pid].cpu_ticks for info in mine if info.pid in stats}
