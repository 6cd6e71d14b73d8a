"""Per-user quotas on stored scripts (413) and on job folders (409), on both databases (issue 10)."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from tests.scripts.test_upload import TRAIN_PY, post_file, uploads_left
from trainflow.settings import Settings

SCRIPTS = "/ajax-api/2.0/mlflow/train/scripts"
JOBS = "/ajax-api/2.0/mlflow/train/jobs"
MB = 1024 * 1024


@pytest.fixture
def settings(tmp_path, database_url, request) -> Settings:
    quota = getattr(request, "param", 1)  # MB, of each quota
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url, user_uploads_mb=quota, user_jobs_mb=quota
    )


def python_file(size: int) -> bytes:
    """A valid Python file of about ``size`` bytes."""
    line = b"x = 1  # " + b"p" * 90 + b"\n"
    return TRAIN_PY + line * (size // len(line))


def bomb(unpacked: int) -> bytes:
    """A small zip that unpacks to ``unpacked`` bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.py", TRAIN_PY)
        archive.writestr("data.bin", b"\0" * unpacked)
    return buffer.getvalue()


def test_an_upload_over_the_quota_is_413_with_the_figures_and_what_to_delete(client, alice, settings):
    first = post_file(client, alice, "first.py", python_file(300_000))
    assert first.status_code == 201, first.json
    response = post_file(client, alice, "second.py", python_file(300_000))
    assert response.status_code == 413
    error = response.json["error"]
    assert error["code"] == "quota_exceeded"
    # Each script is kept as uploaded and as the file a job runs: 2 x 0.3 MB.
    assert error["message"].startswith("Your scripts use 0.6 MB of your 1 MB, and this upload needs")
    assert f"DELETE {SCRIPTS}/<id>" in error["message"]
    assert "TRAINFLOW_USER_UPLOADS_MB" in error["message"]
    assert len([p for p in uploads_left(settings) if not p.startswith(".incoming")]) == 2


def test_what_an_archive_unpacks_to_counts(client, alice, settings):
    archive = bomb(4 * MB)
    assert len(archive) < 50_000
    response = post_file(client, alice, "project.zip", archive)
    assert response.status_code == 413
    assert response.json["error"]["code"] == "quota_exceeded"
    assert "(as uploaded and unpacked)" in response.json["error"]["message"]
    assert [p for p in uploads_left(settings) if not p.startswith(".incoming")] == []


def test_an_archive_within_the_quota_is_measured_unpacked(client, alice):
    assert post_file(client, alice, "project.zip", bomb(700_000)).status_code == 201
    response = post_file(client, alice, "train.py", python_file(200_000))
    assert response.status_code == 413
    assert response.json["error"]["message"].startswith("Your scripts use 0.7 MB of your 1 MB")


def test_deleting_a_script_frees_its_room(client, alice):
    script = post_file(client, alice, "first.py", python_file(300_000)).json["script"]
    assert post_file(client, alice, "second.py", python_file(300_000)).status_code == 413
    assert client.delete(f"{SCRIPTS}/{script}", headers=alice.basic).status_code == 204
    assert post_file(client, alice, "second.py", python_file(300_000)).status_code == 201


def test_the_quota_is_each_users_own(client, alice, bob):
    assert post_file(client, alice, "first.py", python_file(300_000)).status_code == 201
    assert post_file(client, bob, "first.py", python_file(300_000)).status_code == 201


def test_admins_have_no_quota(client, admin):
    assert post_file(client, admin, "first.py", python_file(300_000)).status_code == 201
    assert post_file(client, admin, "second.py", python_file(300_000)).status_code == 201


@pytest.mark.parametrize("settings", [0], indirect=True)
def test_no_quota_when_set_to_zero(client, alice):
    for name in ("a.py", "b.py", "c.py"):
        assert post_file(client, alice, name, python_file(400_000)).status_code == 201


def submit(client, user, script: int):
    return client.post(JOBS, json={"script_id": script}, headers=user.basic)


def test_a_submit_over_the_job_folders_quota_is_409_with_the_figures(client, alice, settings):
    script = post_file(client, alice, "train.py", python_file(100_000)).json["script"]
    first = submit(client, alice, script)
    assert first.status_code == 201, first.json
    # The first job's outputs fill most of the quota.
    output = settings.jobs_dir / str(first.json["job"]) / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "weights.bin").write_bytes(os.urandom(990_000))
    response = submit(client, alice, script)
    assert response.status_code == 409
    error = response.json["error"]
    assert error["code"] == "quota_exceeded"
    assert error["message"].startswith("Your job folders use 0.9 MB of your 1 MB, and this job's copy")
    assert f"DELETE {JOBS}/<id>" in error["message"]
    assert "TRAINFLOW_USER_JOBS_MB" in error["message"]


def test_a_refused_submit_creates_no_job(client, alice, settings):
    script = post_file(client, alice, "train.py", python_file(100_000)).json["script"]
    first = submit(client, alice, script).json["job"]
    output = settings.jobs_dir / str(first) / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "weights.bin").write_bytes(os.urandom(990_000))
    assert submit(client, alice, script).status_code == 409
    assert client.get(JOBS, headers=alice.basic).json["total"] == 1


def test_every_job_copies_its_script_so_the_copy_counts(client, alice, settings):
    # A 0.3 MB script: three jobs' copies fit in 1 MB, a fourth does not.
    script = post_file(client, alice, "train.py", python_file(300_000)).json["script"]
    for _ in range(3):
        response = submit(client, alice, script)
        assert response.status_code == 201, response.json
        work = settings.jobs_dir / str(response.json["job"]) / "work"
        work.mkdir(parents=True, exist_ok=True)
        (work / "train.py").write_bytes(python_file(300_000))
    assert submit(client, alice, script).status_code == 409
