"""Script operations: store an upload, find, list and delete scripts."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainflow.accounts.credentials import Principal
from trainflow.accounts.models import User
from trainflow.db import get_by_id
from trainflow.errors import BadRequest, NotFound
from trainflow.scripts import storage
from trainflow.scripts.models import Script
from trainflow.scripts.multipart import ReceivedFile
from trainflow.settings import Settings


def create_script(
    session: Session, settings: Settings, owner_id: int, upload: ReceivedFile, entrypoint: str | None
) -> Script:
    filename = storage.check_filename(upload.filename)
    if upload.size == 0:
        raise BadRequest(f"{filename} is empty; choose the file again.")
    key, target = storage.new_storage_dir(settings.uploads_dir)
    try:
        checked = storage.store(
            upload.path, filename, entrypoint, target, settings.max_unpacked_mb * 1024 * 1024
        )
        script = Script(
            owner_id=owner_id,
            filename=checked.filename,
            kind=checked.kind,
            entrypoint=checked.entrypoint,
            has_requirements=checked.has_requirements,
            size=upload.size,
            sha256=upload.sha256,
            storage_key=key,
        )
        session.add(script)
        session.commit()
    except BaseException:
        # Nothing of a refused or failed upload stays behind.
        shutil.rmtree(target, ignore_errors=True)
        raise
    return script


def get_script(session: Session, principal: Principal, script_id: int) -> Script:
    """The script, if it exists and the caller may see it (owner or admin); 404 otherwise."""
    script = get_by_id(session, Script, script_id)
    if script is None or not (principal.is_admin or script.owner_id == principal.user_id):
        raise NotFound(f"No script {script_id}; GET /ajax-api/2.0/mlflow/train/scripts lists yours.")
    return script


def list_scripts(
    session: Session, principal: Principal, page: int, size: int
) -> tuple[int, list[tuple[Script, str]]]:
    query = select(Script, User.username).join(User, User.id == Script.owner_id)
    count = select(func.count()).select_from(Script)
    if not principal.is_admin:
        query = query.where(Script.owner_id == principal.user_id)
        count = count.where(Script.owner_id == principal.user_id)
    rows = session.execute(query.order_by(Script.id.desc()).offset((page - 1) * size).limit(size)).all()
    return session.scalar(count) or 0, [(row[0], row[1]) for row in rows]


def original_path(settings: Settings, script: Script) -> Path:
    return settings.uploads_dir / script.storage_key / "original"


def files_dir(settings: Settings, script: Script) -> Path:
    return settings.uploads_dir / script.storage_key / "files"


def delete_script(session: Session, settings: Settings, script: Script) -> None:
    folder = settings.uploads_dir / script.storage_key
    session.delete(script)
    session.commit()
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)
