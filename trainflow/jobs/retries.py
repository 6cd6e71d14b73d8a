"""Retries: a job whose attempt ends FAILED or LOST runs again, into the same MLflow run.

A job submitted with ``max_retries`` N may run N + 1 times. When an attempt ends FAILED or LOST
(how the scheduler records it: an exit code, a signal, a limit, a vanished supervisor, a dead
host) and attempts remain, :func:`retry` queues the job again instead of ending it: the MLflow
run is not ended (it stays RUNNING), the job's ``attempt`` goes up by one, and the next start
runs the script again with ``TRAINFLOW_ATTEMPT`` and the same ``TRAINFLOW_CHECKPOINT_DIR``, a
folder kept across attempts, so a script can resume where the last attempt left off. Metrics go
on by step: nothing resets the run.

Never retried: CANCELLED (a person asked for the end), TIMED_OUT (the timeout bounds what a job
may take, and an attempt that used it all would most likely use it all again), a job whose
cancel was asked while its attempt was ending, and a job that could not even start (its
launch failed: the cause is the server's, and a second launch would meet it too).

Every attempt is a row of ``tf_job_attempts`` (number, status, exit code, reason, times, and the
range of the job's log lines it wrote: ``log_from`` lines came before it, ``log_through`` is its
last), made QUEUED when the job is submitted or queued again, RUNNING when claimed, and closed
with the attempt's outcome. The job's event stream stays one sequence: a retry is a ``status``
event with status QUEUED, the new ``attempt`` and ``retry`` (the attempt that ended: number,
status, exit code, reason); the ``end`` comes once, after the last attempt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from trainflow.db import TABLE_PREFIX, UTCDateTime, db, utcnow
from trainflow.errors import ValidationFailed
from trainflow.events.hub import hub_of
from trainflow.events.record import add_change
from trainflow.events.store import store_of
from trainflow.events.types import EventType
from trainflow.jobs.models import Job, JobStatus
from trainflow.runner.eventlog import fragment

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import CursorResult

log = logging.getLogger(__name__)

RETRIED = (JobStatus.FAILED, JobStatus.LOST)  # the outcomes an attempt is run again after
ATTEMPT_TAG = "trainflow.attempt"  # the run's tag holding the attempt number


class JobAttempt(db.Model):  # type: ignore[name-defined,misc]
    """One run of a job's script: the first, or a retry."""

    __tablename__ = f"{TABLE_PREFIX}job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey(f"{TABLE_PREFIX}jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1, 2 ...
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    # The job's log lines are numbered across attempts: this attempt's are log_from + 1 to
    # log_through (None while it runs: every line after log_from).
    log_from: Mapped[int] = mapped_column(Integer, default=0)
    log_through: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def add_first(session: Session, job: Job) -> None:
    """The first attempt's row, QUEUED, in the transaction that queues the job."""
    session.add(JobAttempt(job_id=job.id, number=1, status=JobStatus.QUEUED.value, log_from=0))


def mark_running(session: Session, job_id: int, number: int) -> None:
    """The attempt was claimed (in the claim's transaction)."""
    session.execute(
        update(JobAttempt)
        .where(JobAttempt.job_id == job_id, JobAttempt.number == number)
        .values(status=JobStatus.RUNNING.value, started_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def close(
    session: Session,
    job_id: int,
    number: int,
    status: JobStatus,
    *,
    exit_code: int | None,
    reason: str | None,
    finished_at: datetime,
    log_through: int | None = None,
) -> None:
    """Record how an attempt ended (in the caller's transaction); an attempt closed already stays."""
    values: dict[str, Any] = {
        "status": status.value,
        "exit_code": exit_code,
        "reason": reason,
        "finished_at": finished_at,
    }
    if log_through is not None:
        values["log_through"] = log_through
    session.execute(
        update(JobAttempt)
        .where(
            JobAttempt.job_id == job_id,
            JobAttempt.number == number,
            JobAttempt.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def attempts_of(session: Session, job_ids: list[int]) -> dict[int, list[JobAttempt]]:
    """Each job's attempts, first to last."""
    found: dict[int, list[JobAttempt]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return found
    rows = session.scalars(
        select(JobAttempt)
        .where(JobAttempt.job_id.in_(job_ids))
        .order_by(JobAttempt.job_id, JobAttempt.number)
    ).all()
    for row in rows:
        found[row.job_id].append(row)
    return found


def log_from(session: Session, job_id: int, number: int) -> int:
    """How many of the job's log lines came before this attempt (its supervisor numbers on)."""
    value = session.scalar(
        select(JobAttempt.log_from).where(JobAttempt.job_id == job_id, JobAttempt.number == number)
    )
    return int(value or 0)


@dataclass(frozen=True)
class LogWindow:
    log_from: int  # lines of the job before the attempt's first
    log_through: int | None  # the attempt's last line; None while it may still write


def log_window(session: Session, job: Job, number: int) -> LogWindow:
    """Which of the job's log lines attempt ``number`` wrote; 400 naming ``attempt`` if none such."""
    row = session.scalar(select(JobAttempt).where(JobAttempt.job_id == job.id, JobAttempt.number == number))
    if row is None:
        if number == 1 and job.attempt == 1:  # a job queued before attempts were recorded
            return LogWindow(0, None)
        raise ValidationFailed(
            f"attempt: job {job.id} has no attempt {number} (its attempts are 1 to {job.attempt}).",
            fields=[{"field": "attempt", "message": f"must be from 1 to {job.attempt}"}],
        )
    # The last attempt's range stays open (log_through None): it holds every line after log_from.
    return LogWindow(row.log_from, row.log_through)


def may_retry(job: Job, outcome: JobStatus) -> bool:
    """Whether an attempt that ended ``outcome`` is run again (see the module's docstring)."""
    return outcome in RETRIED and job.attempt <= (job.max_retries or 0) and not job.cancel_requested


def retry(
    app: Flask,
    session: Session,
    job: Job,
    outcome: JobStatus,
    *,
    exit_code: int | None,
    reason: str | None,
    finished_at: float | None = None,
    lines: int | None = None,
    output_dir: Path | None = None,
) -> bool:
    """Queue the job again if its attempt that ended ``outcome`` may be retried; whether it was.

    False leaves everything as it was: the caller records the end (``service.finish``). The
    requeue is a conditional UPDATE of the RUNNING attempt, so a job whose end another host
    recorded, or whose cancel was asked meanwhile, is not queued again.
    """
    if not may_retry(job, outcome):
        return False
    number = job.attempt
    ended_at = datetime.fromtimestamp(finished_at, UTC) if finished_at else utcnow()
    start = log_from(session, job.id, number)
    through = lines if lines is not None and lines >= start else start + _count_lines(app, job.id, start)
    attempts = (job.max_retries or 0) + 1
    said = f"Attempt {number} {outcome.value}" + (f": {reason}" if reason else ".")
    text = f"{said} Retrying: attempt {number + 1} of {attempts}."
    result = session.execute(
        update(Job)
        .where(
            Job.id == job.id,
            Job.status == JobStatus.RUNNING.value,
            Job.attempt == number,
            Job.cancel_requested.is_(False),
        )
        .values(
            status=JobStatus.QUEUED.value,
            attempt=number + 1,
            reason=text,
            exit_code=None,
            supervisor_pid=None,
            pid=None,
            gpu_ids=None,
            reported_status=None,
            reported_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if not cast("CursorResult[Any]", result).rowcount:
        session.rollback()
        return False
    close(
        session,
        job.id,
        number,
        outcome,
        exit_code=exit_code,
        reason=reason,
        finished_at=ended_at,
        log_through=through,
    )
    session.add(JobAttempt(job_id=job.id, number=number + 1, status=JobStatus.QUEUED.value, log_from=through))
    change = add_change(
        session, job.id, job.owner_id, status=JobStatus.QUEUED.value, reason=text, exit_code=None
    )
    session.commit()
    session.refresh(job)
    from trainflow.jobs.tokens import forget_job_tokens

    forget_job_tokens(app)  # the attempt's token stops working; the next attempt gets its own
    _keep_outputs(job, output_dir)
    _keep_running(job)
    retried = {"attempt": number, "status": outcome.value, "exit_code": exit_code, "reason": reason}
    _record(app, job, change, retried, text)
    log.warning(
        "Job %d: attempt %d %s; queued again (attempt %d of %d)",
        job.id,
        number,
        outcome.value,
        number + 1,
        attempts,
    )
    return True


def _count_lines(app: Flask, job_id: int, start: int) -> int:
    """Lines the job's log holds after ``start``: an attempt that vanished did not say."""
    try:
        return sum(1 for _ in store_of(app).log_lines(job_id, start))
    except Exception:
        log.exception("Job %d: could not count its log lines", job_id)
        return 0


def _keep_outputs(job: Job, output_dir: Path | None) -> None:
    """The attempt's output folder becomes the run's artifacts now: the next start empties it."""
    if output_dir is None or not output_dir.is_dir():
        return
    from trainflow.jobs.service import log_outputs

    try:
        log_outputs(job, output_dir)
    except Exception:
        log.exception("Job %d: could not keep attempt %d's outputs as artifacts", job.id, job.attempt - 1)


def _keep_running(job: Job) -> None:
    """The run stays RUNNING between attempts, though the script's MLflow client may have ended
    it on its way out (the fluent API ends its active run at exit)."""
    from trainflow.tracking.runs import set_run_status

    try:
        set_run_status(job.run_id, "RUNNING")
    except Exception:
        log.exception("Job %d: could not keep its run %s RUNNING", job.id, job.run_id)


def _record(app: Flask, job: Job, change: int, retried: dict[str, Any], text: str) -> None:
    """The retry in the job's event log (a QUEUED status naming the attempt that ended), then the
    notice that wakes the all-jobs streams."""
    event = fragment(
        EventType.STATUS, status=JobStatus.QUEUED.value, attempt=job.attempt, reason=text, retry=retried
    )
    try:
        store_of(app).append(job.id, [event])
    except Exception:
        log.exception("Job %d: could not record its retry", job.id)
    hub_of(app).publisher.publish({"kind": "status", "job": job.id, "owner": job.owner_id, "seq": change})


def tag_attempt(job: Job) -> None:
    """The run's ``trainflow.attempt`` tag: which attempt writes to it now."""
    from trainflow.tracking.runs import tag_run

    try:
        tag_run(job.run_id, ATTEMPT_TAG, str(job.attempt))
    except Exception:
        log.exception("Job %d: could not tag its run with attempt %d", job.id, job.attempt)
