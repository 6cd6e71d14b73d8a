"""Bringing the database up to date: MLflow's schema, then trainflow's own migrations."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Beside MLflow's `alembic_version`: each schema keeps its own history.
VERSION_TABLE = "tf_alembic_version"


def upgrade_all(app: Flask) -> None:
    """Apply every pending migration of both schemas. Safe to run on every start."""
    import flask_migrate

    from trainflow.db import db

    with app.app_context():
        upgrade_mlflow_schema(db.engine)
        flask_migrate.upgrade(directory=str(MIGRATIONS_DIR))


def upgrade_mlflow_schema(engine: object) -> None:
    from mlflow.store.db import utils

    if not utils._all_tables_exist(engine):
        utils._initialize_tables(engine)
    elif utils._get_schema_version(engine) != utils._get_latest_schema_revision():
        utils._upgrade_db(engine)
