"""The scripts API: upload (multipart), list, show, download and delete."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

from flask import Blueprint, Response, current_app, request, send_file

from trainflow.accounts.auth import current_principal
from trainflow.accounts.credentials import Principal
from trainflow.accounts.models import User
from trainflow.accounts.schemas import PageQuery
from trainflow.api import endpoint, json_response
from trainflow.db import db
from trainflow.errors import BadRequest, NotFound, TooManyRequests
from trainflow.scripts import service
from trainflow.scripts.models import Script
from trainflow.scripts.multipart import read_multipart
from trainflow.scripts.schemas import ScriptOut, ScriptPage, UploadForm
from trainflow.scripts.shared import shared_files
from trainflow.scripts.signals import script_deleting
from trainflow.settings import Settings

if TYPE_CHECKING:
    from flask import Flask
    from werkzeug.local import LocalProxy

log = logging.getLogger(__name__)
TRAIN_PREFIX = "/ajax-api/2.0/mlflow/train"
bp = Blueprint("scripts", __name__, url_prefix=TRAIN_PREFIX)
TAG = "scripts"
FORM_FIELDS = {"entrypoint"}
MB = 1024 * 1024


def _settings() -> Settings:
    settings: Settings = current_app.config["TRAINFLOW"]
    return settings


class UploadSlots:
    """Uploads in progress per user in this process, at most ``per_user`` each.

    A body may take up to the read timeout per stall to arrive; without a bound, one user's
    stalled uploads would hold as many sockets, greenlets and temporary files as they like.
    """

    RETRY_AFTER_S = 5

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._busy: Counter[int] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, user_id: int) -> Iterator[None]:
        with self._lock:
            if self._busy[user_id] >= self.per_user:
                raise TooManyRequests(
                    f"You already have {self.per_user} uploads in progress; wait for one to finish "
                    f"and try again in {self.RETRY_AFTER_S} s.",
                    retry_after=self.RETRY_AFTER_S,
                )
            self._busy[user_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[user_id] -= 1
                if self._busy[user_id] <= 0:
                    del self._busy[user_id]


def _app() -> Flask:
    # current_app is typed as the Flask app it stands for; a signal's sender is that app itself.
    return cast("LocalProxy[Flask]", current_app)._get_current_object()


def _upload_slots() -> UploadSlots:
    slots: UploadSlots | None = current_app.extensions.get("trainflow.upload_slots")
    if slots is None:
        slots = current_app.extensions["trainflow.upload_slots"] = UploadSlots(_settings().uploads_per_user)
    return slots


def script_out(script: Script, owner: str | None = None) -> ScriptOut:
    if owner is None:
        owner = db.session.get(User, script.owner_id).username  # type: ignore[union-attr]
    return ScriptOut(
        script=script.id,
        filename=script.filename,
        kind=script.kind,  # type: ignore[arg-type]
        entrypoint=script.entrypoint,
        has_requirements=script.has_requirements,
        size=script.size,
        sha256=script.sha256,
        owner=owner,
        created_at=script.created_at,
    )


@endpoint(
    bp,
    "/upload",
    "POST",
    summary="Upload a training script or project archive",
    tag=TAG,
    form=UploadForm,
    response=ScriptOut,
    status=201,
    errors=(400, 401, 408, 413, 415, 429, 507),
    description="multipart/form-data with the file in a part named `file`. The body is "
    "streamed to disk; TRAINFLOW_MAX_UPLOAD_MB bounds it. 413 `quota_exceeded` when the user's "
    "stored scripts, as uploaded and unpacked, would pass TRAINFLOW_USER_UPLOADS_MB. 507 "
    "`insufficient_storage` when the server's disk is below TRAINFLOW_MIN_FREE_MB, or full. "
    "429 with Retry-After when the user already has TRAINFLOW_UPLOADS_PER_USER uploads in "
    "progress; 408 when the body stops arriving for TRAINFLOW_READ_TIMEOUT_SECONDS. In shared mode, "
    "503 `storage_unavailable` when the artifact store that keeps scripts for every host does not "
    "take it.",
)
def upload() -> Response:
    principal = current_principal()
    with _upload_slots().hold(principal.user_id):
        return _receive_upload(principal)


def _receive_upload(principal: Principal) -> Response:
    settings = _settings()
    form = read_multipart(
        request.stream,
        request.headers.get("Content-Type"),
        request.content_length,
        settings.uploads_dir / ".incoming",
        settings.max_upload_mb * MB,
    )
    try:
        unknown = sorted((set(form.fields) - FORM_FIELDS) | (set(form.files) - {"file"}))
        received = form.files.get("file")
        if received is None:
            hint = f" (got {', '.join(repr(n) for n in unknown)})" if unknown else ""
            raise BadRequest(f"The form has no file part named 'file'{hint}.")
        if unknown:
            raise BadRequest(
                f"Unknown form fields: {', '.join(unknown)}; send 'file' and optionally 'entrypoint'."
            )
        script = service.create_script(
            db.session(),
            settings,
            principal.user_id,
            received,
            form.fields.get("entrypoint"),
            has_quota=not principal.is_admin,
            shared=shared_files(_app()),
        )
    finally:
        form.discard()
    response = json_response(script_out(script), 201)
    response.headers["Location"] = f"{TRAIN_PREFIX}/scripts/{script.id}"
    return response


@endpoint(
    bp,
    "/scripts",
    "GET",
    summary="Your scripts, newest first (an admin: everyone's)",
    tag=TAG,
    query=PageQuery,
    response=ScriptPage,
    errors=(400, 401),
)
def list_scripts(query: PageQuery) -> Response:
    total, rows = service.list_scripts(db.session(), current_principal(), query.page, query.size)
    page = ScriptPage(
        total=total,
        page=query.page,
        size=query.size,
        list=[script_out(script, owner) for script, owner in rows],
    )
    return json_response(page)


@endpoint(
    bp,
    "/scripts/<int:script_id>",
    "GET",
    summary="One script",
    tag=TAG,
    response=ScriptOut,
    errors=(401, 404),
)
def get_script(script_id: int) -> Response:
    return json_response(script_out(service.get_script(db.session(), current_principal(), script_id)))


@endpoint(
    bp,
    "/scripts/<int:script_id>/content",
    "GET",
    summary="The uploaded file, as uploaded",
    tag=TAG,
    errors=(401, 404, 409),
    media_types=("text/x-python", "application/octet-stream"),
    description="In shared mode a host fetches a script uploaded on another from the artifact store "
    "first: 409 `script_unavailable` when the stored copy is not the file uploaded, 503 "
    "`storage_unavailable` when the store does not answer.",
)
def script_content(script_id: int) -> Response:
    script = service.get_script(db.session(), current_principal(), script_id)
    path = service.original_path(_settings(), script)
    shared = shared_files(_app())
    if not path.is_file() and shared is not None:
        # Uploaded on another host: this one fetches it once into its cache.
        stored = service.StoredScript.of(script)
        db.session.rollback()  # no connection held while the shared store answers
        try:
            service.ensure_here(_settings(), stored, shared)
        except FileNotFoundError:
            log.warning("Script %d: its shared copy is missing", stored.id)
        script = service.get_script(db.session(), current_principal(), script_id)
    if not path.is_file():
        # The row outlived its file (removed by hand, or a restore without the data dir).
        log.warning("Script %d: its stored file %s is missing", script.id, path)
        raise NotFound(f"Script {script.id}'s file is missing on the server; upload it again.")
    mimetype = "text/x-python; charset=utf-8" if script.kind == "python" else "application/octet-stream"
    response = send_file(
        path,
        mimetype=mimetype,
        download_name=script.filename,
        as_attachment=script.kind != "python",
    )
    # Shown as text, never rendered: a script is not a page.
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@endpoint(
    bp,
    "/scripts/<int:script_id>",
    "DELETE",
    summary="Delete a script no job uses",
    tag=TAG,
    status=204,
    errors=(401, 404, 409),
)
def delete_script(script_id: int) -> Response:
    script = service.get_script(db.session(), current_principal(), script_id)
    script_deleting.send(_app(), script_id=script.id)  # 409 while a job uses it
    service.delete_script(db.session(), _settings(), script, shared_files(_app()))
    return Response(status=204)
