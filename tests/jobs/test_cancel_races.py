"""A cancel that arrives while a job is starting ends it CANCELLED, never LOST or run anyway.

Two windows: the scheduler has claimed the job (RUNNING) but not yet started its supervisor,
and the supervisor has started but not yet set its SIGTERM handler (Python's default action
then ends it without a word). A loaded machine makes both wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.processes import wait_for
from tests.scripts.test_upload import TRAIN_PY, post_file
from trainflow.db import db
from trainflow.jobs.executors.local import LaunchSpec
from trainflow.jobs.models import Job, JobStatus
from trainflow.jobs.scheduler import JobScheduler

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and /proc are POSIX")

CANCEL = "/ajax-api/2.0/mlflow/train/jobs/{}/cancel"
NO_HANDLER_YET = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "print('ready', flush=True); time.sleep(60)"
)


def _running_job(app, client, user, settings, supervisor_pid: int | None = None) -> int:
    script = post_file(client, user, "train.py", TRAIN_PY).json["script"]
    with app.app_context():
        job = Job(
            owner_id=user.id,
            script_id=script,
            experiment_id="0",
            run_id="r" * 32,
            status=JobStatus.RUNNING.value,
            supervisor_pid=supervisor_pid,
            params={},
            args=[],
            env={},
        )
        db.session.add(job)
        db.session.commit()
        (settings.jobs_dir / str(job.id)).mkdir(parents=True, exist_ok=True)
        return job.id


def _observe(app, scheduler: JobScheduler, job_id: int) -> Job:
    with app.app_context():
        scheduler.tick()
        job = db.session.get(Job, job_id)
        db.session.expunge(job)
        return job


def test_a_supervisor_killed_by_the_cancel_before_its_handler_is_set_ends_cancelled(
    app, client, alice, settings
):
    job_id = _running_job(app, client, alice, settings)
    # A process in the supervisor's place that has no SIGTERM handler yet: the signal kills it.
    # (It sets the default action itself: a process started with SIGTERM ignored passes that on.)
    job_dir = settings.jobs_dir / str(job_id)
    starting = subprocess.Popen(
        [sys.executable, "-c", NO_HANDLER_YET, str(job_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert starting.stdout.readline() == "ready\n"
        with app.app_context():
            db.session.get(Job, job_id).supervisor_pid = starting.pid
            db.session.commit()
        assert client.post(CANCEL.format(job_id), headers=alice.basic).status_code == 202
        assert starting.wait(timeout=10) == -15
    finally:
        starting.kill()
        starting.wait()
        starting.stdout.close()
    job = _observe(app, JobScheduler(app, settings), job_id)
    assert job.status == JobStatus.CANCELLED.value, job.reason
    assert job.reason == "Cancelled."


def test_a_job_cancelled_before_its_supervisor_starts_never_runs(app, client, alice, settings, tmp_path):
    job_id = _running_job(app, client, alice, settings)  # claimed; its supervisor not started
    response = client.post(CANCEL.format(job_id), headers=alice.basic)
    assert response.status_code == 202 and response.json["status"] == "RUNNING"
    ran = tmp_path / "it-ran"
    work = settings.jobs_dir / str(job_id) / "work"
    work.mkdir()
    (work / "train.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    scheduler = JobScheduler(app, settings)
    executor = scheduler.executor
    pid = executor.start_supervisor(
        LaunchSpec(job_id, [sys.executable, "train.py"], {"PATH": os.environ["PATH"]}, None, 1.0)
    )
    with app.app_context():
        db.session.get(Job, job_id).supervisor_pid = pid
        db.session.commit()
    wait_for(lambda: executor.reap() == 0, seconds=30)  # the supervisor has ended
    assert json.loads((settings.jobs_dir / str(job_id) / "status.json").read_text())["reason"] == "cancelled"
    assert not ran.exists()
    job = _observe(app, scheduler, job_id)
    assert job.status == JobStatus.CANCELLED.value, job.reason
