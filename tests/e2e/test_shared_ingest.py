"""Shared mode: a job's supervisor sends its records through the servers' ingest (#13).

Two real servers with data directories of their own on one PostgreSQL and one Redis, as two
hosts of one deployment. Host A runs the job; its supervisor posts every line to the ingest at
TRAINFLOW_PUBLIC_URL instead of writing the job's log in its folder.
"""

from __future__ import annotations

import json
import secrets

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.e2e.test_events import lines_of
from tests.e2e.test_jobs import Api
from tests.processes import free_port

pytestmark = pytest.mark.e2e
TRAIN = "/ajax-api/2.0/mlflow/train"
ADMIN = ("admin", "adm1n-pass-word")
COUNT = 3000
SCRIPT = f"""
import os, sys
for i in range(1, {COUNT} + 1):
    print(f"line {{i}}", file=sys.stderr if i % 10 == 0 else sys.stdout)
print('trainflow:progress {{"current": 1, "total": 1, "desc": "done"}}')
for name, value in sorted(os.environ.items()):
    print("ENV", name, value)
"""


@pytest.fixture
def hosts(server_factory, tmp_path, database_url, redis_url):  # type: ignore[no-untyped-def]
    key = secrets.token_urlsafe(48)
    port_a = free_port()
    shared = {
        "TRAINFLOW_SHARED": "true",
        "TRAINFLOW_REDIS_URL": redis_url,
        "TRAINFLOW_SECRET_KEY": key,
        "TRAINFLOW_ARTIFACTS_URI": str(tmp_path / "artifacts"),
        "TRAINFLOW_ADMIN_PASSWORD": ADMIN[1],
        "TRAINFLOW_JOB_GRACE_SECONDS": "2",
    }
    a = server_factory(
        tmp_path / "a",
        database_url,
        TRAINFLOW_PORT=str(port_a),
        TRAINFLOW_PUBLIC_URL=f"http://127.0.0.1:{port_a}",
        **shared,
    )
    b = server_factory(
        tmp_path / "b", database_url, TRAINFLOW_RUN_JOBS="false", TRAINFLOW_PUBLIC_URL=a.url, **shared
    )
    return a, b


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_every_line_of_a_job_reaches_its_stream_through_the_ingest(hosts, tmp_path, database_url):
    a, _ = hosts
    api = Api(a.url, ADMIN)
    job = api.submit(SCRIPT)
    with requests.get(
        f"{a.url}{TRAIN}/jobs/{job['job']}/events", auth=ADMIN, stream=True, timeout=(10, 120)
    ) as response:
        assert response.status_code == 200
        events = [e for e in lines_of(response) if e["type"] != "heartbeat"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["status"] for e in events if e["type"] == "status"] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert events[-1]["type"] == "end"
    # Two pipes: each stream keeps its order; across them, the order the reads came in.
    for stream, numbers in (
        ("stdout", [i for i in range(1, COUNT + 1) if i % 10]),
        ("stderr", range(10, COUNT + 1, 10)),
    ):
        lines = [e["line"] for e in events if e["type"] == "log" and e["stream"] == stream]
        assert [line for line in lines if line.startswith("line ")] == [f"line {i}" for i in numbers]
    assert [e["desc"] for e in events if e["type"] == "progress"] == ["done"]

    folder = tmp_path / "a" / "jobs" / str(job["job"])
    assert "line 3000" in api.lines(job["job"])  # the log API reads what came through the ingest
    spec = json.loads((folder / "spec.json").read_text())
    assert spec["ingest"]["url"] == f"{a.url}{TRAIN}/jobs/{job['job']}/ingest"
    # The job never sees the token that would let it forge its own records.
    env_values = {
        e["line"].split(" ", 2)[-1] for e in events if e["type"] == "log" and e["line"].startswith("ENV ")
    }
    assert spec["ingest"]["token"] not in env_values
    assert not any(spec["ingest"]["token"] in value for value in env_values)

    engine = create_engine(database_url)
    with engine.connect() as connection:
        reported = connection.execute(
            text("SELECT reported_status FROM tf_jobs WHERE id = :id"), {"id": job["job"]}
        ).scalar_one()
    engine.dispose()
    assert reported["state"] == "exited"
    assert reported["exit_code"] == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_cancel_asked_on_the_other_host_ends_the_job(hosts):
    a, b = hosts
    job = Api(a.url, ADMIN).submit(
        "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.1)\n"
    )
    Api(a.url, ADMIN).wait(job["job"], "RUNNING")
    response = requests.post(f"{b.url}{TRAIN}/jobs/{job['job']}/cancel", auth=ADMIN, timeout=30)
    assert response.status_code in (200, 202)
    done = Api(a.url, ADMIN).wait(job["job"], "CANCELLED", seconds=60)
    assert done["status"] == "CANCELLED"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_other_host_follows_the_same_lines(hosts):
    """The job's records went through the ingest into PostgreSQL: B serves them as A does."""
    a, b = hosts
    job = Api(a.url, ADMIN).submit(SCRIPT)
    Api(a.url, ADMIN).wait(job["job"], "SUCCEEDED", seconds=120)
    on_a, on_b = (
        requests.get(f"{host.url}{TRAIN}/jobs/{job['job']}/events", auth=ADMIN, timeout=(10, 120)).content
        for host in (a, b)
    )
    events = [json.loads(line) for line in on_b.splitlines() if line]
    lines = [e["line"] for e in events if e["type"] == "log" and e["line"].startswith("line ")]
    assert sorted(lines, key=lambda line: int(line.split()[1])) == [f"line {i}" for i in range(1, COUNT + 1)]
    assert on_b == on_a
