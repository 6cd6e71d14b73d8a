"""The ingest: a job's supervisor sends its log lines, progress and status to the servers.

In shared mode (and on a cluster, where no server can read the job's folder) the supervisor
does not write the job's event log itself: it posts batches here (``runner/ingest.py``), with
the token of its spec (:func:`trainflow.jobs.tokens.issue_supervisor_token`), which no other
route accepts and the job itself never sees. Each batch names the supervisor's own ordinal of
its first event; the store keeps the highest one it holds, so a batch sent again (its answer
was lost) is stored once, and a batch that would leave a gap is refused with what the server
has, so the supervisor sends again from there. The answer says whether a cancel was asked,
which is how a cancel reaches a supervisor no server can signal.

A supervisor sends only what it produces, ``log``, ``progress`` and ``system`` events, with the fields it
gives them; ``status``, ``end`` and ``metric`` come from the server, and a job's supervisor
(run beside untrusted code) must not be able to forge them. The status it reports (``starting``,
``running``, ``exited`` with code and reason: what it writes to ``status.json``) is kept on the
job (``Job.reported_status``), for an executor that has no files to read it from.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, NoReturn, TypeGuard

from flask import Blueprint, Flask, Response, current_app, request
from pydantic import BaseModel

from trainflow.api import endpoint, json_response
from trainflow.db import MAX_ID, db, get_by_id, utcnow
from trainflow.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationFailed,
)
from trainflow.events.store import IngestGap as StoreGap
from trainflow.events.store import store_of
from trainflow.events.types import EventType, JobStatus
from trainflow.jobs import hosts, tokens
from trainflow.jobs.models import Job
from trainflow.runner.eventlog import fragment
from trainflow.runner.supervisor import MAX_LINE

TRAIN_PREFIX = "/ajax-api/2.0/mlflow/train"
bp = Blueprint("ingest", __name__, url_prefix=TRAIN_PREFIX)

MAX_BODY = 4 * 1024 * 1024  # a supervisor sends 256 KB at most, or one line of 64 K characters escaped
MAX_EVENTS = 10_000
MAX_STATUS = 64 * 1024  # bytes of the reported status, as JSON
REPORT_EVERY_S = 2.0  # how stale a job's reported_at may be (a host is dead after 30 s by default)
STATES = {"starting": 0, "running": 1, "exited": 2}  # the order a supervisor reports them in
STREAMS = ("stdout", "stderr")
# The fields each event type a supervisor sends may carry (besides type and ts), and whether
# each must be there: what runner/supervisor.py gives them, nothing more.
_NUMBER = (int, float)
LOG_FIELDS: dict[str, tuple[Any, bool]] = {"stream": (str, True), "n": (int, True), "line": (str, True)}
PROGRESS_FIELDS: dict[str, tuple[Any, bool]] = {
    "current": (_NUMBER, True),
    "total": (_NUMBER, False),
    "rate": (_NUMBER, False),
    "eta_s": (_NUMBER, False),
    "desc": (str, False),
}
SYSTEM_FIELDS: dict[str, tuple[Any, bool]] = {
    "cpu_percent": (_NUMBER, True),
    "rss_mb": (_NUMBER, True),
    "processes": (int, False),
    "gpus": (list, False),
}
GPU_FIELDS: dict[str, tuple[Any, bool]] = {
    "device": (int, True),
    "id": (str, True),
    "utilization_percent": (_NUMBER, True),
    "memory_used_mb": (_NUMBER, True),
    "memory_total_mb": (_NUMBER, False),
}
MAX_GPUS = 64
SENT_BY_SUPERVISORS = {EventType.LOG.value, EventType.PROGRESS.value, EventType.SYSTEM.value}


def ingest_url(public_url: str, job_id: int) -> str:
    """Where a job's supervisor sends its records: ``public_url`` is how jobs reach the servers."""
    return f"{public_url.rstrip('/')}{TRAIN_PREFIX}/jobs/{job_id}/ingest"


class IngestOut(BaseModel):
    through: int  # the highest ordinal of the supervisor's events the server holds
    cancel: bool  # a cancel was asked: the supervisor ends the job as on SIGTERM


class IngestGap(Conflict):
    """The batch starts past what the server holds: send again from ``through`` + 1."""

    code = "ingest_gap"

    def __init__(self, through: int) -> None:
        super().__init__(
            f"The server holds this job's events through {through}: send again from {through + 1}.",
            through=through,
        )
        self.through = through


class JobFinished(Conflict):
    code = "job_finished"

    def __init__(self, job_id: int) -> None:
        super().__init__(f"Job {job_id} has ended: nothing more is recorded for it.")


@endpoint(
    bp,
    "/jobs/<int:job_id>/ingest",
    "POST",
    summary="A job's supervisor sends its log lines, progress and status (not for people)",
    tag="jobs",
    # Not behind the sign-in hook: the supervisor's token is refused there, and accepted only here.
    is_public=True,
    response=IngestOut,
    errors=(400, 401, 403, 404, 409, 413, 415),
    description="Called by a job's supervisor with `Authorization: Bearer <its token>`: a body "
    '`{"first": N, "events": [...], "status": {...}}` where `events` are `log`, `progress` and `system` '
    "events without `seq` and N is the supervisor's ordinal of the first (1, 2, 3 ... across "
    "batches). Answers the highest ordinal stored (`through`) and whether a cancel was asked. A "
    "batch sent again is stored once; one that would leave a gap is a 409 `ingest_gap` whose "
    "`error.through` says where to resume; a job that has ended is a 409 `job_finished`.",
)
def ingest(job_id: int) -> Response:
    # Who and how much, before a byte of the body is read; then the job's row, in a transaction
    # that ends before the read (a stalled supervisor must not hold a database connection).
    job_of_token, run_id, attempt = tokens.supervised_job(_bearer())
    if job_of_token != job_id:
        raise PermissionDenied("This supervisor's token is for another job.")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise PayloadTooLarge(f"An ingest batch is {MAX_BODY} bytes at most; send fewer events at once.")
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Send the batch as JSON with Content-Type: application/json.")
    job = get_by_id(db.session, Job, job_id)
    if job is None:
        raise NotFound(f"No job {job_id}: it was deleted.")
    if job.run_id != run_id:
        raise Unauthenticated("This supervisor's token is for an earlier job with the same id.")
    if JobStatus(job.status).is_finished or attempt != job.attempt:
        raise JobFinished(job_id)  # or its attempt ended: a retry runs under another supervisor
    # A cancel asked from now on reaches the supervisor with its next batch (10 ms to 5 s on).
    cancel, reported = bool(job.cancel_requested), job.reported_status
    db.session.rollback()

    first, fragments, status = parse_batch(_read_body())
    try:
        through = store_of(current_app).ingest(job_id, first, fragments)
    except StoreGap as e:
        raise IngestGap(e.stored) from None
    if _moves(status, reported) or _report_times(current_app).is_due(job_id):
        _record_report(job_id, status)  # no second transaction on most lines' way
    return json_response(IngestOut(through=through, cancel=cancel))


def _moves(status: dict[str, Any] | None, reported: dict[str, Any] | None) -> bool:
    """Whether ``status`` says more than the one stored: never back to an earlier state."""
    return status is not None and status != reported and _rank(status) >= _rank(reported)


def _record_report(job_id: int, status: dict[str, Any] | None) -> None:
    job = get_by_id(db.session, Job, job_id)
    if job is None:
        raise NotFound(f"No job {job_id}: it was deleted.")
    if _moves(status, job.reported_status):
        job.reported_status = status
    # On the database's clock, as hosts' heartbeats: a survivor compares the two.
    job.reported_at = hosts.database_now() if hosts.is_supported(db.session()) else utcnow()
    db.session.commit()


class _ReportTimes:
    """When this process last stored each job's ``reported_at``: a supervisor that sends a batch
    every 10 ms needs it refreshed every ``REPORT_EVERY_S``, well within the seconds a survivor
    waits before it takes a job for its dead host's, not a commit per batch."""

    def __init__(self) -> None:
        self._stored: dict[int, float] = {}

    def is_due(self, job_id: int) -> bool:
        now = time.monotonic()
        if now - self._stored.get(job_id, -math.inf) < REPORT_EVERY_S:
            return False
        if len(self._stored) >= 4096:  # jobs that stopped reporting: forget them
            self._stored = {job: at for job, at in self._stored.items() if now - at < REPORT_EVERY_S}
        self._stored[job_id] = now
        return True


def _report_times(app: Flask) -> _ReportTimes:
    times: _ReportTimes = app.extensions.setdefault("trainflow.ingest_reports", _ReportTimes())
    return times


def _bearer() -> str:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthenticated("Send the supervisor's token: `Authorization: Bearer <token from its spec>`.")
    return credential.strip()


def _read_body() -> bytes:
    raw: bytes = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"An ingest batch is {MAX_BODY} bytes at most; send fewer events at once.")
    return raw


def _rank(status: dict[str, Any] | None) -> int:
    return -1 if not status else STATES.get(str(status.get("state")), -1)


# -- the batch ----------------------------------------------------------------------------------


def parse_batch(raw: bytes) -> tuple[int, list[bytes], dict[str, Any] | None]:
    """The first ordinal, the events as the event log stores them, and the status; 400 if malformed."""
    try:
        # JSON has no NaN or Infinity (Python's parser takes them; PostgreSQL would refuse them).
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"The body is not valid JSON: {e}.") from None
    except RecursionError:
        raise BadRequest("The body is not a batch: it nests too deep.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    unknown = sorted(set(body) - {"first", "events", "status"})
    if unknown:
        _invalid(unknown[0], "is not a known field")
    first = body.get("first")
    if not _is_int(first) or not 1 <= first <= MAX_ID:
        _invalid("first", "must be the ordinal of the first event, an integer from 1")
    events = body.get("events", [])
    if not isinstance(events, list):
        _invalid("events", "must be a list")
    if len(events) > MAX_EVENTS:
        _invalid("events", f"holds {MAX_EVENTS} events at most")
    fragments = [_event(i, event) for i, event in enumerate(events)]
    status = body.get("status")
    if status is not None:
        _check_status(status)
    return first, fragments, status


def _event(index: int, event: Any) -> bytes:
    """One event as :func:`trainflow.runner.eventlog.fragment` writes it, rebuilt from checked fields."""
    where = f"events.{index}"
    if not isinstance(event, dict):
        _invalid(where, "must be an object")
    kind = event.get("type")
    if kind not in SENT_BY_SUPERVISORS:
        _invalid(
            f"{where}.type",
            "must be log, progress or system: status, end and metric events come from the server",
        )
    ts = event.get("ts")
    if not _is_number(ts) or ts <= 0:
        _invalid(f"{where}.ts", "must be a time in seconds since the epoch")
    if kind == EventType.SYSTEM:
        return fragment(kind, ts, **_system_fields(where, event))
    spec = LOG_FIELDS if kind == EventType.LOG else PROGRESS_FIELDS
    fields = _fields(
        where, event, spec, {"type", "ts", "partial"} if kind == EventType.LOG else {"type", "ts"}
    )
    if kind == EventType.LOG:
        _check_log(where, fields, event.get("partial"))
        if event.get("partial") is True:
            fields["partial"] = True
    elif len(fields.get("desc", "")) > 200:
        _invalid(f"{where}.desc", "is 200 characters at most")
    return fragment(kind, ts, **fields)


def _fields(
    where: str, event: dict[str, Any], spec: dict[str, tuple[Any, bool]], also: set[str]
) -> dict[str, Any]:
    """The fields ``spec`` names, each checked for presence and type; 400 for any other."""
    extra = set(event) - set(spec) - also
    if extra:
        _invalid(f"{where}.{sorted(extra)[0]}", "is not a field of this event type")
    fields: dict[str, Any] = {}
    for name, (kinds, is_required) in spec.items():
        value = event.get(name)
        if value is None:
            if is_required:
                _invalid(f"{where}.{name}", "is required")
            continue
        is_ok = (
            _is_number(value)
            if kinds is _NUMBER
            else isinstance(value, kinds) and not isinstance(value, bool)
        )
        if not is_ok:
            _invalid(f"{where}.{name}", "is not of the right type")
        fields[name] = value
    return fields


def _system_fields(where: str, event: dict[str, Any]) -> dict[str, Any]:
    """A ``system`` sample (trainflow.runner.sysmetrics): figures, and one object per GPU."""
    fields = _fields(where, event, SYSTEM_FIELDS, {"type", "ts"})
    gpus = fields.get("gpus", [])
    if len(gpus) > MAX_GPUS:
        _invalid(f"{where}.gpus", f"holds {MAX_GPUS} devices at most")
    checked = []
    for index, gpu in enumerate(gpus):
        if not isinstance(gpu, dict):
            _invalid(f"{where}.gpus.{index}", "must be an object")
        device = _fields(f"{where}.gpus.{index}", gpu, GPU_FIELDS, set())
        if len(device["id"]) > 100:
            _invalid(f"{where}.gpus.{index}.id", "is 100 characters at most")
        checked.append(device)
    if gpus:
        fields["gpus"] = checked
    return fields


def _check_log(where: str, fields: dict[str, Any], partial: Any) -> None:
    if fields["stream"] not in STREAMS:
        _invalid(f"{where}.stream", "must be stdout or stderr")
    if not 1 <= fields["n"] <= MAX_ID:
        _invalid(f"{where}.n", "must be the line's number, from 1")
    if len(fields["line"]) > MAX_LINE:
        _invalid(f"{where}.line", f"is {MAX_LINE} characters at most")
    if partial not in (None, True):
        _invalid(f"{where}.partial", "must be true when present")


def _check_status(status: Any) -> None:
    if not isinstance(status, dict):
        _invalid("status", "must be an object")
    if status.get("state") not in STATES:
        _invalid("status.state", f"must be one of {', '.join(STATES)}")
    if len(json.dumps(status)) > MAX_STATUS:
        _invalid("status", f"is {MAX_STATUS} bytes at most")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_ID <= value <= MAX_ID  # past that, no float holds it (and isfinite raises)
    return isinstance(value, float) and math.isfinite(value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _invalid(field: str, message: str) -> NoReturn:
    raise ValidationFailed(
        f"Invalid batch: {field}: {message}.", fields=[{"field": field, "message": message}]
    )
