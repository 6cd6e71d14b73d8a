"""What the bus and hub tests share: settings for each transport, and a Redis that can go away.

Redis tests use the ``redis_url`` fixture of tests/conftest.py (skipped without Redis, failed
under CI) and a channel of their own, so that runs sharing one Redis never hear each other.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.events.buses import RedisRelay
from trainflow.events.bus import run_folder
from trainflow.settings import Settings


@pytest.fixture
def local_settings(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path / "data")
    yield settings
    folder = run_folder(settings)
    if not folder.is_relative_to(tmp_path.resolve()):  # a long tmp_path: the sockets are in the temp dir
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def redis_settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", redis_url=redis_url, redis_channel=f"trainflow-test-{uuid.uuid4().hex}"
    )


@pytest.fixture(params=["local", "redis"])
def bus_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings for one bus transport, then the other."""
    settings: Settings = request.getfixturevalue(f"{request.param}_settings")
    return settings


@pytest.fixture
def redis_relay(redis_url: str) -> Iterator[RedisRelay]:
    relay = RedisRelay(redis_url)
    yield relay
    relay.close()
