"""The ingest endpoint: a job's supervisor posts its records, with a token no other route takes (#13)."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask_jwt_extended import create_access_token
from sqlalchemy import update

from tests.conftest import shared_mode
from tests.records import running_job
from trainflow.db import db, utcnow
from trainflow.jobs import hosts, tokens
from trainflow.jobs.executors.fake import FakeExecutor
from trainflow.jobs.models import Job, JobStatus
from trainflow.jobs.scheduler import JobScheduler
from trainflow.runner.eventlog import fragment
from trainflow.settings import Settings

TRAIN = "/ajax-api/2.0/mlflow/train"


def log_event(n: int, line: str | None = None, stream: str = "stdout") -> dict[str, Any]:
    """A log event exactly as the supervisor sends it: ``fragment``'s JSON object."""
    return json.loads(b"{" + fragment("log", 1_700_000_000.5, stream=stream, n=n, line=line or f"line {n}"))


def progress_event(current: int) -> dict[str, Any]:
    return json.loads(b"{" + fragment("progress", 1_700_000_001.0, current=current, total=10, desc="epochs"))


@pytest.fixture
def job(app, alice) -> Job:  # type: ignore[no-untyped-def]
    return running_job(app, alice.id, run_id=uuid.uuid4().hex)


@pytest.fixture
def supervisor(app, job) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {tokens.issue_supervisor_token(app, job)}"}


def post(client, job_id: int, body: Any, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post(f"{TRAIN}/jobs/{job_id}/ingest", json=body, headers=headers)


def set_job(app, job_id: int, **values: Any) -> None:  # type: ignore[no-untyped-def]
    with app.app_context():
        row = db.session.get(Job, job_id)
        for name, value in values.items():
            setattr(row, name, value)
        db.session.commit()


def stream_to_the_end(app, client, user, job_id: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Every event a follower of the job sees, once the job has ended (the stream then ends)."""
    set_job(app, job_id, status=JobStatus.SUCCEEDED.value, exit_code=0)
    response = client.get(f"{TRAIN}/jobs/{job_id}/events", headers=user.basic)
    if response.status_code == 204:
        return []  # the job has no event at all
    assert response.status_code == 200
    return [json.loads(line) for line in response.data.splitlines() if line]


def lines(events: list[dict[str, Any]]) -> list[str]:
    return [e["line"] for e in events if e["type"] == "log"]


# -- storing --------------------------------------------------------------------------------


def test_a_batch_reaches_the_jobs_stream_in_order(app, client, alice, job, supervisor):
    response = post(
        client, job.id, {"first": 1, "events": [log_event(1), progress_event(3), log_event(2)]}, supervisor
    )
    assert response.status_code == 200
    assert response.json == {"through": 3, "cancel": False}
    seen = stream_to_the_end(app, client, alice, job.id)
    assert [e["type"] for e in seen] == ["log", "progress", "log", "status", "end"]
    assert [e["seq"] for e in seen] == [1, 2, 3, 4, 5]
    assert lines(seen) == ["line 1", "line 2"]
    assert seen[1]["current"] == 3


def test_a_batch_sent_again_is_stored_once(app, client, alice, job, supervisor):
    batch = {"first": 1, "events": [log_event(1), log_event(2)]}
    assert post(client, job.id, batch, supervisor).json["through"] == 2
    assert post(client, job.id, batch, supervisor).json["through"] == 2  # its answer was lost
    overlapping = {"first": 2, "events": [log_event(2), log_event(3)]}
    assert post(client, job.id, overlapping, supervisor).json["through"] == 3
    assert lines(stream_to_the_end(app, client, alice, job.id)) == ["line 1", "line 2", "line 3"]


def test_a_gap_is_refused_with_what_the_server_holds(app, client, alice, job, supervisor):
    post(client, job.id, {"first": 1, "events": [log_event(1), log_event(2)]}, supervisor)
    response = post(client, job.id, {"first": 5, "events": [log_event(5)]}, supervisor)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "ingest_gap"
    assert response.json["error"]["through"] == 2
    assert lines(stream_to_the_end(app, client, alice, job.id)) == ["line 1", "line 2"]


def test_a_status_alone_is_answered_with_what_the_server_holds(client, job, supervisor):
    post(client, job.id, {"first": 1, "events": [log_event(1)]}, supervisor)
    response = post(client, job.id, {"first": 2, "status": {"state": "running", "pid": 7}}, supervisor)
    assert response.json == {"through": 1, "cancel": False}


def test_a_cancel_asked_on_any_host_is_in_the_answer(app, client, job, supervisor):
    set_job(app, job.id, cancel_requested=True)
    response = post(client, job.id, {"first": 1, "events": []}, supervisor)
    assert response.json == {"through": 0, "cancel": True}


def test_the_reported_status_is_kept_on_the_job(app, client, job, supervisor):
    exited = {"state": "exited", "exit_code": 3, "signal": None, "reason": None, "job": job.id}
    post(client, job.id, {"first": 1, "status": {"state": "running", "pid": 7}}, supervisor)
    post(client, job.id, {"first": 1, "status": exited}, supervisor)
    with app.app_context():
        assert db.session.get(Job, job.id).reported_status == exited


def test_each_batch_records_that_the_supervisor_lives(app, client, job, supervisor):
    """A survivor leaves a job RUNNING while its supervisor reports, though its host is silent."""
    with app.app_context():
        assert hosts.last_report(db.session.get(Job, job.id)) is None
    post(client, job.id, {"first": 1, "events": []}, supervisor)
    with app.app_context():
        reported = hosts.last_report(db.session.get(Job, job.id))
        now = hosts.now(db.session()) if hosts.is_supported(db.session()) else utcnow()
    assert reported is not None
    assert abs((now - reported).total_seconds()) < 5


def test_an_older_status_arriving_late_does_not_replace_the_end(app, client, job, supervisor):
    exited = {"state": "exited", "exit_code": 0, "reason": None}
    post(client, job.id, {"first": 1, "status": exited}, supervisor)
    post(client, job.id, {"first": 1, "status": {"state": "running"}}, supervisor)
    with app.app_context():
        assert db.session.get(Job, job.id).reported_status == exited


def test_no_database_connection_is_held_while_the_body_is_read(app, client, alice, job, supervisor):
    """A supervisor whose batch arrives slowly holds a socket, never one of the pool's connections."""
    with app.app_context():
        pool = db.engine.pool
    held: list[int] = []

    class SlowBody(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            held.append(pool.checkedout())  # type: ignore[attr-defined]
            return super().read(size)

        def readinto(self, buffer: Any) -> int:
            held.append(pool.checkedout())  # type: ignore[attr-defined]
            return super().readinto(buffer)

    data = json.dumps({"first": 1, "events": [log_event(1)]}).encode()
    response = client.post(
        f"{TRAIN}/jobs/{job.id}/ingest",
        input_stream=SlowBody(data),
        content_length=len(data),
        content_type="application/json",
        headers=supervisor,
    )
    assert response.status_code == 200
    assert held
    assert set(held) == {0}
    assert lines(stream_to_the_end(app, client, alice, job.id)) == ["line 1"]


# -- what a supervisor may not send ------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "status", "ts": 1.0, "status": "SUCCEEDED"}, "events.0.type"),
        ({"type": "end", "ts": 1.0, "status": "SUCCEEDED", "exit_code": 0}, "events.0.type"),
        ({"type": "metric", "ts": 1.0, "key": "loss", "value": 0.1, "step": 0}, "events.0.type"),
        ({**log_event(1), "seq": 99}, "events.0.seq"),
        ({**log_event(1), "status": "SUCCEEDED"}, "events.0.status"),
        ({**log_event(1), "stream": "stdin"}, "events.0.stream"),
        ({**log_event(1), "n": 0}, "events.0.n"),
        ({**log_event(1), "n": "1"}, "events.0.n"),
        ({**log_event(1), "line": "x" * (64 * 1024 + 1)}, "events.0.line"),
        ({**log_event(1), "partial": False}, "events.0.partial"),
        ({**log_event(1), "ts": "now"}, "events.0.ts"),
        ({k: v for k, v in log_event(1).items() if k != "line"}, "events.0.line"),
        ({**progress_event(1), "current": True}, "events.0.current"),
        ({**progress_event(1), "desc": "d" * 201}, "events.0.desc"),
        ("a line", "events.0"),
    ],
)
def test_an_event_a_supervisor_does_not_make_is_refused(app, client, alice, job, supervisor, event, field):
    response = post(client, job.id, {"first": 1, "events": [log_event(1), event]}, supervisor)
    assert response.status_code == 400
    assert response.json["error"]["fields"][0]["field"] == field.replace("events.0", "events.1")
    assert lines(stream_to_the_end(app, client, alice, job.id)) == []  # nothing of the batch is stored


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"first": 0, "events": []},
        {"first": "1", "events": []},
        {"first": 1, "events": {}},
        {"first": 1, "events": [], "extra": 1},
        {"first": 1, "status": {"state": "dancing"}},
        {"first": 1, "status": "exited"},
        [1, 2],
    ],
)
def test_a_malformed_batch_is_a_400(client, job, supervisor, body):
    response = post(client, job.id, body, supervisor)
    assert response.status_code == 400
    assert response.json["error"]["code"] in ("bad_request", "invalid_fields")


@pytest.mark.parametrize(
    "data",
    [
        b'{"first": 1, "status": {"state": "running", "rate": NaN}}',
        b'{"first": 1, "events": [{"type": "progress", "ts": 1.5, "current": Infinity}]}',
        b'{"first": 1, "events": [{"type": "progress", "ts": 1.5, "current": 1' + b"0" * 400 + b"}]}",
        b'{"first": 1, "events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"first": 1, "events": [{"type": "log", "ts": 1.5, "stream": "stdout", "n": 1, "line": "\xff"}]}',
    ],
    ids=["nan", "infinity", "huge-number", "deep", "not-utf8"],
)
def test_a_body_no_supervisor_sends_is_a_400(app, client, alice, job, supervisor, data):
    response = client.post(
        f"{TRAIN}/jobs/{job.id}/ingest", data=data, content_type="application/json", headers=supervisor
    )
    assert response.status_code == 400
    with app.app_context():
        assert db.session.get(Job, job.id).reported_status is None


def test_a_body_that_is_not_json_is_a_400(client, job, supervisor):
    response = client.post(
        f"{TRAIN}/jobs/{job.id}/ingest",
        data=b'{"first": 1, "ev',
        content_type="application/json",
        headers=supervisor,
    )
    assert response.status_code == 400


def test_a_body_over_the_cap_is_a_413(client, job, supervisor):
    big = {"first": 1, "events": [log_event(n, "x" * 60_000) for n in range(1, 80)]}  # ~4.7 MB
    response = post(client, job.id, big, supervisor)
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"


# -- who may send ------------------------------------------------------------------------------


def test_no_token_is_a_401(client, job):
    assert post(client, job.id, {"first": 1, "events": []}, {}).status_code == 401


def test_the_jobs_own_mlflow_token_is_refused(app, client, job):
    token = tokens.issue_job_token(app, job)
    response = post(
        client, job.id, {"first": 1, "events": [log_event(1)]}, {"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401


def test_a_users_token_is_refused(client, alice, job):
    response = post(client, job.id, {"first": 1, "events": [log_event(1)]}, alice.bearer())
    assert response.status_code == 401


def test_a_users_password_is_refused(client, alice, job):
    response = post(client, job.id, {"first": 1, "events": [log_event(1)]}, alice.basic)
    assert response.status_code == 401


def test_another_jobs_supervisor_token_is_refused(app, client, alice, bob, job):
    other = running_job(app, bob.id, run_id=uuid.uuid4().hex)
    headers = {"Authorization": f"Bearer {tokens.issue_supervisor_token(app, other)}"}
    response = post(client, job.id, {"first": 1, "events": [log_event(1)]}, headers)
    assert response.status_code == 403
    assert lines(stream_to_the_end(app, client, alice, job.id)) == []


def test_an_expired_supervisor_token_is_refused(app, client, job):
    with app.app_context():
        token = create_access_token(
            identity=f"job-{job.id}",
            additional_claims={
                "type": tokens.SUPERVISOR_TYPE,
                tokens.SUPERVISOR_CLAIM: job.id,
                "run": job.run_id,
            },
            expires_delta=timedelta(seconds=-10),
        )
    response = post(client, job.id, {"first": 1, "events": []}, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_a_token_of_an_earlier_job_with_the_same_id_is_refused(app, client, job):
    with app.app_context():
        earlier = db.session.get(Job, job.id)
        earlier.run_id = "an-earlier-run"
        token = tokens.issue_supervisor_token(app, earlier)
        db.session.rollback()
    response = post(client, job.id, {"first": 1, "events": []}, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_a_finished_job_takes_nothing_more(app, client, alice, job, supervisor):
    set_job(app, job.id, status=JobStatus.CANCELLED.value)
    response = post(client, job.id, {"first": 1, "events": [log_event(1)]}, supervisor)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "job_finished"


def test_a_deleted_job_is_a_404(app, client, job, supervisor):
    with app.app_context():
        db.session.delete(db.session.get(Job, job.id))
        db.session.commit()
    assert post(client, job.id, {"first": 1, "events": []}, supervisor).status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/2.0/mlflow/experiments/search?max_results=10"),
        ("GET", "/ajax-api/2.0/mlflow/runs/get?run_id={run}"),
        ("POST", "/api/2.0/mlflow/runs/log-metric"),
        ("GET", "/api/me"),
        ("GET", f"{TRAIN}/jobs"),
        ("GET", f"{TRAIN}/jobs/{{job}}"),
        ("GET", f"{TRAIN}/jobs/{{job}}/events"),
        ("POST", f"{TRAIN}/jobs/{{job}}/cancel"),
    ],
)
def test_the_supervisor_token_works_nowhere_else(client, job, supervisor, method, path):
    body = {"run_id": job.run_id, "key": "loss", "value": 1.0, "timestamp": 1, "step": 0}
    response = client.open(
        path.format(run=job.run_id, job=job.id),
        method=method,
        json=body if method == "POST" else None,
        headers=supervisor,
    )
    assert response.status_code == 401


def test_the_supervisor_token_is_no_refresh_token(client, supervisor):
    token = supervisor["Authorization"].removeprefix("Bearer ")
    assert client.post("/api/token/refresh", json={"refresh_token": token}).status_code == 401


# -- shared mode: the store in PostgreSQL ---------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
class TestSharedMode:
    @pytest.fixture
    def settings(self, settings: Settings, redis_url: str, tmp_path: Path) -> Settings:
        return settings.replace(
            **shared_mode(redis_url, tmp_path),
        )

    def test_lines_sent_twice_reach_the_stream_once(self, app, client, alice, job, supervisor):
        batch = {"first": 1, "events": [log_event(1), log_event(2)]}
        assert post(client, job.id, batch, supervisor).json["through"] == 2
        assert post(client, job.id, batch, supervisor).json["through"] == 2
        assert post(
            client, job.id, {"first": 2, "events": [log_event(2), log_event(3)]}, supervisor
        ).json == {
            "through": 3,
            "cancel": False,
        }
        assert lines(stream_to_the_end(app, client, alice, job.id)) == ["line 1", "line 2", "line 3"]

    def test_a_gap_says_where_to_resume(self, client, job, supervisor):
        post(client, job.id, {"first": 1, "events": [log_event(1)]}, supervisor)
        response = post(client, job.id, {"first": 4, "events": [log_event(4)]}, supervisor)
        assert response.status_code == 409
        assert response.json["error"]["through"] == 1

    def test_the_log_api_pages_through_ingested_lines(self, client, alice, job, supervisor):
        """``trainflow logs`` reads a job whose lines came through the ingest."""
        for first in range(1, 2501, 500):
            batch = [log_event(n) for n in range(first, first + 500)]
            assert post(client, job.id, {"first": first, "events": batch}, supervisor).status_code == 200
        page = client.get(f"{TRAIN}/jobs/{job.id}/logs?offset=1999&limit=3", headers=alice.basic).json
        assert [line["line"] for line in page["lines"]] == ["line 2000", "line 2001", "line 2002"]

    @pytest.mark.parametrize("has_reported", [True, False])
    def test_a_job_whose_supervisor_reports_outlives_its_silent_host(
        self, app, client, job, supervisor, has_reported
    ):
        set_job(app, job.id, runner="host-a")
        with app.app_context():
            hosts.beat(db.session(), "host-a")
            db.session.execute(
                update(hosts.Host).values(last_seen=hosts.database_now() - timedelta(seconds=120))
            )
            db.session.commit()
        if has_reported:
            assert post(client, job.id, {"first": 1, "events": []}, supervisor).status_code == 200
        survivor = JobScheduler(app, app.config["TRAINFLOW"], FakeExecutor("host-b"))
        with app.app_context():
            survivor.tick()
            status = db.session.get(Job, job.id).status
        assert status == (JobStatus.RUNNING.value if has_reported else JobStatus.LOST.value)
