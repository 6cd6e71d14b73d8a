"""Bringing the database up to date: MLflow's schema, then trainflow's own migrations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask

    from trainflow.settings import Settings

from trainflow.db import TABLE_PREFIX
from trainflow.errors import ConfigError
from trainflow.tracking.schema import upgrade_mlflow_schema

try:
    import fcntl
except ImportError:  # Windows: one server per database there
    fcntl = None  # type: ignore[assignment]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Beside MLflow's `alembic_version`: each schema keeps its own history.
VERSION_TABLE = "tf_alembic_version"
# PostgreSQL advisory lock held while a server upgrades the schema and makes the first admin
# (a fixed 64-bit key: "trainflow" in ASCII).
UPGRADE_LOCK_KEY = 0x747261696E666C6F
UPGRADE_LOCK_WAIT_S = 600  # past this, the server that holds it is taken to be stuck


def is_trainflow_table(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's include_name: MLflow migrates its own tables, so ours are the only ones compared."""
    return type_ != "table" or ((name or "").startswith(TABLE_PREFIX) and name != VERSION_TABLE)


def upgrade_all(settings: Settings, create_app: Callable[[Settings], Flask]) -> Flask:
    """Apply every pending migration of both schemas and return the app built on the result.

    MLflow's schema goes first: MLflow's store refuses to open an out-of-date database, and
    the app (made by ``create_app``, :func:`trainflow.app.create_app`, which imports this
    module) opens that store. Safe to run on every start.
    """
    import flask_migrate

    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    upgrade_mlflow_schema(settings.resolved_database_url)
    app = create_app(settings)
    with app.app_context():
        flask_migrate.upgrade(directory=str(MIGRATIONS_DIR))
    return app


@contextlib.contextmanager
def upgrade_lock(settings: Settings) -> Iterator[None]:
    """One server at a time upgrades the database and makes the first admin.

    Several servers may start at once on one empty database (hosts of one deployment, or
    restarted together): without the lock, two ran MLflow's migrations side by side and one
    died of a UniqueViolation. On PostgreSQL an advisory lock, held on a connection of its own
    for as long as the block runs; on SQLite a file lock beside the database file.
    """
    url = settings.resolved_database_url
    if url.startswith("postgresql"):
        with _advisory_lock(url):
            yield
        return
    database = url.removeprefix("sqlite:///")
    if fcntl is None or not url.startswith("sqlite:///") or not database:
        yield  # an in-memory database: this process alone
        return
    lock_path = Path(database).with_name(Path(database).name + ".upgrade-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(url: str) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text(f"SET lock_timeout = '{UPGRADE_LOCK_WAIT_S}s'"))
            try:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
            except OperationalError:
                raise ConfigError(
                    f"Another server has been upgrading this database for {UPGRADE_LOCK_WAIT_S} s; "
                    "see its output, then start this one again."
                ) from None
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": UPGRADE_LOCK_KEY})
                connection.commit()
    finally:
        engine.dispose()
