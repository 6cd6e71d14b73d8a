"""The scheduler's rules, through the fake executor: nothing runs, so each test takes milliseconds.

Queue order, the concurrency and per-user limits, GPU assignment, timeouts, how each kind
of ending is recorded (LOST included), and cancel.
"""

from __future__ import annotations

import io

import pytest

from tests.conftest import dispose, shared_mode
from trainflow.app import create_app
from trainflow.db import db
from trainflow.jobs.executors.fake import FakeExecutor
from trainflow.jobs.models import Job, JobStatus
from trainflow.jobs.scheduler import EXTENSION, JobScheduler

TRAIN = "/ajax-api/2.0/mlflow/train"


class Queue:
    """An app whose scheduler runs jobs on a fake executor, one round per ``tick()``."""

    def __init__(self, app, client) -> None:  # type: ignore[no-untyped-def]
        self.app, self.client = app, client
        self.executor = FakeExecutor("host-a")
        self.scheduler = JobScheduler(app, app.config["TRAINFLOW"], self.executor)
        app.extensions[EXTENSION] = self.scheduler  # cancels reach the fake executor too

    def another_host(self) -> JobScheduler:
        """A second host's scheduler on the same database, with an executor of its own."""
        return JobScheduler(self.app, self.app.config["TRAINFLOW"], FakeExecutor("host-b"))

    def submit(self, user, **body) -> int:  # type: ignore[no-untyped-def]
        upload = self.client.post(
            f"{TRAIN}/upload",
            data={"file": (io.BytesIO(b"print('hi')\n"), "train.py")},
            headers=user.basic,
            content_type="multipart/form-data",
        )
        answer = self.client.post(
            f"{TRAIN}/jobs", json={"script_id": upload.json["script"], **body}, headers=user.basic
        )
        assert answer.status_code == 201, answer.json
        return int(answer.json["job"])

    def tick(self, scheduler: JobScheduler | None = None) -> None:
        with self.app.app_context():
            (scheduler or self.scheduler).tick()
            db.session.remove()

    def job(self, job_id: int) -> Job:
        with self.app.app_context():
            job = db.session.get(Job, job_id)
            db.session.expunge(job)
            return job

    def status(self, job_id: int) -> str:
        return self.job(job_id).status


@pytest.fixture
def make_queue(settings, make_user):  # type: ignore[no-untyped-def]
    """make_queue(max_concurrent_jobs=2) -> a Queue on an app with those settings changed."""
    apps = []

    def make(**changes) -> Queue:  # type: ignore[no-untyped-def]
        app = create_app(settings.replace(**changes))
        apps.append(app)
        return Queue(app, app.test_client())

    yield make
    for app in apps:
        dispose(app)


def test_jobs_start_in_the_order_they_were_queued_as_slots_free_up(make_queue, alice):
    queue = make_queue(max_concurrent_jobs=2)
    first, second, third = (queue.submit(alice) for _ in range(3))
    queue.tick()
    assert queue.executor.running() == [first, second]
    assert queue.status(third) == JobStatus.QUEUED.value
    queue.executor.exit(first, 0)
    queue.tick()
    assert queue.status(first) == JobStatus.SUCCEEDED.value
    assert queue.executor.running() == [second, third]


def test_a_user_at_the_per_user_limit_waits_while_others_go_ahead(make_queue, alice, bob):
    queue = make_queue(max_concurrent_jobs=3, max_jobs_per_user=1)
    alices = [queue.submit(alice), queue.submit(alice)]
    bobs = queue.submit(bob)
    queue.tick()
    assert queue.executor.running() == [alices[0], bobs]
    queue.executor.exit(alices[0], 0)
    queue.tick()
    assert queue.executor.running() == [bobs, alices[1]]


def test_gpus_are_given_out_whole_and_never_twice(make_queue, alice):
    queue = make_queue(gpus="0,1,2", max_concurrent_jobs=10)
    two, also_two, one = queue.submit(alice, gpus=2), queue.submit(alice, gpus=2), queue.submit(alice, gpus=1)
    cpu_only = queue.submit(alice)
    queue.tick()
    launches = queue.executor.launches
    assert launches[two].gpu_ids == "0,1"
    assert also_two not in launches  # two GPUs asked, one free: it waits
    assert launches[one].gpu_ids == "2"
    assert launches[cpu_only].gpu_ids == ""  # GPUs are managed: it sees none
    queue.executor.exit(two, 0)
    queue.tick()
    assert launches[also_two].gpu_ids == "0,1"
    assert queue.job(also_two).gpu_ids == "0,1"


def test_a_job_asking_for_more_gpus_than_free_does_not_hold_up_the_rest(make_queue, alice):
    queue = make_queue(gpus="0", max_concurrent_jobs=10)
    queue.submit(alice, gpus=1)
    waiting, behind = queue.submit(alice, gpus=1), queue.submit(alice)
    queue.tick()
    assert queue.status(waiting) == JobStatus.QUEUED.value
    assert queue.executor.is_running(behind)


def test_the_timeout_is_the_jobs_own_but_never_past_the_servers_most(make_queue, alice):
    queue = make_queue(job_max_seconds=3600, max_concurrent_jobs=10)
    short, long, unset = (queue.submit(alice, timeout_s=t) for t in (5, 600, None))
    # The server restarts with a lower most while they wait in the queue.
    queue.scheduler.settings = queue.scheduler.settings.replace(job_max_seconds=60)
    queue.tick()
    assert [queue.executor.launches[j].timeout_s for j in (short, long, unset)] == [5, 60, 60]
    queue.executor.exit(short, None, signal=9, reason="timed_out")
    queue.tick()
    job = queue.job(short)
    assert (job.status, job.reason) == (JobStatus.TIMED_OUT.value, "Ran past its timeout of 5 s.")


@pytest.mark.parametrize(
    ("how", "status", "reason", "exit_code"),
    [
        ({"exit_code": 0}, JobStatus.SUCCEEDED, None, 0),
        ({"exit_code": 3}, JobStatus.FAILED, "Exited with code 3.", 3),
        ({"exit_code": None, "signal": 9}, JobStatus.FAILED, "Killed by signal 9.", None),
        (
            {"exit_code": None, "reason": "memory_limit", "message": "memory limit of 64 MB exceeded"},
            JobStatus.FAILED,
            "memory limit of 64 MB exceeded",
            None,
        ),
        (
            {"exit_code": 1, "reason": "setup_failed"},
            JobStatus.FAILED,
            "Its environment could not be set up (requirements.txt); see its log.",
            1,
        ),
        ({"exit_code": None, "reason": "cancelled"}, JobStatus.CANCELLED, "Cancelled.", None),
    ],
)
def test_how_a_job_ended_is_recorded_once(make_queue, alice, how, status, reason, exit_code):
    queue = make_queue()
    job_id = queue.submit(alice)
    queue.tick()
    queue.executor.exit(job_id, **how)
    queue.tick()
    queue.tick()  # seen again: nothing changes
    job = queue.job(job_id)
    assert (job.status, job.reason, job.exit_code) == (status.value, reason, exit_code)
    events = queue.client.get(f"{TRAIN}/jobs/{job_id}", headers=alice.basic).json
    assert events["status"] == status.value


def test_a_job_that_vanishes_without_a_word_is_lost_and_its_slot_freed(make_queue, alice):
    queue = make_queue(max_concurrent_jobs=1)
    lost, next_one = queue.submit(alice), queue.submit(alice)
    queue.tick()
    queue.executor.vanish(lost)
    queue.tick()
    job = queue.job(lost)
    assert job.status == JobStatus.LOST.value
    assert "ended without recording how the job ended" in job.reason
    assert queue.executor.running() == [next_one]


def test_cancelling_a_running_job_asks_the_executor_and_ends_it_cancelled(make_queue, alice, bob):
    queue = make_queue()
    job_id = queue.submit(alice)
    queue.tick()
    assert queue.client.post(f"{TRAIN}/jobs/{job_id}/cancel", headers=bob.basic).status_code == 404
    assert job_id not in queue.executor.cancelled
    answer = queue.client.post(f"{TRAIN}/jobs/{job_id}/cancel", headers=alice.basic)
    assert (answer.status_code, answer.json["status"]) == (202, JobStatus.RUNNING.value)
    assert job_id in queue.executor.cancelled
    queue.tick()
    assert (queue.status(job_id), queue.job(job_id).reason) == (JobStatus.CANCELLED.value, "Cancelled.")


def test_a_job_that_vanishes_after_a_cancel_was_asked_is_cancelled_not_lost(make_queue, alice):
    queue = make_queue()
    job_id = queue.submit(alice)
    queue.tick()
    queue.executor.cancelled.add(job_id)  # the cancel reached it while it was starting up
    queue.executor.vanish(job_id)
    queue.tick()
    assert queue.status(job_id) == JobStatus.CANCELLED.value


def test_a_queued_job_is_cancelled_at_once_and_never_started(make_queue, alice):
    queue = make_queue()
    job_id = queue.submit(alice)
    answer = queue.client.post(f"{TRAIN}/jobs/{job_id}/cancel", headers=alice.basic)
    assert (answer.status_code, answer.json["status"]) == (200, JobStatus.CANCELLED.value)
    queue.tick()
    assert job_id not in queue.executor.launches


def test_a_job_the_executor_cannot_start_fails_with_the_reason(make_queue, alice):
    queue = make_queue(max_concurrent_jobs=1)
    refused, after = queue.submit(alice), queue.submit(alice)
    queue.executor.refuse_next_start = RuntimeError("no sandbox can be built here")
    queue.tick()
    job = queue.job(refused)
    assert (job.status, job.reason) == (
        JobStatus.FAILED.value,
        "Could not start: no sandbox can be built here",
    )
    queue.tick()
    assert queue.executor.running() == [after]


def test_the_launch_carries_the_job_and_nothing_of_the_server(make_queue, alice):
    queue = make_queue()
    job_id = queue.submit(alice, params={"lr": 0.1}, args=["--fast"], env={"SEED": "7"})
    queue.tick()
    launch = queue.executor.launches[job_id]
    job = queue.job(job_id)
    assert (launch.run_id, launch.experiment_id) == (job.run_id, job.experiment_id)
    assert launch.argv[1:] == ["-u", "train.py", "--lr", "0.1", "--fast"]
    assert launch.user_env == {"SEED": "7"}
    assert launch.token and launch.owner_is_admin is False
    assert queue.job(job_id).supervisor_pid is not None


def test_jobs_reach_the_server_at_its_public_url_when_one_is_set(make_queue, alice):
    queue = make_queue(public_url="http://trainflow.internal:8080/")
    job_id = queue.submit(alice)
    queue.tick()
    assert queue.executor.launches[job_id].tracking_uri == "http://trainflow.internal:8080"


def test_hosts_share_the_limits_and_each_observes_only_the_jobs_it_runs(make_queue, alice):
    queue = make_queue(max_concurrent_jobs=2)
    host_b = queue.another_host()
    first, second, third = (queue.submit(alice) for _ in range(3))
    queue.tick()
    queue.tick(host_b)  # its executor knows none of them: they are not its to call LOST
    assert [queue.status(j) for j in (first, second, third)] == ["RUNNING", "RUNNING", "QUEUED"]
    assert queue.job(first).runner == "host-a"
    assert host_b.executor.launches == {}  # type: ignore[attr-defined]
    queue.executor.exit(first, 0)
    queue.tick(host_b)  # a slot is free, but not yet seen free: the limit counts host a's jobs
    assert queue.status(third) == "QUEUED"
    queue.tick()
    queue.tick(host_b)
    assert queue.status(first) == "SUCCEEDED"
    assert queue.status(third) == "RUNNING"


def test_a_cancel_asked_on_another_host_reaches_the_job_through_its_own_host(make_queue, alice):
    queue = make_queue()
    job_id = queue.submit(alice)
    queue.tick()
    host_b = queue.another_host()
    queue.app.extensions[EXTENSION] = host_b  # the cancel arrives at host b
    answer = queue.client.post(f"{TRAIN}/jobs/{job_id}/cancel", headers=alice.basic)
    assert answer.status_code == 202
    assert job_id not in host_b.executor.cancelled  # type: ignore[attr-defined]
    queue.tick(host_b)
    assert queue.status(job_id) == JobStatus.RUNNING.value
    queue.tick()  # host a's round passes it on
    assert job_id in queue.executor.cancelled
    assert (queue.status(job_id), queue.job(job_id).reason) == (JobStatus.CANCELLED.value, "Cancelled.")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # shared mode needs it
def test_in_shared_mode_a_host_runs_a_script_uploaded_elsewhere_from_its_own_copy(
    make_queue, alice, redis_url, tmp_path
):
    queue = make_queue(
        **shared_mode(redis_url, tmp_path),
    )
    job_id = queue.submit(alice)  # uploaded to host a: its files are in a's data directory
    elsewhere = queue.scheduler.settings.replace(data_dir=tmp_path / "host-b")
    host_b = JobScheduler(queue.app, elsewhere, FakeExecutor("host-b"))
    queue.tick(host_b)
    assert (queue.status(job_id), queue.job(job_id).runner) == (JobStatus.RUNNING.value, "host-b")
    files = host_b.executor.launches[job_id].files  # type: ignore[attr-defined]
    assert files.is_relative_to(tmp_path / "host-b")
    assert (files / "train.py").read_bytes() == b"print('hi')\n"


class _StoreAway:
    """A shared store that does not answer (and then does again: ``back``)."""

    def __init__(self, store):  # type: ignore[no-untyped-def]
        self.store, self.is_away = store, True

    def put(self, name, source):  # type: ignore[no-untyped-def]
        self.store.put(name, source)

    def fetch(self, name, destination):  # type: ignore[no-untyped-def]
        if self.is_away:
            raise ConnectionError("the artifact store does not answer")
        self.store.fetch(name, destination)

    def delete(self, name):  # type: ignore[no-untyped-def]
        self.store.delete(name)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_job_whose_script_the_shared_store_holds_back_waits_queued(make_queue, alice, redis_url, tmp_path):
    from trainflow.scripts import shared

    queue = make_queue(
        **shared_mode(redis_url, tmp_path),
    )
    job_id = queue.submit(alice)
    away = _StoreAway(shared.shared_files(queue.app))
    shared.init_app(queue.app, away)
    elsewhere = queue.scheduler.settings.replace(data_dir=tmp_path / "host-b")
    host_b = JobScheduler(queue.app, elsewhere, FakeExecutor("host-b"))
    queue.tick(host_b)
    assert queue.status(job_id) == JobStatus.QUEUED.value  # not failed for a store that is away
    away.is_away = False
    queue.tick(host_b)
    assert (queue.status(job_id), queue.job(job_id).runner) == (JobStatus.RUNNING.value, "host-b")
