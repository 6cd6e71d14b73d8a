"""The GPU figures of a job's devices, read through NVML with ctypes (standard library only).

The supervisor imports nothing outside the standard library, so NVIDIA's ``pynvml`` is out: the
few NVML functions needed are called through :mod:`ctypes` on the driver's own
``libnvidia-ml.so.1`` (or the library a setting names, such as a test's stub). Where the library
is missing or NVML does not start (no driver, no GPU), :func:`open_nvml` returns None and the job
simply reports no GPU figures: never an error.

A job's devices are its ``CUDA_VISIBLE_DEVICES``: indices (NVML's numbering, which is what the
scheduler hands out of ``TRAINFLOW_GPUS``) or ``GPU-...`` / ``MIG-...`` UUIDs. Utilisation is the
device's (NVML has no per-process figure for it, and a job's GPUs are its own); memory is what
the job's processes hold on the device when NVML lists them, else (no list, or none of the
listed pids in this PID namespace) the device's used memory.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Collection
from dataclasses import dataclass

SUCCESS = 0
ERROR_INSUFFICIENT_SIZE = 7
NOT_AVAILABLE = 0xFFFFFFFFFFFFFFFF  # NVML_VALUE_NOT_AVAILABLE for a process's memory
MB = 1024 * 1024
MAX_PROCESSES = 256


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class _Process(ctypes.Structure):
    """``nvmlProcessInfo_t`` as the ``_v2`` and ``_v3`` calls fill it."""

    _fields_ = [
        ("pid", ctypes.c_uint),
        ("usedGpuMemory", ctypes.c_ulonglong),
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    ]


@dataclass(frozen=True)
class GpuReading:
    """One device at one moment, as the job sees it (``device``: its CUDA device number)."""

    device: int
    id: str  # as CUDA_VISIBLE_DEVICES names it
    utilization_percent: float
    memory_used_mb: float
    memory_total_mb: float


def visible_devices(value: str | None) -> list[str]:
    """The devices ``CUDA_VISIBLE_DEVICES`` names, in the job's order; none for unset or empty.

    CUDA stops at the first entry it cannot read (``-1`` hides every device), and so does this.
    """
    devices: list[str] = []
    for raw in (value or "").split(","):
        entry = raw.strip()
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        devices.append(entry)
    return devices


class Nvml:
    """The loaded library and the handles of a job's devices."""

    def __init__(self, library: ctypes.CDLL, devices: list[str]) -> None:
        self.library = library
        self.handles: list[tuple[str, ctypes.c_void_p]] = []
        for entry in devices:
            handle = ctypes.c_void_p()
            if entry.isdigit():
                code = library.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(int(entry)), ctypes.byref(handle))
            else:
                code = library.nvmlDeviceGetHandleByUUID(entry.encode(), ctypes.byref(handle))
            if code == SUCCESS:
                self.handles.append((entry, handle))
        self._process_call = self._find_process_call()

    def _find_process_call(self) -> object | None:
        for name in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"):
            with contextlib.suppress(AttributeError):
                return getattr(self.library, name)  # type: ignore[no-any-return]
        return None

    def read(self, pids: Collection[int]) -> list[GpuReading]:
        """Each of the job's devices now; ``pids``: the job's processes, for their memory."""
        readings = []
        for device, (entry, handle) in enumerate(self.handles):
            utilization = _Utilization()
            memory = _Memory()
            if self.library.nvmlDeviceGetUtilizationRates(handle, ctypes.byref(utilization)) != SUCCESS:
                continue
            if self.library.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != SUCCESS:
                continue
            held = self._processes_memory(handle, pids)
            used = memory.used if held is None else held
            readings.append(GpuReading(device, entry, float(utilization.gpu), used / MB, memory.total / MB))
        return readings

    def _processes_memory(self, handle: ctypes.c_void_p, pids: Collection[int]) -> int | None:
        """Bytes the job's processes hold on the device; None where NVML cannot say."""
        call = self._process_call
        if call is None:
            return None
        size = 32
        while size <= MAX_PROCESSES:
            count = ctypes.c_uint(size)
            infos = (_Process * size)()
            code = call(handle, ctypes.byref(count), infos)  # type: ignore[operator]
            if code == ERROR_INSUFFICIENT_SIZE:  # more processes than room: count says how many
                size = max(size * 2, count.value)
                continue
            if code != SUCCESS:
                return None
            listed = infos[: count.value]
            ours = [info for info in listed if info.pid in pids]
            if listed and not ours:
                # Processes, none of them the job's by pid: NVML names them in the machine's
                # PID namespace, which is not this one's where the server runs in a container.
                # The device is the job's alone: its figure then.
                return None
            if any(info.usedGpuMemory == NOT_AVAILABLE for info in ours):
                return None  # hidden from this process: the device's figure then
            return sum(int(info.usedGpuMemory) for info in ours)
        return None

    def close(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            self.library.nvmlShutdown()


def open_nvml(library: str, devices: list[str]) -> Nvml | None:
    """NVML for ``devices``, or None: no devices, no library, or NVML does not start."""
    if not devices or not library:
        return None
    try:
        loaded = ctypes.CDLL(library)
        if loaded.nvmlInit_v2() != SUCCESS:
            return None
    except (OSError, AttributeError):
        return None
    nvml = Nvml(loaded, devices)
    if not nvml.handles:
        nvml.close()
        return None
    return nvml
