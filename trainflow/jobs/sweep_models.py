"""The sweeps table: one parameter sweep, whose trials are ordinary jobs (``Job.sweep_id``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from trainflow.db import TABLE_PREFIX, UTCDateTime, db, utcnow


class Sweep(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{TABLE_PREFIX}sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(
        ForeignKey(f"{TABLE_PREFIX}users.id", ondelete="CASCADE"), index=True
    )
    # Rerunning a trial needs the script; its trials hold it (RESTRICT), and a user's purge
    # deletes jobs, then scripts: a sweep left without trials goes with its script.
    script_id: Mapped[int] = mapped_column(
        ForeignKey(f"{TABLE_PREFIX}scripts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(250))
    experiment_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(64))  # the parent MLflow run
    strategy: Mapped[str] = mapped_column(String(16))
    # The search space as submitted: {name: [values]} (grid) or {name: {distribution...}} (random).
    space: Mapped[dict[str, Any]] = mapped_column(JSON)
    trials: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    metric: Mapped[str | None] = mapped_column(String(250))
    goal: Mapped[str] = mapped_column(String(3), default="min")
    # What every trial's job gets besides its params.
    job_fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # RUNNING while a trial is queued or running; then FINISHED, FAILED or KILLED, as the parent run.
    status: Mapped[str] = mapped_column(String(16), default="RUNNING", index=True)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
