"""The jobs table and the states a job moves through."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from trainflow.db import TABLE_PREFIX, UTCDateTime, db, utcnow
from trainflow.events.types import JobStatus as JobStatus  # defined in the event catalogue
from trainflow.jobs.tags import TagsText

# How each end of a job shows in MLflow.
MLFLOW_RUN_STATUS = {
    JobStatus.SUCCEEDED: "FINISHED",
    JobStatus.FAILED: "FAILED",
    JobStatus.CANCELLED: "KILLED",
    JobStatus.TIMED_OUT: "KILLED",
    JobStatus.LOST: "FAILED",
}


class Job(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{TABLE_PREFIX}jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(
        ForeignKey(f"{TABLE_PREFIX}users.id", ondelete="CASCADE"), index=True
    )
    # A script used by a job cannot be deleted while the job is kept (RESTRICT).
    script_id: Mapped[int] = mapped_column(
        ForeignKey(f"{TABLE_PREFIX}scripts.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    experiment_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(64), index=True)  # joined with MLflow's runs (the run table)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    args: Mapped[list[str]] = mapped_column(JSON, default=list)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    timeout_s: Mapped[int | None] = mapped_column(Integer)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    gpu_ids: Mapped[str | None] = mapped_column(String(255))
    supervisor_pid: Mapped[int | None] = mapped_column(Integer)
    # Who runs it (its executor's name: a host's local executor, or a cluster), set when it is
    # claimed: a scheduler observes and signals only the jobs its own executor runs.
    runner: Mapped[str | None] = mapped_column(String(255), index=True)
    # A cancel asked on any host; the runner's scheduler carries it out.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    pid: Mapped[int | None] = mapped_column(Integer)
    # The last status its supervisor sent through the ingest (status.json's fields): how a job
    # ended, for an executor with no files to read it from.
    reported_status: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # When its supervisor last reported through the ingest (the database's clock): a job whose
    # supervisor still reports lives, though its host has gone silent (trainflow.jobs.hosts).
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # Parameter sweeps (trainflow.jobs.sweeps): the sweep a trial belongs to (no foreign key:
    # adding one rebuilds tf_jobs on SQLite; a sweep deletes its trials itself), and the trial
    # that replaced this one when the sweep's failed trials were run again (this one is kept).
    sweep_id: Mapped[int | None] = mapped_column(Integer, index=True)
    superseded_by: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Housekeeping (the run table): the user's own labels and notes on the job.
    tags: Mapped[dict[str, str] | None] = mapped_column(TagsText)
    note: Mapped[str | None] = mapped_column(Text)
    # Retries (trainflow.jobs.retries): how many more attempts a FAILED or LOST one may get, and
    # the attempt now queued, running or last run (1, 2 ...), each into the same MLflow run.
    max_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
