"""A fresh app and database per test, on SQLite and on PostgreSQL.

Migrating MLflow's schema takes seconds, so each backend is migrated once into a template
(a SQLite file, a PostgreSQL template database) that every test copies.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from trainflow.accounts import service
from trainflow.app import create_app
from trainflow.db import db
from trainflow.events.hub import EXTENSION as EVENTS_EXTENSION
from trainflow.migrate import upgrade_all
from trainflow.settings import Settings, normalize_database_url
from trainflow.tracking.mlflow_server import dispose_stores

IS_CI = os.environ.get("CI", "").lower() == "true"


class ClosingClient(FlaskClient):
    """Flask's test client, closing the request body it encoded once the answer is in.

    Werkzeug encodes a multipart body over 500 KB into a temporary file that nothing closes;
    its ResourceWarning then fails whichever test the garbage collector happens to run in.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        body = response.request.environ.get("wsgi.input")
        if body is not None:
            body.close()
        return response


Flask.test_client_class = ClosingClient  # every app the tests make
PASSWORD = "s3cure-enough-pass"


def _unavailable(reason: str) -> None:
    if IS_CI:
        pytest.fail(f"{reason} (under CI nothing may skip)")
    pytest.skip(reason)


def dispose(app: Flask) -> None:
    """Close every connection the app and MLflow's store opened (and its event bus sockets)."""
    hub = app.extensions.get(EVENTS_EXTENSION)
    if hub is not None:
        hub.stop()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    dispose_stores(app.config["SQLALCHEMY_DATABASE_URI"])


def _migrate(data_dir: Path, url: str) -> None:
    dispose(upgrade_all(Settings(data_dir=data_dir, database_url=url), create_app))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = normalize_database_url(os.environ.get("TRAINFLOW_TEST_DATABASE_URL", ""))
    if not url:
        _unavailable("TRAINFLOW_TEST_DATABASE_URL is not set, so the PostgreSQL variant cannot run")
    try:
        engine = create_engine(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as e:  # noqa: BLE001
        _unavailable(f"PostgreSQL at {make_url(url).render_as_string()} does not answer: {e}")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis of the event-bus tests (TRAINFLOW_TEST_REDIS_URL, default the local one)."""
    import redis

    url = os.environ.get("TRAINFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=3) as client:
            client.ping()
    except redis.RedisError as e:
        _unavailable(f"Redis at {url} does not answer: {e}")
    return url


class Templates:
    """Migrated databases to copy, made on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sqlite_file: Path | None = None
        self.postgres: tuple[str, str] | None = None  # (admin url, template database name)

    def sqlite(self) -> Path:
        if self.sqlite_file is None:
            path = self.root / "sqlite" / "trainflow.db"
            _migrate(path.parent, f"sqlite:///{path}")
            self.sqlite_file = path
        return self.sqlite_file

    def postgres_template(self, admin_url: str) -> str:
        if self.postgres is None:
            name = f"tf_template_{uuid.uuid4().hex[:8]}"
            _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
            _migrate(self.root / "pg", _with_database(admin_url, name))
            self.postgres = (admin_url, name)
        return self.postgres[1]

    def drop(self) -> None:
        if self.postgres is not None:
            _admin_execute(self.postgres[0], f'DROP DATABASE IF EXISTS "{self.postgres[1]}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin_execute(url: str, statement: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(statement))
    engine.dispose()


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    made = Templates(tmp_path_factory.mktemp("templates"))
    yield made
    made.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, templates: Templates) -> Iterator[str]:
    if request.param == "sqlite":
        target = tmp_path / "db" / "trainflow.db"
        target.parent.mkdir()
        _copy_sqlite(templates.sqlite(), target)
        yield f"sqlite:///{target}"
        return
    admin_url = request.getfixturevalue("postgres_url")
    template = templates.postgres_template(admin_url)
    name = f"tf_test_{uuid.uuid4().hex[:12]}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _with_database(admin_url, name)
    _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def shared_mode(redis_url: str, tmp_path: Path) -> dict[str, Any]:
    """The settings of a host in shared mode (#13) for an app made in the test's own process:
    PostgreSQL comes from the test's database, the rest is made up here."""
    return {
        "shared": True,
        "redis_url": redis_url,
        "redis_channel": f"trainflow-test-{uuid.uuid4().hex}",
        "secret_key": "k" * 48,
        "artifacts_uri": str(tmp_path / "artifacts"),
        "public_url": "http://127.0.0.1:5000",
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no table at all (outside any data directory), for start-up and upgrades."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    admin_url = request.getfixturevalue("postgres_url")
    name = f"tf_empty_{uuid.uuid4().hex[:10]}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    yield _with_database(admin_url, name)
    _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _copy_sqlite(source: Path, target: Path) -> None:
    # The backup API copies what is still in the write-ahead log too.
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    dispose(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class TestUser:
    __test__ = False  # not a test class

    id: int
    username: str
    password: str
    client: FlaskClient

    @property
    def basic(self) -> dict[str, str]:
        return basic_auth(self.username, self.password)

    def login(self) -> dict[str, Any]:
        response = self.client.post("/api/login", json={"username": self.username, "password": self.password})
        assert response.status_code == 200, response.json
        return response.json  # type: ignore[return-value]

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.login()['access_token']}"}


def basic_auth(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


@pytest.fixture
def make_user(app: Flask, client: FlaskClient):  # type: ignore[no-untyped-def]
    """Create a user straight in the database: make_user("alice", role="admin")."""

    def make(username: str, password: str = PASSWORD, role: str = "user") -> TestUser:
        with app.app_context():
            user = service.create_user(db.session, username=username, password=password, role=role)
            return TestUser(user.id, user.username, password, client)

    return make


@pytest.fixture
def admin(make_user) -> TestUser:  # type: ignore[no-untyped-def]
    return make_user("root-admin", role="admin")


@pytest.fixture
def alice(make_user) -> TestUser:  # type: ignore[no-untyped-def]
    return make_user("alice")


@pytest.fixture
def bob(make_user) -> TestUser:  # type: ignore[no-untyped-def]
    return make_user("bob")
