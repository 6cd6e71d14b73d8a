"""The debris sweep's grace rules, the free-space watermark and how disk-full errors read (#11)."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from tests.processes import wait_for
from tests.records import running_job
from trainflow.db import db
from trainflow.errors import is_disk_full
from trainflow.housekeeping import start_sweeper, sweep
from trainflow.scripts.models import Script

HOUR = 3600.0
ORPHAN_KEY = "a" * 32
FRESH_KEY = "b" * 32
OWNED_KEY = "c" * 32


def aged(path: Path, seconds: float) -> Path:
    """Make ``path`` and what lies directly in it look unwritten for ``seconds``."""
    when = time.time() - seconds
    for item in [*path.iterdir(), path] if path.is_dir() else [path]:
        os.utime(item, (when, when))
    return path


def folder(path: Path, age: float) -> Path:
    (path / "files").mkdir(parents=True)
    (path / "files" / "train.py").write_text("print('hi')\n")
    (path / "original").write_text("print('hi')\n")
    return aged(path, age)


def spool(path: Path, age: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 1000)
    return aged(path, age)


@pytest.fixture
def debris(app, settings, alice):
    """Two hours old: a partial upload, a script folder and a job folder, none with a row. Fresh:
    the same. And folders that belong to rows, old too."""
    uploads, jobs = settings.uploads_dir, settings.jobs_dir
    job = running_job(app, alice.id, run_id="r" * 32)
    with app.app_context():
        script = db.session.get(Script, db.session.get(type(job), job.id).script_id)
        script.storage_key = OWNED_KEY
        db.session.commit()
    return {
        "old upload": spool(uploads / ".incoming" / "upload-old", 2 * HOUR),
        "fresh upload": spool(uploads / ".incoming" / "upload-fresh", 5),
        "old script": folder(uploads / ORPHAN_KEY, 2 * HOUR),
        "fresh script": folder(uploads / FRESH_KEY, 5),
        "owned script": folder(uploads / OWNED_KEY, 2 * HOUR),
        "not a key": folder(uploads / "not-a-storage-key", 2 * HOUR),
        "old job": folder(jobs / "900", 2 * HOUR),
        "fresh job": folder(jobs / "901", 5),
        "owned job": folder(jobs / str(job.id), 2 * HOUR),
    }


def left(debris: dict[str, Path]) -> set[str]:
    return {name for name, path in debris.items() if path.exists()}


def test_the_periodic_sweep_removes_only_debris_unwritten_for_the_grace_period(app, settings, debris):
    with app.app_context():
        swept = sweep(settings, db.session, HOUR)
    assert left(debris) == {
        "fresh upload",
        "fresh script",
        "owned script",
        "not a key",
        "fresh job",
        "owned job",
    }
    assert (swept.uploads, swept.scripts, swept.jobs) == (1, 1, 1)
    assert swept.bytes == 1000 + 2 * 2 * len("print('hi')\n")


def test_at_start_up_all_debris_goes_but_nothing_that_belongs_to_a_row(app, settings, debris):
    with app.app_context():
        swept = sweep(settings, db.session, 0)
    assert left(debris) == {"owned script", "not a key", "owned job"}
    assert swept.count == 6


def test_a_folder_written_in_lately_is_not_debris_however_old_the_folder(app, settings, debris):
    (debris["old script"] / "files" / "more.py").touch()  # an upload unpacking into it now
    aged(debris["old script"] / "files", 0)
    with app.app_context():
        sweep(settings, db.session, HOUR)
    assert debris["old script"].exists()


def test_the_folder_of_a_job_whose_supervisor_still_runs_stays(app, settings, debris):
    job_dir = debris["old job"]
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(job_dir)])
    try:
        (job_dir / "status.json").write_text(f'{{"state": "running", "supervisor_pid": {supervisor.pid}}}')
        aged(job_dir, 2 * HOUR)
        with app.app_context():
            sweep(settings, db.session, HOUR)
        assert job_dir.exists()
    finally:
        supervisor.kill()
        supervisor.wait()


def test_the_server_sweeps_every_sweep_seconds(app, settings):
    app.config["TRAINFLOW"] = settings.replace(sweep_seconds=1, debris_grace_seconds=int(HOUR))
    old = spool(settings.uploads_dir / ".incoming" / "upload-old", 2 * HOUR)
    fresh = spool(settings.uploads_dir / ".incoming" / "upload-fresh", 5)
    sweeper = start_sweeper(app)
    try:
        wait_for(lambda: not old.exists(), seconds=10)
    finally:
        sweeper.stop()
    assert fresh.exists()


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full")),
    ],
    ids=["ENOSPC", "EDQUOT", "sqlite"],
)
def test_writes_that_failed_for_lack_of_space_read_as_such(error):
    assert is_disk_full(error)


def test_postgresql_disk_full_reads_as_such():
    psycopg2_errors = pytest.importorskip("psycopg2.errors")
    assert is_disk_full(OperationalError("INSERT ...", {}, psycopg2_errors.DiskFull("could not extend file")))


def test_a_wrapped_disk_full_error_reads_as_such():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("could not store the upload") from e
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EACCES, "Permission denied"),
        OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked")),
        ValueError("database or disk is full"),
    ],
    ids=["EACCES", "locked", "text-only"],
)
def test_other_errors_do_not(error):
    assert not is_disk_full(error)


TRAIN = "/ajax-api/2.0/mlflow/train"


@pytest.fixture
def low_on_space(app, settings):
    """A watermark above what the disk has free."""
    app.config["TRAINFLOW"] = settings.replace(min_free_mb=1 << 30)


def test_below_the_watermark_an_upload_is_507_and_nothing_is_written(client, alice, settings, low_on_space):
    response = client.post(
        f"{TRAIN}/upload", data={"file": (b"print('hi')\n", "train.py")}, headers=alice.basic
    )
    assert response.status_code == 507
    assert response.json["error"]["code"] == "insufficient_storage"
    assert "TRAINFLOW_MIN_FREE_MB" in response.json["error"]["message"]
    assert not any((settings.uploads_dir / ".incoming").glob("*"))


def test_below_the_watermark_a_submission_is_507(client, alice, low_on_space):
    response = client.post(f"{TRAIN}/jobs", json={"script_id": 1}, headers=alice.basic)
    assert response.status_code == 507
    assert "TRAINFLOW_MIN_FREE_MB" in response.json["error"]["message"]


def test_below_the_watermark_reading_still_works(client, alice, low_on_space):
    assert client.get(f"{TRAIN}/jobs", headers=alice.basic).status_code == 200


def test_the_watermark_needs_a_signed_in_caller_first(client, low_on_space):
    assert client.post(f"{TRAIN}/jobs", json={"script_id": 1}).status_code == 401
