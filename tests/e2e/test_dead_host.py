"""A host SIGKILLed mid-job, with real servers in shared mode (#13).

Host a runs a job and is killed (its server; in one variant its job's supervisor too). Host b,
which shares the PostgreSQL database, records the job LOST with a reason naming host a once a's
heartbeat is older than TRAINFLOW_HOST_DEAD_SECONDS, never runs it again, and runs the job
queued behind it within the limit. Host a, restarted, stops what it still ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.shared_hosts import Api, Deployment
from tests.e2e.test_jobs import _supervisor_of
from tests.processes import alive, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]
DEAD_S = "3"
LIMITS = {"TRAINFLOW_HOST_DEAD_SECONDS": DEAD_S, "TRAINFLOW_MAX_CONCURRENT_JOBS": "1"}
LONG_JOB = "import time\nfor i in range(240):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"
QUICK_JOB = "print('done')\n"


@pytest.fixture
def leftovers(tmp_path) -> Iterator[list[int]]:  # type: ignore[no-untyped-def]
    """Supervisors host a started: outliving its server is what they do, so the test ends them
    (and their jobs) whatever happened, before their folders go."""
    supervisors: list[int] = []
    yield supervisors
    for supervisor in supervisors:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(supervisor, signal.SIGKILL)
    for folder in (tmp_path / "a" / "jobs").glob("*"):
        _kill_job(folder)


def _running_on_a(deployment: Deployment, server_factory, tmp_path, leftovers):  # type: ignore[no-untyped-def]
    """Host a, running a long job; then host b beside it."""
    host_a = deployment.start(server_factory, "a", **LIMITS)
    on_a = Api(host_a.url)
    job = on_a.submit(on_a.upload(LONG_JOB))
    on_a.wait(job["job"], "RUNNING")
    leftovers.append(_supervisor_of(job["job"], host_a.process.pid))
    wait_for(lambda: _state(tmp_path / "a", job["job"]) == "running", 30)  # the job itself runs
    host_b = deployment.start(server_factory, "b", **LIMITS)
    return host_a, host_b, job, leftovers[-1]


@pytest.mark.parametrize("kill_supervisor", [False, True], ids=["server", "server-and-supervisor"])
def test_a_killed_hosts_job_is_lost_on_a_survivor_never_run_twice_and_the_queue_moves_on(
    server_factory, database_url, redis_url, tmp_path, kill_supervisor, leftovers
):
    deployment = Deployment(database_url, redis_url, tmp_path)
    host_a, host_b, job, supervisor = _running_on_a(deployment, server_factory, tmp_path, leftovers)
    on_b = Api(host_b.url)
    host_a.process.send_signal(signal.SIGKILL)
    host_a.stop()
    if kill_supervisor:
        os.killpg(supervisor, signal.SIGKILL)
        _kill_job(tmp_path / "a" / "jobs" / str(job["job"]))
    waiting = on_b.submit(on_b.upload(QUICK_JOB))
    time.sleep(1)
    assert on_b.job(waiting["job"])["status"] == "QUEUED"  # the limit still counts a's job

    lost = on_b.wait(job["job"], "LOST", "FAILED", "SUCCEEDED", "CANCELLED", seconds=30)
    assert lost["status"] == "LOST"
    assert "Its host (local:" in lost["reason"]
    assert "It was not run again" in lost["reason"]
    run = on_b.call("GET", "/api/2.0/mlflow/runs/get", params={"run_id": job["run_id"]}).json()
    assert run["run"]["info"]["status"] == "FAILED"
    assert not (tmp_path / "b" / "jobs" / str(job["job"]) / "work").exists()  # b never ran it
    assert on_b.wait(waiting["job"], "SUCCEEDED", "FAILED", "LOST")["status"] == "SUCCEEDED"


def _state(data_dir: Path, job_id: int) -> str | None:
    """What the job's supervisor says of it (``running`` once the job's process started)."""
    try:
        return str(json.loads((data_dir / "jobs" / str(job_id) / "status.json").read_text())["state"])
    except (FileNotFoundError, ValueError):
        return None


def _kill_job(folder: Path) -> None:
    """The job's own process group (the supervisor started it in one of its own)."""
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError, ProcessLookupError):
        os.killpg(json.loads((folder / "status.json").read_text())["pid"], signal.SIGKILL)


def test_a_host_that_comes_back_stops_the_job_a_survivor_recorded_lost(
    server_factory, database_url, redis_url, tmp_path, leftovers
):
    deployment = Deployment(database_url, redis_url, tmp_path)
    host_a, host_b, job, supervisor = _running_on_a(deployment, server_factory, tmp_path, leftovers)
    port = host_a.url.rsplit(":", 1)[1]
    host_a.process.send_signal(signal.SIGKILL)
    host_a.stop()
    on_b = Api(host_b.url)
    lost = on_b.wait(job["job"], "LOST", "FAILED", "SUCCEEDED", "CANCELLED", seconds=30)
    assert lost["status"] == "LOST"
    assert alive(supervisor)  # a's supervisor outlived its server, still running the job

    deployment.start(server_factory, "a", TRAINFLOW_PORT=port, **LIMITS)
    wait_for(lambda: not alive(supervisor), 30)
    assert on_b.job(job["job"])["status"] == "LOST"
    assert on_b.job(job["job"])["reason"] == lost["reason"]
