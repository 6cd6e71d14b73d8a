"""The server's own entries in a job's event log: status changes, the end, and metrics.

The supervisor writes the job's log lines and progress; these come from the server: the
scheduler's status changes and the metrics the job's MLflow client logs through the server.
Each is appended (and so numbered) before the notice that wakes followers is published.

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

from trainflow.events.hub import hub_of
from trainflow.events.models import JobChange
from trainflow.events.types import EventType, JobStatus
from trainflow.runner.eventlog import EventWriter, fragment

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
    settings: Settings = app.config["TRAINFLOW"]
    return settings.jobs_dir / str(job_id)


def _append(app: Flask, job_id: int, fragments: list[bytes], *, create: bool = False) -> int | None:
    folder = job_dir(app, job_id)
    if create:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    elif not folder.is_dir():
        return None  # deleted meanwhile
    with EventWriter(folder) as writer:
        return writer.append(fragments)


def record_status(app: Flask, job: Job, change: int | None = None) -> None:
    """The job's new status (and, once it has finished, the ``end`` event after it) in its log.

    ``change`` is the seq :func:`add_change` gave the status change, committed already: the
    notice that wakes the all-jobs streams carries it.
    """
    status = JobStatus(job.status)
    fields: dict[str, Any] = {"status": status.value, "reason": job.reason, "exit_code": job.exit_code}
    fragments = [fragment(EventType.STATUS, **fields)]
    try:
        if status.is_finished:
            seq = _append_end(app, job.id, fragments, status.value, job.exit_code)
        else:
            seq = _append(app, job.id, fragments, create=True)
    except OSError:
        log.exception("Job %d: could not record its status %s", job.id, status.value)
        seq = None
    publisher = hub_of(app).publisher
    if seq is not None:  # None: deleted meanwhile, or its end was already recorded
        publisher.publish({"kind": "events", "job": job.id, "seq": seq})
    if change is not None:
        publisher.publish({"kind": "status", "job": job.id, "owner": job.owner_id, "seq": change})


def _append_end(
    app: Flask, job_id: int, fragments: list[bytes], status: str, exit_code: int | None
) -> int | None:
    """Append status + end unless the log already ends with an end (this may run twice)."""
    folder = job_dir(app, job_id)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with EventWriter(folder) as writer:
        end = fragment(EventType.END, status=status, exit_code=exit_code)
        return writer.append([*fragments, end], unless_ended=True)


def ensure_end(app: Flask, job: Job) -> None:
    """A finished job's log ends with ``end`` even if the server stopped between the two writes."""
    if job_dir(app, job.id).is_dir():
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
        seq = _append(app, job_id, fragments)
    except OSError:
        log.exception("Job %d: could not record its metrics", job_id)
        return
    if seq is not None:
        hub_of(app).publisher.publish({"kind": "events", "job": job_id, "seq": seq})


def announce_deleted(app: Flask, job_id: int, owner_id: int, change: int) -> None:
    """After the commit that deleted the job and added its deletion (``change``) to the sequence."""
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
