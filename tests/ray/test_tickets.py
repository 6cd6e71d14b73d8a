"""A Ray job's single-use ticket: exchanged once, within its time, by its own job only (#13).

No Ray here: jobs run on the fake executor; what matters is what the exchange endpoint answers.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.jobs.test_scheduler_rules import make_queue  # noqa: F401 - a fixture
from trainflow.db import db
from trainflow.jobs import tickets

TRAIN = "/ajax-api/2.0/mlflow/train"
SPEC = {"job": 0, "argv": ["python", "-u", "train.py"], "env": {"MLFLOW_TRACKING_TOKEN": "the-job-token"}}


@pytest.fixture
def queue(make_queue):  # noqa: F811
    return make_queue()


@pytest.fixture
def running(queue, alice):
    """Two running jobs of alice's."""
    ids = [queue.submit(alice), queue.submit(alice)]
    queue.tick()
    assert [queue.status(i) for i in ids] == ["RUNNING", "RUNNING"]
    return ids


def issue(queue, job_id: int, ttl_s: float = 60) -> str:
    with queue.app.app_context():
        return tickets.issue(job_id, {**SPEC, "job": job_id}, ttl_s)


def exchange(queue, job_id: int, ticket: object):
    return queue.client.post(f"{TRAIN}/jobs/{job_id}/ticket", json={"ticket": ticket})


def test_a_ticket_gives_its_jobs_spec_once(queue, running):
    ticket = issue(queue, running[0])
    first = exchange(queue, running[0], ticket)
    assert first.status_code == 200
    assert first.json == {**SPEC, "job": running[0]}
    assert first.headers["Cache-Control"] == "no-store"
    again = exchange(queue, running[0], ticket)
    assert again.status_code == 410
    assert again.json["error"]["code"] == "ticket_gone"


def test_an_expired_ticket_is_gone(queue, running):
    ticket = issue(queue, running[0], ttl_s=-1)
    answer = exchange(queue, running[0], ticket)
    assert answer.status_code == 410
    assert "expired" in answer.json["error"]["message"]


def test_a_ticket_of_another_job_or_none_at_all_is_refused(queue, running):
    ticket = issue(queue, running[0])
    assert exchange(queue, running[1], ticket).status_code == 401
    assert exchange(queue, running[0], "made-up").status_code == 401
    # Refused for the wrong job, it is still good for its own.
    assert exchange(queue, running[0], ticket).status_code == 200


def test_the_database_holds_neither_the_ticket_nor_the_spec_in_clear(queue, running):
    ticket = issue(queue, running[0])
    with queue.app.app_context():
        row = db.session.scalar(select(tickets.JobTicket).where(tickets.JobTicket.job_id == running[0]))
        stored = f"{row.digest} {row.sealed_spec}"
    assert ticket not in stored
    assert "the-job-token" not in stored
    exchange(queue, running[0], ticket)
    with queue.app.app_context():
        row = db.session.scalar(select(tickets.JobTicket).where(tickets.JobTicket.job_id == running[0]))
        assert row.sealed_spec is None


def test_a_job_no_longer_running_gets_nothing(queue, running, alice):
    ticket = issue(queue, running[0])
    queue.client.post(f"{TRAIN}/jobs/{running[0]}/cancel", headers=alice.basic)
    answer = exchange(queue, running[0], ticket)
    assert answer.status_code == 409
    assert answer.json["error"]["code"] == "conflict"


@pytest.mark.parametrize("body", [{}, {"ticket": 5}, {"ticket": ""}, {"ticket": "x", "more": 1}])
def test_a_malformed_exchange_is_a_400(queue, running, body):
    answer = queue.client.post(f"{TRAIN}/jobs/{running[0]}/ticket", json=body)
    assert answer.status_code == 400
    assert "error" in answer.json


def test_no_job_at_all_is_a_401(queue):
    assert queue.client.post(f"{TRAIN}/jobs/999999/ticket", json={"ticket": "x"}).status_code == 401


def test_of_exchanges_racing_each_other_one_gets_the_spec(queue, running):
    import threading

    ticket = issue(queue, running[0])
    barrier = threading.Barrier(4)
    answers: list[int] = []

    def exchange_at_once() -> None:
        client = queue.app.test_client()
        barrier.wait()
        answers.append(client.post(f"{TRAIN}/jobs/{running[0]}/ticket", json={"ticket": ticket}).status_code)

    threads = [threading.Thread(target=exchange_at_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answers) == [200, 410, 410, 410]
