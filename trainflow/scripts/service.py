"""Script operations: store an upload, find, list and delete scripts, and the uploads quota."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainflow.accounts.credentials import Principal
from trainflow.accounts.models import User
from trainflow.db import get_by_id
from trainflow.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, TrainflowError
from trainflow.scripts import storage
from trainflow.scripts.models import Script
from trainflow.scripts.multipart import ReceivedFile
from trainflow.scripts.shared import SharedFiles, original_name
from trainflow.settings import Settings

log = logging.getLogger(__name__)
MB = 1024 * 1024
SCRIPTS_PATH = "/ajax-api/2.0/mlflow/train/scripts"


class UploadQuotaExceeded(PayloadTooLarge):
    code = "quota_exceeded"


class JobsQuotaExceeded(Conflict):
    code = "quota_exceeded"


def create_script(
    session: Session,
    settings: Settings,
    owner_id: int,
    upload: ReceivedFile,
    entrypoint: str | None,
    *,
    has_quota: bool = True,
    shared: SharedFiles | None = None,
) -> Script:
    """Check and store an upload; ``has_quota``: whether the owner's uploads quota applies.

    With a ``shared`` store (shared mode), the checked original is put there before the row is
    committed, so any host can fetch it once the script exists; a failed commit takes it out again.
    """
    filename = storage.check_filename(upload.filename)
    if upload.size == 0:
        raise BadRequest(f"{filename} is empty; choose the file again.")
    quota = settings.user_uploads_mb * MB if has_quota else 0
    used = uploads_used(session, settings, owner_id) if quota else 0
    if quota:
        # The upload is kept as sent as well as unpacked: it needs at least its own size.
        _check_uploads_quota(used, upload.size, quota, "")
    max_unpacked = settings.max_unpacked_mb * MB
    left = quota - used - upload.size if quota else max_unpacked
    key, target = storage.new_storage_dir(settings.uploads_dir)
    is_shared = False
    try:
        try:
            # An archive is refused before it is unpacked if what it says it holds is over quota.
            checked = storage.store(upload.path, filename, entrypoint, target, min(max_unpacked, left))
        except PayloadTooLarge:
            if left >= max_unpacked:
                raise
            _check_uploads_quota(used, upload.size + left, quota, " (as uploaded and unpacked)", more=True)
            raise
        stored_bytes = frozen_bytes(target)
        if quota:
            _check_uploads_quota(used, stored_bytes, quota, " (as uploaded and unpacked)")
        if shared is not None:
            session.rollback()  # no connection held while the artifact store answers
            _put_shared(shared, key, target / "original")
            is_shared = True
        script = Script(
            owner_id=owner_id,
            filename=checked.filename,
            kind=checked.kind,
            entrypoint=checked.entrypoint,
            has_requirements=checked.has_requirements,
            size=upload.size,
            sha256=upload.sha256,
            storage_key=key,
            stored_bytes=stored_bytes,
        )
        session.add(script)
        session.commit()
    except BaseException:
        # Nothing of a refused or failed upload stays behind.
        shutil.rmtree(target, ignore_errors=True)
        forget_size(target)
        if is_shared:
            delete_shared_copy(shared, key)
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


def delete_script(
    session: Session, settings: Settings, script: Script, shared: SharedFiles | None = None
) -> None:
    """Delete the row, then this host's files and the shared copy (other hosts' caches are
    swept as folders without a row)."""
    key = script.storage_key
    folder = settings.uploads_dir / key
    session.delete(script)
    session.commit()
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)
    forget_size(folder)
    if shared is not None:
        delete_shared_copy(shared, key)


class SharedStoreUnavailable(TrainflowError):
    status = 503
    code = "storage_unavailable"


def _put_shared(shared: SharedFiles, key: str, original: Path) -> None:
    try:
        shared.put(original_name(key), original)
    except Exception:
        # Not the upload's fault: the store every host fetches scripts from did not take it.
        log.exception("Could not put %s in the shared store", original_name(key))
        raise SharedStoreUnavailable(
            "The artifact store that keeps scripts for every host (TRAINFLOW_ARTIFACTS_URI) did not "
            "take the upload; nothing was stored. Try again in a moment."
        ) from None


def delete_shared_copy(shared: SharedFiles | None, key: str) -> None:
    """Remove the shared copy of the script stored under ``key`` (its row gone); a failure is logged."""
    if shared is None:
        return
    try:
        shared.delete(original_name(key))
    except Exception:
        # The row is gone, so nothing will use it: a copy left over costs space, not correctness.
        log.exception("Could not delete %s from the shared store", original_name(key))


# -- this host's copy, in shared mode -------------------------------------------------------------


@dataclass(frozen=True)
class StoredScript:
    """What fetching a script's files needs, as plain values (usable with no database session)."""

    id: int
    storage_key: str
    filename: str
    entrypoint: str
    sha256: str

    @classmethod
    def of(cls, script: Script) -> StoredScript:
        return cls(script.id, script.storage_key, script.filename, script.entrypoint, script.sha256)


class SharedCopyUnusable(Conflict):
    code = "script_unavailable"


def ensure_here(settings: Settings, script: StoredScript, shared: SharedFiles | None) -> Path:
    """The script's folder on this host (``original``, ``files/``), fetched first if it lacks it.

    A host of shared mode fetches the original from the shared store and lays it out with the
    same checks as an upload, into a folder of a fresh random key that is renamed into place at
    the end: two fetches of one script at once (two jobs starting, or a worker serving its
    content) each finish and one rename wins; a host killed mid-fetch leaves a folder without a
    row, which the sweep removes.
    """
    folder = settings.uploads_dir / script.storage_key
    if (folder / "files").is_dir() or shared is None:
        return folder
    _, scratch = storage.new_storage_dir(settings.uploads_dir)
    try:
        fetched = scratch / "fetched"
        _fetch_shared(shared, script.storage_key, fetched)
        digest = _sha256(fetched)
        if digest != script.sha256:
            raise SharedCopyUnusable(
                f"Script {script.id}'s shared copy is not the file uploaded (its SHA-256 is "
                f"{digest}, not {script.sha256}); upload it again."
            )
        try:
            storage.store(fetched, script.filename, script.entrypoint, scratch, settings.max_unpacked_mb * MB)
        except (BadRequest, PayloadTooLarge) as e:
            raise SharedCopyUnusable(
                f"Script {script.id}'s shared copy fails the upload's checks: {e}"
            ) from None
        try:
            os.rename(scratch, folder)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # Another fetch of the same script put its (identical) folder in place first.
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # gone already once renamed
    return folder


def _fetch_shared(shared: SharedFiles, key: str, destination: Path) -> None:
    try:
        shared.fetch(original_name(key), destination)
    except FileNotFoundError:
        raise  # gone for good: nothing to wait for
    except Exception:
        log.exception("Could not fetch %s from the shared store", original_name(key))
        raise SharedStoreUnavailable(
            "The artifact store that keeps scripts for every host (TRAINFLOW_ARTIFACTS_URI) did not "
            "answer; try again in a moment."
        ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the uploads quota ------------------------------------------------------------------------------


def tree_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (their sizes as listed; links not followed)."""
    total = 0
    stack = [str(folder)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
                else:
                    total += info.st_size
    return total


class _SizeCache:
    """Sizes of folders that no longer change (stored scripts, finished jobs), measured once.

    An entry holds the folder's inode and modification time too, so a folder made again at the
    same path (a job id SQLite reused) is measured again.
    """

    def __init__(self) -> None:
        self._sizes: dict[Path, tuple[int, int, int]] = {}
        self._lock = threading.Lock()

    def size(self, folder: Path) -> int:
        try:
            info = folder.stat()
        except OSError:
            return 0
        with self._lock:
            known = self._sizes.get(folder)
        if known is not None and known[:2] == (info.st_ino, info.st_mtime_ns):
            return known[2]
        size = tree_bytes(folder)
        with self._lock:
            self._sizes[folder] = (info.st_ino, info.st_mtime_ns, size)
        return size

    def forget(self, folder: Path) -> None:
        with self._lock:
            self._sizes.pop(folder, None)


_sizes = _SizeCache()


def frozen_bytes(folder: Path) -> int:
    """The size of a folder that no longer changes, such as a stored script's (measured once)."""
    return _sizes.size(folder)


def forget_size(folder: Path) -> None:
    _sizes.forget(folder)


def uploads_used(session: Session, settings: Settings, owner_id: int) -> int:
    """Bytes the owner's stored scripts take on disk, unpacked archives included.

    As measured at upload, so that every host counts the same whichever copies it holds (scripts
    uploaded before that was kept: as this host's copy measures).
    """
    rows = session.execute(
        select(Script.storage_key, Script.stored_bytes).where(Script.owner_id == owner_id)
    ).all()
    return sum(
        stored if stored is not None else frozen_bytes(settings.uploads_dir / key) for key, stored in rows
    )


def script_bytes(settings: Settings, script: Script) -> int:
    """What each job of this script copies into its folder (its files: stored less the original)."""
    folder = files_dir(settings, script)
    if folder.is_dir() or script.stored_bytes is None:
        return frozen_bytes(folder)
    return max(script.stored_bytes - script.size, 0)  # not fetched to this host yet


def _check_uploads_quota(used: int, adding: int, quota: int, what: str, more: bool = False) -> None:
    if used + adding <= quota and not more:
        return
    needs = f"more than {megabytes(adding)}" if more else megabytes(adding)
    raise UploadQuotaExceeded(
        f"Your scripts use {megabytes(used)} of your {megabytes(quota)}, and this upload needs "
        f"{needs}{what}; delete some with DELETE {SCRIPTS_PATH}/<id> "
        f"(GET {SCRIPTS_PATH} lists them; a script some job uses goes once its jobs are deleted), "
        "or ask an admin to raise TRAINFLOW_USER_UPLOADS_MB."
    )


def megabytes(size: int) -> str:
    """A size for people: ``950 MB``, ``0.3 MB``."""
    value = size / MB
    return f"{value:.0f} MB" if value >= 10 or value == int(value) else f"{value:.1f} MB"
