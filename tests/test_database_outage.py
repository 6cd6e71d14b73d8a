"""A PostgreSQL that stops answering gets 503 with Retry-After, and nothing is lost once it is back."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _refuse_connections(admin_url: str, database: str, refuse: bool) -> None:
    """Make ``database`` refuse new connections (dropping those it has), or accept them again."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(not refuse).lower()}'))
        if refuse:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            )
    engine.dispose()


def test_a_database_that_does_not_answer_is_503_not_500(client, alice, database_url, postgres_url):
    bearer = alice.bearer()  # signed in before the outage: no password check needed
    created = client.post("/api/2.0/mlflow/experiments/create", json={"name": "kept"}, headers=bearer)
    assert created.status_code == 200, created.json
    database = make_url(database_url).database
    _refuse_connections(postgres_url, database, refuse=True)
    try:
        for path in (
            "/api/me",
            "/ajax-api/2.0/mlflow/train/jobs",
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=kept",
        ):
            response = client.get(path, headers=bearer)
            assert response.status_code == 503, (path, response.status_code, response.json)
            assert response.headers["Retry-After"].isdigit(), path
            assert "Traceback" not in response.get_data(as_text=True)
        error = client.get("/api/me", headers=bearer).json["error"]
        assert error["code"] == "database_unavailable" and "try again" in error["message"]
    finally:
        _refuse_connections(postgres_url, database, refuse=False)
    assert client.get("/api/me", headers=bearer).status_code == 200
    found = client.get(
        "/api/2.0/mlflow/experiments/get-by-name", query_string={"experiment_name": "kept"}, headers=bearer
    )
    assert found.status_code == 200, found.json


def test_both_pools_take_the_configured_size(settings):
    """trainflow's pool and MLflow's store's pool, sized by TRAINFLOW_DATABASE_POOL_SIZE/_MAX_OVERFLOW."""
    from mlflow.server.handlers import _get_tracking_store

    from tests.conftest import dispose
    from trainflow.app import create_app
    from trainflow.db import db

    app = create_app(settings.replace(database_pool_size=3, database_max_overflow=2))
    try:
        with app.app_context():
            pools = [db.engine.pool, _get_tracking_store().engine.pool]
        assert [(pool.size(), pool._max_overflow) for pool in pools] == [(3, 2), (3, 2)]
    finally:
        dispose(app)
