"""Job operations: submit, find, list, cancel, delete, and recording how a job ended."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from trainflow.accounts.credentials import Principal
from trainflow.accounts.models import User
from trainflow.db import get_by_id, utcnow
from trainflow.errors import Conflict, NotFound
from trainflow.events.record import add_change, announce_deleted, record_status
from trainflow.events.types import EventType
from trainflow.jobs import retries
from trainflow.jobs.models import MLFLOW_RUN_STATUS, Job, JobStatus
from trainflow.jobs.quota import check_jobs_quota
from trainflow.jobs.sandboxing import ensure_may_run_jobs
from trainflow.jobs.schemas import JobListQuery, JobPatchRequest, SubmitJobRequest
from trainflow.scripts import service as scripts
from trainflow.scripts.models import Script
from trainflow.scripts.shared import shared_files
from trainflow.tracking import runs

if TYPE_CHECKING:
    from sqlalchemy import CursorResult

    from trainflow.jobs.executors import Executor

log = logging.getLogger(__name__)


def submit(session: Session, principal: Principal, request: SubmitJobRequest, authorizer: Any) -> Job:
    """Check the request, create the job's MLflow run, and queue the job."""
    ensure_may_run_jobs(current_app.config["TRAINFLOW"], principal)
    script = scripts.get_script(session, principal, request.script_id)
    check_jobs_quota(session, current_app.config["TRAINFLOW"], principal, script)
    experiment_name = request.experiment_name or f"{principal.username}/{Path(script.filename).stem}"
    experiment_id = runs.experiment_for_job(principal, experiment_name, authorizer)
    run_id = runs.create_job_run(experiment_id, principal.username, script.entrypoint, request.run_name)
    try:
        runs.schedule_run(run_id, request.params)
        job = Job(
            owner_id=principal.user_id,
            script_id=script.id,
            experiment_id=experiment_id,
            run_id=run_id,
            params=request.params,
            args=request.args,
            env=request.env,
            timeout_s=request.timeout_s,
            gpus=request.gpus,
            max_retries=request.max_retries,
            attempt=1,
            status=JobStatus.QUEUED.value,
        )
        session.add(job)
        session.flush()
        retries.add_first(session, job)
        change = add_change(session, job.id, job.owner_id, status=JobStatus.QUEUED.value)
        session.commit()
        record_status(current_app, job, change)
    except BaseException:
        # No job was queued: the run it would have used ends as failed, not left scheduled.
        session.rollback()
        with contextlib.suppress(Exception):
            runs.set_run_status(run_id, "FAILED", end_time_ms=int(time.time() * 1000))
        raise
    with contextlib.suppress(Exception):
        runs.tag_with_job(run_id, job.id)
    return job


def get_job(session: Session, principal: Principal, job_id: int) -> Job:
    """The job if it exists and is the caller's (or the caller is an admin); 404 otherwise."""
    job = get_by_id(session, Job, job_id)
    if job is None or not (principal.is_admin or job.owner_id == principal.user_id):
        raise NotFound(f"No job {job_id}; GET /ajax-api/2.0/mlflow/train/jobs lists yours.")
    return job


def visible_jobs(session: Session, principal: Principal, job_ids: list[int]) -> list[Job]:
    """Those of ``job_ids`` that exist and are the caller's (an admin: all that exist)."""
    query = select(Job).where(Job.id.in_(job_ids))
    if not principal.is_admin:
        query = query.where(Job.owner_id == principal.user_id)
    return list(session.scalars(query))


def list_jobs(session: Session, principal: Principal, query: JobListQuery) -> tuple[int, list[Job]]:
    """The caller's jobs (an admin's: everyone's) that match ``query``: their total and one page."""
    from trainflow.jobs.listing import list_jobs as run_table_page

    return run_table_page(session, principal, query)


def update_housekeeping(session: Session, job: Job, request: JobPatchRequest) -> None:
    """Set the job's tags and/or note (those the request names); an empty note removes it."""
    if request.tags is not None:
        job.tags = dict(request.tags) or None
    if request.note is not None:
        job.note = request.note or None
    session.commit()


def queue_positions(session: Session) -> dict[int, int]:
    """1-based positions of queued jobs, first in first out."""
    ids = session.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED.value).order_by(Job.id)).all()
    return {job_id: index + 1 for index, job_id in enumerate(ids)}


def usernames(session: Session, jobs: list[Job]) -> dict[int, str]:
    owner_ids = {job.owner_id for job in jobs}
    rows = (
        session.execute(select(User.id, User.username).where(User.id.in_(owner_ids))).all()
        if owner_ids
        else []
    )
    return {row[0]: row[1] for row in rows}


def script_names(session: Session, jobs: list[Job]) -> dict[int, str]:
    ids = {job.script_id for job in jobs}
    rows = session.execute(select(Script.id, Script.filename).where(Script.id.in_(ids))).all() if ids else []
    return {row[0]: row[1] for row in rows}


def ensure_deletable(job: Job) -> None:
    if not JobStatus(job.status).is_finished:
        raise Conflict(f"Job {job.id} is {job.status}; cancel it first.")


def ensure_script_unused(session: Session, script_id: int) -> None:
    count = session.scalar(select(func.count()).select_from(Job).where(Job.script_id == script_id)) or 0
    if count:
        raise Conflict(f"Script {script_id} is used by {count} job(s); delete those jobs first.")


def finish(
    session: Session,
    job: Job,
    status: JobStatus,
    *,
    exit_code: int | None,
    reason: str | None,
    finished_at: float | None = None,
    output_dir: Path | None = None,
) -> bool:
    """Record the end of a job and of its MLflow run, once; return whether this call did it."""
    result = session.execute(
        Job.__table__.update()
        .where(Job.id == job.id, Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
        .values(
            status=status.value,
            exit_code=exit_code,
            reason=reason,
            finished_at=datetime.fromtimestamp(finished_at, UTC) if finished_at else utcnow(),
        )
    )
    # A Session types what it returns a Result; an UPDATE's is a CursorResult, with a rowcount.
    updated = cast("CursorResult[Any]", result).rowcount
    change = None
    if updated:
        change = add_change(
            session, job.id, job.owner_id, status=status.value, reason=reason, exit_code=exit_code
        )
        # Its last attempt ends with it (a job cancelled between attempts: the one it waited for).
        ended = datetime.fromtimestamp(finished_at, UTC) if finished_at else utcnow()
        retries.close(
            session, job.id, job.attempt, status, exit_code=exit_code, reason=reason, finished_at=ended
        )
    session.commit()
    if not updated:
        return False
    from trainflow.jobs.tokens import forget_job_tokens

    # Before the artifacts are copied (which can take seconds): a cached token of the job must
    # not keep writing to its run once the job has ended.
    forget_job_tokens(current_app)
    session.refresh(job)
    _end_run(job, status, output_dir)
    record_status(current_app, job, change)  # after the run's end: a follower that sees `end` finds it ended
    from trainflow.jobs.signals import job_finished

    # The app itself, not the proxy: receivers are connected for it (a sweep's trial, say).
    job_finished.send(current_app._get_current_object(), job=job, session=session)  # type: ignore[attr-defined]
    return True


def log_outputs(job: Job, output_dir: Path | None) -> None:
    """The job's output folder as its run's artifacts (at its end, and at each retried attempt's)."""
    if output_dir is not None and output_dir.is_dir() and any(output_dir.iterdir()):
        from trainflow.runner.sandbox import remove_links

        # The job wrote this folder: a link in it would have the server copy what it names.
        if removed := remove_links(str(output_dir)):
            log.warning("Job %d: left out of its artifacts, not plain files: %s", job.id, removed[:10])
        runs.log_artifacts(job.run_id, output_dir)


def _end_run(job: Job, status: JobStatus, output_dir: Path | None) -> None:
    try:
        log_outputs(job, output_dir)
        end = int((job.finished_at or utcnow()).timestamp() * 1000)
        runs.set_run_status(job.run_id, MLFLOW_RUN_STATUS[status], end_time_ms=end)
    except Exception:
        log.exception("Job %d: could not finish its MLflow run %s", job.id, job.run_id)


def job_argv(job: Job, entrypoint: str) -> list[str]:
    argv = [sys.executable, "-u", entrypoint]
    for key, value in job.params.items():
        argv += [f"--{key}", str(value)]
    return argv + list(job.args)


def request_cancel(session: Session, job: Job, executor: Executor) -> None:
    """Ask a running job to end: recorded for the scheduler of the host (or cluster) running it,
    and passed to ``executor`` at once when that is the one running it."""
    session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
    session.commit()
    if job.runner in (None, executor.name):
        executor.cancel(job.id, job.supervisor_pid)


def purge_owner(session: Session, settings: Any, executor: Executor, user_id: int) -> None:
    """Before a user is deleted: end their running jobs, delete their jobs and scripts and files.

    Done here, in order, rather than by cascading deletes: jobs hold their scripts with
    RESTRICT, which PostgreSQL checks row by row during a cascade.
    """
    from sqlalchemy import delete

    jobs = session.scalars(select(Job).where(Job.owner_id == user_id)).all()
    # Read now: each cancel commits, which expires the rows, and an expired row deleted below
    # could not be read again (two running jobs made the deletion fail).
    job_ids = [job.id for job in jobs]
    running = {job.id for job in jobs if job.status == JobStatus.RUNNING.value}
    for job in jobs:
        if job.id in running:
            request_cancel(session, job, executor)
    scripts_owned = session.scalars(select(Script).where(Script.owner_id == user_id)).all()
    session.execute(delete(Job).where(Job.owner_id == user_id))
    session.execute(delete(Script).where(Script.owner_id == user_id))
    changes = {job_id: add_change(session, job_id, user_id, EventType.DELETED) for job_id in job_ids}
    session.commit()
    for job_id in job_ids:
        if job_id not in running:  # a running job's supervisor still writes in its folder
            executor.remove(job_id)
        announce_deleted(current_app, job_id, user_id, changes[job_id])
    shared = shared_files(current_app)
    for script in scripts_owned:
        shutil.rmtree(scripts.files_dir(settings, script).parent, ignore_errors=True)
        scripts.delete_shared_copy(shared, script.storage_key)
