"""A job's events written on one host, followed on another (#13: hosts of one deployment).

Two real servers with data directories of their own share PostgreSQL (the event store in shared
mode) and Redis (the bus). Host A runs the job: its scheduler records the status changes and
its web process the metrics the job's MLflow client logs with the job's token. Followers on A
and on B must see the same events, once each and in order, live and when resuming with
``after`` or ``Last-Event-ID``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.e2e.conftest import RunningServer
from tests.e2e.test_jobs import ADMIN, TRAIN, Api
from tests.processes import free_port

pytestmark = pytest.mark.e2e
KEY = secrets.token_urlsafe(48)  # one signing key for every host

TRAINING = """
    import time
    import mlflow
    from mlflow.entities import Metric

    time.sleep(1)  # the followers are following by now
    for step in range(3):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        time.sleep(0.5)
    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    metrics = [Metric("acc", 0.5, now, 10), Metric("acc", 0.75, now, 11)]
    client.log_batch(mlflow.active_run().info.run_id, metrics=metrics)
"""


@pytest.fixture
def hosts(server_factory, database_url: str, redis_url: str, tmp_path: Path) -> tuple[Api, Api]:
    def start(name: str, **env: str) -> RunningServer:
        port = free_port()
        return server_factory(
            tmp_path / name,
            database_url,
            TRAINFLOW_PORT=str(port),
            TRAINFLOW_PUBLIC_URL=f"http://127.0.0.1:{port}",
            TRAINFLOW_SHARED="true",
            TRAINFLOW_REDIS_URL=redis_url,
            TRAINFLOW_SECRET_KEY=KEY,
            TRAINFLOW_ARTIFACTS_URI=str(tmp_path / "artifacts"),
            TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
            **env,
        )

    a = start("a")
    b = start("b", TRAINFLOW_RUN_JOBS="false")  # B runs nothing: every event of the job is written on A
    return Api(a.url, ADMIN), Api(b.url, ADMIN)


def stream(api: Api, job_id: int, after: int | None = None, **headers: str) -> requests.Response:
    params = {"after": after} if after is not None else {}
    return requests.get(
        f"{api.url}{TRAIN}/jobs/{job_id}/events",
        params=params,
        auth=api.auth,
        headers=headers,
        stream=True,
        timeout=(10, 60),
    )


def arrivals(response: requests.Response, within_s: float = 45) -> Iterator[tuple[float, dict[str, Any]]]:
    """Each NDJSON event (heartbeats left out) with the moment it arrived, for ``within_s`` at most."""
    pending = b""
    deadline = time.monotonic() + within_s
    for chunk in response.iter_content(chunk_size=None):
        if time.monotonic() > deadline:
            return  # a stream that never ends (heartbeats keep it open): what came is compared
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            event = json.loads(line)
            if event["type"] != "heartbeat":
                yield time.monotonic(), event


def ndjson(api: Api, job_id: int, after: int | None = None) -> list[dict[str, Any]]:
    with stream(api, job_id, after) as response:
        assert response.status_code == 200, response.text
        return [event for _, event in arrivals(response)]


def server_sent(api: Api, job_id: int, last_event_id: int) -> list[tuple[int, dict[str, Any]]]:
    """(id, data) of each SSE event, resumed with ``Last-Event-ID``."""
    with stream(
        api, job_id, **{"Accept": "text/event-stream", "Last-Event-ID": str(last_event_id)}
    ) as response:
        assert response.status_code == 200, response.text
        text = response.content.decode()
    got = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in fields:
            got.append((int(fields["id"]), json.loads(fields["data"])))
    return got


@pytest.fixture
def followed(hosts: tuple[Api, Api]) -> dict[str, Any]:
    """A job submitted on A and run there, followed live from its start on both hosts."""
    a, b = hosts
    job = a.submit(TRAINING)
    with stream(b, job["job"]) as on_b, stream(a, job["job"]) as on_a:
        assert (on_a.status_code, on_b.status_code) == (200, 200)
        seen_on_b = list(arrivals(on_b))  # each ends by itself, after the end
        seen_on_a = list(arrivals(on_a))
    return {
        "job": job["job"],
        "a": [e for _, e in seen_on_a],
        "b": [e for _, e in seen_on_b],
        "b_at": seen_on_b,
    }


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_followers_on_both_hosts_see_the_job_run_on_one_of_them_live_and_alike(
    followed: dict[str, Any],
) -> None:
    got = followed["b"]
    assert got == followed["a"]
    assert [event["seq"] for event in got] == list(range(1, len(got) + 1))
    assert [e["status"] for e in got if e["type"] == "status"] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    metrics = [(e["key"], e["value"], e["step"]) for e in got if e["type"] == "metric"]
    assert metrics == [
        ("loss", 1.0, 0),
        ("loss", 0.5, 1),
        ("loss", 1 / 3, 2),
        ("acc", 0.5, 10),
        ("acc", 0.75, 11),
    ]
    assert got[-1]["type"] == "end"
    # Live on B, not replayed once the job had ended: the job logs its metrics over a second.
    at = {event["seq"]: moment for moment, event in followed["b_at"]}
    first_metric = next(e["seq"] for e in got if e["type"] == "metric")
    assert at[got[-1]["seq"]] - at[first_metric] > 0.8


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_after_and_last_event_id_resume_at_the_same_place_on_both_hosts(
    hosts: tuple[Api, Api], followed: dict[str, Any]
) -> None:
    a, b = hosts
    job_id, everything = followed["job"], followed["a"]
    for after in (1, 3, len(everything) - 1):
        assert ndjson(b, job_id, after) == everything[after:], after
        assert ndjson(a, job_id, after) == everything[after:], after
    expected = [(event["seq"], event) for event in everything[2:]]
    assert server_sent(b, job_id, 2) == expected
    assert server_sent(a, job_id, 2) == expected
    last = everything[-1]["seq"]
    assert [stream(api, job_id, last).status_code for api in hosts] == [204, 204]  # nothing more will come


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_job_deleted_on_one_host_leaves_no_events_behind(
    hosts: tuple[Api, Api], followed: dict[str, Any], database_url: str
) -> None:
    a, b = hosts
    assert b.call("DELETE", f"{TRAIN}/jobs/{followed['job']}").status_code == 204
    assert stream(a, followed["job"]).status_code == 404
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            left = connection.execute(
                text("SELECT count(*) FROM tf_job_events WHERE job_id = :job"), {"job": followed["job"]}
            ).scalar()
    finally:
        engine.dispose()
    assert left == 0
