"""Single-use tickets: how a job started elsewhere (a Ray cluster) gets its secrets.

Anyone who may read a Ray cluster's job table reads every job's entrypoint and runtime
environment, so neither may hold a token. The executor stores the supervisor's spec (the
job's MLflow token, the supervisor's token...) here, sealed with a random ticket, and puts only
the ticket in the entrypoint; ``python -m trainflow.runner.remote`` exchanges it once, within
minutes, at ``POST .../jobs/<id>/ticket`` for the spec.

The database holds the ticket's digest (to find the row) and the spec encrypted under a key
derived from the ticket (Fernet), never the ticket: a reader of the database cannot redeem
one, and a ticket read from Ray's job table after its use opens nothing (the sealed spec is
deleted on exchange).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from cryptography.fernet import Fernet, InvalidToken
from flask import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ForeignKey, Integer, String, Text, delete, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from trainflow.api import endpoint, json_response
from trainflow.db import TABLE_PREFIX, UTCDateTime, db, get_by_id, utcnow
from trainflow.errors import Conflict, TrainflowError, Unauthenticated
from trainflow.jobs.models import Job, JobStatus

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import CursorResult

TRAIN_PREFIX = "/ajax-api/2.0/mlflow/train"
bp = Blueprint("job_tickets", __name__, url_prefix=TRAIN_PREFIX)
TICKET_BYTES = 32


class TicketGone(TrainflowError):
    """The ticket was good once: it has been used, or it expired."""

    status = 410
    code = "ticket_gone"


class JobTicket(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{TABLE_PREFIX}job_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey(f"{TABLE_PREFIX}jobs.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # of the ticket; never the ticket
    sealed_spec: Mapped[str | None] = mapped_column(Text)  # Fernet, keyed by the ticket; None once used
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def _digest(ticket: str) -> str:
    return hashlib.sha256(b"trainflow-ticket-lookup:" + ticket.encode()).hexdigest()


def _fernet(ticket: str) -> Fernet:
    key = hmac.new(ticket.encode(), b"trainflow-ticket-spec", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def issue(job_id: int, spec: dict[str, Any], ttl_s: float) -> str:
    """Store ``spec`` for ``job_id`` under a new ticket; return the ticket (shown nowhere else).

    Written on a connection of its own and committed at once: the caller's transaction (the
    scheduler's, mid-launch) is left as it was.
    """
    ticket = secrets.token_urlsafe(TICKET_BYTES)
    sealed = _fernet(ticket).encrypt(json.dumps(spec).encode()).decode()
    now = utcnow()
    with db.engine.begin() as connection:
        # Tickets of ended jobs and expired ones are of no use to anyone: cleared as we go.
        connection.execute(delete(JobTicket).where(JobTicket.expires_at < now - timedelta(days=1)))
        connection.execute(
            insert(JobTicket).values(
                job_id=job_id,
                digest=_digest(ticket),
                sealed_spec=sealed,
                expires_at=now + timedelta(seconds=ttl_s),
                created_at=now,
            )
        )
    return ticket


def issuer(app: Flask, ttl_s: float) -> Callable[[int, dict[str, Any]], str]:
    """``issue`` bound to ``app``, for an executor (which never touches the database itself)."""

    def issue_in_app(job_id: int, spec: dict[str, Any]) -> str:
        with app.app_context():
            return issue(job_id, spec, ttl_s)

    return issue_in_app


def redeem(job_id: int, ticket: str) -> dict[str, Any]:
    """The spec stored under ``ticket`` for ``job_id``, once; 401 or 410 otherwise.

    The conditional UPDATE decides: of two exchanges at once, on any hosts, one gets the spec.
    """
    session = db.session
    row = session.scalar(select(JobTicket).where(JobTicket.digest == _digest(ticket)))
    if row is None or row.job_id != job_id:
        raise Unauthenticated("This ticket is not valid for this job.")
    now = utcnow()
    result = session.execute(
        update(JobTicket)
        .where(JobTicket.id == row.id, JobTicket.used_at.is_(None), JobTicket.expires_at > now)
        .values(used_at=now, sealed_spec=None)
        .execution_options(synchronize_session=False)
    )
    sealed = row.sealed_spec
    session.commit()
    if not cast("CursorResult[Any]", result).rowcount or sealed is None:
        if row.used_at is not None or sealed is None:
            raise TicketGone("This ticket has been used already; a ticket is good for one exchange.")
        raise TicketGone("This ticket has expired: the job waited on its cluster longer than tickets last.")
    job = get_by_id(session, Job, job_id)
    if job is None or job.status != JobStatus.RUNNING.value or job.cancel_requested:
        raise Conflict(f"Job {job_id} is no longer running; there is nothing to start.")
    try:
        spec: dict[str, Any] = json.loads(_fernet(ticket).decrypt(sealed.encode()))
    except InvalidToken:
        raise Unauthenticated("This ticket is not valid for this job.") from None
    return spec


class TicketRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    ticket: str = Field(min_length=1, max_length=200, description="The ticket from the job's entrypoint.")


class TicketSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    job: int = Field(description="The job's id.")


@endpoint(
    bp,
    "/jobs/<int:job_id>/ticket",
    "POST",
    summary="Exchange a job's single-use ticket for its supervisor's spec (used by the job's runner)",
    tag="jobs",
    body=TicketRequest,
    response=TicketSpec,
    errors=(401, 409, 410),
    is_public=True,
    description="The ticket, not a user, authenticates: it is good for one exchange within minutes "
    "of the job's start. 401 for a ticket unknown or of another job, 410 `ticket_gone` once used or "
    "expired, 409 when the job is no longer running.",
)
def exchange(job_id: int, body: TicketRequest) -> Response:
    spec = redeem(job_id, body.ticket)
    response = json_response(TicketSpec.model_validate(spec))
    response.headers["Cache-Control"] = "no-store"
    return response


__all__ = ["JobTicket", "TicketGone", "bp", "issue", "issuer", "redeem"]
