"""The tables behind accounts: users and revoked tokens."""

from __future__ import annotations

import enum
import secrets
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from trainflow.db import TABLE_PREFIX, UTCDateTime, db, utcnow


class Role(enum.StrEnum):
    ADMIN = "admin"
    USER = "user"


def new_public_id() -> str:
    return secrets.token_urlsafe(16)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{TABLE_PREFIX}users"
    # SQLite would otherwise hand a deleted user's id to the next row (PostgreSQL's sequences
    # never go back).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # What tokens name as their subject: random, so no later account can ever match a token
    # issued to a deleted one, whatever the database does with ids.
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    username: Mapped[str] = mapped_column(String(64))
    # Usernames are unique regardless of case: the constraint sits on the folded form.
    username_key: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.USER.value)
    # Bumped on password change and logout-all: tokens carrying an older value stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value


class RevokedToken(db.Model):  # type: ignore[name-defined,misc]
    """A logged-out token, kept until it would have expired anyway."""

    __tablename__ = f"{TABLE_PREFIX}revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey(f"{TABLE_PREFIX}users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


def fold_username(username: str) -> str:
    return username.casefold()
