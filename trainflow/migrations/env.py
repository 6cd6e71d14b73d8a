"""Alembic environment for trainflow's tables (``tf_*``), which share a database with MLflow's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from alembic import context
from flask import current_app

from trainflow.db import UTCDateTime, db
from trainflow.migrate import VERSION_TABLE, is_trainflow_table

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext

config = context.config


def render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations stay self-contained: our UTC wrapper is a plain DateTime column in the schema.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


def run_migrations_online() -> None:
    with db.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=db.metadata,
            version_table=VERSION_TABLE,
            include_name=is_trainflow_table,
            render_item=render_item,
            render_as_batch=True,  # SQLite alters tables by copying them
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=current_app.config["SQLALCHEMY_DATABASE_URI"],
        target_metadata=db.metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
