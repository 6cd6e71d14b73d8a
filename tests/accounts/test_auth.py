"""Basic and Bearer on every protected route; the credential cache; the failed-login limit."""

from __future__ import annotations

import base64
import logging

import pytest

from tests.conftest import PASSWORD, basic_auth
from trainflow.accounts.auth import auth_state


@pytest.mark.parametrize(
    "path", ["/api/me", "/api/users", "/api/2.0/mlflow/experiments/search?max_results=1"]
)
def test_protected_routes_take_basic_and_bearer(client, alice, path):
    assert client.get(path, headers=alice.basic).status_code == 200
    assert client.get(path, headers=alice.bearer()).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Bearer",
        "Token abc",
        "Digest username=alice",
    ],
)
def test_missing_or_malformed_credentials_are_401_json_with_a_basic_challenge(client, alice, header):
    headers = {"Authorization": header} if header is not None else {}
    response = client.get("/api/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json["error"]["code"] == "unauthenticated"


def test_a_refused_token_gets_a_bearer_challenge_so_browsers_show_no_prompt(client, alice):
    for token in ("not.a.jwt", alice.login()["refresh_token"]):
        response = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert response.json["error"]["code"] == "unauthenticated"


def test_credentials_in_the_url_are_ignored(client, alice):
    token = alice.login()["access_token"]
    for query in (
        f"access_token={token}",
        f"token={token}",
        f"jwt={token}",
        f"password={PASSWORD}&username=alice",
    ):
        assert client.get(f"/api/me?{query}").status_code == 401
    # Nor does a user:password@host URL count: werkzeug would turn it into a header, browsers strip it.


def test_a_verified_basic_credential_is_cached(app, client, alice):
    with app.app_context():
        cache = auth_state().cache
    assert len(cache) == 0
    client.get("/api/me", headers=alice.basic)
    assert len(cache) == 1
    client.get("/api/me", headers=alice.basic)
    assert len(cache) == 1


def test_an_expired_basic_credential_is_renewed_without_a_new_hash_while_its_password_stands(
    app, client, alice, monkeypatch
):
    """A Basic client (the MLflow client) costs one argon2 run, not one per cache period."""
    from trainflow.accounts import passwords

    assert client.get("/api/me", headers=alice.basic).status_code == 200
    hashes = passwords.POOL.verifications
    ttl = app.config["TRAINFLOW"].auth_cache_seconds
    import time as time_module

    later = time_module.monotonic() + ttl + 1
    monkeypatch.setattr("trainflow.accounts.credentials.time.monotonic", lambda: later)
    assert client.get("/api/me", headers=alice.basic).status_code == 200
    assert passwords.POOL.verifications == hashes  # renewed from the stored hash, not re-hashed
    assert client.get("/api/me", headers=basic_auth("alice", PASSWORD + "x")).status_code == 401

    # Once the password changes, the old credential is refused and the new one is verified.
    changed = client.post(
        "/api/me/password",
        headers=alice.basic,
        json={"old_password": PASSWORD, "new_password": "brand new secret"},
    )
    assert changed.status_code == 200
    assert client.get("/api/me", headers=alice.basic).status_code == 401
    assert client.get("/api/me", headers=basic_auth("alice", "brand new secret")).status_code == 200


def test_a_password_just_registered_or_signed_in_with_costs_no_second_hash_over_basic(client):
    """Sign up, sign in, then point the MLflow client at the server with the same password."""
    from trainflow.accounts import passwords

    body = {"username": "newcomer", "password": "plum-tree-harbour-42"}
    assert client.post("/api/register", json=body).status_code == 201
    hashes = passwords.POOL.verifications
    assert client.get("/api/me", headers=basic_auth("newcomer", "plum-tree-harbour-42")).status_code == 200
    assert client.post("/api/login", json=body).status_code == 200
    assert client.get("/api/me", headers=basic_auth("newcomer", "plum-tree-harbour-42")).status_code == 200
    assert passwords.POOL.verifications == hashes  # the sign-in too found the password just set
    assert client.get("/api/me", headers=basic_auth("newcomer", "plum-tree-harbour-43")).status_code == 401
    wrong = {"username": "newcomer", "password": "plum-tree-harbour-43"}
    assert client.post("/api/login", json=wrong).status_code == 401
    assert passwords.POOL.verifications == hashes + 2  # each wrong one met the hash


def test_a_password_changed_is_not_recalled_at_sign_in(client, alice):
    """The cache that spares a second hash never lets the old password in."""
    old = {"username": "alice", "password": alice.password}
    assert client.post("/api/login", json=old).status_code == 200
    changed = client.post(
        "/api/me/password",
        json={"old_password": alice.password, "new_password": "brand new secret"},
        headers=alice.basic,
    )
    assert changed.status_code == 200, changed.json
    assert client.post("/api/login", json=old).status_code == 401
    new = {"username": "alice", "password": "brand new secret"}
    assert client.post("/api/login", json=new).status_code == 200


def test_an_expired_credential_whose_stored_hash_changed_elsewhere_is_verified_again(
    app, client, alice, monkeypatch
):
    """A hash changed where this process's epoch does not see it (another host) is noticed."""
    import time as time_module

    from trainflow.accounts import passwords
    from trainflow.accounts.models import User
    from trainflow.db import db

    assert client.get("/api/me", headers=alice.basic).status_code == 200
    with app.app_context():
        user = db.session.get(User, alice.id)
        user.password_hash = passwords.hash_password("set on another host")
        db.session.commit()
    later = time_module.monotonic() + app.config["TRAINFLOW"].auth_cache_seconds + 1
    monkeypatch.setattr("trainflow.accounts.credentials.time.monotonic", lambda: later)
    assert client.get("/api/me", headers=alice.basic).status_code == 401
    assert client.get("/api/me", headers=basic_auth("alice", "set on another host")).status_code == 200


def test_the_cache_is_keyed_by_the_whole_credential(client, alice):
    assert client.get("/api/me", headers=alice.basic).status_code == 200
    # Same user, wrong password: never served from the cache.
    assert client.get("/api/me", headers=basic_auth("alice", PASSWORD + "x")).status_code == 401


def test_the_cache_is_bounded(app, make_user, client):
    state = app.extensions["trainflow.auth"]
    state.cache._max = 2
    users = [make_user(f"cached{i}") for i in range(3)]
    for user in users:
        assert client.get("/api/me", headers=user.basic).status_code == 200
    assert len(state.cache) == 2


def test_the_cache_forgets_in_other_processes_through_the_shared_epoch(app, settings, alice):
    """A second app on the same data directory stands in for a second server process."""
    from trainflow.app import create_app

    other = create_app(settings)
    other_client = other.test_client()
    assert other_client.get("/api/me", headers=alice.basic).status_code == 200  # cached there
    client = app.test_client()
    response = client.post(
        "/api/me/password",
        headers=alice.basic,
        json={"old_password": PASSWORD, "new_password": "brand new secret"},
    )
    assert response.status_code == 200
    assert other_client.get("/api/me", headers=alice.basic).status_code == 401


def test_failed_logins_are_limited_per_username_and_address(app, client, alice):
    attempts = app.config["TRAINFLOW"].login_attempts
    for _ in range(attempts):
        response = client.post("/api/login", json={"username": "alice", "password": "wrong-wrong-wrong"})
        assert response.status_code == 401
    response = client.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json["error"]["code"] == "too_many_requests"
    # Basic auth counts against the same limit.
    assert client.get("/api/me", headers=alice.basic).status_code == 429
    # Another client address is not locked out, nor is another username.
    other_address = {"REMOTE_ADDR": "10.1.2.3"}
    assert (
        client.post(
            "/api/login", json={"username": "alice", "password": PASSWORD}, environ_base=other_address
        ).status_code
        == 200
    )


def test_the_limit_lifts_after_its_window(app, client, alice, monkeypatch):
    import time as time_module

    limiter = app.extensions["trainflow.auth"].limiter
    for _ in range(app.config["TRAINFLOW"].login_attempts):
        client.post("/api/login", json={"username": "alice", "password": "wrong-wrong-wrong"})
    assert client.post("/api/login", json={"username": "alice", "password": PASSWORD}).status_code == 429
    later = time_module.monotonic() + limiter._window + 1
    monkeypatch.setattr("trainflow.accounts.credentials.time.monotonic", lambda: later)
    assert client.post("/api/login", json={"username": "alice", "password": PASSWORD}).status_code == 200


def test_no_log_line_holds_a_credential(client, alice, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = alice.login()
    client.get("/api/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    client.get("/api/me", headers=alice.basic)
    client.post("/api/login", json={"username": "alice", "password": "the-wrong-one"})
    client.post(
        "/api/me/password",
        headers=alice.basic,
        json={"old_password": PASSWORD, "new_password": "fresh pass 1"},
    )
    client.get(
        "/api/2.0/mlflow/experiments/get?experiment_id=404", headers=basic_auth("alice", "fresh pass 1")
    )
    text = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    for secret in (
        PASSWORD,
        "the-wrong-one",
        "fresh pass 1",
        tokens["access_token"],
        tokens["refresh_token"],
        alice.basic["Authorization"].split()[1],
    ):
        assert secret not in text


def test_a_job_ending_keeps_users_cached_credentials(app, client, alice):
    """Forgetting job tokens must not send every user back through argon2 (issue 4 bench)."""
    from trainflow.jobs.tokens import forget_job_tokens

    assert client.get("/api/me", headers=alice.basic).status_code == 200
    state = app.extensions["trainflow.auth"]
    before, jobs_before = state.epoch.current(), state.job_epoch.current()
    forget_job_tokens(app)
    assert state.epoch.current() == before and len(state.cache) == 1
    assert state.job_epoch.current() == jobs_before + 1
