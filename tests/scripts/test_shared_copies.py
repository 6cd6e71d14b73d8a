"""Scripts' originals in the shared store, and each host's copy of them (#13, shared mode).

The shared store here is a folder reached through MLflow's artifact repositories, registered on
an app as shared mode registers it; the e2e tests run the same with two servers.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event

from tests.conftest import shared_mode
from tests.scripts.test_quota import python_file
from tests.scripts.test_upload import TRAIN_PY, make_zip, post_file, uploads_left
from trainflow.scripts import service
from trainflow.scripts import shared as scripts_shared
from trainflow.scripts.models import Script
from trainflow.settings import Settings
from trainflow.tracking.blobs import ArtifactBlobs

SCRIPTS = "/ajax-api/2.0/mlflow/train/scripts"


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, user_uploads_mb=1)


@pytest.fixture
def store(app, tmp_path) -> ArtifactBlobs:
    blobs = ArtifactBlobs(str(tmp_path / "shared-store"))
    scripts_shared.init_app(app, blobs)
    return blobs


def shared_files(store: ArtifactBlobs) -> list[str]:
    root = Path(store.uri)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def stored(app, script_id: int) -> service.StoredScript:  # type: ignore[no-untyped-def]
    from trainflow.db import db

    with app.app_context():
        return service.StoredScript.of(db.session.get(Script, script_id))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_upload_puts_its_original_in_the_shared_store_and_a_delete_takes_it_out(client, alice, store):
    answer = post_file(client, alice, "train.py", TRAIN_PY)
    assert answer.status_code == 201, answer.json
    (name,) = shared_files(store)
    assert name.startswith("trainflow-scripts/") and name.endswith("/original")
    assert (Path(store.uri) / name).read_bytes() == TRAIN_PY
    deleted = client.delete(f"{SCRIPTS}/{answer.json['script']}", headers=alice.basic)
    assert deleted.status_code == 204
    assert shared_files(store) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_deleting_a_user_takes_their_scripts_shared_copies_out(client, alice, admin, store):
    for name in ("train.py", "other.py"):
        assert post_file(client, alice, name, TRAIN_PY).status_code == 201
    assert len(shared_files(store)) == 2
    deleted = client.delete(f"/api/users/{alice.id}", headers=admin.basic)
    assert deleted.status_code == 204, deleted.json
    assert shared_files(store) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_upload_whose_row_cannot_be_committed_leaves_no_shared_copy(app, client, alice, store, settings):
    def refuse(*_args: object) -> None:
        raise RuntimeError("the database refused the row")

    event.listen(Script, "before_insert", refuse)
    try:
        answer = post_file(client, alice, "train.py", TRAIN_PY)
    finally:
        event.remove(Script, "before_insert", refuse)
    assert answer.status_code == 500
    assert shared_files(store) == []
    assert uploads_left(settings) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_refused_upload_puts_nothing_in_the_shared_store(client, alice, store):
    answer = post_file(client, alice, "train.py", b"def broken(:\n")
    assert answer.status_code == 400
    assert shared_files(store) == []


class BrokenStore:
    """A store that takes nothing (S3 down, a full shared disk)."""

    def put(self, name: str, source: Path) -> None:
        raise OSError("the store is away")

    def fetch(self, name: str, destination: Path) -> None:
        raise FileNotFoundError(name)

    def delete(self, name: str) -> None:
        pass


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_upload_the_shared_store_does_not_take_is_a_503_and_leaves_nothing(app, client, alice, settings):
    scripts_shared.init_app(app, BrokenStore())
    answer = post_file(client, alice, "train.py", TRAIN_PY)
    assert answer.status_code == 503
    assert answer.json["error"]["code"] == "storage_unavailable"
    assert uploads_left(settings) == []
    assert client.get(SCRIPTS, headers=alice.basic).json["total"] == 0


class SlowStore:
    """The real store, each fetch taking a while: fetches of one script overlap."""

    def __init__(self, store: ArtifactBlobs) -> None:
        self.store = store
        self.fetches = 0

    def put(self, name: str, source: Path) -> None:
        self.store.put(name, source)

    def fetch(self, name: str, destination: Path) -> None:
        self.fetches += 1
        time.sleep(0.3)
        self.store.fetch(name, destination)

    def delete(self, name: str) -> None:
        self.store.delete(name)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_host_without_the_files_fetches_them_once_even_when_two_jobs_start_at_once(
    app, client, alice, store, settings, tmp_path
):
    archive = make_zip({"proj/train.py": TRAIN_PY, "proj/data/x.txt": b"x"})
    answer = post_file(client, alice, "proj.zip", archive)
    assert answer.status_code == 201, answer.json
    script = stored(app, answer.json["script"])
    other_host = settings.replace(data_dir=tmp_path / "other-host")
    slow = SlowStore(store)
    folders: list[Path] = []
    threads = [
        threading.Thread(target=lambda: folders.append(service.ensure_here(other_host, script, slow)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(folders) == 3
    assert len(set(folders)) == 1
    assert (folders[0] / "files" / "train.py").read_bytes() == TRAIN_PY
    assert (folders[0] / "files" / "data" / "x.txt").read_bytes() == b"x"
    assert sorted(p.name for p in other_host.uploads_dir.iterdir()) == [script.storage_key]  # no scratch
    fetched = slow.fetches
    service.ensure_here(other_host, script, slow)
    assert slow.fetches == fetched  # from the cache from now on


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_shared_copy_that_is_not_the_file_uploaded_is_refused(
    app, client, alice, store, settings, tmp_path
):
    answer = post_file(client, alice, "train.py", TRAIN_PY)
    script = stored(app, answer.json["script"])
    (Path(store.uri) / scripts_shared.original_name(script.storage_key)).write_bytes(b"import os\n")
    other_host = settings.replace(data_dir=tmp_path / "other-host")
    with pytest.raises(service.SharedCopyUnusable, match="not the file uploaded"):
        service.ensure_here(other_host, script, store)
    assert list(other_host.uploads_dir.iterdir()) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_shared_copy_that_is_gone_is_a_missing_file(app, client, alice, store, settings, tmp_path):
    answer = post_file(client, alice, "train.py", TRAIN_PY)
    script = stored(app, answer.json["script"])
    shutil.rmtree(Path(store.uri) / "trainflow-scripts")
    with pytest.raises(FileNotFoundError, match="not in the artifact store"):
        service.ensure_here(settings.replace(data_dir=tmp_path / "other-host"), script, store)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_host_without_copies_of_a_users_scripts_still_counts_them_in_the_quota(
    client, alice, store, settings
):
    first = post_file(client, alice, "first.py", python_file(300 * 1024))
    assert first.status_code == 201, first.json
    for folder in settings.uploads_dir.iterdir():  # as a host that never fetched it sees things
        if not folder.name.startswith("."):
            shutil.rmtree(folder)
    second = post_file(client, alice, "second.py", python_file(300 * 1024))
    assert second.status_code == 413
    assert second.json["error"]["code"] == "quota_exceeded"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
class TestThroughMlflowsArtifactProxy:
    """The originals share the artifact store with MLflow's proxy: no user reaches them there."""

    @pytest.fixture
    def settings(self, settings: Settings, redis_url: str, tmp_path: Path) -> Settings:
        return settings.replace(**shared_mode(redis_url, tmp_path))

    def test_a_user_can_neither_list_nor_read_the_scripts_copies(self, client, alice, bob):
        assert post_file(client, alice, "train.py", TRAIN_PY).status_code == 201
        proxy = "/api/2.0/mlflow-artifacts/artifacts"
        for path in ("", "trainflow-scripts"):
            listed = client.get(proxy, query_string={"path": path}, headers=bob.basic)
            assert listed.status_code in (400, 403, 404), (path, listed.status_code, listed.json)
        (name,) = [
            p for p in Path(client.application.config["TRAINFLOW"].artifacts_destination).rglob("original")
        ]
        relative = name.relative_to(client.application.config["TRAINFLOW"].artifacts_destination)
        read = client.get(f"{proxy}/{relative}", headers=bob.basic)
        assert read.status_code in (403, 404), read.status_code
        assert TRAIN_PY not in read.data
