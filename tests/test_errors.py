"""Every error under /api and /ajax-api is JSON with the right status; no input gives a 500."""

from __future__ import annotations

import pytest


def test_malformed_json_is_400(client):
    response = client.post("/api/register", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"
    assert "JSON" in response.json["error"]["message"]


@pytest.mark.parametrize("body", ["[]", "42", '"text"', "null"])
def test_a_json_body_that_is_not_an_object_is_400(client, body):
    response = client.post("/api/register", data=body, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_wrong_content_type_is_415(client, content_type):
    response = client.post("/api/register", data='{"username": "x"}', content_type=content_type)
    assert response.status_code == 415
    assert response.json["error"]["code"] == "unsupported_media_type"


def test_invalid_utf8_is_400_not_500(client):
    response = client.post("/api/login", data=b'{"username": "\xff\xfe"}', content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "path", ["/api/nope", "/api/users/abc", "/ajax-api/2.0/mlflow/nope", "/api/2.0/mlflow/nope"]
)
def test_unknown_routes_are_404_json(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_wrong_method_is_405_json_with_allow(client, alice):
    response = client.delete("/api/register")
    assert response.status_code == 405
    assert response.json["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_mlflow_errors_carry_both_shapes(client, alice):
    response = client.get("/api/2.0/mlflow/experiments/get?experiment_id=999999", headers=alice.basic)
    assert response.status_code == 404
    assert response.json["error_code"] == "RESOURCE_DOES_NOT_EXIST"  # what the mlflow client reads
    assert response.json["error"]["code"] == "resource_does_not_exist"


@pytest.mark.parametrize(
    "payload",
    [
        {"username": None, "password": None},
        {"username": ["a"], "password": {"b": 1}},
        {"username": "x" * 10_000, "password": "y" * 10_000},
        {"username": "\u0000abc", "password": "\u0000" * 9},
        {"username": "ok-name", "password": "p" * 2000},
    ],
)
def test_odd_inputs_never_500(client, payload):
    for path in ("/api/register", "/api/login"):
        response = client.post(path, json=payload)
        assert 400 <= response.status_code < 500, (path, response.json)
        assert "error" in response.json


def test_odd_user_updates_never_500(client, alice):
    for payload in ({"username": 5}, {"role": "root"}, {"email": ["x"]}, {"phone": 12345678}, {"unknown": 1}):
        response = client.patch(f"/api/users/{alice.id}", json=payload, headers=alice.basic)
        assert response.status_code == 400, payload
    assert client.get("/api/users/99999999999999999999", headers=alice.basic).status_code == 404


def test_nul_in_a_basic_credential_is_401_not_500(client, alice):
    import base64

    header = "Basic " + base64.b64encode(b"al\x00ice:whatever-pass").decode()
    assert client.get("/api/me", headers={"Authorization": header}).status_code == 401


def test_every_database_connection_busy_is_503_with_retry_after(app, client, alice):
    from trainflow.db import db

    with app.app_context():
        pool = db.engine.pool
        pool._timeout = 0.2  # instead of waiting 30 s for a connection to come back
        held = [db.engine.connect() for _ in range(pool.size() + pool._max_overflow)]
        try:
            response = client.get("/api/me", headers=alice.basic)
        finally:
            for connection in held:
                connection.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json["error"]["code"] == "busy"
    assert client.get("/api/me", headers=alice.basic).status_code == 200  # and then it serves again


def test_a_value_that_fits_no_member_of_a_union_is_one_error_that_says_what_fits(client, alice):
    """A job parameter may be a string, a number or a boolean: a list is one clear error for that
    parameter, not four (one per member of the union). A dict key that happens to be named like a
    type is still a field of its own."""
    response = client.post(
        "/ajax-api/2.0/mlflow/train/jobs",
        json={"script_id": 1, "params": {"lr": [1, 2], "int": {"x": 1}}, "env": {"str": 5}},
        headers=alice.basic,
    )
    assert response.status_code == 400
    fields = sorted(response.json["error"]["fields"], key=lambda f: f["field"])
    assert fields == [
        {"field": "env.str", "message": "Input should be a valid string"},
        {"field": "params.int", "message": "must be a string, an integer, a number or a boolean"},
        {"field": "params.lr", "message": "must be a string, an integer, a number or a boolean"},
    ]
    message = response.json["error"]["message"]
    assert "params.lr: must be a string, an integer, a number or a boolean" in message
    assert "params.lr.str" not in message
