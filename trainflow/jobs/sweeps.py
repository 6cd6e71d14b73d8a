"""Parameter sweeps: one script run over a grid or random sample of params, a job per trial.

A sweep is a parent MLflow run and a row of ``tf_sweeps``; each trial is an ordinary job
(``Job.sweep_id``), queued through the normal queue and limits, whose run is a child of the
parent (``mlflow.parentRunId``). The parent's status follows its trials: when the last current
trial ends (:func:`trial_ended`, on the ``job_finished`` signal) the sweep and its run become
FINISHED if every trial succeeded, KILLED if the sweep was cancelled, FAILED otherwise.

Rerunning a sweep queues each failed, lost, timed-out or cancelled trial again with the same
params, as a new job with a new child run; the old job is kept and marked ``superseded_by``.

Grid and random sampling need no library: ``itertools.product`` and ``random.Random(seed)``
(the seed is recorded, so the same request draws the same trials).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, cast

from flask import Flask, current_app
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from trainflow.accounts.credentials import Principal
from trainflow.accounts.models import User
from trainflow.db import get_by_id, utcnow
from trainflow.errors import Conflict, NotFound, ValidationFailed
from trainflow.events.record import add_change, announce_deleted, record_status
from trainflow.events.types import EventType
from trainflow.jobs.executors import Executor
from trainflow.jobs.models import Job, JobStatus
from trainflow.jobs.quota import jobs_used
from trainflow.jobs.sandboxing import ensure_may_run_jobs
from trainflow.jobs.signals import job_finished
from trainflow.jobs.sweep_models import Sweep
from trainflow.jobs.sweep_schemas import MAX_TRIALS, GridSpace, RandomSpace, SubmitSweepRequest
from trainflow.scripts import service as scripts
from trainflow.scripts.models import Script
from trainflow.tracking import runs, sweep_runs

log = logging.getLogger(__name__)

SWEEPS_PATH = "/ajax-api/2.0/mlflow/train/sweeps"
RERUNNABLE = frozenset({JobStatus.FAILED, JobStatus.LOST, JobStatus.TIMED_OUT, JobStatus.CANCELLED})
Params = dict[str, str | int | float | bool]


def init_app(app: Flask) -> None:
    job_finished.connect(_on_job_finished, sender=app, weak=False)


# -- the trials a space gives ---------------------------------------------------------------------


def grid_size(space: GridSpace) -> int:
    return math.prod(len(values) for values in space.params.values())


def grid_trials(space: GridSpace) -> list[Params]:
    """Every combination, the first parameter's values varying slowest."""
    names = list(space.params)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*space.params.values())]


def random_trials(space: RandomSpace, trials: int, seed: int) -> list[Params]:
    """``trials`` draws from ``random.Random(seed)``: the same seed and space, the same trials.

    Floats are rounded to 6 significant digits, as people write them (``0.00316228``).
    """
    rng = random.Random(seed)  # noqa: S311 -- reproducible draws, not secrets
    drawn: list[Params] = []
    for _ in range(trials):
        params: Params = {}
        for name, dist in space.params.items():
            if dist.distribution == "choice":
                assert dist.values is not None
                params[name] = rng.choice(dist.values)
                continue
            low, high = cast(float, dist.low), cast(float, dist.high)
            if dist.distribution == "int":
                params[name] = rng.randint(int(low), int(high))
            elif dist.distribution == "uniform":
                params[name] = _round(rng.uniform(low, high), low, high)
            else:
                params[name] = _round(math.exp(rng.uniform(math.log(low), math.log(high))), low, high)
        drawn.append(params)
    return drawn


def _round(value: float, low: float, high: float) -> float:
    return min(max(float(f"{value:.6g}"), low), high)


def expand(request: SubmitSweepRequest, space: GridSpace | RandomSpace) -> tuple[list[Params], int | None]:
    """The trials' params and the seed used (None for a grid); 400 naming the field when the
    request asks for too many or mixes the strategies' fields."""
    if isinstance(space, GridSpace):
        if request.trials is not None or request.seed is not None:
            field = "trials" if request.trials is not None else "seed"
            _invalid(field, "is for random sweeps; a grid runs every combination")
        size = grid_size(space)
        if size > MAX_TRIALS:
            _invalid("params", f"the grid has {size} combinations; a sweep runs at most {MAX_TRIALS}")
        return grid_trials(space), None
    if request.trials is None:
        _invalid("trials", f"is required for a random sweep (1 to {MAX_TRIALS})")
    seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**32)
    return random_trials(space, cast(int, request.trials), seed), seed


def _invalid(field: str, message: str) -> None:
    raise ValidationFailed(
        f"Invalid request: {field}: {message}.", fields=[{"field": field, "message": message}]
    )


# -- submitting --------------------------------------------------------------------------------


def submit(
    session: Session,
    principal: Principal,
    request: SubmitSweepRequest,
    space: GridSpace | RandomSpace,
    authorizer: Any,
) -> Sweep:
    """Check the request, make the parent run and a child run per trial, and queue the trials."""
    settings = current_app.config["TRAINFLOW"]
    trials, seed = expand(request, space)
    ensure_may_run_jobs(settings, principal)
    script = scripts.get_script(session, principal, request.script_id)
    _check_quota(session, settings, principal, script, len(trials))
    experiment_name = request.experiment_name or f"{principal.username}/{Path(script.filename).stem}"
    experiment_id = runs.experiment_for_job(principal, experiment_name, authorizer)
    spec: dict[str, Any] = {
        "sweep.strategy": request.strategy,
        "sweep.trials": len(trials),
        "sweep.seed": seed,
        "sweep.metric": request.metric,
        "sweep.goal": request.goal if request.metric else None,
    }
    spec.update(
        {f"sweep.space.{name}": _describe(value) for name, value in space.model_dump()["params"].items()}
    )
    run_id, run_name = sweep_runs.create_parent_run(
        experiment_id, principal.username, script.entrypoint, request.name, spec
    )
    sweep = Sweep(
        owner_id=principal.user_id,
        script_id=script.id,
        name=request.name or run_name,
        experiment_id=experiment_id,
        run_id=run_id,
        strategy=request.strategy,
        space=request.params,
        trials=len(trials),
        seed=seed,
        metric=request.metric,
        goal=request.goal,
        job_fields={
            "args": request.args,
            "env": request.env,
            "timeout_s": request.timeout_s,
            "gpus": request.gpus,
        },
        status="RUNNING",
    )
    try:
        _queue_trials(session, sweep, script, principal.username, [(n + 1, p) for n, p in enumerate(trials)])
    except BaseException:
        with contextlib.suppress(Exception):
            runs.set_run_status(run_id, "FAILED", end_time_ms=sweep_runs.now_ms())
        raise
    with contextlib.suppress(Exception):
        sweep_runs.tag_run(run_id, {"trainflow.sweep_id": str(sweep.id)})
    return sweep


def _describe(value: Any) -> str:
    if isinstance(value, dict):  # a distribution
        if value["distribution"] == "choice":
            return f"choice{value['values']}"
        return f"{value['distribution']}({value['low']}, {value['high']})"
    return str(value)


def _check_quota(session: Session, settings: Any, principal: Principal, script: Script, count: int) -> None:
    """As for one job (:func:`trainflow.jobs.quota.check_jobs_quota`), for ``count`` copies."""
    if principal.is_admin or not settings.user_jobs_mb:
        return
    quota = settings.user_jobs_mb * scripts.MB
    used = jobs_used(session, settings, principal.user_id)
    needs = scripts.script_bytes(settings, script) * count
    if used + needs <= quota:
        return
    mb = scripts.megabytes
    raise scripts.JobsQuotaExceeded(
        f"Your job folders use {mb(used)} of your {mb(quota)}, and this sweep's {count} trials need "
        f"{mb(needs)} for their copies of the script; delete finished jobs or sweeps first."
    )


def _queue_trials(
    session: Session, sweep: Sweep, script: Script, username: str, trials: list[tuple[int, Params]]
) -> list[Job]:
    """A child run per trial, then the jobs (and the sweep when new) in one commit.

    The runs are made before the transaction opens: on SQLite a write transaction held while
    MLflow's store writes on its own connections would wait on itself.
    """
    made: list[str] = []
    try:
        made = sweep_runs.create_trial_runs(
            sweep.experiment_id,
            username,
            script.entrypoint,
            sweep.run_id,
            [(f"{sweep.name}-{number}", params) for number, params in trials],
        )
        fields = sweep.job_fields
        jobs = [
            Job(
                owner_id=sweep.owner_id,
                script_id=script.id,
                experiment_id=sweep.experiment_id,
                run_id=run_id,
                params=params,
                args=fields.get("args", []),
                env=fields.get("env", {}),
                timeout_s=fields.get("timeout_s"),
                gpus=fields.get("gpus", 0),
                status=JobStatus.QUEUED.value,
            )
            for run_id, (_, params) in zip(made, trials, strict=True)
        ]
        if sweep.id is None:
            session.add(sweep)
            session.flush()
        for job in jobs:
            job.sweep_id = sweep.id
        session.add_all(jobs)
        session.flush()
        changes = [add_change(session, job.id, job.owner_id, status=JobStatus.QUEUED.value) for job in jobs]
        session.commit()
    except BaseException:
        session.rollback()
        with contextlib.suppress(Exception):
            for run_id in made:
                runs.set_run_status(run_id, "FAILED", end_time_ms=sweep_runs.now_ms())
        raise
    for n, (job, change) in enumerate(zip(jobs, changes, strict=True)):
        record_status(current_app, job, change)
        if n % 50 == 49:
            time.sleep(0)  # under gevent (patched), other requests run between batches
    try:
        sweep_runs.tag_runs({job.run_id: {"trainflow.job_id": str(job.id)} for job in jobs})
    except Exception:
        log.exception("Sweep %d: could not tag its trials' runs with their jobs", sweep.id)
    return jobs


# -- finding -----------------------------------------------------------------------------------


def get_sweep(session: Session, principal: Principal, sweep_id: int) -> Sweep:
    """The sweep if it exists and is the caller's (or the caller is an admin); 404 otherwise."""
    sweep = get_by_id(session, Sweep, sweep_id)
    if sweep is None or not (principal.is_admin or sweep.owner_id == principal.user_id):
        raise NotFound(f"No sweep {sweep_id}; GET {SWEEPS_PATH} lists yours.")
    return sweep


def list_sweeps(session: Session, principal: Principal, page: int, size: int) -> tuple[int, list[Sweep]]:
    query = select(Sweep)
    if not principal.is_admin:
        query = query.where(Sweep.owner_id == principal.user_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    found = session.scalars(query.order_by(Sweep.id.desc()).offset((page - 1) * size).limit(size)).all()
    return total, list(found)


def trials_of(session: Session, sweep_id: int) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.id)).all())


def counts_of(session: Session, sweep_ids: list[int]) -> dict[int, dict[str, int]]:
    """Current trials (superseded ones left out) by status, per sweep, in one query."""
    counts: dict[int, dict[str, int]] = {sweep_id: {} for sweep_id in sweep_ids}
    if not sweep_ids:
        return counts
    rows = session.execute(
        select(Job.sweep_id, Job.status, func.count())
        .where(Job.sweep_id.in_(sweep_ids), Job.superseded_by.is_(None))
        .group_by(Job.sweep_id, Job.status)
    ).all()
    for sweep_id, status, count in rows:
        counts[cast(int, sweep_id)][status] = count
    return counts


def done_count(counts: dict[str, int]) -> int:
    return sum(n for status, n in counts.items() if JobStatus(status).is_finished)


def owner_names(session: Session, sweeps: list[Sweep]) -> dict[int, str]:
    ids = {sweep.owner_id for sweep in sweeps}
    rows = session.execute(select(User.id, User.username).where(User.id.in_(ids))).all() if ids else []
    return {row[0]: row[1] for row in rows}


def script_names(session: Session, sweeps: list[Sweep]) -> dict[int, str]:
    ids = {sweep.script_id for sweep in sweeps}
    rows = session.execute(select(Script.id, Script.filename).where(Script.id.in_(ids))).all() if ids else []
    return {row[0]: row[1] for row in rows}


def ranked(sweep: Sweep, trials: list[Job]) -> list[tuple[int | None, float | None, Job]]:
    """Current trials by the metric's latest value (best first; without a value last, by id),
    then superseded ones (no rank). Without a metric, current trials in the order queued."""
    values = sweep_runs.latest_values([job.run_id for job in trials], sweep.metric) if sweep.metric else {}
    sign = -1.0 if sweep.goal == "max" else 1.0

    def key(job: Job) -> tuple[bool, float, int]:
        value = values.get(job.run_id)
        return (value is None, sign * value if value is not None else 0.0, job.id)

    current = sorted((job for job in trials if job.superseded_by is None), key=key)
    superseded = [job for job in trials if job.superseded_by is not None]
    return [(n + 1, values.get(job.run_id), job) for n, job in enumerate(current)] + [
        (None, values.get(job.run_id), job) for job in superseded
    ]


# -- following its trials ---------------------------------------------------------------------


def _on_job_finished(app: Flask, job: Job, session: Session, **_: Any) -> None:
    if job.sweep_id is None:
        return
    try:
        settle(session, job.sweep_id)
    except Exception:
        session.rollback()
        log.exception("Sweep %d: could not record the end of its trial %d", job.sweep_id, job.id)


def settle(session: Session, sweep_id: int) -> str | None:
    """When no current trial is queued or running, end the sweep and its parent run (once);
    return the status it ended with, or None while trials remain (or it had ended)."""
    statuses = session.scalars(
        select(Job.status).where(Job.sweep_id == sweep_id, Job.superseded_by.is_(None))
    ).all()
    if any(not JobStatus(status).is_finished for status in statuses):
        return None
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        return None
    if sweep.cancelled:
        status = "KILLED"
    elif statuses and all(status == JobStatus.SUCCEEDED.value for status in statuses):
        status = "FINISHED"
    else:
        status = "FAILED"
    finished_at = utcnow()
    result = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == "RUNNING")
        .values(status=status, finished_at=finished_at)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if not getattr(result, "rowcount", 0):
        return None
    try:
        runs.set_run_status(sweep.run_id, status, end_time_ms=int(finished_at.timestamp() * 1000))
    except Exception:
        log.exception("Sweep %d: could not end its MLflow run %s", sweep_id, sweep.run_id)
    return status


# -- rerun, cancel, delete --------------------------------------------------------------------


def rerun(session: Session, principal: Principal, sweep: Sweep) -> list[Job]:
    """Queue each failed, lost, timed-out or cancelled current trial again, with its params."""
    ensure_may_run_jobs(current_app.config["TRAINFLOW"], principal)
    old = [
        job
        for job in trials_of(session, sweep.id)
        if job.superseded_by is None and JobStatus(job.status) in RERUNNABLE
    ]
    if not old:
        raise Conflict(f"Sweep {sweep.id} has no failed, lost, timed-out or cancelled trial to rerun.")
    script = session.get(Script, sweep.script_id)
    if script is None:
        raise Conflict(f"Sweep {sweep.id}'s script is gone; submit a new sweep.")
    _check_quota(session, current_app.config["TRAINFLOW"], principal, script, len(old))
    owner = session.get(User, sweep.owner_id)
    count = session.scalar(select(func.count()).select_from(Job).where(Job.sweep_id == sweep.id)) or 0
    numbered = [(count + n + 1, dict(job.params)) for n, job in enumerate(old)]
    sweep_runs.set_running(sweep.run_id)
    # Back to RUNNING before the new trials are queued: one that ended at once settles it again.
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep.id)
        .values(status="RUNNING", cancelled=False, finished_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(sweep)
    try:
        new = _queue_trials(session, sweep, script, owner.username if owner else principal.username, numbered)
    except BaseException:
        session.rollback()
        settle(session, sweep.id)  # nothing was queued: the sweep ends as it was
        raise
    for before, after in zip(old, new, strict=True):
        session.execute(
            update(Job)
            .where(Job.id == before.id)
            .values(superseded_by=after.id)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    for before, after in zip(old, new, strict=True):
        with contextlib.suppress(Exception):
            sweep_runs.tag_run(before.run_id, {"trainflow.superseded_by": str(after.id)})
    return new


def cancel(session: Session, sweep: Sweep, executor: Executor) -> bool:
    """End the queued trials and ask the running ones to stop; whether any is still running."""
    from trainflow.jobs import service

    if sweep.status != "RUNNING":
        return False
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep.id)
        .values(cancelled=True)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    running = False
    for job in trials_of(session, sweep.id):
        if job.superseded_by is not None:
            continue
        if job.status == JobStatus.QUEUED.value:
            service.finish(
                session, job, JobStatus.CANCELLED, exit_code=None, reason="The sweep was cancelled."
            )
        if job.status == JobStatus.RUNNING.value:
            service.request_cancel(session, job, executor)
            running = True
    settle(session, sweep.id)  # none was running (or all ended meanwhile): it ends now
    session.refresh(sweep)
    return running


def delete(session: Session, sweep: Sweep, executor: Executor) -> None:
    """Delete an ended sweep and its trials' jobs (their MLflow runs stay, as a job's do)."""
    if sweep.status == "RUNNING":
        raise Conflict(
            f"Sweep {sweep.id} is running; cancel it first (POST {SWEEPS_PATH}/{sweep.id}/cancel)."
        )
    jobs = trials_of(session, sweep.id)
    if any(not JobStatus(job.status).is_finished for job in jobs):
        raise Conflict(f"Sweep {sweep.id} has trials still queued or running; cancel it first.")
    changes = {}
    for job in jobs:
        session.delete(job)
        changes[job.id] = (job.owner_id, add_change(session, job.id, job.owner_id, EventType.DELETED))
    session.delete(sweep)
    session.commit()
    for job_id, (owner_id, change) in changes.items():
        executor.remove(job_id)
        announce_deleted(current_app, job_id, owner_id, change)


__all__ = ["cancel", "delete", "expand", "get_sweep", "list_sweeps", "rerun", "submit"]
