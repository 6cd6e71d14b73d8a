"""trainflow's tables change only through migrations (issue 3)."""

from __future__ import annotations

from datetime import datetime

import flask_migrate
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from trainflow import migrate
from trainflow.accounts import service
from trainflow.db import db
from trainflow.errors import ConfigError
from trainflow.migrate import MIGRATIONS_DIR, is_trainflow_table
from trainflow.settings import Settings


def test_the_migrations_match_the_models(app):
    """Fails when a model changed without a migration: write the migration."""
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_name": is_trainflow_table, "compare_type": True}
        )
        assert compare_metadata(context, db.metadata) == []


def _count(table: str) -> int:
    return db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608


def test_0004_keeps_everything_users_own_and_gives_each_a_public_id(app):
    """Rebuilding tf_users on SQLite must not cascade to the rows that reference it (issue 10)."""
    directory = str(MIGRATIONS_DIR)
    with app.app_context():
        flask_migrate.downgrade(directory=directory, revision="0003")
        now = datetime(2026, 12, 1)
        for user_id in (1, 2, 3):
            db.session.execute(
                text(
                    "INSERT INTO tf_users (id, username, username_key, password_hash, role, token_version,"
                    " created_at, updated_at) VALUES (:id, :name, :name, 'x', 'user', 0, :now, :now)"
                ),
                {"id": user_id, "name": f"user{user_id}", "now": now},
            )
        db.session.execute(
            text(
                "INSERT INTO tf_scripts (id, owner_id, filename, kind, entrypoint, has_requirements, size,"
                " sha256, storage_key, created_at) VALUES (1, 3, 'train.py', 'py', 'train.py', false, 1,"
                " 'abc', 'key1', :now)"
            ),
            {"now": now},
        )
        db.session.execute(
            text("INSERT INTO tf_revoked_tokens (jti, user_id, expires_at) VALUES ('j1', 3, :now)"),
            {"now": now},
        )
        db.session.execute(
            text(
                "INSERT INTO tf_experiment_permissions (experiment_id, user_id, permission)"
                " VALUES ('0', 3, 'MANAGE')"
            )
        )
        db.session.commit()
        db.session.remove()

        flask_migrate.upgrade(directory=directory)

        assert _count("tf_users") == 3
        assert _count("tf_scripts") == 1
        assert _count("tf_revoked_tokens") == 1
        assert _count("tf_experiment_permissions") == 1
        public_ids = db.session.execute(text("SELECT public_id FROM tf_users")).scalars().all()
        assert len(set(public_ids)) == 3
        assert all(len(public_id) >= 20 for public_id in public_ids)
        # Foreign keys are enforced again after the rebuild: deleting a user cascades.
        db.session.execute(text("DELETE FROM tf_users WHERE id = 3"))
        db.session.commit()
        assert _count("tf_scripts") == 0


def test_a_deleted_users_id_is_never_given_to_the_next_user(app):
    with app.app_context():
        first = service.create_user(db.session, username="first", password="a long passphrase")
        second = service.create_user(db.session, username="second", password="a long passphrase")
        deleted_id = second.id
        service.delete_user(db.session, second)
        third = service.create_user(db.session, username="third", password="a long passphrase")
        assert third.id > deleted_id > first.id


def test_a_server_waiting_on_another_s_upgrade_gives_up_with_a_clear_error(
    postgres_url, tmp_path, monkeypatch
):
    from sqlalchemy import text

    monkeypatch.setattr(migrate, "UPGRADE_LOCK_WAIT_S", 1)
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    holder = create_engine(postgres_url, poolclass=NullPool).connect()  # another server, stuck
    try:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": migrate.UPGRADE_LOCK_KEY})
        with pytest.raises(ConfigError, match="Another server has been upgrading this database"):
            with migrate.upgrade_lock(settings):
                pass
    finally:
        holder.close()
    with migrate.upgrade_lock(settings):  # free again once the other is gone
        pass
