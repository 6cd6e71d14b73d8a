"""Keeping the data directory healthy: the free-space watermark, and sweeping away crash debris.

**Watermark.** Below ``TRAINFLOW_MIN_FREE_MB`` free on the disk holding the data directory, new
uploads and job submissions are refused with 507 before anything is written (a before-request
hook on those two routes), and queued jobs wait to start (as they do on a full disk with no
watermark). What already runs goes on until the disk is really full; then each
write that fails answers 507 too (:mod:`trainflow.errors`), and running jobs wait for room in
their supervisor (:mod:`trainflow.runner.supervisor`).

**Debris.** A server killed mid-request leaves what it was writing:

- partial uploads: request bodies being spooled to ``uploads/.incoming``;
- script folders ``uploads/<storage key>`` with no script row: an upload is unpacked before its
  row is committed;
- job folders ``jobs/<id>`` with no job row: a deleted job's row goes before its folder.

:func:`sweep` removes them. At start-up, before any request is served (and before workers fork),
the server that runs jobs removes them whatever their age: nothing of its own is in flight. The
periodic sweep (every ``TRAINFLOW_SWEEP_SECONDS``, in that same server) removes only what has
gone unwritten for ``TRAINFLOW_DEBRIS_GRACE_SECONDS``: an upload in flight writes its spool file
and its folder until its row commits, and a new job's folder may appear just before its row.
Nothing that belongs to a row is ever removed, nor the folder of a job whose supervisor still
runs (a deleted user's job, being cancelled). Servers that share the data directory and do not
run jobs (``TRAINFLOW_RUN_JOBS=false``) never sweep: their uploads in flight are safe from it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import select

from trainflow.errors import InsufficientStorage
from trainflow.scripts.service import megabytes, tree_bytes

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

    from trainflow.settings import Settings

log = logging.getLogger(__name__)
MB = 1024 * 1024
INCOMING = ".incoming"
STORAGE_KEY = re.compile(r"[0-9a-f]{32}")  # trainflow.scripts.storage.new_storage_dir
# The routes that store something new: refused below the watermark, before the body is read.
GUARDED_ENDPOINTS = frozenset({"scripts.upload", "jobs.submit"})
EXTENSION = "trainflow.sweeper"
T = TypeVar("T")


# -- the watermark ----------------------------------------------------------------------------


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def check_free_space(settings: Settings) -> None:
    """Raise 507 if the data directory's disk is below ``TRAINFLOW_MIN_FREE_MB``."""
    if not settings.min_free_mb:
        return
    try:
        free = free_bytes(settings.resolved_data_dir)
    except OSError:
        return  # cannot tell: the write itself will say
    if free < settings.min_free_mb * MB:
        raise InsufficientStorage(
            f"The disk holding the server's data has {megabytes(free)} free, under the "
            f"{settings.min_free_mb} MB it keeps for running jobs (TRAINFLOW_MIN_FREE_MB): new uploads "
            "and jobs wait until an administrator frees space. Running jobs go on."
        )


START_ROOM = 2 * MB  # what a job takes to start: its reserve, spec, status and first records


def has_room_to_start(settings: Settings) -> bool:
    """Whether a queued job may start: the disk has the watermark free, and room to start one."""
    try:
        free = free_bytes(settings.resolved_data_dir)
    except OSError:
        return True  # cannot tell: starting will say
    return free >= max(settings.min_free_mb * MB, START_ROOM)


def refuse_when_low() -> None:
    """Before-request hook: uploads and submissions get 507 below the watermark."""
    from flask import current_app, request

    if request.endpoint in GUARDED_ENDPOINTS:
        check_free_space(current_app.config["TRAINFLOW"])


# -- the sweep --------------------------------------------------------------------------------


@dataclass
class Swept:
    """What one sweep removed."""

    uploads: int = 0  # partial uploads under uploads/.incoming
    scripts: int = 0  # script folders without a row
    jobs: int = 0  # job folders without a row
    bytes: int = 0
    names: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.uploads + self.scripts + self.jobs

    def describe(self) -> str:
        return (
            f"{self.uploads} partial upload(s), {self.scripts} script folder(s) and {self.jobs} job "
            f"folder(s) without a database row, {megabytes(self.bytes)}"
        )


def sweep(settings: Settings, session: Session, grace_s: float, now: float | None = None) -> Swept:
    """Remove debris unwritten for ``grace_s`` seconds (0: all of it); say what went."""
    now = time.time() if now is None else now
    swept = Swept()
    uploads = settings.uploads_dir
    for entry in _entries(uploads / INCOMING):
        if entry.is_file(follow_symlinks=False) and _idle(Path(entry.path), now) >= grace_s:
            swept.bytes += _remove(Path(entry.path))
            swept.uploads += 1
            swept.names.append(f"{INCOMING}/{entry.name}")
    keys = [
        entry.name
        for entry in _entries(uploads)
        if STORAGE_KEY.fullmatch(entry.name)
        and entry.is_dir(follow_symlinks=False)
        and _idle(Path(entry.path), now) >= grace_s
    ]
    for key in _without_rows(session, keys, _script_rows):
        # Checked again just before: a row committed since the first look keeps its folder.
        if not _script_rows(session, [key]):
            swept.bytes += _remove(uploads / key)
            swept.scripts += 1
            swept.names.append(f"uploads/{key}")
    ids = [
        int(entry.name)
        for entry in _entries(settings.jobs_dir)
        if entry.name.isdigit()
        and entry.is_dir(follow_symlinks=False)
        and _idle(Path(entry.path), now) >= grace_s
    ]
    for job_id in _without_rows(session, ids, _job_rows):
        folder = settings.jobs_dir / str(job_id)
        if _is_supervised(settings, job_id) or _job_rows(session, [job_id]):
            continue
        swept.bytes += _remove(folder)
        swept.jobs += 1
        swept.names.append(f"jobs/{job_id}")
    session.rollback()  # end the read transaction: nothing here holds the database
    return swept


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def _idle(path: Path, now: float) -> float:
    """Seconds since ``path`` (or, for a folder, anything directly in it) was last written."""
    try:
        latest = path.lstat().st_mtime
    except OSError:
        return 0.0
    if path.is_dir() and not path.is_symlink():
        for entry in _entries(path):
            try:
                latest = max(latest, entry.stat(follow_symlinks=False).st_mtime)
            except OSError:
                continue
    return now - latest


def _remove(path: Path) -> int:
    """Delete a file or a folder tree; return the bytes it held."""
    if path.is_dir() and not path.is_symlink():
        size = tree_bytes(path)
        shutil.rmtree(path, ignore_errors=True)
        return size
    try:
        size = path.lstat().st_size
        path.unlink()
    except OSError:
        return 0
    return size


def _without_rows(session: Session, names: list[T], rows_of: Callable[[Session, list[T]], set[T]]) -> list[T]:
    found: set[T] = set()
    for start in range(0, len(names), 500):  # bounded IN lists
        found |= rows_of(session, names[start : start + 500])
    return [name for name in names if name not in found]


def _script_rows(session: Session, keys: list[str]) -> set[str]:
    from trainflow.scripts.models import Script

    return set(session.scalars(select(Script.storage_key).where(Script.storage_key.in_(keys))).all())


def _job_rows(session: Session, ids: list[int]) -> set[int]:
    from trainflow.jobs.models import Job

    return set(session.scalars(select(Job.id).where(Job.id.in_(ids))).all())


def _is_supervised(settings: Settings, job_id: int) -> bool:
    """Whether a supervisor still runs this job (a deleted user's job ending, say)."""
    from trainflow.jobs.executors.local import LocalExecutor

    executor = LocalExecutor(settings)
    status = executor.status(job_id)
    if status is None or status.get("state") == "exited":
        return False
    return executor.is_supervising(job_id, status.get("supervisor_pid"))


def sweep_logged(settings: Settings, session: Session, grace_s: float, when: str) -> Swept:
    swept = sweep(settings, session, grace_s)
    if swept.count:
        log.warning("Removed %s (%s); left by a crash.", swept.describe(), when)
        log.info("Removed: %s", ", ".join(swept.names[:50]))
    return swept


def sweep_at_start(app: Flask) -> Swept:
    """Before serving: everything a crash left, or (a server that runs no jobs) only old debris."""
    from trainflow.db import db

    settings: Settings = app.config["TRAINFLOW"]
    grace = 0.0 if settings.run_jobs else float(settings.debris_grace_seconds)
    with app.app_context():
        try:
            return sweep_logged(settings, db.session(), grace, "at start-up")
        finally:
            db.session.remove()


class Sweeper:
    """Sweeps every ``TRAINFLOW_SWEEP_SECONDS`` in a thread of the server that runs jobs."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.settings: Settings = app.config["TRAINFLOW"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="debris-sweeper", daemon=True)

    def start(self) -> None:
        if self.settings.sweep_seconds:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        from trainflow.db import db

        while not self._stop.wait(self.settings.sweep_seconds):
            with self.app.app_context():
                try:
                    sweep_logged(
                        self.settings,
                        db.session(),
                        float(self.settings.debris_grace_seconds),
                        "periodic sweep",
                    )
                except Exception:
                    log.exception("The debris sweep failed; it will try again")
                finally:
                    db.session.remove()


def start_sweeper(app: Flask) -> Sweeper:
    sweeper = Sweeper(app)
    app.extensions[EXTENSION] = sweeper
    sweeper.start()
    return sweeper
