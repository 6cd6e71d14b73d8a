"""A token, cached credential or job token of a deleted account never acts for a later one (issue 10)."""

from __future__ import annotations

import pytest
from flask_jwt_extended import create_access_token

from tests.conftest import PASSWORD
from tests.records import running_job
from trainflow.accounts import auth, service
from trainflow.accounts.models import User
from trainflow.db import db
from trainflow.errors import Unauthenticated
from trainflow.jobs import tokens
from trainflow.jobs.models import Job

RUN_ID = "a" * 32


def _user_with_id(app, user_id: int, username: str) -> None:
    """The worst case: a database that hands the deleted user's id to the next account."""
    with app.app_context():
        db.session.add(
            User(
                id=user_id,
                username=username,
                username_key=username,
                password_hash=service.hash_password(PASSWORD),
            )
        )
        db.session.commit()


def _running_job(app, owner_id: int, job_id: int = 1) -> Job:
    return running_job(app, owner_id, run_id=RUN_ID, job_id=job_id)


def _delete(app, user_id: int) -> None:
    with app.app_context():
        service.delete_user(db.session, db.session.get(User, user_id))
        auth.forget_credentials()


def _authenticate(app, token: str):  # type: ignore[no-untyped-def]
    with app.test_request_context(headers={"Authorization": f"Bearer {token}"}):
        return auth.authenticate_request()


def test_a_deleted_users_tokens_do_not_sign_in_a_later_user_with_the_same_id(app, client, alice):
    tokens = alice.login()
    _delete(app, alice.id)
    _user_with_id(app, alice.id, "mallory")
    response = client.get("/api/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"
    response = client.post("/api/token/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 401


def test_the_next_registered_user_gets_a_new_id_and_no_old_token_works(client, alice):
    tokens = alice.login()
    assert client.delete(f"/api/users/{alice.id}", headers=alice.basic).status_code == 204
    response = client.post("/api/register", json={"username": "carol", "password": PASSWORD})
    assert response.status_code == 201
    assert response.json["id"] > alice.id
    old_token = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/api/me", headers=old_token).status_code == 401


def test_tokens_name_the_random_public_id_not_the_row_id(app, alice):
    from flask_jwt_extended import decode_token

    token = alice.login()["access_token"]
    with app.app_context():
        subject = decode_token(token)["sub"]
        assert subject == db.session.get(User, alice.id).public_id
    assert subject != str(alice.id)


@pytest.mark.parametrize("subject", ["1", "", "no-such-account"])
def test_a_token_naming_no_account_is_401(app, client, alice, subject):
    """Tokens from before the upgrade named the row id: they stop working, as a 401."""
    with app.app_context():
        token = create_access_token(identity=subject, additional_claims={"tv": 0})
    response = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"


def test_a_cached_basic_credential_of_a_deleted_user_is_forgotten(app, client, alice):
    assert client.get("/api/me", headers=alice.basic).status_code == 200  # now cached
    _delete(app, alice.id)
    _user_with_id(app, alice.id, "mallory")
    assert client.get("/api/me", headers=alice.basic).status_code == 401


def test_a_job_token_works_while_its_job_runs(app, alice):
    job = _running_job(app, alice.id)
    principal = _authenticate(app, tokens.issue_job_token(app, job))
    assert principal.job_id == job.id
    assert principal.user_id == alice.id


def test_a_deleted_users_job_token_does_not_work_for_a_later_user_with_the_same_ids(app, alice):
    token = tokens.issue_job_token(app, _running_job(app, alice.id))
    _delete(app, alice.id)
    # A new account with the same user id, running a job with the same job id and run id.
    _user_with_id(app, alice.id, "mallory")
    _running_job(app, alice.id)
    with pytest.raises(Unauthenticated):
        _authenticate(app, token)


def test_a_job_token_names_the_jobs_owner(app, alice, bob):
    """A token for bob's job id naming alice is refused, though alice exists and the job runs."""
    job = _running_job(app, bob.id)
    with app.app_context():
        alice_public_id = db.session.get(User, alice.id).public_id
        token = create_access_token(
            identity=alice_public_id, additional_claims={"job": job.id, "run": RUN_ID, "tv": 0}
        )
    with pytest.raises(Unauthenticated):
        _authenticate(app, token)
