"""The sequence of status changes: what the all-jobs stream replays."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from trainflow.db import TABLE_PREFIX, UTCDateTime, db, utcnow


class JobChange(db.Model):  # type: ignore[name-defined,misc]
    """One status change or deletion of a job; ``id`` is its place in the one sequence.

    Written in the transaction that changes the job, so the sequence holds exactly what
    happened, in commit order (see :func:`trainflow.events.record.add_change`). No foreign key:
    a deletion outlives the job it reports, and so does its owner's id, which decides who may
    see it. On SQLite the ids are never reused (AUTOINCREMENT).
    """

    __tablename__ = f"{TABLE_PREFIX}job_changes"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer)
    owner_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # one of events.types.CHANGE_TYPES
    status: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
