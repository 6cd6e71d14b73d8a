"""Account operations; views call these with the session, and they raise domain errors."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trainflow.accounts.models import Role, User, fold_username
from trainflow.accounts.passwords import hash_password, verify_password
from trainflow.db import get_by_id, utcnow
from trainflow.errors import Conflict, NotFound, PermissionDenied


def get_user(session: Session, user_id: int) -> User:
    user = get_by_id(session, User, user_id)
    if user is None:
        raise NotFound(f"No user {user_id}; GET /api/users lists them.")
    return user


def find_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username_key == fold_username(username))).first()


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def count_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User).where(User.role == Role.ADMIN.value)) or 0


def list_users(session: Session, page: int, size: int) -> tuple[int, list[User]]:
    total = count_users(session)
    users = session.scalars(select(User).order_by(User.id).offset((page - 1) * size).limit(size)).all()
    return total, list(users)


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    email: str | None = None,
    phone: str | None = None,
    role: str = Role.USER.value,
) -> User:
    _ensure_username_free(session, username)
    _release_connection(session)
    password_hash = hash_password(password)
    user = User(
        username=username,
        username_key=fold_username(username),
        email=email,
        phone=phone,
        role=role,
        password_hash=password_hash,
    )
    session.add(user)
    _commit_unique(session, username)
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user whose password this is, or None (costing the same either way)."""
    user = find_user(session, username)
    user_id, password_hash = (user.id, user.password_hash) if user is not None else (0, None)
    _release_connection(session)
    if not verify_password(password_hash, password):
        return None
    user = session.get(User, user_id)
    # Changed or deleted while the hash ran: the password checked is no longer the user's.
    return user if user is not None and user.password_hash == password_hash else None


def update_user(session: Session, user: User, changes: dict[str, Any], *, acting_admin: bool) -> bool:
    """Apply ``changes`` to the editable fields; return whether anything changed.

    Identical values leave the row alone, so a repeated PUT answers exactly as the first.
    """
    changed = {k: v for k, v in changes.items() if getattr(user, k) != v}
    if "role" in changed:
        if not acting_admin:
            raise PermissionDenied("Only an admin can change a role.")
        if user.is_admin and changed["role"] != Role.ADMIN.value and count_admins(session) <= 1:
            raise Conflict("This is the last admin; make another user admin first.")
    if "username" in changed:
        if fold_username(changed["username"]) != user.username_key:
            _ensure_username_free(session, changed["username"])
        user.username_key = fold_username(changed["username"])
    if not changed:
        return False
    for key, value in changed.items():
        setattr(user, key, value)
    user.updated_at = utcnow()
    _commit_unique(session, user.username)
    return True


def change_password(session: Session, user: User, new_password: str) -> None:
    _release_connection(session)
    password_hash = hash_password(new_password)
    user.password_hash = password_hash
    user.token_version += 1
    user.updated_at = utcnow()
    session.commit()


def ensure_not_last_admin(session: Session, user: User) -> None:
    if user.is_admin and count_admins(session) <= 1:
        raise Conflict("This is the last admin and cannot be deleted; make another user admin first.")


def delete_user(session: Session, user: User) -> None:
    ensure_not_last_admin(session, user)
    session.delete(user)
    session.commit()


def _release_connection(session: Session) -> None:
    """End the transaction before a password hash, which may wait seconds for its turn.

    Callers waiting for a hashing worker must not hold database connections: the connection
    pool is smaller than the hash queue, and everything else (health checks, streams, MLflow)
    would wait behind them. Objects already loaded reload on their next use.
    """
    session.rollback()


def _ensure_username_free(session: Session, username: str) -> None:
    if find_user(session, username) is not None:
        raise Conflict(f"The username {username!r} is taken; choose another.")


def _commit_unique(session: Session, username: str) -> None:
    try:
        session.commit()
    except IntegrityError:
        # Another request took the name between our check and the commit.
        session.rollback()
        raise Conflict(f"The username {username!r} is taken; choose another.") from None
