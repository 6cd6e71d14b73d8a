"""The one error hierarchy; :func:`register` renders every error in the one JSON shape.

    TrainflowError                      500 internal_error
    ├── ConfigError                     a bad TRAINFLOW_* setting (raised at start-up)
    ├── BadRequest                      400 bad_request
    │   └── ValidationFailed            400 invalid_fields (names each field)
    ├── Unauthenticated                 401 unauthenticated
    ├── PermissionDenied                403 permission_denied
    ├── NotFound                        404 not_found
    ├── Conflict                        409 conflict
    ├── PayloadTooLarge                 413 payload_too_large
    ├── UnsupportedMediaType            415 unsupported_media_type
    ├── TooManyRequests                 429 too_many_requests
    └── InsufficientStorage             507 insufficient_storage

A write that fails for lack of space (SQLite's "database or disk is full", PostgreSQL's
``disk_full``, ``ENOSPC``/``EDQUOT`` from any file) is a 507 ``insufficient_storage`` wherever
it is raised (:func:`is_disk_full`), MLflow's routes included, never a 500 with SQL in it.

Every response under ``/api`` and ``/ajax-api`` that is an error carries
``{"error": {"code": ..., "message": ...}}``. MLflow's own routes keep MLflow's
``error_code``/``message`` keys beside it, because the official client reads those.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException

if TYPE_CHECKING:
    from flask import Flask, Response

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/", "/ajax-api/")


class TrainflowError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class ConfigError(TrainflowError):
    code = "config_error"


class BadRequest(TrainflowError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    code = "invalid_fields"


class Unauthenticated(TrainflowError):
    status = 401
    code = "unauthenticated"


class PermissionDenied(TrainflowError):
    status = 403
    code = "permission_denied"


class NotFound(TrainflowError):
    status = 404
    code = "not_found"


class Conflict(TrainflowError):
    status = 409
    code = "conflict"


class PayloadTooLarge(TrainflowError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(TrainflowError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(TrainflowError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsufficientStorage(TrainflowError):
    status = 507
    code = "insufficient_storage"


DISK_FULL_MESSAGE = (
    "The disk holding the server's data is full, so nothing new can be stored; what was stored "
    "before is kept. Try again once an administrator has freed space."
)
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
_PG_DISK_FULL = "53100"  # SQLSTATE disk_full (psycopg2.errors.DiskFull)
# How these errors read once MLflow has turned them into text (its handlers answer for themselves).
DATABASE_RETRY_AFTER_S = 5  # Retry-After when the database does not answer
_DISK_FULL_TEXTS = ("database or disk is full", "No space left on device", "Disk quota exceeded", "DiskFull")


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from, is a write that failed for lack of space."""
    return _caused_by(error, _is_disk_full_error)


def is_pool_timeout(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from, is a wait for a pool connection that ran out."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    return _caused_by(error, lambda e: isinstance(e, PoolTimeout))


def _caused_by(error: BaseException | None, test: Callable[[BaseException], bool]) -> bool:
    """Whether ``test`` holds for ``error`` or an error it was raised from (or that a driver raised)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if test(error):
            return True
        orig = getattr(error, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error
        if isinstance(orig, BaseException) and _caused_by(orig, test):
            return True
        error = error.__cause__ or error.__context__
    return False


def _is_disk_full_error(error: BaseException) -> bool:
    if isinstance(error, InsufficientStorage):
        return True
    if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
        return True
    if getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL:
        return True
    if getattr(error, "pgcode", None) == _PG_DISK_FULL or _is_psycopg_disk_full(error):
        return True
    # A Python built without sqlite_errorcode:
    return type(error).__module__ == "sqlite3" and "database or disk is full" in str(error)


def _is_psycopg_disk_full(error: BaseException) -> bool:
    """psycopg2.errors.DiskFull (and psycopg 3's), the class the driver raises for SQLSTATE 53100."""
    return type(error).__name__ == "DiskFull" and type(error).__module__.startswith("psycopg")


# MLflow's error codes for the statuses trainflow's auth layer answers on MLflow routes.
_MLFLOW_CODES = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
    507: "RESOURCE_EXHAUSTED",
}


def error_body(status: int, code: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message, **details}}
    # The official MLflow client reads `error_code` and `message`; carry both shapes so an
    # error from our auth layer surfaces as a proper MlflowException in a training script.
    body["error_code"] = _MLFLOW_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    body["message"] = message
    return body


def error_response(status: int, code: str, message: str, **details: Any) -> Response:
    from flask import jsonify

    response = jsonify(error_body(status, code, message, **details))
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = _challenge()
    return response


def _challenge() -> str:
    """Basic for a request without credentials or with Basic ones: browsers then show their
    sign-in prompt, as with MLflow's basic-auth app. Bearer for a token that failed, so an
    application that signs in with tokens (the dashboard) gets no browser prompt."""
    from flask import has_request_context, request

    sent = request.headers.get("Authorization", "") if has_request_context() else ""
    if sent[:7].lower() == "bearer ":
        return 'Bearer realm="trainflow", error="invalid_token"'
    return 'Basic realm="trainflow"'


def handle_trainflow_error(e: TrainflowError) -> Response:
    if not isinstance(e, InsufficientStorage) and is_disk_full(e.__cause__ or e.__context__):
        # Raised while handling a failed write ("cannot create the experiment: ..."): the full
        # disk is the news, not the operation that ran into it.
        return disk_full_response()
    response = error_response(e.status, e.code, str(e), **e.details)
    if isinstance(e, TooManyRequests):
        response.headers["Retry-After"] = str(e.retry_after)
    return response


def _is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def handle_http_exception(e: HTTPException) -> Response | HTTPException:
    from flask import request

    if not _is_api_path(request.path):
        return e
    status = e.code or 500
    code = (e.name or "error").lower().replace(" ", "_")
    message = {
        404: f"No route {request.path}; see /api/docs for the API.",
        405: f"{request.method} is not allowed on {request.path}.",
    }.get(status, e.description or e.name)
    response = error_response(status, code, message)
    if status == 405 and e.get_response().headers.get("Allow"):
        response.headers["Allow"] = e.get_response().headers["Allow"]
    return response


def handle_unexpected(e: Exception) -> Response:
    from flask import request

    if isinstance(e, HTTPException):
        return handle_http_exception(e)  # type: ignore[return-value]
    if is_disk_full(e):
        return disk_full_response()
    if is_pool_timeout(e):
        # Every database connection stayed busy for the pool's timeout: a load spike (thousands
        # of streams opening at once), not a fault. Say so, and when to try again.
        log.warning("Busy: no database connection free for %s %s", request.method, request.path)
        response = error_response(503, "busy", "The server is busy; try again in a moment.")
        response.headers["Retry-After"] = "1"
        return response
    if _is_database_unavailable(e):
        # The database went away (restarted, crashed on a full disk, refusing connections):
        # the request may succeed once it is back, so say that rather than "the server failed".
        cause = str(getattr(e, "orig", e)).strip().splitlines()[:1]
        log.warning("Database unavailable for %s %s: %s", request.method, request.path, *cause or ["?"])
        response = error_response(
            503, "database_unavailable", "The database is not answering; try again in a moment."
        )
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
        return response
    log.exception("Unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "The server failed; the error is in its log.")


def disk_full_response() -> Response:
    from flask import request

    log.error("Out of space: %s %s could not store what it was sent", request.method, request.path)
    return error_response(507, InsufficientStorage.code, DISK_FULL_MESSAGE)


def _is_database_unavailable(e: Exception) -> bool:
    """A lost or refused database connection (SQLAlchemy's OperationalError, or a dropped one)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    return isinstance(e, OperationalError) or (isinstance(e, DBAPIError) and e.connection_invalidated)


def add_error_envelope(response: Response) -> Response:
    """Give MLflow's own JSON errors the ``error`` object too (after_request hook)."""
    from flask import request

    if response.status_code < 400 or not _is_api_path(request.path):
        return response
    if response.status_code == 503 and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = "1"  # MLflow's own 503s (a busy or restarting store)
    if response.mimetype != "application/json" or response.is_streamed:
        return response
    body = response.get_json(silent=True)
    if not isinstance(body, dict):
        return response
    if "error" not in body and (
        response.status_code == 507
        or (response.status_code >= 500 and _reads_as_disk_full(body.get("message")))
    ):
        # MLflow's handlers answer a failed write themselves (503 from its stores, other than
        # the tracking store) with the database's error text: say what happened instead, as 507,
        # in the one shape (the tracking store's 507 too).
        return disk_full_response()
    if "error" not in body and "error_code" in body:
        body["error"] = {"code": str(body["error_code"]).lower(), "message": body.get("message", "")}
        response.set_data(json.dumps(body))
    return response


def _reads_as_disk_full(message: object) -> bool:
    return isinstance(message, str) and any(text in message for text in _DISK_FULL_TEXTS)


def register(app: Flask) -> None:
    app.register_error_handler(TrainflowError, handle_trainflow_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
    app.after_request(add_error_envelope)
