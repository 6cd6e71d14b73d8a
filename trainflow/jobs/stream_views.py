"""A job's live stream: its stored events, then live ones, once the job is known to be the caller's."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, ConfigDict, Field

from trainflow.accounts.auth import current_principal
from trainflow.api import endpoint
from trainflow.db import MAX_ID, db
from trainflow.events.hub import hub_of
from trainflow.events.record import ensure_end
from trainflow.events.store import store_of
from trainflow.events.stream import job_events
from trainflow.events.types import JobStatus
from trainflow.events.views import (
    FORMATS,
    STREAM_TYPES,
    TAG,
    TRAIN_PREFIX,
    last_event_id,
    request_framing,
    streaming_response,
)
from trainflow.jobs import service
from trainflow.server import HANDLER_KEY

bp = Blueprint("job_streams", __name__, url_prefix=TRAIN_PREFIX)


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ID,
        description="Send only the events after this seq (the last one received). "
        "Default: every event from the start; with SSE, the `Last-Event-ID` header.",
    )


@endpoint(
    bp,
    "/jobs/<int:job_id>/events",
    "GET",
    summary="Follow a job live: status, log lines, metrics, progress, until its end",
    tag=TAG,
    query=EventsQuery,
    errors=(400, 401, 404),
    responses={204: "The job has ended and nothing comes after `after`: do not reconnect."},
    media_types=STREAM_TYPES,
    description="Every event of the job in order, each with `seq` (1, 2, 3 ...), `type` and `ts`: "
    "`status`, `log`, `metric`, `progress` and finally `end`, after which the response ends. "
    "Stored events come first, then live ones, with no gap and no repeat. A follower that falls "
    'too far behind gets `{"type": "resync", "seq": N}` and should reconnect with '
    '`after=N`; a job deleted meanwhile ends the stream with `{"type": "deleted"}`. ' + FORMATS,
)
def job_events_stream(job_id: int, query: EventsQuery) -> Response:
    job = service.get_job(db.session(), current_principal(), job_id)
    framing = request_framing()
    after = query.after if query.after is not None else (last_event_id() or 0)
    settings = current_app.config["TRAINFLOW"]
    if JobStatus(job.status).is_finished:
        ensure_end(current_app, job)  # normally there already; not if the server stopped meanwhile
        if after >= store_of(current_app).last_seq(job.id):
            # Nothing will come after that: 204 also tells an EventSource not to reconnect.
            db.session.remove()
            return Response(status=204)
    stream = job_events(
        hub_of(current_app),
        job.id,
        after,
        framing,
        settings.stream_heartbeat_seconds,
        request.environ.get(HANDLER_KEY),
    )
    return streaming_response(stream, framing)
