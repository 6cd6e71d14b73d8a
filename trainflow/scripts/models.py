"""The table of uploaded scripts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from trainflow.db import TABLE_PREFIX, UTCDateTime, db, utcnow


class Script(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{TABLE_PREFIX}scripts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(
        ForeignKey(f"{TABLE_PREFIX}users.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # python, zip, tar.gz
    entrypoint: Mapped[str] = mapped_column(String(1024))
    has_requirements: Mapped[bool] = mapped_column(Boolean, default=False)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # The folder under the uploads directory: random, so no name a user chose reaches the disk.
    storage_key: Mapped[str] = mapped_column(String(64), unique=True)
    # Bytes it takes on a host's disk (the original and its files), measured at upload: hosts
    # without a copy of their own count it in quotas all the same. None: uploaded before it was kept.
    stored_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
