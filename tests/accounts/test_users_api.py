"""The users resource keeps the meaning of GET, POST, PUT, PATCH and DELETE (issue 3)."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD


def _full(user, **changes):
    body = {"username": user.username, "email": None, "phone": None, "role": "user"}
    body.update(changes)
    return body


def test_get_user_is_404_for_unknown_ids(client, alice):
    assert client.get(f"/api/users/{alice.id}", headers=alice.basic).status_code == 200
    response = client.get("/api/users/99999", headers=alice.basic)
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


def test_non_admins_see_public_fields_of_others_admins_see_all(client, alice, bob, admin):
    as_bob = client.get(f"/api/users/{alice.id}", headers=bob.basic).json
    assert as_bob == {"id": alice.id, "username": "alice"}
    as_admin = client.get(f"/api/users/{alice.id}", headers=admin.basic).json
    assert {"email", "phone", "role", "created_at"} <= set(as_admin)
    as_self = client.get(f"/api/users/{alice.id}", headers=alice.basic).json
    assert "email" in as_self


def test_list_users_pages(client, make_user, admin):
    for i in range(12):
        make_user(f"user{i:02d}")
    response = client.get("/api/users?page=2&size=5", headers=admin.basic)
    assert response.status_code == 200
    body = response.json
    assert body["total"] == 13 and body["page"] == 2 and body["size"] == 5
    assert [u["username"] for u in body["list"]] == ["user04", "user05", "user06", "user07", "user08"]
    assert client.get("/api/users", headers=admin.basic).json["size"] == 10


@pytest.mark.parametrize(
    "query", ["page=0", "page=-1", "size=0", "size=101", "page=abc", "size=1.5", "color=red"]
)
def test_list_users_rejects_bad_paging(client, alice, query):
    response = client.get(f"/api/users?{query}", headers=alice.basic)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_fields"


def test_get_changes_nothing(client, app, alice):
    before = client.get(f"/api/users/{alice.id}", headers=alice.basic).json
    for _ in range(3):
        client.get(f"/api/users/{alice.id}", headers=alice.basic)
        client.get("/api/users", headers=alice.basic)
    assert client.get(f"/api/users/{alice.id}", headers=alice.basic).json == before


def test_put_replaces_every_editable_field(client, alice):
    client.patch(
        f"/api/users/{alice.id}", json={"email": "a@example.com", "phone": "+1 555 0100"}, headers=alice.basic
    )
    response = client.put(
        f"/api/users/{alice.id}", json=_full(alice, email="new@example.com"), headers=alice.basic
    )
    assert response.status_code == 200
    # Full replacement: phone was sent as null, so it is cleared.
    assert response.json["email"] == "new@example.com" and response.json["phone"] is None


@pytest.mark.parametrize("missing", ["username", "email", "phone", "role"])
def test_put_with_a_missing_field_is_400_naming_it_and_changes_nothing(client, alice, missing):
    client.patch(f"/api/users/{alice.id}", json={"email": "keep@example.com"}, headers=alice.basic)
    body = _full(alice, email="changed@example.com")
    del body[missing]
    response = client.put(f"/api/users/{alice.id}", json=body, headers=alice.basic)
    assert response.status_code == 400
    assert [f["field"] for f in response.json["error"]["fields"]] == [missing]
    assert missing in response.json["error"]["message"]
    assert client.get(f"/api/users/{alice.id}", headers=alice.basic).json["email"] == "keep@example.com"


def test_put_is_idempotent(client, alice):
    body = _full(alice, email="same@example.com", phone="+44 20 7946 0000")
    first = client.put(f"/api/users/{alice.id}", json=body, headers=alice.basic)
    second = client.put(f"/api/users/{alice.id}", json=body, headers=alice.basic)
    assert first.status_code == second.status_code == 200
    assert first.json == second.json
    assert client.get(f"/api/users/{alice.id}", headers=alice.basic).json == first.json


def test_put_never_creates(client, admin):
    response = client.put(
        "/api/users/4242",
        json={"username": "ghost", "email": None, "phone": None, "role": "user"},
        headers=admin.basic,
    )
    assert response.status_code == 404
    assert client.get("/api/users/4242", headers=admin.basic).status_code == 404


def test_put_on_someone_else_is_403(client, alice, bob):
    response = client.put(
        f"/api/users/{alice.id}", json=_full(alice, email="x@example.com"), headers=bob.basic
    )
    assert response.status_code == 403
    assert client.get(f"/api/users/{alice.id}", headers=alice.basic).json["email"] is None


def test_admin_may_put_anyone(client, alice, admin):
    response = client.put(
        f"/api/users/{alice.id}", json=_full(alice, email="by-admin@example.com"), headers=admin.basic
    )
    assert response.status_code == 200 and response.json["email"] == "by-admin@example.com"


def test_username_taken_is_409(client, alice, bob):
    response = client.put(f"/api/users/{alice.id}", json=_full(alice, username="BOB"), headers=alice.basic)
    assert response.status_code == 409
    assert client.get(f"/api/users/{alice.id}", headers=alice.basic).json["username"] == "alice"


def test_changing_only_the_case_of_ones_own_username_is_allowed(client, alice):
    response = client.patch(f"/api/users/{alice.id}", json={"username": "Alice"}, headers=alice.basic)
    assert response.status_code == 200 and response.json["username"] == "Alice"


def test_only_admins_change_roles(client, alice, admin):
    response = client.put(f"/api/users/{alice.id}", json=_full(alice, role="admin"), headers=alice.basic)
    assert response.status_code == 403
    assert client.get(f"/api/users/{alice.id}", headers=alice.basic).json["role"] == "user"
    response = client.patch(f"/api/users/{alice.id}", json={"role": "admin"}, headers=admin.basic)
    assert response.status_code == 200 and response.json["role"] == "admin"


def test_a_demoted_admin_loses_admin_rights_at_once(client, make_user, admin):
    other = make_user("second-admin", role="admin")
    response = client.post(
        "/api/users", json={"username": "before", "password": PASSWORD}, headers=other.basic
    )
    assert response.status_code == 201  # the credential is cached as an admin's now
    client.patch(f"/api/users/{other.id}", json={"role": "user"}, headers=admin.basic)
    response = client.post(
        "/api/users", json={"username": "newbie", "password": PASSWORD}, headers=other.basic
    )
    assert response.status_code == 403


def test_patch_changes_only_what_is_sent(client, alice):
    client.patch(
        f"/api/users/{alice.id}", json={"email": "a@example.com", "phone": "+1 555 0100"}, headers=alice.basic
    )
    response = client.patch(f"/api/users/{alice.id}", json={"phone": None}, headers=alice.basic)
    assert response.status_code == 200
    assert response.json["email"] == "a@example.com" and response.json["phone"] is None
    assert (
        client.patch(f"/api/users/{alice.id}", json={"username": None}, headers=alice.basic).status_code
        == 400
    )


def test_delete_then_404_and_tokens_stop_working(client, alice):
    bearer = alice.bearer()
    assert client.get("/api/me", headers=bearer).status_code == 200
    assert client.get("/api/me", headers=alice.basic).status_code == 200
    response = client.delete(f"/api/users/{alice.id}", headers=bearer)
    assert response.status_code == 204 and response.get_data() == b""
    assert client.get("/api/me", headers=bearer).status_code == 401
    assert client.get("/api/me", headers=alice.basic).status_code == 401
    assert client.delete(f"/api/users/{alice.id}", headers=bearer).status_code == 401


def test_delete_again_is_404_for_an_admin(client, alice, admin):
    assert client.delete(f"/api/users/{alice.id}", headers=admin.basic).status_code == 204
    assert client.delete(f"/api/users/{alice.id}", headers=admin.basic).status_code == 404
    assert client.get(f"/api/users/{alice.id}", headers=admin.basic).status_code == 404


def test_delete_someone_else_is_403(client, alice, bob):
    assert client.delete(f"/api/users/{alice.id}", headers=bob.basic).status_code == 403
    assert client.get(f"/api/users/{alice.id}", headers=alice.basic).status_code == 200


def test_the_last_admin_cannot_be_deleted_or_demoted(client, admin):
    response = client.delete(f"/api/users/{admin.id}", headers=admin.basic)
    assert response.status_code == 409
    response = client.patch(f"/api/users/{admin.id}", json={"role": "user"}, headers=admin.basic)
    assert response.status_code == 409
    assert client.get("/api/me", headers=admin.basic).json["role"] == "admin"


def test_admin_creates_users_with_roles(client, admin, alice):
    response = client.post(
        "/api/users", json={"username": "ops", "password": PASSWORD, "role": "admin"}, headers=admin.basic
    )
    assert response.status_code == 201 and response.json["role"] == "admin"
    response = client.post("/api/users", json={"username": "ops2", "password": PASSWORD}, headers=alice.basic)
    assert response.status_code == 403
