"""The sweeps API: submit a sweep, list and show sweeps, rerun failed trials, cancel, delete."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from trainflow.accounts.auth import current_principal
from trainflow.api import endpoint, json_response
from trainflow.db import db
from trainflow.errors import BadRequest
from trainflow.jobs import sweeps
from trainflow.jobs.scheduler import executor_for, wake_scheduler
from trainflow.jobs.sweep_models import Sweep
from trainflow.jobs.sweep_schemas import (
    MAX_TRIALS,
    SubmitSweepRequest,
    SweepDetail,
    SweepListQuery,
    SweepOut,
    SweepPage,
    TrialOut,
    parse_space,
)
from trainflow.jobs.views import TRAIN_PREFIX, jobs_out
from trainflow.settings import Settings

bp = Blueprint("sweeps", __name__, url_prefix=TRAIN_PREFIX)
TAG = "sweeps"


def sweeps_out(found: list[Sweep]) -> list[SweepOut]:
    session = db.session()
    users = sweeps.owner_names(session, found)
    scripts = sweeps.script_names(session, found)
    counts = sweeps.counts_of(session, [sweep.id for sweep in found])
    return [
        SweepOut(
            sweep=sweep.id,
            name=sweep.name,
            status=sweep.status,  # type: ignore[arg-type]
            user=users.get(sweep.owner_id, ""),
            script_id=sweep.script_id,
            script=scripts.get(sweep.script_id, ""),
            experiment_id=sweep.experiment_id,
            run_id=sweep.run_id,
            strategy=sweep.strategy,  # type: ignore[arg-type]
            params=sweep.space,
            trials=sum(counts[sweep.id].values()),
            seed=sweep.seed,
            metric=sweep.metric,
            goal=sweep.goal,  # type: ignore[arg-type]
            counts=counts[sweep.id],
            done=sweeps.done_count(counts[sweep.id]),
            created_at=sweep.created_at,
            finished_at=sweep.finished_at,
        )
        for sweep in found
    ]


def sweep_detail(sweep: Sweep) -> SweepDetail:
    trials = sweeps.trials_of(db.session(), sweep.id)
    ranked = sweeps.ranked(sweep, trials)
    jobs = {out.job: out for out in jobs_out([job for _, _, job in ranked])}
    return SweepDetail(
        **sweeps_out([sweep])[0].model_dump(),
        list=[
            TrialOut(rank=rank, value=value, superseded_by=job.superseded_by, job=jobs[job.id])
            for rank, value, job in ranked
        ],
    )


def _check_job_fields(body: SubmitSweepRequest) -> None:
    """The limits a single job's submission checks (trainflow.jobs.views.submit)."""
    settings: Settings = current_app.config["TRAINFLOW"]
    if body.gpus > len(settings.gpu_ids):
        raise BadRequest(f"gpus: this server has {len(settings.gpu_ids)} GPU(s) for jobs (TRAINFLOW_GPUS).")
    if settings.job_max_seconds and (body.timeout_s or 0) > settings.job_max_seconds:
        raise BadRequest(
            f"timeout_s: at most {settings.job_max_seconds} s on this server (TRAINFLOW_JOB_MAX_SECONDS)."
        )


@endpoint(
    bp,
    "/sweeps",
    "POST",
    summary="Submit a parameter sweep: a job per trial, each a child run of the sweep's run",
    tag=TAG,
    body=SubmitSweepRequest,
    response=SweepDetail,
    status=201,
    errors=(400, 401, 403, 404, 409, 415, 507),
    description="grid: every combination of the params' values; random: `trials` draws from their "
    f"distributions with `random.Random(seed)`. At most {MAX_TRIALS} trials. The trials are "
    "ordinary jobs, queued through the normal queue and limits.",
)
def submit(body: SubmitSweepRequest) -> Response:
    space = parse_space(body.strategy, body.params)
    _check_job_fields(body)
    sweep = sweeps.submit(
        db.session(), current_principal(), body, space, current_app.extensions["trainflow.mlflow_authorizer"]
    )
    wake_scheduler(current_app)
    response = json_response(sweep_detail(sweep), 201)
    response.headers["Location"] = f"{TRAIN_PREFIX}/sweeps/{sweep.id}"
    return response


@endpoint(
    bp,
    "/sweeps",
    "GET",
    summary="Sweeps, newest first (yours; an admin: everyone's)",
    tag=TAG,
    query=SweepListQuery,
    response=SweepPage,
    errors=(400, 401),
)
def list_sweeps(query: SweepListQuery) -> Response:
    total, found = sweeps.list_sweeps(db.session(), current_principal(), query.page, query.size)
    return json_response(SweepPage(total=total, page=query.page, size=query.size, list=sweeps_out(found)))


@endpoint(
    bp,
    "/sweeps/<int:sweep_id>",
    "GET",
    summary="One sweep with its trials, ranked by the metric's latest value",
    tag=TAG,
    response=SweepDetail,
    errors=(401, 404),
)
def get_sweep(sweep_id: int) -> Response:
    return json_response(sweep_detail(sweeps.get_sweep(db.session(), current_principal(), sweep_id)))


@endpoint(
    bp,
    "/sweeps/<int:sweep_id>/rerun",
    "POST",
    summary="Run the sweep's failed, lost, timed-out and cancelled trials again",
    tag=TAG,
    response=SweepDetail,
    errors=(401, 403, 404, 409, 507),
    description="Each such trial is queued again with the same params as a new job with a new child "
    "run; the old job is kept, with `superseded_by` naming the new one. 409 when there is none.",
)
def rerun(sweep_id: int) -> Response:
    principal = current_principal()
    sweep = sweeps.get_sweep(db.session(), principal, sweep_id)
    sweeps.rerun(db.session(), principal, sweep)
    wake_scheduler(current_app)
    return json_response(sweep_detail(sweep))


@endpoint(
    bp,
    "/sweeps/<int:sweep_id>/cancel",
    "POST",
    summary="Cancel a sweep's queued and running trials (idempotent)",
    tag=TAG,
    response=SweepDetail,
    errors=(401, 404),
    responses={202: "Some trials were running: they have been told to stop, and will end CANCELLED."},
)
def cancel(sweep_id: int) -> Response:
    sweep = sweeps.get_sweep(db.session(), current_principal(), sweep_id)
    running = sweeps.cancel(db.session(), sweep, executor_for(current_app))
    if running:
        wake_scheduler(current_app)
    return json_response(sweep_detail(sweep), 202 if running else 200)


@endpoint(
    bp,
    "/sweeps/<int:sweep_id>",
    "DELETE",
    summary="Delete an ended sweep and its trials' jobs and logs (the MLflow runs stay)",
    tag=TAG,
    status=204,
    errors=(401, 404, 409),
)
def delete_sweep(sweep_id: int) -> Response:
    sweep = sweeps.get_sweep(db.session(), current_principal(), sweep_id)
    sweeps.delete(db.session(), sweep, executor_for(current_app))
    return Response(status=204)
