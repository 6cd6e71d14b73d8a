"""Several servers started at once on one empty database (#13: hosts of one deployment)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import _admin_execute, _with_database
from tests.e2e.conftest import GENERATED

KEY = secrets.token_urlsafe(48)  # one signing key for every host


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database: PostgreSQL, or one SQLite file that both servers open."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared' / 'trainflow.db'}"
        return
    postgres_url = request.getfixturevalue("postgres_url")
    name = f"tf_empty_{uuid.uuid4().hex[:12]}"
    _admin_execute(postgres_url, f'CREATE DATABASE "{name}"')
    yield _with_database(postgres_url, name)
    _admin_execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_servers_started_at_once_on_an_empty_database_both_serve(
    server_factory, empty_database, tmp_path
):
    def start(name: str):  # type: ignore[no-untyped-def]
        return server_factory(
            tmp_path / name, empty_database, TRAINFLOW_SECRET_KEY=KEY, TRAINFLOW_RUN_JOBS="false"
        )

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(start, ["a", "b"])  # a crash in start-up fails the test here
    admins = [match.group(1) for server in (first, second) if (match := GENERATED.search(server.text))]
    assert len(admins) == 1, "exactly one of them makes the first admin"
    login = requests.post(
        f"{first.url}/api/login", json={"username": "admin", "password": admins[0]}, timeout=30
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    me = requests.get(f"{second.url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert (me.status_code, me.json()["username"]) == (200, "admin")
