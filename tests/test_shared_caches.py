"""Hosts with data directories of their own keep their caches in step through Redis (#13).

Two apps on one database, each with its own data directory, stand in for two hosts. Each
caches verified credentials and permission answers; a change made on one must reach the
other at once, not when its cache entries expire.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from flask import Flask

from tests.conftest import dispose
from tests.events.buses import subscribers, wait_until
from tests.tracking.test_permissions import API, _create_experiment, _create_run
from trainflow.app import create_app
from trainflow.events.hub import hub_of


@pytest.fixture
def hosts(settings, redis_url, tmp_path) -> Iterator[tuple[Flask, Flask]]:  # type: ignore[no-untyped-def]
    channel = f"trainflow-test-{uuid.uuid4().hex}"
    made = [
        create_app(settings.replace(data_dir=tmp_path / name, redis_url=redis_url, redis_channel=channel))
        for name in ("host-a", "host-b")
    ]
    for app in made:
        hub_of(app).start()
    wait_until(lambda: subscribers(redis_url, channel) == 2, "both hosts listen")
    yield made[0], made[1]
    for app in made:
        hub_of(app).stop()
        dispose(app)


def test_a_password_changed_on_one_host_is_refused_on_the_other_at_once(hosts, alice):
    host_a, host_b = (app.test_client() for app in hosts)
    assert host_b.get("/api/me", headers=alice.basic).status_code == 200  # now cached on b
    changed = host_a.post(
        "/api/me/password",
        json={"old_password": alice.password, "new_password": "another-long-pass"},
        headers=alice.basic,
    )
    assert changed.status_code in (200, 204), changed.json
    wait_until(lambda: host_b.get("/api/me", headers=alice.basic).status_code == 401, "b forgets it")


def test_an_experiment_made_on_one_host_is_its_creators_on_the_other_at_once(hosts, alice):
    host_a, host_b = (app.test_client() for app in hosts)
    next_id = str(int(_create_experiment(host_a, alice, "first")) + 1)
    # b now remembers alice's default READ on an experiment that does not exist yet.
    refused = host_b.post(f"{API}/runs/create", json={"experiment_id": next_id}, headers=alice.basic)
    assert refused.status_code == 403
    assert _create_experiment(host_a, alice, "second") == next_id  # a grants her MANAGE
    wait_until(
        lambda: (
            host_b.post(
                f"{API}/runs/create", json={"experiment_id": next_id}, headers=alice.basic
            ).status_code
            == 200
        ),
        "b honours the grant",
    )
    assert _create_run(host_b, alice, next_id)
