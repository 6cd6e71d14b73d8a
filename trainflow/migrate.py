"""Bringing the database up to date: MLflow's schema, then trainflow's own migrations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask

    from trainflow.settings import Settings

from trainflow.db import TABLE_PREFIX
from trainflow.tracking.schema import upgrade_mlflow_schema

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Beside MLflow's `alembic_version`: each schema keeps its own history.
VERSION_TABLE = "tf_alembic_version"


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
