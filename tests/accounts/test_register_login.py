"""Registration, login, refresh, logout and password change (issue 3)."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, basic_auth


def test_register_returns_the_user_without_secrets(client):
    response = client.post(
        "/api/register",
        json={
            "username": "Carol",
            "password": "a long passphrase",
            "email": "carol@example.com",
            "phone": "+49 30 1234567",
        },
    )
    assert response.status_code == 201
    body = response.json
    assert body["username"] == "Carol" and body["email"] == "carol@example.com" and body["role"] == "user"
    assert response.headers["Location"] == f"/api/users/{body['id']}"
    text = response.get_data(as_text=True)
    assert "password" not in text and "argon2" not in text


def test_username_is_unique_regardless_of_case(client):
    assert client.post("/api/register", json={"username": "dave", "password": PASSWORD}).status_code == 201
    response = client.post("/api/register", json={"username": "DAVE", "password": PASSWORD})
    assert response.status_code == 409
    assert response.json["error"]["code"] == "conflict"
    assert "taken" in response.json["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, {"username", "password"}),
        ({"username": "erin"}, {"password"}),
        ({"username": "erin", "password": "short"}, {"password"}),
        ({"username": "erin", "password": "password123"}, {"password"}),
        ({"username": "erin", "password": "erin-is-my-password"}, {"body"}),
        ({"username": "e", "password": PASSWORD}, {"username"}),
        ({"username": "../etc", "password": PASSWORD}, {"username"}),
        ({"username": 42, "password": PASSWORD}, {"username"}),
        ({"username": "erin", "password": PASSWORD, "email": "not-an-email"}, {"email"}),
        ({"username": "erin", "password": PASSWORD, "phone": "call me"}, {"phone"}),
        ({"username": "erin", "password": PASSWORD, "is_admin": True}, {"is_admin"}),
    ],
)
def test_register_rejects_bad_fields_naming_them(client, payload, fields):
    response = client.post("/api/register", json=payload)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "invalid_fields"
    assert {f["field"] for f in error["fields"]} == fields
    for field in fields - {"body"}:
        assert field in error["message"]


def test_registration_can_be_closed(app, client, admin):
    app.config["TRAINFLOW"] = app.config["TRAINFLOW"].replace(is_registration_open=False)
    response = client.post("/api/register", json={"username": "frank", "password": PASSWORD})
    assert response.status_code == 403
    # Admins still create users.
    response = client.post(
        "/api/users", json={"username": "frank", "password": PASSWORD}, headers=admin.basic
    )
    assert response.status_code == 201


def test_login_returns_tokens_that_open_protected_routes(client, alice):
    tokens = alice.login()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 15 * 60
    me = client.get("/api/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200 and me.json["username"] == "alice"
    # A refresh token is not an access token.
    response = client.get("/api/me", headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
    assert response.status_code == 401


def test_wrong_password_is_401_without_telling_which_part_was_wrong(client, alice):
    wrong_password = client.post("/api/login", json={"username": "alice", "password": "nope-nope-nope"})
    no_user = client.post("/api/login", json={"username": "nobody", "password": "nope-nope-nope"})
    assert wrong_password.status_code == no_user.status_code == 401
    assert wrong_password.json["error"]["message"] == no_user.json["error"]["message"]


def test_refresh_gives_a_new_access_token(client, alice):
    tokens = alice.login()
    response = client.post("/api/token/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200
    access = response.json["access_token"]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {access}"}).status_code == 200
    # Also as a header, as flask-jwt-extended clients send it.
    response = client.post(
        "/api/token/refresh", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
    )
    assert response.status_code == 200
    # An access token cannot refresh.
    response = client.post("/api/token/refresh", json={"refresh_token": tokens["access_token"]})
    assert response.status_code == 401


def test_logout_revokes_the_token_at_once(client, alice):
    tokens = alice.login()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/api/me", headers=headers).status_code == 200  # now cached
    response = client.post("/api/logout", json={"refresh_token": tokens["refresh_token"]}, headers=headers)
    assert response.status_code == 204
    assert client.get("/api/me", headers=headers).status_code == 401
    assert (
        client.post("/api/token/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    )
    # Other sessions of the same user are untouched by a plain logout.
    assert client.get("/api/me", headers=alice.basic).status_code == 200


def test_logout_all_revokes_every_token(client, alice):
    first, second = alice.bearer(), alice.bearer()
    assert client.post("/api/logout", json={"all": True}, headers=first).status_code == 204
    assert client.get("/api/me", headers=first).status_code == 401
    assert client.get("/api/me", headers=second).status_code == 401


def test_password_change_revokes_older_tokens_and_the_cached_basic_credential(client, alice):
    old_bearer = alice.bearer()
    old_basic = alice.basic
    assert client.get("/api/me", headers=old_basic).status_code == 200  # cached now
    response = client.post(
        "/api/me/password",
        headers=old_bearer,
        json={"old_password": PASSWORD, "new_password": "an even better one"},
    )
    assert response.status_code == 200
    new_access = response.json["access_token"]
    assert client.get("/api/me", headers=old_bearer).status_code == 401
    assert client.get("/api/me", headers=old_basic).status_code == 401
    assert client.get("/api/me", headers={"Authorization": f"Bearer {new_access}"}).status_code == 200
    assert client.get("/api/me", headers=basic_auth("alice", "an even better one")).status_code == 200


def test_password_change_needs_the_old_password_and_a_strong_new_one(client, alice):
    headers = alice.bearer()
    wrong_old = client.post(
        "/api/me/password",
        headers=headers,
        json={"old_password": "not-it-at-all", "new_password": "an even better one"},
    )
    assert wrong_old.status_code == 401
    weak = client.post(
        "/api/me/password", headers=headers, json={"old_password": PASSWORD, "new_password": "123"}
    )
    assert weak.status_code == 400 and weak.json["error"]["fields"][0]["field"] == "new_password"
