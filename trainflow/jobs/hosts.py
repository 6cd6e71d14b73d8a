"""The hosts that run jobs, and which of them still live: a heartbeat row per executor.

Every server that runs jobs on PostgreSQL (the database of several hosts) records, every few
seconds, that its executor (``Job.runner``) is alive: a row of ``tf_hosts`` keyed by the
executor's name. Times are the database's own clock, so hosts whose clocks disagree still agree
on who is silent. A host silent for ``TRAINFLOW_HOST_DEAD_SECONDS`` is dead to the others: the
scheduler that next holds the start lock decides for its RUNNING jobs
(:meth:`trainflow.jobs.scheduler.JobScheduler._decide_for_dead_hosts`). On SQLite there is one
host, and nobody to decide for it.

Executors that several hosts share by name (a Ray cluster) are kept alive by each of them.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, String, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from trainflow.db import TABLE_PREFIX, UTCDateTime, db

if TYPE_CHECKING:
    from flask import Flask

    from trainflow.jobs.models import Job

log = logging.getLogger(__name__)


class Host(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{TABLE_PREFIX}hosts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # the executor's name
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)  # its first heartbeat, ever
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)


def is_supported(session: Session) -> bool:
    """Heartbeats are kept where several hosts can share the database: PostgreSQL."""
    return session.get_bind().dialect.name == "postgresql"


def database_now() -> ColumnElement[datetime]:
    """The database's clock, in UTC without a zone (how ``UTCDateTime`` stores times)."""
    return func.timezone("UTC", func.now())


def now(session: Session) -> datetime:
    """The database's time now."""
    moment: datetime | None = session.scalar(select(database_now()))
    assert moment is not None
    return moment.replace(tzinfo=UTC)


def beat(session: Session, name: str) -> datetime | None:
    """Record that ``name`` lives now; when it was seen before (``None``: never)."""
    previous = session.scalar(select(Host.last_seen).where(Host.name == name))
    now = database_now()
    session.execute(
        insert(Host)
        .values(name=name, started_at=now, last_seen=now)
        .on_conflict_do_update(index_elements=[Host.name], set_={"last_seen": now})
    )
    session.commit()
    return previous


def silent(session: Session, names: set[str], dead_seconds: float) -> dict[str, datetime]:
    """Of ``names``, the hosts silent for ``dead_seconds`` or more, with when each was last seen.

    A name with no row at all is not among them: its jobs were claimed before heartbeats were
    kept (or by an executor that keeps none), and nothing says its host is gone.
    """
    if not names:
        return {}
    cutoff = database_now() - timedelta(seconds=dead_seconds)
    rows = session.execute(
        select(Host.name, Host.last_seen).where(Host.name.in_(names), Host.last_seen <= cutoff)
    ).all()
    return {name: seen for name, seen in rows}


def last_report(job: Job) -> datetime | None:
    """When the job's supervisor last reported to any server, wherever it runs; ``None``: unknown.

    A job whose supervisor still reports is alive though its host is silent (the web process
    died, the supervisor did not). Supervisors that send their records through the ingest
    (shared mode) report at least every few seconds, and the endpoint records when
    (``Job.reported_at``, on the database's clock); one that writes its job's folder never does.
    """
    return job.reported_at


class Heartbeat:
    """A thread that records this host's heartbeat every ``interval`` seconds."""

    def __init__(self, app: Flask, name: str, interval: float) -> None:
        self.app, self.name, self.interval = app, name, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="host-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self.app.app_context():
                try:
                    beat(db.session(), self.name)
                except Exception:
                    # The database is away: the next beat tries again. Silent long enough, this
                    # host's running jobs are decided by another (and it stops what it still runs).
                    log.exception("Could not record this host's heartbeat; will try again")
                finally:
                    db.session.remove()


def interval_for(dead_seconds: float) -> float:
    """Beats come several times within the time after which a host counts as dead."""
    return max(0.2, min(5.0, dead_seconds / 4))
