"""The jobs API: submit, list, show, logs, cancel and delete."""

from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Blueprint, Response, current_app

from trainflow.accounts.auth import current_principal
from trainflow.api import endpoint, json_response
from trainflow.db import db, utcnow
from trainflow.errors import BadRequest
from trainflow.events.record import add_change, announce_deleted
from trainflow.events.store import store_of
from trainflow.events.types import EventType
from trainflow.jobs import service
from trainflow.jobs.executors import Executor
from trainflow.jobs.models import Job, JobStatus
from trainflow.jobs.scheduler import EXTENSION, executor_for, wake_scheduler
from trainflow.jobs.schemas import (
    JobListQuery,
    JobMetricsPage,
    JobMetricsQuery,
    JobOut,
    JobPage,
    LogLine,
    LogPage,
    LogQuery,
    SubmitJobRequest,
)
from trainflow.settings import Settings
from trainflow.tracking.histories import read_histories

TRAIN_PREFIX = "/ajax-api/2.0/mlflow/train"
bp = Blueprint("jobs", __name__, url_prefix=TRAIN_PREFIX)
TAG = "jobs"


def _settings() -> Settings:
    settings: Settings = current_app.config["TRAINFLOW"]
    return settings


def _executor() -> Executor:
    return executor_for(current_app)


def jobs_out(jobs: list[Job]) -> list[JobOut]:
    users = service.usernames(db.session(), jobs)
    scripts = service.script_names(db.session(), jobs)
    positions = (
        service.queue_positions(db.session()) if any(j.status == JobStatus.QUEUED.value for j in jobs) else {}
    )
    out = []
    for job in jobs:
        duration = None
        if job.started_at is not None:
            duration = round(((job.finished_at or utcnow()) - job.started_at).total_seconds(), 3)
        out.append(
            JobOut(
                job=job.id,
                status=JobStatus(job.status).value,
                reason=job.reason,
                exit_code=job.exit_code,
                queue_position=positions.get(job.id),
                user=users.get(job.owner_id, ""),
                script_id=job.script_id,
                script=scripts.get(job.script_id, ""),
                experiment_id=job.experiment_id,
                run_id=job.run_id,
                params=job.params,
                args=job.args,
                env_names=sorted(job.env),
                timeout_s=job.timeout_s,
                gpus=job.gpus,
                gpu_ids=job.gpu_ids,
                runner=job.runner,
                created_at=job.created_at,
                started_at=job.started_at,
                finished_at=job.finished_at,
                duration_s=duration,
            )
        )
    return out


@endpoint(
    bp,
    "/jobs",
    "POST",
    summary="Submit a job: run an uploaded script as an MLflow run",
    tag=TAG,
    body=SubmitJobRequest,
    response=JobOut,
    status=201,
    errors=(400, 401, 403, 404, 409, 415, 507),
    description="409 `quota_exceeded` when the user's job folders, with this job's copy of its "
    "script, would pass TRAINFLOW_USER_JOBS_MB. 507 `insufficient_storage` when the server's disk "
    "is below TRAINFLOW_MIN_FREE_MB, or full.",
)
def submit(body: SubmitJobRequest) -> Response:
    settings = _settings()
    if body.gpus > len(settings.gpu_ids):
        raise BadRequest(f"gpus: this server has {len(settings.gpu_ids)} GPU(s) for jobs (TRAINFLOW_GPUS).")
    if settings.job_max_seconds and (body.timeout_s or 0) > settings.job_max_seconds:
        raise BadRequest(
            f"timeout_s: at most {settings.job_max_seconds} s on this server (TRAINFLOW_JOB_MAX_SECONDS)."
        )
    job = service.submit(
        db.session(), current_principal(), body, current_app.extensions["trainflow.mlflow_authorizer"]
    )
    wake_scheduler(current_app)
    response = json_response(jobs_out([job])[0], 201)
    response.headers["Location"] = f"{TRAIN_PREFIX}/jobs/{job.id}"
    return response


@endpoint(
    bp,
    "/jobs",
    "GET",
    summary="Jobs, newest first (yours; an admin: everyone's)",
    tag=TAG,
    query=JobListQuery,
    response=JobPage,
    errors=(400, 401),
)
def list_jobs(query: JobListQuery) -> Response:
    total, jobs = service.list_jobs(
        db.session(), current_principal(), query.page, query.size, query.status, query.user
    )
    return json_response(JobPage(total=total, page=query.page, size=query.size, list=jobs_out(jobs)))


@endpoint(
    bp,
    "/jobs/metrics",
    "GET",
    summary="Metric histories of several jobs at once, sampled to a chart's width",
    tag=TAG,
    query=JobMetricsQuery,
    response=JobMetricsPage,
    errors=(400, 401),
    description="Each job's MLflow run, every metric (or those in `keys`) as arrays: each step's "
    "most recent value, at most `points` steps a metric, evenly spaced, the first and last always "
    "kept. A job that does not exist or is not yours is listed in `missing` (as the jobs API "
    "answers 404 for it). One read of MLflow's metrics table per run, instead of MLflow's "
    "`get-history-bulk-interval` per metric.",
)
def job_metrics(query: JobMetricsQuery) -> Response:
    ids = query.job_ids
    jobs = {job.id: job.run_id for job in service.visible_jobs(db.session(), current_principal(), ids)}
    db.session.remove()  # MLflow's store reads on a connection of its own: give this one back first
    histories = read_histories(list(jobs.values()), query.metric_keys, query.points)
    out = []
    for job_id in ids:
        if job_id in jobs:
            run_id = jobs[job_id]
            metrics = {
                key: {"steps": steps, "values": values, "timestamps": timestamps}
                for key, (steps, values, timestamps) in histories[run_id].items()
            }
            out.append({"job": job_id, "run_id": run_id, "metrics": metrics})
    # Built as plain lists: a model per point would cost more than reading the rows.
    return json_response({"jobs": out, "missing": [job_id for job_id in ids if job_id not in jobs]})


@endpoint(bp, "/jobs/<int:job_id>", "GET", summary="One job", tag=TAG, response=JobOut, errors=(401, 404))
def get_job(job_id: int) -> Response:
    return json_response(jobs_out([service.get_job(db.session(), current_principal(), job_id)])[0])


@endpoint(
    bp,
    "/jobs/<int:job_id>/cancel",
    "POST",
    summary="Cancel a job (idempotent)",
    tag=TAG,
    response=JobOut,
    errors=(401, 404),
    responses={202: "The job was running: it has been told to stop, and will end CANCELLED."},
    description="A queued job is cancelled at once; a running one gets SIGTERM (its whole process "
    "group), then SIGKILL after the grace period. Cancelling a finished job changes nothing.",
)
def cancel(job_id: int) -> Response:
    job = service.get_job(db.session(), current_principal(), job_id)
    scheduler = current_app.extensions.get(EXTENSION)
    if job.status == JobStatus.QUEUED.value:
        service.finish(
            db.session(), job, JobStatus.CANCELLED, exit_code=None, reason="Cancelled while queued."
        )
    elif job.status == JobStatus.RUNNING.value:
        service.request_cancel(db.session(), job, _executor())
        if scheduler is not None:
            scheduler.wake()
    return json_response(jobs_out([job])[0], 202 if job.status == JobStatus.RUNNING.value else 200)


@endpoint(
    bp,
    "/jobs/<int:job_id>",
    "DELETE",
    summary="Delete a finished job and its logs",
    tag=TAG,
    status=204,
    errors=(401, 404, 409),
)
def delete_job(job_id: int) -> Response:
    job = service.get_job(db.session(), current_principal(), job_id)
    service.ensure_deletable(job)
    owner_id = job.owner_id
    db.session.delete(job)
    change = add_change(db.session(), job_id, owner_id, EventType.DELETED)
    db.session.commit()
    _executor().remove(job_id)
    announce_deleted(current_app, job_id, owner_id, change)  # deletes its events, ends its streams
    return Response(status=204)


@endpoint(
    bp,
    "/jobs/<int:job_id>/logs",
    "GET",
    summary="A page of the job's output lines",
    tag=TAG,
    query=LogQuery,
    response=LogPage,
    errors=(400, 401, 404),
)
def logs(job_id: int, query: LogQuery) -> Response:
    job = service.get_job(db.session(), current_principal(), job_id)
    is_finished = JobStatus(job.status).is_finished
    db.session.remove()  # the store reads on a connection of its own: give this one back first
    raws = store_of(current_app).log_lines(job_id, query.offset, query.limit)
    lines = [LogLine.model_validate(json.loads(raw)) for raw in raws]
    next_offset = query.offset + len(lines)
    is_complete = is_finished and len(lines) < query.limit
    return json_response(
        LogPage(offset=query.offset, next_offset=next_offset, lines=lines, is_complete=is_complete)
    )


@endpoint(
    bp,
    "/jobs/<int:job_id>/logs/download",
    "GET",
    summary="The whole log as text",
    tag=TAG,
    errors=(401, 404),
    media_types=("text/plain",),
)
def download_logs(job_id: int) -> Response:
    service.get_job(db.session(), current_principal(), job_id)
    # Found now: the generator runs after the request context is gone, and reads the store a
    # page at a time, holding no connection while it writes.
    store = store_of(current_app)
    db.session.remove()

    def generate() -> Iterator[bytes]:
        for raw in store.log_lines(job_id):
            record = json.loads(raw)
            end = "" if record.get("partial") else "\n"
            yield (record["line"] + end).encode("utf-8")

    response = Response(generate(), mimetype="text/plain")
    response.headers["Content-Disposition"] = f'attachment; filename="job-{job_id}.log"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
