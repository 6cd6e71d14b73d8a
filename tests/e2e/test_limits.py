"""Per-job limits tripped by real jobs on the real server: each ends FAILED, naming its limit (issue 10).

Every job here runs with its limits on; the fork bombs are also bounded by themselves (a depth
or the kernel's pids cgroup), so a broken limit fails the test instead of the machine.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.test_jobs import ADMIN, PASSWORD, TRAIN, Api
from trainflow.runner import enforcement

pytestmark = [pytest.mark.e2e, pytest.mark.serial]  # it measures latency or load

LIMITS = {
    "TRAINFLOW_JOB_MEMORY_MB": "200",
    "TRAINFLOW_JOB_MAX_PROCESSES": "64",
    "TRAINFLOW_JOB_DISK_MB": "40",
    "TRAINFLOW_JOB_OPEN_FILES": "256",
    "TRAINFLOW_MAX_CONCURRENT_JOBS": "3",
}
PIDS_CGROUP = (enforcement.find_cgroup_parent() or (0, None, None))[2] is not None


@pytest.fixture(params=["cgroup", "rlimits"])
def mechanism(request) -> str:
    """cgroups where the machine has them; rlimits and the supervisor's own counting otherwise.

    ``service-user``: rlimits, with the server run as an unprivileged user would run it (uid
    1000 in a user namespace), so each job's sandbox is a user namespace of its own, where
    RLIMIT_NPROC counts that job's processes alone.
    """
    if request.param == "cgroup" and enforcement.find_cgroup_parent() is None:
        pytest.skip("no writable cgroup here (root with cgroup v1, or a delegated v2 subtree)")
    if request.param == "service-user" and (os.geteuid() != 0 or not shutil.which("unshare")):
        pytest.skip("the service-user variant runs the server in a user namespace made as root")
    return request.param


def _as_service_user(folder: Path) -> str:
    wrapper = folder / "python-as-service-user"
    wrapper.write_text(
        f'#!/bin/sh\nexec unshare --user --map-user=1000 --map-group=1000 -- {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture
def api(server_factory, tmp_path, database_url, mechanism, monkeypatch):
    if mechanism == "service-user":
        monkeypatch.setattr(sys, "executable", _as_service_user(tmp_path))
    server = server_factory(
        tmp_path / "data",
        database_url,
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_JOB_GRACE_SECONDS="2",
        TRAINFLOW_JOB_CGROUP="" if mechanism == "cgroup" else "off",
        **LIMITS,
    )
    requests.post(f"{server.url}/api/register", json={"username": "alice", "password": PASSWORD}, timeout=10)
    api = Api(server.url, ("alice", PASSWORD))
    api.server = server
    return api


def ends_failed(api: Api, source: str, seconds: float = 90) -> dict:
    job = api.submit(source)
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST", seconds=seconds)
    assert done["status"] == "FAILED", (done, api.lines(job["job"])[-20:])
    # The run ends just after the job: once the job's output is logged as its artifacts.
    deadline = time.monotonic() + 60
    while api.run(job["run_id"])["info"]["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert api.run(job["run_id"])["info"]["status"] == "FAILED"
    return done


MEMORY_HOG = """
    chunks = []
    for _ in range(400):  # 16 MB at a time, 6.4 GB in all: far past the limit
        chunks.append(b"x" * (16 << 20))
    print("never reached")
"""


ALL_MECHANISMS = pytest.mark.parametrize("mechanism", ["cgroup", "rlimits", "service-user"], indirect=True)


@ALL_MECHANISMS
def test_a_memory_hog_ends_failed_naming_the_memory_limit(api):
    done = ends_failed(api, MEMORY_HOG)
    assert done["reason"] == "memory limit of 200 MB exceeded"


# Each process forks up to ten children, three generations deep: at most 1,111 processes should
# the limit fail. The limit of 64 stops it long before.
FORK_BOMB = """
    import os, time
    for depth in range(3):
        for _ in range(10):
            try:
                if os.fork() == 0:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            break
    time.sleep(60)
"""


@ALL_MECHANISMS
def test_a_fork_bomb_ends_failed_naming_the_process_limit(api):
    started = time.monotonic()
    done = ends_failed(api, FORK_BOMB)
    assert done["reason"] == "process limit of 64 processes and threads reached"
    assert time.monotonic() - started < 45


SHELL_BOMB = """
    import subprocess, time
    subprocess.run(["bash", "-c", ":(){ :|:& };:"])
    time.sleep(60)
"""


@pytest.mark.skipif(not PIDS_CGROUP, reason="an unbounded bomb runs only under a pids cgroup")
@pytest.mark.parametrize("mechanism", ["cgroup"], indirect=True)
def test_a_shell_fork_bomb_ends_failed_and_the_server_stays_responsive(api):
    job = api.submit(
        'import subprocess\nsubprocess.run(["bash", "-c", ":(){ :|:& };:"])\nimport time\ntime.sleep(60)\n'
    )
    done = api.wait(job["job"], "FAILED", "SUCCEEDED", seconds=60)
    assert done["status"] == "FAILED"
    assert done["reason"] == "process limit of 64 processes and threads reached"
    started = time.monotonic()
    assert requests.get(f"{api.url}/api/health", timeout=10).status_code == 200
    assert time.monotonic() - started < 1


DISK_FILLER = """
    import os, time
    out = os.environ["TRAINFLOW_OUTPUT_DIR"]
    for i in range(200):  # 5 MB files, 1 GB in all, paced at 100 MB/s
        with open(os.path.join(out, f"part-{i}"), "wb") as f:
            f.write(os.urandom(5 << 20))
        time.sleep(0.05)
    print("never reached")
"""


def test_a_disk_filler_ends_failed_naming_the_disk_limit(api):
    done = ends_failed(api, DISK_FILLER)
    assert done["reason"] == "disk limit of 40 MB exceeded in the job's folder"


BIG_FILE = """
    with open("big", "wb") as f:
        while True:
            f.write(b"0" * (1 << 20))
"""


def test_one_huge_file_ends_at_the_disk_limit(api):
    done = ends_failed(
        api, "with open('big', 'wb') as f:\n    while True:\n        f.write(b'0' * (1 << 20))\n"
    )
    assert done["reason"] == "disk limit of 40 MB exceeded in the job's folder"


def test_a_job_within_its_limits_succeeds(api):
    job = api.submit(
        "import threading\nt = [threading.Thread(target=len, args=('x',)) for _ in range(20)]\n"
        "[x.start() for x in t]\n[x.join() for x in t]\nprint(len(b'x' * (50 << 20)))\n"
    )
    done = api.wait(job["job"], "SUCCEEDED", "FAILED")
    assert done["status"] == "SUCCEEDED", api.lines(job["job"])


def test_the_server_says_at_start_what_holds_each_limit(api, mechanism):
    held = "cgroup v" if mechanism == "cgroup" else "rlimit (per process) + supervisor"
    assert f"Each job's limits: 200 MB of memory ({held}" in api.server.text


@pytest.fixture
def capped(server_factory, tmp_path, database_url):
    server = server_factory(
        tmp_path / "data",
        database_url,
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_JOB_GRACE_SECONDS="1",
        TRAINFLOW_JOB_MAX_SECONDS="2",
    )
    requests.post(f"{server.url}/api/register", json={"username": "alice", "password": PASSWORD}, timeout=10)
    return Api(server.url, ("alice", PASSWORD))


def test_the_servers_maximum_is_the_timeout_of_a_job_that_sets_none(capped):
    job = capped.submit("import time\ntime.sleep(60)\n")
    done = capped.wait(job["job"], "TIMED_OUT", "SUCCEEDED", "FAILED", seconds=30)
    assert done["status"] == "TIMED_OUT"
    assert done["reason"] == "Ran past its timeout of 2 s."


def test_a_timeout_past_the_servers_maximum_is_refused(capped):
    script = capped.upload("print('hi')\n")
    response = capped.call("POST", f"{TRAIN}/jobs", json={"script_id": script, "timeout_s": 10})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "timeout_s: at most 2 s on this server (TRAINFLOW_JOB_MAX_SECONDS)."
    )


SHM_FILLER = """
    import os, time
    for i in range(200):  # the sandbox's /dev/shm is in memory: 5 MB files, 1 GB in all
        with open(f"/dev/shm/part-{i}", "wb") as f:
            f.write(os.urandom(5 << 20))
        time.sleep(0.02)
    print("never reached")
"""


def test_filling_the_sandboxs_shared_memory_counts_as_memory(api):
    done = ends_failed(api, SHM_FILLER)
    assert done["reason"] == "memory limit of 200 MB exceeded"
