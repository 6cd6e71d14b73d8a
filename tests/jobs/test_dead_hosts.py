"""A dead host's jobs, decided by a survivor (#13): LOST with a reason, never run again.

Schedulers on fake executors share one PostgreSQL database (heartbeats are kept where hosts
can share one); a host dies by having its heartbeat age. tests/e2e/test_dead_host.py SIGKILLs
real servers.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.conftest import dispose
from tests.jobs.test_scheduler_rules import Queue
from trainflow.app import create_app
from trainflow.db import db
from trainflow.jobs import hosts
from trainflow.jobs.executors.fake import FakeExecutor
from trainflow.jobs.models import JobStatus
from trainflow.jobs.scheduler import JobScheduler

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
DEAD_S = 30.0


def beat(queue: Queue, name: str, seconds_ago: float = 0.0) -> None:
    """``name``'s heartbeat, ``seconds_ago``."""
    with queue.app.app_context():
        hosts.beat(db.session(), name)
        db.session.execute(
            update(hosts.Host)
            .where(hosts.Host.name == name)
            .values(last_seen=hosts.database_now() - timedelta(seconds=seconds_ago))
        )
        db.session.commit()
        db.session.remove()


@pytest.fixture
def two_hosts(settings):  # type: ignore[no-untyped-def]
    """Host a's scheduler (the queue's) and host b's, on one database, one job at a time."""
    app = create_app(settings.replace(max_concurrent_jobs=1, host_dead_seconds=DEAD_S))
    queue = Queue(app, app.test_client())
    yield queue, JobScheduler(app, app.config["TRAINFLOW"], FakeExecutor("host-b"))
    dispose(app)


def test_a_survivor_records_a_dead_hosts_job_lost_and_never_runs_it_again(two_hosts, alice):
    queue, host_b = two_hosts
    beat(queue, "host-a")
    beat(queue, "host-b")
    job_id = queue.submit(alice)
    queue.tick()  # host a runs it
    beat(queue, "host-a", seconds_ago=DEAD_S + 1)  # and falls silent
    queue.tick(host_b)
    job = queue.job(job_id)
    assert job.status == JobStatus.LOST.value
    assert "Its host (host-a) stopped" in (job.reason or "")
    assert "not run again" in (job.reason or "")
    assert host_b.executor.launches == {}  # type: ignore[attr-defined]
    run = queue.client.get(f"/api/2.0/mlflow/runs/get?run_id={job.run_id}", headers=alice.basic)
    assert run.json["run"]["info"]["status"] == "FAILED"


def test_the_dead_hosts_slot_goes_to_the_next_job_on_a_survivor(two_hosts, alice):
    queue, host_b = two_hosts
    beat(queue, "host-a")
    first = queue.submit(alice)
    queue.tick()
    second = queue.submit(alice)
    queue.tick(host_b)
    assert queue.status(second) == JobStatus.QUEUED.value  # the limit counts host a's job
    beat(queue, "host-a", seconds_ago=DEAD_S + 1)
    queue.tick(host_b)
    assert queue.status(first) == JobStatus.LOST.value
    assert queue.job(second).runner == "host-b"
    assert list(host_b.executor.launches) == [second]  # type: ignore[attr-defined]


def test_a_host_that_beats_keeps_its_jobs(two_hosts, alice):
    queue, host_b = two_hosts
    beat(queue, "host-a", seconds_ago=DEAD_S - 5)
    job_id = queue.submit(alice)
    queue.tick()
    queue.tick(host_b)
    assert queue.status(job_id) == JobStatus.RUNNING.value


def test_a_job_whose_supervisor_still_reports_stays_running(two_hosts, alice, monkeypatch):
    queue, host_b = two_hosts
    beat(queue, "host-a")
    job_id = queue.submit(alice)
    queue.tick()
    beat(queue, "host-a", seconds_ago=DEAD_S + 1)
    with queue.app.app_context():
        just_now = hosts.now(db.session())
    monkeypatch.setattr(hosts, "last_report", lambda job: just_now)
    queue.tick(host_b)
    assert queue.status(job_id) == JobStatus.RUNNING.value


def test_a_runner_that_never_kept_a_heartbeat_is_not_declared_dead(two_hosts, alice):
    queue, host_b = two_hosts
    job_id = queue.submit(alice)
    queue.tick()  # host a keeps no heartbeat row (jobs claimed before heartbeats were kept)
    queue.tick(host_b)
    assert queue.status(job_id) == JobStatus.RUNNING.value


def test_a_host_that_comes_back_stops_its_job_and_leaves_the_survivors_record(two_hosts, alice):
    queue, host_b = two_hosts
    beat(queue, "host-a")
    job_id = queue.submit(alice)
    queue.tick()  # host a sees it running
    beat(queue, "host-a", seconds_ago=DEAD_S + 1)  # paused, say
    queue.tick(host_b)
    reason = queue.job(job_id).reason
    beat(queue, "host-a")  # and back
    queue.tick()
    assert job_id in queue.executor.cancelled
    assert (queue.status(job_id), queue.job(job_id).reason) == (JobStatus.LOST.value, reason)


def test_a_host_restarted_after_a_survivor_decided_stops_what_it_still_runs(two_hosts, alice):
    queue, host_b = two_hosts
    beat(queue, "host-a")
    job_id = queue.submit(alice)
    queue.tick()
    beat(queue, "host-a", seconds_ago=DEAD_S + 1)
    queue.tick(host_b)
    restarted = JobScheduler(queue.app, queue.app.config["TRAINFLOW"], queue.executor)  # same executor
    restarted._start_heartbeat()
    try:
        queue.tick(restarted)
    finally:
        restarted.stop()
    assert job_id in queue.executor.cancelled
    assert queue.status(job_id) == JobStatus.LOST.value
