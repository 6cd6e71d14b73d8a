"""On a full disk every write answers 507 with a plain message, on trainflow's routes and on
MLflow's (tracking and model registry), and works again once there is room (#11)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.filesystems import fill, small_tmpfs
from trainflow.settings import Settings

MLFLOW = "/api/2.0/mlflow"


@pytest.fixture
def disk(tmp_path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", 20) as mounted:
        yield mounted


@pytest.fixture
def database_url(disk, templates) -> str:
    """SQLite on the small disk: the database runs out of room with everything else."""
    target = disk / "data" / "trainflow.db"
    target.parent.mkdir()
    with sqlite3.connect(templates.sqlite()) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    source.close()
    copy.close()
    return f"sqlite:///{target}"


@pytest.fixture
def settings(disk, database_url) -> Settings:
    return Settings(data_dir=disk / "data", database_url=database_url, min_free_mb=0)


@pytest.fixture
def full(disk, alice) -> Iterator[Path]:
    filler = disk / "filler"
    fill(filler)
    yield filler
    filler.unlink(missing_ok=True)


def assert_refused_for_space(response) -> None:
    assert response.status_code == 507, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "insufficient_storage"
    assert response.json["error"]["message"].startswith("The disk holding the server's data is full")
    assert "SQL" not in response.get_data(as_text=True)


def test_a_registered_model_is_507_on_a_full_disk(client, alice, full):
    assert_refused_for_space(
        client.post(f"{MLFLOW}/registered-models/create", json={"name": "m"}, headers=alice.basic)
    )


def test_an_experiment_is_507_on_a_full_disk(client, alice, full):
    response = client.post(f"{MLFLOW}/experiments/create", json={"name": "alice/full"}, headers=alice.basic)
    assert_refused_for_space(response)
    assert response.json["error_code"] == "RESOURCE_EXHAUSTED"  # what the MLflow client reads


def test_registering_is_507_on_a_full_disk(client, full):
    response = client.post("/api/register", json={"username": "bob", "password": "a-long-enough-pass"})
    assert_refused_for_space(response)


def test_everything_works_again_once_there_is_room(client, alice, full):
    client.post(f"{MLFLOW}/registered-models/create", json={"name": "m"}, headers=alice.basic)
    full.unlink()
    response = client.post(f"{MLFLOW}/registered-models/create", json={"name": "m"}, headers=alice.basic)
    assert response.status_code == 200
