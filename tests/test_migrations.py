"""trainflow's tables change only through migrations (issue 3)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from trainflow.database import is_trainflow_table
from trainflow.db import db


def test_the_migrations_match_the_models(app):
    """Fails when a model changed without a migration: write the migration."""
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_name": is_trainflow_table, "compare_type": True}
        )
        assert compare_metadata(context, db.metadata) == []
