"""The server's own entries in a job's event log: status changes, the end, and metrics.

The supervisor writes the job's log lines and progress; these come from the server: the
scheduler's status changes and the metrics the job's MLflow client logs through the server.
Each goes through the app's event store (:mod:`trainflow.events.store`), which numbers and
stores it before it publishes the notice that wakes followers.

Status changes and deletions are also rows of :class:`~trainflow.events.models.JobChange`,
added by :func:`add_change` in the transaction that changes the job: the all-jobs stream's
sequence, which it replays from the database, so a notice lost on the bus delays a change
and never loses it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from trainflow.events.hub import hub_of
from trainflow.events.models import JobChange
from trainflow.events.store import store_of
from trainflow.events.types import EventType, JobStatus
from trainflow.runner.eventlog import fragment

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

    from trainflow.settings import Settings


class Job(Protocol):
    """What the event log needs of a job (a row of ``tf_jobs`` has it): events know no job model."""

    id: int
    owner_id: int
    status: str
    reason: str | None
    exit_code: int | None


log = logging.getLogger(__name__)
# pg_advisory_xact_lock key ("tfchange") held from a change's insert to its commit: on
# PostgreSQL, ids come from a sequence in insert order but become visible in commit order, and
# a reader that saw id 8 before id 7 committed would skip 7. SQLite has one writer at a time.
CHANGES_LOCK = 0x74666368616E6765


def add_change(
    session: Session,
    job_id: int,
    owner_id: int,
    kind: str = EventType.STATUS,
    *,
    status: str | None = None,
    reason: str | None = None,
    exit_code: int | None = None,
) -> int:
    """Add a status change (or deletion) to the sequence, in the caller's transaction; its seq.

    ``kind`` is :attr:`EventType.STATUS` or :attr:`EventType.DELETED`. The caller commits at
    once: on PostgreSQL a lock is held from here to the commit, so that changes commit in the
    order of their ids.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(CHANGES_LOCK)))
    change = JobChange(
        job_id=job_id, owner_id=owner_id, kind=str(kind), status=status, reason=reason, exit_code=exit_code
    )
    session.add(change)
    session.flush()
    return change.id


def job_dir(app: Flask, job_id: int) -> Path:
    """The job's folder on this host (its files; its events are the store's, see :func:`store_of`)."""
    settings: Settings = app.config["TRAINFLOW"]
    return settings.jobs_dir / str(job_id)


def record_status(app: Flask, job: Job, change: int | None = None) -> None:
    """The job's new status (and, once it has finished, the ``end`` event after it) in its log.

    ``change`` is the seq :func:`add_change` gave the status change, committed already: the
    notice that wakes the all-jobs streams carries it. The store announces the events.
    """
    status = JobStatus(job.status)
    fields: dict[str, Any] = {"status": status.value, "reason": job.reason, "exit_code": job.exit_code}
    fields["attempt"] = getattr(job, "attempt", None)  # a retried job's (trainflow.jobs.retries)
    fragments = [fragment(EventType.STATUS, **fields)]
    try:
        if status.is_finished:
            # Status + end unless the log already has its end (this may run twice).
            end = fragment(
                EventType.END, status=status.value, exit_code=job.exit_code, attempt=fields["attempt"]
            )
            store_of(app).append(job.id, [*fragments, end], unless_ended=True)
        else:
            store_of(app).append(job.id, fragments)
    except (OSError, SQLAlchemyError):
        log.exception("Job %d: could not record its status %s", job.id, status.value)
    if change is not None:
        hub_of(app).publisher.publish({"kind": "status", "job": job.id, "owner": job.owner_id, "seq": change})


def ensure_end(app: Flask, job: Job) -> None:
    """A finished job's log ends with ``end`` even if the server stopped between the two writes."""
    record_status(app, job)


def record_metrics(app: Flask, job_id: int, metrics: list[dict[str, Any]]) -> None:
    """Metrics the job's MLflow client just logged (``log_metric`` / ``log_batch`` bodies)."""
    fragments = []
    for metric in metrics:
        if not isinstance(metric, dict) or not isinstance(metric.get("key"), str):
            continue
        fragments.append(
            fragment(
                EventType.METRIC,
                key=metric["key"],
                value=_float(metric.get("value")),
                step=_int(metric.get("step")) or 0,
                timestamp=_int(metric.get("timestamp")),
            )
        )
    if not fragments:
        return
    try:
        store_of(app).append(job_id, fragments)
    except (OSError, SQLAlchemyError):
        log.exception("Job %d: could not record its metrics", job_id)


def announce_deleted(app: Flask, job_id: int, owner_id: int, change: int) -> None:
    """After the commit that deleted the job and added its deletion (``change``) to the sequence:
    its events go, then the streams that follow it are told."""
    try:
        store_of(app).delete(job_id)
    except (OSError, SQLAlchemyError):
        log.exception("Job %d: could not delete its events", job_id)
    hub_of(app).publisher.publish({"kind": "deleted", "job": job_id, "owner": owner_id, "seq": change})


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
