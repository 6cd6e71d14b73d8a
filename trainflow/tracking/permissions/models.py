"""What a user may do to an experiment or a registered model, as stored (MLflow basic-auth's model)."""

from __future__ import annotations

import enum

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from trainflow.db import TABLE_PREFIX, db


class Permission(enum.StrEnum):
    READ = "READ"
    USE = "USE"
    EDIT = "EDIT"
    MANAGE = "MANAGE"
    NO_PERMISSIONS = "NO_PERMISSIONS"

    def allows(self, action: str) -> bool:
        return action in _ALLOWED[self]


_ALLOWED = {
    Permission.READ: {"read"},
    Permission.USE: {"read", "use"},
    Permission.EDIT: {"read", "use", "update"},
    Permission.MANAGE: {"read", "use", "update", "delete", "manage"},
    Permission.NO_PERMISSIONS: set(),
}


class ExperimentPermission(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{TABLE_PREFIX}experiment_permissions"
    __table_args__ = (UniqueConstraint("experiment_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey(f"{TABLE_PREFIX}users.id", ondelete="CASCADE"))
    permission: Mapped[str] = mapped_column(String(32))


class RegisteredModelPermission(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{TABLE_PREFIX}registered_model_permissions"
    __table_args__ = (UniqueConstraint("name", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey(f"{TABLE_PREFIX}users.id", ondelete="CASCADE"))
    permission: Mapped[str] = mapped_column(String(32))
