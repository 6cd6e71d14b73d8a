"""Several servers started at once on one empty database (#13: hosts of one deployment)."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.e2e.conftest import GENERATED

KEY = secrets.token_urlsafe(48)  # one signing key for every host


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
