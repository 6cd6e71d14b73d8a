"""A job's own CPU, memory and GPU use, sampled by its supervisor (issue 14)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.runner.nvml_stub import build_stub
from tests.runner.supervision import read_status, supervisor_command, write_job
from trainflow.runner import nvml
from trainflow.runner.runlog import RunLog, metrics_of
from trainflow.runner.sysmetrics import Sample, SystemSampler

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")

# Keeps one core busy and 200 MB resident, in a child process (so the tree is summed), for a while.
BURNER = """
import multiprocessing, sys, time

def burn(seconds):
    held = bytearray(200 * 1024 * 1024)
    for i in range(0, len(held), 4096):
        held[i] = 1  # touched: resident, not only reserved
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass

if __name__ == "__main__":
    child = multiprocessing.get_context("fork").Process(target=burn, args=(float(sys.argv[1]),))
    child.start()
    child.join()
    print("burnt", flush=True)
"""


def core_floor() -> float:
    """The least CPU % a process burning a core gets: most of a core where a core is free; a
    share where every core is busy (the first test holds the figure to the kernel's own count)."""
    return 50 if os.getloadavg()[0] < (os.cpu_count() or 1) - 1 else 10


@pytest.fixture(scope="module")
def stub(tmp_path_factory) -> Path:
    return build_stub(tmp_path_factory.mktemp("nvml"))


def system_events(folder: Path) -> list[dict]:
    events = [json.loads(line) for line in (folder / "events.ndjson").read_text().splitlines()]
    return [event for event in events if event["type"] == "system"]


# -- sampling --------------------------------------------------------------------------------------


def scheduled_ns(pid: int) -> int:
    """The kernel scheduler's own count of a process's CPU time (its threads', in ns): a second
    witness, read from another file than the sampler reads."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total


def tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid] + [p for child in children for p in tree(int(child))]


@pytest.mark.serial
def test_a_process_tree_burning_a_core_and_holding_200_mb_reads_as_such(tmp_path):
    (tmp_path / "burn.py").write_text(BURNER)
    process = subprocess.Popen([sys.executable, str(tmp_path / "burn.py"), "5"], start_new_session=True)
    try:
        sampler = SystemSampler(0.5, [])
        time.sleep(1.5)  # the child has filled its 200 MB
        pids = tree(process.pid)
        before, started = sum(scheduled_ns(pid) for pid in pids), time.monotonic()
        sampler.start(process.pid)
        time.sleep(2.0)
        sample = sampler.sample(process.pid)
        witnessed = (
            100 * (sum(scheduled_ns(pid) for pid in pids) - before) / 1e9 / (time.monotonic() - started)
        )
    finally:
        process.kill()
        process.wait()
    # What the kernel gave the tree: a core on an idle machine, less where every core is busy.
    assert sample.cpu_percent == pytest.approx(witnessed, abs=15)
    assert sample.cpu_percent > core_floor()
    assert sample.rss_mb > 150
    assert sample.processes == 2
    assert sample.gpus == []


def test_an_idle_process_uses_no_cpu(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        time.sleep(0.3)  # past the interpreter's start
        sampler = SystemSampler(0.5, [])
        sampler.start(process.pid)
        time.sleep(0.6)
        sample = sampler.sample(process.pid)
    finally:
        process.kill()
        process.wait()
    assert sample.cpu_percent < 20
    assert 0 < sample.rss_mb < 100


def test_sampling_is_off_when_the_spec_says_zero():
    assert SystemSampler.from_spec({"system_metrics": {"every_s": 0}}) is None


def test_the_spec_names_the_pace_and_the_jobs_gpus():
    sampler = SystemSampler.from_spec(
        {"system_metrics": {"every_s": 2, "nvml": "x.so"}, "env": {"CUDA_VISIBLE_DEVICES": "2,GPU-ab"}}
    )
    assert sampler is not None
    assert sampler.every_s == 2
    assert sampler.devices == ["2", "GPU-ab"]


@pytest.mark.parametrize(
    ("value", "devices"),
    [
        (None, []),
        ("", []),
        ("-1", []),
        ("0", ["0"]),
        ("1, 3", ["1", "3"]),
        ("0,x,1", ["0"]),
        ("MIG-a", ["MIG-a"]),
    ],
)
def test_cuda_visible_devices_are_read_as_cuda_reads_them(value, devices):
    assert nvml.visible_devices(value) == devices


# -- GPUs through NVML (a stub library with fixed answers) ------------------------------------------


def test_without_the_nvml_library_there_are_no_gpu_figures_and_no_error(tmp_path):
    sampler = SystemSampler(1, ["0"], str(tmp_path / "no-such-libnvidia-ml.so"))
    sampler.start(os.getpid())
    assert sampler.sample(os.getpid()).gpus == []


def test_each_assigned_gpu_reports_its_utilisation_and_used_memory(stub):
    sampler = SystemSampler(1, ["2", "GPU-stub-3"], str(stub))
    sampler.start(os.getpid())
    gpus = sampler.sample(os.getpid()).gpus
    assert [gpu.device for gpu in gpus] == [0, 1]  # as the job numbers them
    assert [gpu.id for gpu in gpus] == ["2", "GPU-stub-3"]
    assert [gpu.utilization_percent for gpu in gpus] == [30.0, 40.0]
    assert [gpu.memory_used_mb for gpu in gpus] == [3000.0, 4000.0]  # the device's: no process list
    assert [gpu.memory_total_mb for gpu in gpus] == [16384.0, 16384.0]


def test_gpu_memory_is_the_jobs_processes_where_nvml_lists_them(stub, tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    pids.write_text(f"{os.getpid()}\n")
    monkeypatch.setenv("STUB_NVML_PIDS", str(pids))
    sampler = SystemSampler(1, ["0"], str(stub))
    sampler.start(os.getpid())
    (gpu,) = sampler.sample(os.getpid()).gpus
    assert gpu.memory_used_mb == 256.0  # not pid 1's 999 MB, nor the device's 1000


def test_an_unknown_device_is_left_out(stub):
    sampler = SystemSampler(1, ["7", "1"], str(stub))
    sampler.start(os.getpid())
    assert [gpu.id for gpu in sampler.sample(os.getpid()).gpus] == ["1"]


# -- the supervisor: samples in the job's events --------------------------------------------------


@pytest.mark.serial
def test_a_jobs_samples_are_events_of_its_stream(tmp_path):
    write_job(tmp_path, BURNER, argv=[sys.executable, "-u", "train.py", "3"], system_metrics={"every_s": 0.5})
    assert subprocess.run(supervisor_command(tmp_path), timeout=60).returncode == 0
    assert read_status(tmp_path)["exit_code"] == 0
    samples = system_events(tmp_path)
    assert len(samples) >= 3
    assert max(sample["cpu_percent"] for sample in samples) > core_floor()
    assert max(sample["rss_mb"] for sample in samples) > 150
    assert all("gpus" not in sample for sample in samples)


def test_a_job_given_a_gpu_reports_it(tmp_path, stub):
    write_job(
        tmp_path,
        "import time; time.sleep(1.5)",
        env={"PATH": os.environ["PATH"], "CUDA_VISIBLE_DEVICES": "1"},
        system_metrics={"every_s": 0.4, "nvml": str(stub)},
    )
    assert subprocess.run(supervisor_command(tmp_path), timeout=60).returncode == 0
    gpus = system_events(tmp_path)[0]["gpus"]
    assert gpus == [
        {
            "device": 0,
            "id": "1",
            "utilization_percent": 20.0,
            "memory_used_mb": 2000.0,
            "memory_total_mb": 16384.0,
        }
    ]


def test_no_samples_when_turned_off(tmp_path):
    write_job(tmp_path, "import time; time.sleep(1); print(1)", system_metrics={"every_s": 0})
    assert subprocess.run(supervisor_command(tmp_path), timeout=60).returncode == 0
    assert system_events(tmp_path) == []


# -- the MLflow run ---------------------------------------------------------------------------------


def test_a_sample_becomes_mlflows_system_metrics():
    sample = Sample(
        ts=1700000000.5,
        cpu_percent=150.0,
        rss_mb=210.0,
        processes=2,
        gpus=[nvml.GpuReading(0, "3", 42.0, 4096.0, 16384.0)],
    )
    metrics = {m["key"]: m["value"] for m in metrics_of(sample, 7)}
    assert metrics == {
        "system/cpu_utilization_percentage": 150.0,
        "system/process_rss_megabytes": 210.0,
        "system/gpu_0_utilization_percentage": 42.0,
        "system/gpu_0_memory_usage_megabytes": 4096.0,
        "system/gpu_0_memory_usage_percentage": 25.0,
    }
    assert {(m["timestamp"], m["step"]) for m in metrics_of(sample, 7)} == {(1700000000500, 7)}


def test_an_unreachable_server_never_holds_up_the_supervisor():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runlog = RunLog(f"http://127.0.0.1:{port}", "run", "token", timeout_s=1)
    started = time.monotonic()
    for _ in range(100):
        runlog.add(Sample(ts=time.time(), cpu_percent=1.0, rss_mb=1.0, processes=1))
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    runlog.close(wait_s=0.5)
    assert time.monotonic() - started < 1.5
    assert runlog.sent == 0


@pytest.mark.serial
def test_sandboxed_jobs_are_sampled_too(tmp_path):
    """The sandbox's PID namespace: its processes are found from outside, by parent pid."""
    import shutil

    from trainflow.jobs import sandboxing
    from trainflow.settings import Settings

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (make install)")
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret_key").write_text("the-servers-key")
    settings = Settings(data_dir=data)
    folder = settings.jobs_dir / "1"
    for name in ("work", "output", "tmp", "home"):
        (folder / name).mkdir(parents=True)
    (folder / "work" / "train.py").write_text(textwrap.dedent(BURNER))
    policy = sandboxing.job_policy(settings, folder, None, None)
    sandboxing.grant_folders(settings, folder)
    write_job(
        folder,
        BURNER,
        argv=[sys.executable, "-u", "train.py", "3"],
        env={"PATH": os.environ["PATH"], "HOME": str(folder / "home")},
        sandbox=policy,
        grace_s=2,
        system_metrics={"every_s": 0.5},
    )
    assert subprocess.run(supervisor_command(folder), timeout=60).returncode == 0
    assert read_status(folder)["sandbox"]["no_new_privs"] is True
    samples = system_events(folder)
    assert max(sample["cpu_percent"] for sample in samples) > core_floor()
    assert max(sample["rss_mb"] for sample in samples) > 150


def test_with_the_ingest_samples_and_a_missing_module_go_to_the_servers(tmp_path):
    """Shared mode and Ray: the supervisor sends its samples, and the module its job missed,
    through the ingest (a server of the test's own speaking its protocol)."""
    from tests.runner.test_ingest_sink import TOKEN, FakeIngest

    ingest = FakeIngest()
    try:
        write_job(
            tmp_path,
            "import time; time.sleep(1.5)\nimport cv2\n",
            grace_s=2,
            ingest={"url": ingest.url, "token": TOKEN},
            system_metrics={"every_s": 0.4},
        )
        assert subprocess.run(supervisor_command(tmp_path), timeout=60).returncode == 0
    finally:
        ingest.stop()
    samples = [event for event in ingest.events if event["type"] == "system"]
    assert len(samples) >= 2
    assert all(sample["rss_mb"] > 0 for sample in samples)
    assert ingest.statuses[-1]["exit_code"] == 1
    assert ingest.statuses[-1]["missing_module"] == "cv2"


ESCAPER = """
import os, time

if os.fork() == 0:
    os.setsid()  # a session of its own, and (its parent gone) no longer the job's descendant
    if os.fork() == 0:
        held = bytearray(200 * 1024 * 1024)
        for i in range(0, len(held), 4096):
            held[i] = 1
        time.sleep(3)
    os._exit(0)
time.sleep(2.5)
print("done", flush=True)
"""


def test_a_process_that_left_the_jobs_tree_is_counted_through_its_cgroup(tmp_path):
    from trainflow.runner.enforcement import find_cgroup_parent

    if find_cgroup_parent() is None:
        pytest.skip("no cgroup can be made here (root with cgroups, or a delegated v2 subtree)")
    write_job(tmp_path, ESCAPER, limits={"memory_mb": 4096}, system_metrics={"every_s": 0.5})
    assert subprocess.run(supervisor_command(tmp_path), timeout=60).returncode == 0
    assert max(sample["rss_mb"] for sample in system_events(tmp_path)) > 150


def test_gpu_memory_is_the_devices_when_no_listed_pid_is_the_jobs(stub, tmp_path, monkeypatch):
    """Where the server runs in a container, NVML names processes by the machine's pids."""
    pids = tmp_path / "pids"
    pids.write_text("4000000\n")  # no process of this PID namespace
    monkeypatch.setenv("STUB_NVML_PIDS", str(pids))
    sampler = SystemSampler(1, ["0"], str(stub))
    sampler.start(os.getpid())
    (gpu,) = sampler.sample(os.getpid()).gpus
    assert gpu.memory_used_mb == 1000.0
