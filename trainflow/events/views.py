"""The status changes of every job one may see, live; and what every stream's view shares.

A job's own stream (``/jobs/<id>/events``) is served by :mod:`trainflow.jobs.stream_views`,
which checks the job is the caller's: events know no job model.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, ConfigDict, Field

from trainflow.accounts.auth import current_principal
from trainflow.api import endpoint
from trainflow.db import MAX_ID, db
from trainflow.errors import BadRequest
from trainflow.events.framing import HEADERS, NDJSON, SSE, Framing
from trainflow.events.hub import hub_of
from trainflow.events.stream import job_statuses

TRAIN_PREFIX = "/ajax-api/2.0/mlflow/train"
bp = Blueprint("events", __name__, url_prefix=TRAIN_PREFIX)
TAG = "events"
STREAM_TYPES = (NDJSON, SSE)
FORMATS = (
    "NDJSON (`application/x-ndjson`), one JSON object per line; Server-Sent Events instead when "
    "the request says `Accept: text/event-stream`. A heartbeat line (`type: heartbeat`, no seq) "
    "follows every silence of TRAINFLOW_STREAM_HEARTBEAT_SECONDS."
)


class ChangesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ID,
        description="Send only the changes after this seq: the largest `seq` received, from a change "
        "or a heartbeat. `0`: every change still stored. Default: with SSE, the `Last-Event-ID` "
        "header; without either, from now on (the first line says where that is). A seq beyond "
        "the newest change counts as the newest.",
    )


@endpoint(
    bp,
    "/events",
    "GET",
    summary="Follow the status changes of every job you may see",
    tag=TAG,
    media_types=STREAM_TYPES,
    query=ChangesQuery,
    errors=(400, 401),
    description='`{"type": "status", "seq", "job_id", "status", "reason"?, "exit_code"?, "ts"}` '
    'each time one of your jobs (an admin: any job) changes status, and `{"type": "deleted", '
    '"seq", "job_id", "ts"}` when one is deleted: each change once, in the order they happened. '
    "All jobs' changes share one sequence, so the seqs you get rise but skip other users' "
    'changes. The first line is `{"type": "heartbeat", "seq": N}`, N being where the stream '
    "starts (every change up to N you may see is behind you), and every heartbeat carries the "
    "seq the stream has reached. Keep the largest seq received, from a change or a heartbeat, "
    "and resume with `after` (SSE: each line has an `id:`, so `Last-Event-ID` does it): nothing "
    "is lost and nothing comes twice. So a job list loaded after the first line, then patched "
    "with the changes, is never out of date. " + FORMATS,
)
def all_jobs_stream(query: ChangesQuery) -> Response:
    principal = current_principal()
    framing = request_framing()
    after = query.after if query.after is not None else last_event_id()
    settings = current_app.config["TRAINFLOW"]
    stream = job_statuses(
        hub_of(current_app),
        principal.user_id,
        principal.is_admin,
        after,
        framing,
        settings.stream_heartbeat_seconds,
    )
    return streaming_response(stream, framing)


def request_framing() -> Framing:
    """NDJSON, or Server-Sent Events when the request accepts them."""
    return Framing.of(SSE in request.headers.get("Accept", ""))


def last_event_id() -> int | None:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise BadRequest("The Last-Event-ID header must be the seq of an event (a whole number).")
    return int(raw)


def streaming_response(stream: Iterator[bytes], framing: Framing) -> Response:
    response = Response(stream, mimetype=framing.mimetype, direct_passthrough=True)
    response.headers.update(HEADERS)
    db.session.remove()  # the stream may last hours: give the connection back to the pool now
    return response
