"""The accounts API: register, log in, tokens, and the users resource (JSON in, JSON out)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from flask import Blueprint, Response, current_app, request, url_for

from trainflow.accounts import auth, service
from trainflow.accounts.models import User
from trainflow.accounts.schemas import (
    AccessToken,
    ChangePasswordRequest,
    CreateUserRequest,
    LoginRequest,
    LogoutRequest,
    PageQuery,
    PatchUserRequest,
    PublicUser,
    RefreshRequest,
    RegisterRequest,
    ReplaceUserRequest,
    TokenPair,
    UserOut,
    UserPage,
    UserView,
)
from trainflow.accounts.signals import user_deleting
from trainflow.api import endpoint, json_response
from trainflow.db import db
from trainflow.errors import PermissionDenied, Unauthenticated, ValidationFailed

if TYPE_CHECKING:
    from flask import Flask
    from werkzeug.local import LocalProxy

bp = Blueprint("accounts", __name__, url_prefix="/api")
TAG = "accounts"


def user_out(user: User) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


def user_view(user: User) -> UserOut | PublicUser:
    """All fields for the user themself and for admins; id and username for everyone else."""
    principal = auth.current_principal()
    if principal.is_admin or principal.user_id == user.id:
        return user_out(user)
    return PublicUser(id=user.id, username=user.username)


def _token_pair(user: User) -> TokenPair:
    access, expires_in = auth.issue_access_token(user)
    return TokenPair(
        access_token=access,
        refresh_token=auth.issue_refresh_token(user),
        expires_in=expires_in,
        user=user_out(user),
    )


def _require_self_or_admin(user_id: int, action: str) -> None:
    principal = auth.current_principal()
    if not (principal.is_admin or principal.user_id == user_id):
        raise PermissionDenied(f"Only the user themself or an admin can {action} user {user_id}.")


def _created(user: User) -> Response:
    response = json_response(user_out(user), 201)
    response.headers["Location"] = url_for("accounts.get_user", user_id=user.id)
    return response


@endpoint(
    bp,
    "/register",
    "POST",
    summary="Create an account",
    tag=TAG,
    body=RegisterRequest,
    response=UserOut,
    status=201,
    errors=(400, 403, 409, 415, 429),
    is_public=True,
)
def register(body: RegisterRequest) -> Response:
    if not current_app.config["TRAINFLOW"].is_registration_open:
        raise PermissionDenied("Registration is closed on this server; ask an admin for an account.")
    # Registration costs a password hash: anonymous callers pay for it from their address's
    # budget, as failed logins do.
    budget = auth.charge_anonymous_hash()
    epoch = auth.current_epoch()
    try:
        user = service.create_user(db.session(), **body.model_dump())
    except Exception:
        auth.refund_anonymous_hash(budget)
        raise
    auth.remember_password(body.username, body.password, user, epoch)
    return _created(user)


@endpoint(
    bp,
    "/login",
    "POST",
    summary="Exchange a username and password for JWTs",
    tag=TAG,
    body=LoginRequest,
    response=TokenPair,
    errors=(400, 401, 415, 429),
    is_public=True,
)
def login(body: LoginRequest) -> Response:
    epoch = auth.current_epoch()
    user = auth.recall_password(body.username, body.password) or auth.check_password_login(
        body.username, body.password
    )
    auth.remember_password(body.username, body.password, user, epoch)
    return json_response(_token_pair(user))


@endpoint(
    bp,
    "/token/refresh",
    "POST",
    summary="A new access token for a refresh token",
    tag=TAG,
    body=RefreshRequest,
    response=AccessToken,
    errors=(400, 401),
    is_public=True,
    description="Send the refresh token in the body or as `Authorization: Bearer`.",
)
def refresh_token(body: RefreshRequest) -> Response:
    token = body.refresh_token or _bearer_from_header()
    if not token:
        raise Unauthenticated("Send the refresh token as `refresh_token` or `Authorization: Bearer`.")
    principal = auth.principal_from_refresh_token(token)
    user = service.get_user(db.session(), principal.user_id)
    access, expires_in = auth.issue_access_token(user)
    return json_response(AccessToken(access_token=access, expires_in=expires_in))


def _bearer_from_header() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@endpoint(
    bp,
    "/logout",
    "POST",
    summary="Revoke the token in use (or, with all, every token)",
    tag=TAG,
    body=LogoutRequest,
    status=204,
    errors=(400, 401),
)
def logout(body: LogoutRequest) -> Response:
    principal = auth.current_principal()
    if body.all:
        user = service.get_user(db.session(), principal.user_id)
        user.token_version += 1
        db.session.commit()
        auth.forget_credentials()
    else:
        if principal.token_id is not None:
            auth.revoke_token(_bearer_from_header() or "", "access", principal)
        if body.refresh_token:
            auth.revoke_token(body.refresh_token, "refresh", principal)
    return Response(status=204)


@endpoint(bp, "/me", "GET", summary="The signed-in user", tag=TAG, response=UserOut, errors=(401,))
def me() -> Response:
    return json_response(user_out(service.get_user(db.session(), auth.current_principal().user_id)))


@endpoint(
    bp,
    "/me/password",
    "POST",
    summary="Change your password (revokes older tokens)",
    tag=TAG,
    body=ChangePasswordRequest,
    response=TokenPair,
    errors=(400, 401, 415, 429),
)
def change_password(body: ChangePasswordRequest) -> Response:
    principal = auth.current_principal()
    user = auth.check_password_login(principal.username, body.old_password)
    service.change_password(db.session(), user, body.new_password)
    auth.forget_credentials()
    # Fresh tokens, so the session that changed the password carries on.
    return json_response(_token_pair(user))


@endpoint(
    bp,
    "/users",
    "GET",
    summary="A page of users",
    tag=TAG,
    query=PageQuery,
    response=UserPage,
    errors=(400, 401),
)
def list_users(query: PageQuery) -> Response:
    total, users = service.list_users(db.session(), query.page, query.size)
    page = UserPage(total=total, page=query.page, size=query.size, list=[user_view(u) for u in users])
    return json_response(page)


@endpoint(
    bp,
    "/users",
    "POST",
    summary="Create a user (admins)",
    tag=TAG,
    body=CreateUserRequest,
    response=UserOut,
    status=201,
    errors=(400, 401, 403, 409, 415, 429),
)
def create_user(body: CreateUserRequest) -> Response:
    if not auth.current_principal().is_admin:
        raise PermissionDenied("Only an admin can create users; others register at /api/register.")
    return _created(service.create_user(db.session(), **body.model_dump()))


@endpoint(
    bp, "/users/<int:user_id>", "GET", summary="One user", tag=TAG, response=UserView, errors=(401, 404)
)
def get_user(user_id: int) -> Response:
    return json_response(user_view(service.get_user(db.session(), user_id)))


@endpoint(
    bp,
    "/users/<int:user_id>",
    "PUT",
    summary="Replace a user's editable fields",
    tag=TAG,
    body=ReplaceUserRequest,
    response=UserOut,
    errors=(400, 401, 403, 404, 409, 415),
    description="Every field is required (send null to clear email or phone). "
    "Idempotent; never creates a user. Only admins change roles.",
)
def replace_user(user_id: int, body: ReplaceUserRequest) -> Response:
    return _update(user_id, body.model_dump())


@endpoint(
    bp,
    "/users/<int:user_id>",
    "PATCH",
    summary="Change some of a user's fields",
    tag=TAG,
    body=PatchUserRequest,
    response=UserOut,
    errors=(400, 401, 403, 404, 409, 415),
)
def patch_user(user_id: int, body: PatchUserRequest) -> Response:
    changes = body.model_dump(include=body.model_fields_set)
    for name in ("username", "role"):
        if name in changes and changes[name] is None:
            raise_invalid(name)
    return _update(user_id, changes)


def raise_invalid(field: str) -> None:
    raise ValidationFailed(
        f"Invalid request: {field}: cannot be null.", fields=[{"field": field, "message": "cannot be null"}]
    )


def _update(user_id: int, changes: dict[str, Any]) -> Response:
    _require_self_or_admin(user_id, "change")
    user = service.get_user(db.session(), user_id)
    principal = auth.current_principal()
    if service.update_user(db.session(), user, changes, acting_admin=principal.is_admin):
        if "role" in changes or "username" in changes:
            auth.forget_credentials()
    return json_response(user_out(user))


@endpoint(
    bp,
    "/users/<int:user_id>",
    "DELETE",
    summary="Delete a user",
    tag=TAG,
    status=204,
    errors=(401, 403, 404, 409),
)
def delete_user(user_id: int) -> Response:
    _require_self_or_admin(user_id, "delete")
    user = service.get_user(db.session(), user_id)
    service.ensure_not_last_admin(db.session(), user)
    # current_app is typed as the Flask app it stands for; the signal's sender is that app itself.
    app = cast("LocalProxy[Flask]", current_app)._get_current_object()
    user_deleting.send(app, user_id=user.id)  # what they own goes first
    service.delete_user(db.session(), user)
    auth.forget_credentials()
    return Response(status=204)
