"""A full disk under a running job: nothing stored is lost, the job is told why it ended, the API
answers 507, and everything works again once space is freed, without a restart (#11)."""

from __future__ import annotations

import sqlite3

import pytest
import requests

from tests.e2e.test_jobs import ADMIN, PASSWORD, TRAIN, Api
from tests.filesystems import fill, small_tmpfs
from tests.processes import wait_for

pytestmark = pytest.mark.e2e

# Prints numbered lines and logs a metric through the server every 20 lines, until it is ended.
# Standard library only: it starts at once.
CHATTY = """
    import json, os, time, urllib.error, urllib.request
    url = os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/runs/log-metric"
    headers = {
        "Authorization": "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"],
        "Content-Type": "application/json",
    }
    n = 0
    while True:
        n += 1
        print(f"line {n}", flush=True)
        if n % 20 == 0:
            metric = {"run_id": os.environ["MLFLOW_RUN_ID"], "key": "n", "value": n, "step": n,
                      "timestamp": int(time.time() * 1000)}
            request = urllib.request.Request(url, json.dumps(metric).encode(), headers)
            try:
                urllib.request.urlopen(request, timeout=10).read()
            except urllib.error.HTTPError as e:
                print(f"log_metric: {e.code}", flush=True)
        time.sleep(0.002)
"""


@pytest.fixture
def disk(tmp_path):
    with small_tmpfs(tmp_path / "disk", 30) as mounted:
        yield mounted


@pytest.fixture
def api(server_factory, disk, templates):
    data = disk / "data"
    data.mkdir()
    # A migrated database, copied in: the database lives on the small disk too.
    with sqlite3.connect(templates.sqlite()) as source, sqlite3.connect(data / "trainflow.db") as target:
        source.backup(target)
    source.close()
    target.close()
    server = server_factory(
        data,
        f"sqlite:///{data / 'trainflow.db'}",
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_JOB_GRACE_SECONDS="2",
        TRAINFLOW_JOB_DISK_FULL_SECONDS="3",
        TRAINFLOW_MIN_FREE_MB="0",  # the disk itself runs out here, not a watermark
        TRAINFLOW_MAX_CONCURRENT_JOBS="1",
    )
    requests.post(f"{server.url}/api/register", json={"username": "alice", "password": PASSWORD}, timeout=10)
    return Api(server.url, ("alice", PASSWORD))


def numbered(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("line ")]


def refused_for_space(response: requests.Response) -> bool:
    return (
        response.status_code == 507
        and response.json()["error"]["code"] == "insufficient_storage"
        and "disk" in response.json()["error"]["message"]
    )


def test_a_full_disk_ends_the_job_keeps_its_lines_and_everything_resumes_once_freed(api, disk):
    experiment = api.call("POST", "/api/2.0/mlflow/experiments/create", json={"name": "alice/disk"}).json()
    run = api.call("POST", "/api/2.0/mlflow/runs/create", json=experiment).json()["run"]
    script = api.upload("print('hello')\n", "hello.py")
    job = api.submit(CHATTY)
    queued = api.submit("print('my turn')\n")  # waits for the one slot
    wait_for(lambda: len(numbered(api.lines(job["job"]))) >= 300, seconds=60)
    before = numbered(api.lines(job["job"]))

    filler = disk / "filler"
    fill(filler)
    ended = api.wait(job["job"], "FAILED", "SUCCEEDED", "LOST", "CANCELLED", seconds=60)

    assert ended["status"] == "FAILED"
    assert ended["reason"].startswith("The disk holding the data directory is full")
    kept = numbered(api.lines(job["job"]))
    assert kept[: len(before)] == before
    assert kept == [f"line {n}" for n in range(1, len(kept) + 1)]  # none lost between, none twice

    fill(filler)  # the room the job's supervisor gave back for its end: taken too
    upload = api.call("POST", f"{TRAIN}/upload", files={"file": ("train.py", "print('hi')\n")})
    submit = api.call("POST", f"{TRAIN}/jobs", json={"script_id": script})
    metric = api.call(
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        json={"run_id": run["info"]["run_id"], "key": "m", "value": 1.0, "timestamp": 1, "step": 0},
    )
    register = requests.post(
        f"{api.url}/api/register", json={"username": "bob", "password": PASSWORD}, timeout=30
    )
    assert refused_for_space(upload), upload.text
    assert refused_for_space(submit), submit.text
    assert refused_for_space(metric), metric.text
    assert metric.json()["error_code"] == "RESOURCE_EXHAUSTED"  # what the MLflow client reads
    assert refused_for_space(register), register.text
    assert not any((disk / "data" / "uploads" / ".incoming").iterdir())
    assert api.job(queued["job"])["status"] == "QUEUED"  # no room to start: it waits

    filler.unlink()
    assert api.wait(queued["job"], "SUCCEEDED", "FAILED", "LOST")["status"] == "SUCCEEDED"
    again = api.submit("print('room again')\n")
    assert api.wait(again["job"], "SUCCEEDED", "FAILED", "LOST")["status"] == "SUCCEEDED"
    assert api.lines(again["job"]) == ["room again"]
    registered = requests.post(
        f"{api.url}/api/register", json={"username": "bob", "password": PASSWORD}, timeout=30
    )
    assert registered.status_code == 201
    assert api.job(job["job"])["status"] == "FAILED"  # its record stays as it was
