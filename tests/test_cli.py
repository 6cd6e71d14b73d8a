"""The operator commands: `trainflow db upgrade` and `trainflow create-user` (issue 3)."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text

from tests.conftest import basic_auth
from trainflow.cli import main
from trainflow.migrate import MIGRATIONS_DIR
from trainflow.settings import normalize_database_url
from trainflow.tracking.mlflow_server import dispose_stores

HEAD_REVISION = sorted(p.name.split("_")[0] for p in (MIGRATIONS_DIR / "versions").glob("0*.py"))[-1]


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_db_upgrade_creates_both_schemas_and_is_repeatable(tmp_path, empty_database):
    env = {"TRAINFLOW_DATA_DIR": str(tmp_path / "data"), "TRAINFLOW_DATABASE_URL": empty_database}
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade"], env=env)
    assert first.exit_code == 0, first.output
    assert "up to date" in first.output
    tables = _tables(normalize_database_url(empty_database))
    assert {"experiments", "runs", "metrics", "alembic_version"} <= tables  # MLflow's
    assert {"tf_users", "tf_revoked_tokens", "tf_experiment_permissions", "tf_alembic_version"} <= tables
    second = runner.invoke(main, ["db", "upgrade"], env=env)
    assert second.exit_code == 0, second.output
    engine = create_engine(normalize_database_url(empty_database))
    with engine.connect() as connection:
        assert (
            connection.execute(text("SELECT version_num FROM tf_alembic_version")).scalar() == HEAD_REVISION
        )
    engine.dispose()
    dispose_stores(normalize_database_url(empty_database))


def test_db_upgrade_hides_the_database_password(tmp_path):
    env = {
        "TRAINFLOW_DATA_DIR": str(tmp_path),
        "TRAINFLOW_DATABASE_URL": "postgresql://u:hunter22@127.0.0.1:1/x",
    }
    result = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code != 0
    assert "hunter22" not in result.output


def test_create_user(tmp_path, settings, app):
    env = {"TRAINFLOW_DATA_DIR": str(settings.data_dir), "TRAINFLOW_DATABASE_URL": settings.database_url}
    runner = CliRunner()
    result = runner.invoke(main, ["create-user", "ops", "--admin", "--password", "deploy-key-123"], env=env)
    assert result.exit_code == 0, result.output
    assert "role admin" in result.output
    response = app.test_client().get("/api/me", headers=basic_auth("ops", "deploy-key-123"))
    assert response.status_code == 200 and response.json["role"] == "admin"
    weak = runner.invoke(main, ["create-user", "ops2", "--password", "123"], env=env)
    assert weak.exit_code == 2 and "password" in weak.output
    taken = runner.invoke(main, ["create-user", "OPS", "--password", "deploy-key-456"], env=env)
    assert taken.exit_code == 1 and "taken" in taken.output


def test_bad_settings_are_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"TRAINFLOW_PORT": "eighty"})
    assert result.exit_code == 2 and "TRAINFLOW_PORT" in result.output
