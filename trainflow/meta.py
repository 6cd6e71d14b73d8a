"""Routes about the server itself: health, the OpenAPI document and its docs page.

The blueprint's static folder, ``trainflow/static/api/``, is served under /api/static/: the docs
page's assets and the public browser stream client, ``js/events.js``.
"""

from __future__ import annotations

import time
from typing import Literal

from flask import Blueprint, Response, current_app, send_from_directory
from sqlalchemy import text

from trainflow import __version__
from trainflow.accounts.schemas import Health
from trainflow.api import endpoint, json_response
from trainflow.db import db
from trainflow.openapi import build_spec
from trainflow.tracking import mlflow_version

bp = Blueprint("meta", __name__, url_prefix="/api", static_folder="static/api", static_url_path="/static")
TAG = "server"


@endpoint(
    bp,
    "/health",
    "GET",
    summary="Server and database state",
    tag=TAG,
    response=Health,
    is_public=True,
    description="503 when the database does not answer.",
)
def health() -> Response:
    started = time.perf_counter()
    database: dict[str, str | float] = {"backend": db.engine.dialect.name}
    status: Literal["ok", "degraded"]
    try:
        db.session.execute(text("SELECT 1"))
        database.update(state="ok", latency_ms=round((time.perf_counter() - started) * 1000, 2))
        status, code = "ok", 200
    except Exception as e:  # noqa: BLE001 - any database failure is a degraded server
        db.session.rollback()
        database.update(state="unavailable", error=type(e).__name__)
        status, code = "degraded", 503
    body = Health(status=status, version=__version__, mlflow_version=mlflow_version(), database=database)
    return json_response(body, code)


@endpoint(
    bp,
    "/openapi.json",
    "GET",
    summary="This API as an OpenAPI 3.1 document",
    tag=TAG,
    is_public=True,
    uses_database=False,
    media_types=("application/json",),
)
def openapi() -> Response:
    spec = current_app.extensions.get("trainflow.openapi")
    if spec is None:
        spec = current_app.extensions["trainflow.openapi"] = build_spec(current_app)
    return json_response(spec)


@endpoint(
    bp,
    "/docs",
    "GET",
    summary="Human-readable API docs",
    tag=TAG,
    is_public=True,
    uses_database=False,
    media_types=("text/html",),
)
def docs() -> Response:
    response = send_from_directory(bp.static_folder or "", "docs.html")
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'"
    )
    return response
