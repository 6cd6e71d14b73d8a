"""A stand-in for NVIDIA's NVML: a tiny C library with fixed answers, built with gcc in a test.

It exports the functions :mod:`trainflow.runner.nvml` calls. Devices 0-3 exist (and
``GPU-stub-3``, which is device 3): device ``i`` is ``10 * (i + 1)`` % busy and has
``1000 * (i + 1)`` MB of its 16384 MB in use. ``nvmlDeviceGetComputeRunningProcesses_v3``
answers NOT_SUPPORTED unless ``STUB_NVML_PIDS`` names a file of pids: then each of those pids
holds 256 MB on every device, beside pid 1 holding 999 MB (a process of someone else).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IS_CI

SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned int gpu, memory; } utilization_t;
typedef struct { unsigned long long total, free, used; } memory_t;
typedef struct { unsigned int pid; unsigned long long used; unsigned int gi, ci; } process_t;

int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **handle) {
    if (index > 3) return 2;
    *handle = (void *)(size_t)(index + 1);
    return 0;
}

int nvmlDeviceGetHandleByUUID(const char *uuid, void **handle) {
    if (strcmp(uuid, "GPU-stub-3") != 0) return 6;
    *handle = (void *)(size_t)4;
    return 0;
}

int nvmlDeviceGetUtilizationRates(void *handle, utilization_t *rates) {
    rates->gpu = 10 * (unsigned int)(size_t)handle;
    rates->memory = 5;
    return 0;
}

int nvmlDeviceGetMemoryInfo(void *handle, memory_t *memory) {
    memory->total = 16384ULL << 20;
    memory->used = (1000ULL * (size_t)handle) << 20;
    memory->free = memory->total - memory->used;
    return 0;
}

int nvmlDeviceGetComputeRunningProcesses_v3(void *handle, unsigned int *count, process_t *infos) {
    const char *path = getenv("STUB_NVML_PIDS");
    unsigned int pids[64], n = 0, pid;
    FILE *f;
    if (path == NULL) return 3;
    f = fopen(path, "r");
    if (f == NULL) return 999;
    while (n < 63 && fscanf(f, "%u", &pid) == 1) pids[n++] = pid;
    fclose(f);
    pids[n++] = 1;
    if (*count < n) { *count = n; return 7; }
    for (unsigned int i = 0; i < n; i++) {
        infos[i].pid = pids[i];
        infos[i].used = (pids[i] == 1 ? 999ULL : 256ULL) << 20;
        infos[i].gi = infos[i].ci = 0;
    }
    *count = n;
    return 0;
}
"""


def build_stub(folder: Path) -> Path:
    """Compile the stub into ``folder``; the path of the shared library."""
    gcc = shutil.which("gcc")
    if gcc is None:
        if IS_CI:
            pytest.fail("gcc is not installed; under CI nothing may skip")
        pytest.skip("gcc is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "nvml_stub.c"
    source.write_text(SOURCE)
    library = folder / "libnvidia-ml-stub.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True)
    library.chmod(0o755)
    return library
