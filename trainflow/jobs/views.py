"""The jobs API: submit, list, show, tag and annotate, logs, cancel and delete."""

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
from trainflow.jobs import retries, service
from trainflow.jobs.executors import Executor
from trainflow.jobs.models import Job, JobStatus
from trainflow.jobs.scheduler import EXTENSION, executor_for, wake_scheduler
from trainflow.jobs.schemas import (
    AttemptOut,
    JobDeleteQuery,
    JobListQuery,
    JobMetricsPage,
    JobMetricsQuery,
    JobOut,
    JobPage,
    JobPatchRequest,
    LogLine,
    LogPage,
    LogQuery,
    SubmitJobRequest,
)
from trainflow.settings import Settings
from trainflow.tracking import run_removal, run_table
from trainflow.tracking.histories import read_histories

TRAIN_PREFIX = "/ajax-api/2.0/mlflow/train"
bp = Blueprint("jobs", __name__, url_prefix=TRAIN_PREFIX)
TAG = "jobs"


def _settings() -> Settings:
    settings: Settings = current_app.config["TRAINFLOW"]
    return settings


def _executor() -> Executor:
    return executor_for(current_app)


def jobs_out(jobs: list[Job], metric_keys: list[str] | None = None) -> list[JobOut]:
    """The jobs as the API shows them, with their runs' names as MLflow holds them now and the
    latest values of ``metric_keys``."""
    users = service.usernames(db.session(), jobs)
    scripts = service.script_names(db.session(), jobs)
    positions = (
        service.queue_positions(db.session()) if any(j.status == JobStatus.QUEUED.value for j in jobs) else {}
    )
    run_ids = [job.run_id for job in jobs]
    names = run_table.run_names(db.session(), run_ids)
    metrics = run_table.latest_metrics(db.session(), run_ids, metric_keys or [])
    attempts = retries.attempts_of(db.session(), [job.id for job in jobs])
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
                run_name=names.get(job.run_id, (None, None))[0],
                experiment_name=names.get(job.run_id, (None, None))[1],
                metrics=metrics.get(job.run_id, {}),
                tags=job.tags or {},
                note=job.note or "",
                sweep_id=job.sweep_id,
                max_retries=job.max_retries,
                attempt=job.attempt,
                attempts=[attempt_out(row) for row in attempts.get(job.id, [])],
            )
        )
    return out


def attempt_out(row: retries.JobAttempt) -> AttemptOut:
    return AttemptOut(
        number=row.number,
        status=JobStatus(row.status).value,
        exit_code=row.exit_code,
        reason=row.reason,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


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
    summary="Jobs as a run table: search, sort, filter, page (yours; an admin: everyone's)",
    tag=TAG,
    query=JobListQuery,
    response=JobPage,
    errors=(400, 401),
    description="Newest first unless `sort` says otherwise. Each job carries its MLflow run's "
    "name, its experiment's name, and the latest values of the metrics named in `metrics`; "
    "`param_keys` and `metric_keys` list what the jobs of the page have, for choosing columns.",
)
def list_jobs(query: JobListQuery) -> Response:
    total, jobs = service.list_jobs(db.session(), current_principal(), query)
    page = JobPage(
        total=total,
        page=query.page,
        size=query.size,
        list=jobs_out(jobs, query.metrics),
        param_keys=sorted({key for job in jobs for key in job.params}),
        metric_keys=run_table.metric_keys(db.session(), [job.run_id for job in jobs]),
    )
    return json_response(page)


@endpoint(
    bp,
    "/jobs/<int:job_id>",
    "PATCH",
    summary="Change a job's tags or note",
    tag=TAG,
    body=JobPatchRequest,
    response=JobOut,
    errors=(400, 401, 404, 415),
    description="`tags` replaces all the job's tags; a field left out stays as it is. Any job of "
    "yours, running or finished.",
)
def patch_job(job_id: int, body: JobPatchRequest) -> Response:
    job = service.get_job(db.session(), current_principal(), job_id)
    service.update_housekeeping(db.session(), job, body)
    return json_response(jobs_out([job])[0])


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
    summary="Delete a finished job and its logs (and, when asked, its MLflow run)",
    tag=TAG,
    query=JobDeleteQuery,
    status=204,
    errors=(400, 401, 403, 404, 409),
    description="The MLflow run is kept unless `delete_run=true`; deleting it needs the "
    "permission MLflow's own `runs/delete` needs (403 otherwise, and nothing is deleted).",
)
def delete_job(job_id: int, query: JobDeleteQuery) -> Response:
    principal = current_principal()
    job = service.get_job(db.session(), principal, job_id)
    service.ensure_deletable(job)
    owner_id = job.owner_id
    if query.delete_run:
        run_id = job.run_id
        run_removal.check_may_delete_run(
            principal, run_id, current_app.extensions["trainflow.mlflow_authorizer"]
        )
        run_removal.delete_run(run_id)
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
    description="Lines are numbered across a retried job's attempts; `attempt=N` pages through "
    "attempt N's lines alone (`offset` then counts within them).",
)
def logs(job_id: int, query: LogQuery) -> Response:
    job = service.get_job(db.session(), current_principal(), job_id)
    is_finished = JobStatus(job.status).is_finished
    start, limit = query.offset, query.limit
    if query.attempt is not None:
        window = retries.log_window(db.session(), job, query.attempt)
        start, is_finished = window.log_from + query.offset, is_finished or window.log_through is not None
        if window.log_through is not None:
            limit = max(0, min(limit, window.log_through - start))
    db.session.remove()  # the store reads on a connection of its own: give this one back first
    raws = store_of(current_app).log_lines(job_id, start, limit) if limit else iter(())
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
