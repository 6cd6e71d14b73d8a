"""Who is calling: Basic or Bearer credentials from the Authorization header, nothing else.

Credentials are never read from a URL or a cookie: URLs end up in logs and browser history.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jwt
from flask import Flask, current_app, g, request
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from sqlalchemy import select

from trainflow.accounts import addresses, passwords, service
from trainflow.accounts.credentials import AuthEpoch, CredentialCache, LoginLimiter, Principal, SingleFlight
from trainflow.accounts.models import RevokedToken, User
from trainflow.db import db
from trainflow.errors import Unauthenticated
from trainflow.settings import Settings

_EXTENSION = "trainflow.auth"
# Access tokens that name something other than a person's session, by the claim that marks
# them (jobs register "job"); see register_scoped_token.
_SCOPED_TOKENS: dict[str, Callable[[dict[str, object]], Principal]] = {}
SIGN_IN_HINT = (
    "Sign in: send `Authorization: Bearer <access token>` from POST /api/login, "
    "or `Authorization: Basic` with your username and password."
)


class AuthState:
    """The per-app credential cache, auth epoch and failed-login limiter."""

    def __init__(self, settings: Settings) -> None:
        self.epoch = AuthEpoch(settings.resolved_data_dir / "auth_epoch")
        self.cache = CredentialCache(self.epoch, settings.auth_cache_seconds, settings.auth_cache_size)
        # Scoped tokens (jobs') have their own cache and epoch: a job ending forgets those
        # alone, so it never sends every signed-in user back through a password check.
        self.job_epoch = AuthEpoch(settings.resolved_data_dir / "job_epoch")
        self.job_cache = CredentialCache(
            self.job_epoch, settings.auth_cache_seconds, settings.auth_cache_size
        )
        self.limiter = LoginLimiter(
            settings.login_attempts,
            settings.login_window_seconds,
            settings.login_address_burst,
            settings.login_address_per_minute,
        )
        self.trusted_proxies = addresses.parse_networks(settings.trusted_proxies)
        passwords.POOL.configure(
            settings.password_hash_workers or passwords.default_workers(settings.workers),
            settings.password_hash_queue,
        )
        self.hash_pool = passwords.POOL
        self.flights: SingleFlight[int] = SingleFlight()
        passwords.prepare()


def init_app(app: Flask, settings: Settings) -> AuthState:
    state = app.extensions[_EXTENSION] = AuthState(settings)
    return state


def auth_state() -> AuthState:
    state: AuthState = current_app.extensions[_EXTENSION]
    return state


def current_principal() -> Principal:
    principal: Principal | None = g.get("principal")
    if principal is None:
        # Only reachable if a view forgot to be protected: fail closed.
        raise Unauthenticated(SIGN_IN_HINT)
    return principal


def client_address() -> str:
    """The client's address: the peer's, or from X-Forwarded-For when the peer is a trusted proxy."""
    return addresses.client_address(
        request.remote_addr, request.headers.getlist("X-Forwarded-For"), auth_state().trusted_proxies
    )


def authenticate_request() -> Principal:
    """Who is calling; the database connection the check used goes back to the pool.

    What follows may wait on the network for as long as the read timeout (a request body
    arriving slowly, or not at all). A request must not hold a connection while it waits:
    a handful of stalled clients would take the whole pool from everyone else. The view's
    next query opens a new transaction; objects already loaded reload on their next use.
    """
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    scheme = scheme.lower()
    credential = credential.strip()
    if scheme == "basic" and credential:
        principal = _from_basic(credential)
    elif scheme == "bearer" and credential:
        principal = _from_bearer(credential, expected_type="access")
    else:
        raise Unauthenticated(SIGN_IN_HINT)
    db.session.rollback()
    return principal


def check_password_login(username: str, password: str) -> User:
    """Verify a username and password, within the limits per (username, client) and per client.

    The check is reserved before the hash runs, so concurrent guesses cannot overtake the count.
    Concurrent checks of the very same credential from one client (a client's parallel calls
    on a cold cache) share one verification and its outcome, and count once.
    """
    state = auth_state()
    address = addresses.limit_key(client_address())
    flight = CredentialCache.key(f"{address}\0{username.casefold()}\0{password}")
    user_id = state.flights.run(flight, lambda: _verify_password_login(state, username, password, address))
    user = db.session.get(User, user_id)
    if user is None:  # deleted while the check ran
        raise Unauthenticated("Wrong username or password.")
    return user


def _verify_password_login(state: AuthState, username: str, password: str, address: str) -> int:
    with state.limiter.reserve(username, address) as attempt:
        user = service.authenticate(db.session(), username, password)
        if user is None:
            attempt.failed()
            raise Unauthenticated("Wrong username or password.")
        attempt.succeeded()
    return user.id


def charge_anonymous_hash() -> str:
    """Take one password hash from the client's budget (registration); returns the budget's key."""
    key = addresses.limit_key(client_address())
    auth_state().limiter.reserve_address(key)
    return key


def refund_anonymous_hash(key: str) -> None:
    auth_state().limiter.give_back(key)


def _from_basic(credential: str) -> Principal:
    state = auth_state()
    username, password = _decode_basic(credential)
    key = CredentialCache.key("Basic " + credential)
    address = addresses.limit_key(client_address())
    epoch = state.epoch.current()
    principal = state.cache.get(key) or _renew(state.cache, key, epoch)
    if principal is not None:
        _refuse_a_new_address_if_locked(state, key, username, address)
        return principal
    user = check_password_login(username, password)
    principal = Principal(user.id, user.username, user.is_admin, public_id=user.public_id)
    state.cache.put(key, principal, epoch, CredentialCache.proof(user.password_hash), address)
    return principal


def _decode_basic(credential: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(credential, validate=True)
    except (binascii.Error, ValueError):
        raise Unauthenticated("The Basic credential is not valid base64.") from None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        text = decoded.decode("latin-1")
    username, separator, password = text.partition(":")
    if not separator or not username or "\x00" in text:
        raise Unauthenticated("The Basic credential must be `username:password`.")
    return username, password


def _refuse_a_new_address_if_locked(state: AuthState, key: bytes, username: str, address: str) -> None:
    """A cached credential used from a client it was not used from before meets the lock.

    A client that verified the credential keeps working while its (username, address) pair
    is locked by someone's wrong guesses. From any other address a right password must get
    the same 429 as a wrong one, or the cache would tell a locked-out guesser which guess was
    right (the cache costs no hash, so it is asked at no cost).
    """
    if state.cache.used_from(key, address):
        return
    state.limiter.refuse_if_locked(username, address)
    state.cache.add_address(key, address)


def recall_password(username: str, password: str) -> User | None:
    """The user whose password this is, if it was verified (or set) moments ago; else None.

    The same cache as Basic credentials': a person who signs up and signs in at once, or signs
    in again from a new tab, costs one hash, not one each time. A wrong password is never in
    it, so guesses still meet the hash and the failed-login limits; and a pair (username,
    client) locked by failed guesses gets its 429 for the right password too.
    """
    if ":" in username:
        return None
    state = auth_state()
    key = _basic_key(username, password)
    principal = state.cache.get(key) or _renew(state.cache, key, state.epoch.current())
    if principal is None:
        return None
    state.limiter.refuse_if_locked(username, addresses.limit_key(client_address()))
    user = db.session.get(User, principal.user_id)
    return user if user is not None and user.public_id == principal.public_id else None


def _basic_key(username: str, password: str) -> bytes:
    credential = base64.b64encode(f"{username}:{password}".encode()).decode()
    return CredentialCache.key("Basic " + credential)


def remember_password(username: str, password: str, user: User, epoch: int) -> None:
    """Cache the Basic credential of a password just verified (or set) for ``user``.

    A person who signs in and then points the MLflow client at the server with the same
    username and password would otherwise pay a second hash on the client's first call.
    ``epoch`` is the one read before the password was checked, as for :meth:`CredentialCache.put`.
    """
    if ":" in username:
        return  # no Basic header can carry it
    principal = Principal(user.id, user.username, user.is_admin, public_id=user.public_id)
    proof = CredentialCache.proof(user.password_hash)
    address = addresses.limit_key(client_address())
    auth_state().cache.put(_basic_key(username, password), principal, epoch, proof, address)


def current_epoch() -> int:
    return auth_state().epoch.current()


def _renew(cache: CredentialCache, key: bytes, epoch: int) -> Principal | None:
    """A Basic credential verified before, whose account still has the hash it verified against."""
    entry = cache.renewable(key)
    if entry is None:
        return None
    previous, proof = entry
    user = db.session.get(User, previous.user_id)
    if user is None or user.public_id != previous.public_id:
        return None
    if CredentialCache.proof(user.password_hash) != proof:
        return None
    principal = Principal(user.id, user.username, user.is_admin, public_id=user.public_id)
    cache.put(key, principal, epoch, proof)
    return principal


def decode_jwt(token: str, expected_type: str) -> dict[str, object]:
    try:
        claims = decode_token(token)
    except (jwt.PyJWTError, JWTExtendedException, ValueError, TypeError):
        raise Unauthenticated("The token is invalid or expired; refresh it or log in again.") from None
    if claims.get("type") != expected_type:
        raise Unauthenticated(f"This is not an {expected_type} token.")
    return claims


def _from_bearer(token: str, expected_type: str) -> Principal:
    state = auth_state()
    key = CredentialCache.key(f"Bearer {expected_type} {token}")
    for cache in (state.cache, state.job_cache):
        principal = cache.get(key)
        if principal is not None and (principal.token_expires or 0) > time.time():
            return principal
    epoch, job_epoch = state.epoch.current(), state.job_epoch.current()
    claims = decode_jwt(token, expected_type)
    for claim, resolve in _SCOPED_TOKENS.items():
        if claim in claims:
            principal = resolve(claims)
            state.job_cache.put(key, principal, job_epoch)
            return principal
    user = user_named_by(claims)
    is_revoked = db.session.scalar(select(RevokedToken.jti).where(RevokedToken.jti == claims.get("jti")))
    if user is None or claims.get("tv") != user.token_version or is_revoked:
        raise Unauthenticated("The token was revoked; log in again.")
    principal = Principal(
        user.id,
        user.username,
        user.is_admin,
        token_id=str(claims["jti"]),
        token_expires=claim_int(claims["exp"]),
        public_id=user.public_id,
    )
    state.cache.put(key, principal, epoch)
    return principal


def user_named_by(claims: dict[str, object]) -> User | None:
    """The account a token's subject names: its random public id, never a reusable row id."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("The token is malformed; log in again.")
    return db.session.scalar(select(User).where(User.public_id == subject))


def register_scoped_token(claim: str, resolve: Callable[[dict[str, object]], Principal]) -> None:
    """Accept access tokens that carry ``claim``: ``resolve`` turns their claims into a Principal.

    Such tokens (a job's, from :mod:`trainflow.jobs.tokens`) name something other than a
    person's session; they have a cache and an epoch of their own, which
    :func:`forget_scoped_tokens` moves. ``resolve`` raises Unauthenticated to refuse one.
    """
    _SCOPED_TOKENS[claim] = resolve


def forget_scoped_tokens(app: Flask) -> None:
    """Every process drops every cached scoped token (a job ended: its token must stop working)."""
    app.extensions[_EXTENSION].job_cache.forget_all()


def principal_from_refresh_token(token: str) -> Principal:
    return _from_bearer(token, expected_type="refresh")


def issue_access_token(user: User) -> tuple[str, int]:
    expires = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    token = create_access_token(identity=user.public_id, additional_claims={"tv": user.token_version})
    return token, int(expires.total_seconds())


def issue_refresh_token(user: User) -> str:
    token: str = create_refresh_token(identity=user.public_id, additional_claims={"tv": user.token_version})
    return token


def revoke_token(token: str, expected_type: str, principal: Principal) -> None:
    claims = decode_jwt(token, expected_type)
    if claims.get("sub") != principal.public_id:
        raise Unauthenticated("That token belongs to another user.")
    user_id = principal.user_id
    jti = str(claims["jti"])
    if db.session.get(RevokedToken, jti) is None:
        expires = datetime.fromtimestamp(claim_int(claims["exp"]), UTC)
        db.session.add(RevokedToken(jti=jti, user_id=user_id, expires_at=expires))
        db.session.commit()
    forget_credentials()


def forget_credentials() -> None:
    """Every process drops every cached credential and job token (both epochs move)."""
    auth_state().cache.forget_all()
    auth_state().job_cache.forget_all()


def jwt_config(settings: Settings, secret_key: str) -> dict[str, object]:
    return {
        "JWT_SECRET_KEY": secret_key,
        "JWT_ALGORITHM": "HS256",
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(minutes=settings.access_token_minutes),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(days=settings.refresh_token_days),
        "JWT_TOKEN_LOCATION": ["headers"],
    }


def claim_int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        raise Unauthenticated("The token is malformed; log in again.") from None
