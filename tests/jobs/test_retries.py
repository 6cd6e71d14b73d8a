"""Retries through the scheduler and the fake executor: which endings run a job again, what its
attempts, its event stream and its MLflow run show, and who may see them (issue 14)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import dispose
from tests.jobs.test_dead_hosts import DEAD_S, beat, two_hosts  # noqa: F401  (a fixture)
from tests.jobs.test_scheduler_rules import TRAIN, Queue
from trainflow.app import create_app
from trainflow.db import db
from trainflow.events.store import store_of
from trainflow.jobs.models import Job, JobStatus


@pytest.fixture
def make_queue(settings):  # type: ignore[no-untyped-def]
    apps = []

    def make(**changes) -> Queue:  # type: ignore[no-untyped-def]
        app = create_app(settings.replace(**changes))
        apps.append(app)
        return Queue(app, app.test_client())

    yield make
    for app in apps:
        dispose(app)


@pytest.fixture
def queue(make_queue) -> Queue:  # type: ignore[no-untyped-def]
    return make_queue()


def events(queue: Queue, job_id: int) -> list[dict]:
    with queue.app.app_context():
        records = store_of(queue.app).read(job_id, 0, 1 << 20)
    return [json.loads(record) for _, record in records]


def statuses(queue: Queue, job_id: int) -> list[tuple[str, int | None]]:
    return [(e["status"], e.get("attempt")) for e in events(queue, job_id) if e["type"] == "status"]


def api_job(queue: Queue, user, job_id: int) -> dict:  # type: ignore[no-untyped-def]
    answer = queue.client.get(f"{TRAIN}/jobs/{job_id}", headers=user.basic)
    assert answer.status_code == 200, answer.json
    return answer.json  # type: ignore[no-any-return]


def run_status(queue: Queue, user, run_id: str) -> str:  # type: ignore[no-untyped-def]
    answer = queue.client.get("/api/2.0/mlflow/runs/get", query_string={"run_id": run_id}, headers=user.basic)
    return answer.json["run"]["info"]["status"]  # type: ignore[no-any-return]


def test_a_failed_attempt_runs_again_into_the_same_run_until_it_succeeds(queue, alice):
    job_id = queue.submit(alice, max_retries=2)
    queue.tick()
    assert queue.executor.launches[job_id].attempt == 1
    queue.executor.exit(job_id, 3)
    queue.tick()  # attempt 1 FAILED: queued again, and (same round) started again
    job = api_job(queue, alice, job_id)
    assert job["attempt"] == 2 and job["status"] == "RUNNING"
    assert queue.executor.launches[job_id].attempt == 2
    assert run_status(queue, alice, job["run_id"]) == "RUNNING"  # not ended between attempts
    assert [(a["number"], a["status"], a["exit_code"]) for a in job["attempts"]] == [
        (1, "FAILED", 3),
        (2, "RUNNING", None),
    ]
    queue.executor.exit(job_id, 0)
    queue.tick()
    job = api_job(queue, alice, job_id)
    assert (job["status"], job["attempt"], job["max_retries"]) == ("SUCCEEDED", 2, 2)
    assert [(a["number"], a["status"]) for a in job["attempts"]] == [(1, "FAILED"), (2, "SUCCEEDED")]
    assert all(a["started_at"] and a["finished_at"] for a in job["attempts"])
    assert run_status(queue, alice, job["run_id"]) == "FINISHED"
    # One sequence: no gap, no repeat, the retry shown as a QUEUED status naming attempt 1's end.
    stream = events(queue, job_id)
    assert [e["seq"] for e in stream] == list(range(1, len(stream) + 1))
    assert [e["type"] for e in stream].count("end") == 1 and stream[-1]["type"] == "end"
    assert statuses(queue, job_id) == [
        ("QUEUED", 1),
        ("RUNNING", 1),
        ("QUEUED", 2),
        ("RUNNING", 2),
        ("SUCCEEDED", 2),
    ]
    retry = next(e for e in stream if e.get("retry"))
    assert retry["retry"] == {
        "attempt": 1,
        "status": "FAILED",
        "exit_code": 3,
        "reason": "Exited with code 3.",
    }


def test_retries_that_run_out_end_the_job_failed(queue, alice):
    job_id = queue.submit(alice, max_retries=1)
    for _ in range(2):
        queue.tick()
        queue.executor.exit(job_id, 1)
    queue.tick()
    job = api_job(queue, alice, job_id)
    assert (job["status"], job["attempt"], job["exit_code"]) == ("FAILED", 2, 1)
    assert [a["status"] for a in job["attempts"]] == ["FAILED", "FAILED"]
    assert run_status(queue, alice, job["run_id"]) == "FAILED"
    assert [e["type"] for e in events(queue, job_id)].count("end") == 1


def test_a_job_without_retries_ends_at_its_first_failure(queue, alice):
    job_id = queue.submit(alice)
    queue.tick()
    queue.executor.exit(job_id, 1)
    queue.tick()
    job = api_job(queue, alice, job_id)
    assert (job["status"], job["attempt"], job["max_retries"]) == ("FAILED", 1, 0)
    assert [a["status"] for a in job["attempts"]] == ["FAILED"]


@pytest.mark.parametrize(("reason", "outcome"), [("cancelled", "CANCELLED"), ("timed_out", "TIMED_OUT")])
def test_cancelled_and_timed_out_attempts_are_not_retried(queue, alice, reason, outcome):
    job_id = queue.submit(alice, max_retries=3)
    queue.tick()
    queue.executor.exit(job_id, None, signal=15, reason=reason)
    queue.tick()
    job = api_job(queue, alice, job_id)
    assert (job["status"], job["attempt"]) == (outcome, 1)
    assert run_status(queue, alice, job["run_id"]) == "KILLED"


def test_a_lost_attempt_is_retried(queue, alice):
    job_id = queue.submit(alice, max_retries=1)
    queue.tick()
    queue.executor.vanish(job_id)
    queue.tick()
    job = api_job(queue, alice, job_id)
    assert (job["status"], job["attempt"]) == ("RUNNING", 2)
    assert job["attempts"][0]["status"] == "LOST" and "supervisor" in job["attempts"][0]["reason"]


def test_a_cancel_between_attempts_ends_the_job_cancelled_and_its_run_killed(queue, alice):
    job_id = queue.submit(alice, max_retries=2)
    queue.tick()
    queue.executor.exit(job_id, 1)
    with queue.app.app_context():  # half a round: its end is recorded, nothing is started yet
        queue.scheduler._observe_running()
        db.session.remove()
    job = api_job(queue, alice, job_id)
    assert (job["status"], job["attempt"]) == ("QUEUED", 2)
    assert queue.client.post(f"{TRAIN}/jobs/{job_id}/cancel", headers=alice.basic).status_code == 200
    job = api_job(queue, alice, job_id)
    assert (job["status"], job["attempt"]) == ("CANCELLED", 2)
    assert [a["status"] for a in job["attempts"]] == ["FAILED", "CANCELLED"]
    assert run_status(queue, alice, job["run_id"]) == "KILLED"
    queue.tick()
    assert queue.executor.launches[job_id].attempt == 1  # never started again
    assert [e["type"] for e in events(queue, job_id)].count("end") == 1


def test_a_cancel_asked_while_an_attempt_fails_is_not_overridden_by_a_retry(queue, alice):
    job_id = queue.submit(alice, max_retries=2)
    queue.tick()
    with queue.app.app_context():
        db.session.get(Job, job_id).cancel_requested = True
        db.session.commit()
    queue.executor.exit(job_id, 1)  # it failed on its own before the cancel reached it
    queue.tick()
    assert queue.status(job_id) == JobStatus.FAILED.value


def test_each_attempts_lines_are_paged_on_their_own(queue, alice):
    job_id = queue.submit(alice, max_retries=1)
    queue.tick()
    with queue.app.app_context():
        store = store_of(queue.app)
        store.ingest(job_id, 1, [_line(n, f"one {n}") for n in (1, 2, 3)])
    queue.executor.exit(job_id, 1)
    queue.tick()
    launch = queue.executor.launches[job_id]
    assert (launch.attempt, launch.log_from) == (2, 3)  # its supervisor numbers on from line 4
    with queue.app.app_context():
        store_of(queue.app).ingest(job_id, 4, [_line(n, f"two {n}") for n in (4, 5)])

    def page(**query) -> dict:  # type: ignore[no-untyped-def]
        answer = queue.client.get(f"{TRAIN}/jobs/{job_id}/logs", query_string=query, headers=alice.basic)
        assert answer.status_code == 200, answer.json
        return answer.json  # type: ignore[no-any-return]

    assert [x["line"] for x in page(attempt=1)["lines"]] == ["one 1", "one 2", "one 3"]
    assert page(attempt=1)["is_complete"] is True
    assert [x["line"] for x in page(attempt=2)["lines"]] == ["two 4", "two 5"]
    assert page(attempt=2)["is_complete"] is False  # it still runs
    assert [x["line"] for x in page(attempt=1, offset=2, limit=5)["lines"]] == ["one 3"]
    assert len(page()["lines"]) == 5  # without attempt: every line


def _line(n: int, text: str) -> bytes:
    from trainflow.runner.eventlog import fragment

    return fragment("log", 1.0, stream="stdout", n=n, line=text)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_retries": 11}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": "2"}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
    ],
)
def test_max_retries_out_of_range_is_a_400_naming_it(queue, alice, body, field):
    upload = queue.submit(alice)  # any script id of alice's will do
    script = api_job(queue, alice, upload)["script_id"]
    answer = queue.client.post(f"{TRAIN}/jobs", json={"script_id": script, **body}, headers=alice.basic)
    assert answer.status_code == 400
    assert field in json.dumps(answer.json["error"])


def test_a_log_attempt_that_does_not_exist_is_a_400_naming_it(queue, alice):
    job_id = queue.submit(alice, max_retries=1)
    for attempt in ("0", "3", "x"):
        answer = queue.client.get(f"{TRAIN}/jobs/{job_id}/logs?attempt={attempt}", headers=alice.basic)
        assert answer.status_code == 400, answer.json
        assert "attempt" in json.dumps(answer.json["error"])


def test_another_user_sees_none_of_a_retried_job(queue, alice, make_user):
    bob = make_user("bob")
    job_id = queue.submit(alice, max_retries=1)
    queue.tick()
    queue.executor.exit(job_id, 1)
    queue.tick()
    for path in ("", "/logs?attempt=1", "/logs?attempt=2", "/events"):
        assert queue.client.get(f"{TRAIN}/jobs/{job_id}{path}", headers=bob.basic).status_code == 404
    assert queue.client.post(f"{TRAIN}/jobs/{job_id}/cancel", headers=bob.basic).status_code == 404
    listed = queue.client.get(f"{TRAIN}/jobs", headers=bob.basic).json
    assert listed["total"] == 0
    assert queue.status(job_id) == JobStatus.RUNNING.value


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_dead_hosts_job_is_retried_by_a_survivor(two_hosts, alice):  # noqa: F811
    queue, host_b = two_hosts
    beat(queue, "host-a")
    beat(queue, "host-b")
    job_id = queue.submit(alice, max_retries=1)
    queue.tick()  # host a runs it
    beat(queue, "host-a", seconds_ago=DEAD_S + 1)  # and falls silent
    queue.tick(host_b)
    job = api_job(queue, alice, job_id)
    assert (job["status"], job["attempt"], job["runner"]) == ("RUNNING", 2, "host-b")
    assert job["attempts"][0]["status"] == "LOST"
    assert "Its host (host-a) stopped" in job["attempts"][0]["reason"]
    assert host_b.executor.launches[job_id].attempt == 2  # type: ignore[attr-defined]


def test_a_status_of_an_earlier_attempt_is_not_taken_for_the_next_ones_end(settings):
    """A server stopped between the claim of attempt 2 and its start leaves attempt 1's
    status.json: the next scheduler must not record attempt 2 as ended by it."""
    from trainflow.jobs.executors.base import State, Watched
    from trainflow.jobs.executors.local import LocalExecutor

    executor = LocalExecutor(settings)
    folder = executor.job_dir(7)
    folder.mkdir(parents=True)
    ended = {"state": "exited", "exit_code": 1, "attempt": 1, "job": 7}
    (folder / "status.json").write_text(json.dumps(ended))
    assert executor.observe([Watched(7, None, None, 1)])[0].state is State.EXITED
    assert executor.observe([Watched(7, None, None, 2)])[0].state is State.VANISHED  # not EXITED


def test_an_earlier_attempts_supervisor_is_told_the_job_has_moved_on(queue, alice):
    from trainflow.jobs import tokens

    job_id = queue.submit(alice, max_retries=1)
    queue.tick()
    with queue.app.app_context():
        first = tokens.issue_supervisor_token(queue.app, db.session.get(Job, job_id))
    queue.executor.exit(job_id, 1)
    queue.tick()  # attempt 2 runs
    body = {"first": 1, "events": []}
    answer = queue.client.post(
        f"{TRAIN}/jobs/{job_id}/ingest", json=body, headers={"Authorization": f"Bearer {first}"}
    )
    assert answer.status_code == 409 and answer.json["error"]["code"] == "job_finished"
    with queue.app.app_context():
        second = tokens.issue_supervisor_token(queue.app, db.session.get(Job, job_id))
    answer = queue.client.post(
        f"{TRAIN}/jobs/{job_id}/ingest", json=body, headers={"Authorization": f"Bearer {second}"}
    )
    assert answer.status_code == 200
