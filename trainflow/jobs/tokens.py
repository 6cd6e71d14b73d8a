"""A job's access token: MLflow calls on its own run, while the job runs; and its supervisor's.

The token is a JWT whose ``job`` claim names the job; accounts accept it through
:func:`trainflow.accounts.auth.register_scoped_token` (see :func:`init_app`) without knowing
what a job is.

The supervisor's token (:func:`issue_supervisor_token`) is a JWT of a type of its own
(``"type": "supervisor"``, not ``"access"``), so the sign-in hook refuses it on every route,
MLflow's and trainflow's alike; only the ingest endpoint (:mod:`trainflow.jobs.ingest`) reads
it, and only for the job it names, while that job runs. It travels in the supervisor's spec,
which the sandboxed job cannot read, never in the job's environment: with it a job could forge
its own log or its end.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask_jwt_extended import create_access_token

from trainflow.accounts import auth
from trainflow.accounts.credentials import Principal
from trainflow.accounts.models import User
from trainflow.db import db, get_by_id
from trainflow.errors import Unauthenticated
from trainflow.jobs.models import Job, JobStatus

CLAIM = "job"
SUPERVISOR_TYPE = "supervisor"  # the JWT's "type": never "access", so no other route takes it
SUPERVISOR_CLAIM = "supervises"  # the job id


def init_app(app: Flask) -> None:
    auth.register_scoped_token(CLAIM, principal_of)


def issue_job_token(app: Flask, job: Job) -> str:
    """An access token for a job's process: MLflow calls on its own run, until the job ends."""
    with app.app_context():
        owner = db.session.get(User, job.owner_id)
        token: str = create_access_token(
            # The owner's public id: the job's row id alone could name a later user's job.
            identity=owner.public_id if owner is not None else "",
            additional_claims={
                CLAIM: job.id,
                "run": job.run_id,
                "tv": owner.token_version if owner is not None else -1,
            },
            expires_delta=timedelta(days=31),
        )
        return token


def principal_of(claims: dict[str, object]) -> Principal:
    """A job's token is good while its job runs, for that job's run only."""
    job = get_by_id(db.session, Job, auth.claim_int(claims[CLAIM]))
    user = auth.user_named_by(claims)
    if (
        job is None
        or user is None
        or job.owner_id != user.id
        or job.status != JobStatus.RUNNING.value
        or job.run_id != claims.get("run")
        # A password change or "log out everywhere" by the owner ends their jobs' tokens too.
        or claims.get("tv") != user.token_version
    ):
        raise Unauthenticated("This job token is no longer valid: its job has ended.")
    return Principal(
        user.id,
        user.username,
        is_admin=False,
        token_id=str(claims["jti"]),
        token_expires=auth.claim_int(claims["exp"]),
        job_id=job.id,
        run_scope=job.run_id,
        experiment_scope=job.experiment_id,
        public_id=user.public_id,
    )


def forget_job_tokens(app: Flask) -> None:
    """Every process drops every cached job token (a job ended: its token must stop working)."""
    auth.forget_scoped_tokens(app)


def issue_supervisor_token(app: Flask, job: Job) -> str:
    """A token for the job's supervisor: sending its records to the ingest endpoint, until the job ends."""
    with app.app_context():
        token: str = create_access_token(
            identity=f"job-{job.id}",
            additional_claims={
                "type": SUPERVISOR_TYPE,
                SUPERVISOR_CLAIM: job.id,
                # A later job with the same id (SQLite may reuse a deleted row's) has another run.
                "run": job.run_id,
                # A retried job's earlier attempt (a supervisor outliving its dead host) is done.
                "attempt": getattr(job, "attempt", None) or 1,
            },
            # It dies with the job anyway; a job allowed to run longer than a month keeps it.
            expires_delta=max(timedelta(days=31), timedelta(seconds=job.timeout_s or 0, days=1)),
        )
        return token


def supervised_job(token: str) -> tuple[int, str, int]:
    """The job id, run id and attempt a supervisor's token names; Unauthenticated if it is no such token.

    Needs no database: the caller compares them with the job's row.
    """
    refused = Unauthenticated(
        "Only a job's supervisor sends its records, with the unexpired token from its spec."
    )
    try:
        claims = auth.decode_jwt(token, expected_type=SUPERVISOR_TYPE)  # expired, forged, a user's...
    except Unauthenticated:
        raise refused from None
    run = claims.get("run")
    if SUPERVISOR_CLAIM not in claims or not isinstance(run, str):
        raise refused
    attempt = claims.get("attempt", 1)
    return auth.claim_int(claims[SUPERVISOR_CLAIM]), run, attempt if isinstance(attempt, int) else 0
