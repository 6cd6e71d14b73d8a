"""The ``trainflow`` command: run the server, migrate the database, manage users."""

from __future__ import annotations

import gc
import sys
import time

import click

from trainflow.errors import ConfigError, TrainflowError


def _settings(**overrides: object):  # type: ignore[no-untyped-def]
    from trainflow.settings import Settings

    try:
        settings = Settings.from_env()
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    return settings.replace(**{k: v for k, v in overrides.items() if v is not None})


@click.group()
@click.version_option(package_name="trainflow")
def main() -> None:
    """trainflow: a self-hosted training platform on Flask and MLflow."""


@main.command()
@click.option("--host", help="Address to listen on (TRAINFLOW_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (TRAINFLOW_PORT, default 5000).")
@click.option("--workers", type=int, help="Server processes (TRAINFLOW_WORKERS, default 1).")
def server(host: str | None, port: int | None, workers: int | None) -> None:
    """Migrate the database, create the first admin if needed, and serve."""
    # Start-up allocates millions of long-lived objects (MLflow's import alone takes ~2 s);
    # collecting garbage meanwhile only slows it, by about a quarter measured here.
    gc.disable()
    # gevent must patch the standard library before anything opens sockets or threads.
    from gevent import monkey

    monkey.patch_all()
    try:
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()  # PostgreSQL queries yield to other greenlets instead of blocking
    except ImportError:
        pass
    started = time.monotonic()
    settings = _settings(host=host, port=port, workers=workers)
    from trainflow.logs import configure_logging

    configure_logging(settings.log_level)
    from trainflow.accounts.bootstrap import ADMIN_USERNAME, ensure_admin
    from trainflow.app import create_app
    from trainflow.database import upgrade_all
    from trainflow.db import db
    from trainflow.mlflow_app import dispose_stores
    from trainflow.server import serve

    try:
        app = upgrade_all(settings)
        with app.app_context():
            generated = ensure_admin(settings)
            if settings.workers > 1:  # workers open their own connections
                db.engine.dispose()
                dispose_stores(settings.resolved_database_url)
    except TrainflowError as e:
        raise click.ClickException(str(e)) from None
    if generated:
        click.echo(
            f"Created the first account: username {ADMIN_USERNAME!r}, password {generated!r}.\n"
            "It is shown only this once: sign in and change it (POST /api/me/password)."
        )

    def ready(sock: object) -> None:
        url = f"http://{settings.host}:{settings.port}"
        click.echo(
            f"trainflow is serving on {url} (ready in {time.monotonic() - started:.1f} s)\n"
            f"  MLflow UI:  {url}/\n  API docs:   {url}/api/docs\n"
            f"  Data:       {settings.resolved_data_dir}\n  Press Ctrl+C to stop."
        )
        sys.stdout.flush()

    from trainflow.jobs.scheduler import start_scheduler

    first_app = [app]
    # What start-up built lives as long as the process: keep the collector off it (and, with
    # workers, keep forked pages shared instead of touching them on every collection).
    gc.collect()
    gc.freeze()
    gc.enable()

    def app_factory(slot: int):  # type: ignore[no-untyped-def]
        # The app built for migrations serves the first (or only) process.
        served = first_app.pop() if first_app and settings.workers <= 1 else create_app(settings)
        if slot == 0:  # one scheduler per data directory
            start_scheduler(served)
        return served

    try:
        serve(app_factory, settings, on_ready=ready)
    except OSError as e:
        raise click.ClickException(
            f"Cannot listen on {settings.host}:{settings.port}: {e.strerror}."
        ) from None


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (MLflow's schema and trainflow's)."""
    from trainflow.database import upgrade_all

    settings = _settings()
    upgrade_all(settings)
    click.echo(f"Database is up to date: {_redacted(settings.resolved_database_url)}")


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.command("create-user")
@click.argument("username")
@click.option("--admin", "is_admin", is_flag=True, help="Give the user the admin role.")
@click.password_option(help="The user's password (prompted when not given).")
def create_user(username: str, is_admin: bool, password: str) -> None:
    """Create a user directly in the database (for operators)."""
    from pydantic import ValidationError

    from trainflow.accounts import service
    from trainflow.accounts.schemas import CreateUserRequest
    from trainflow.app import create_app
    from trainflow.db import db as database

    try:
        request = CreateUserRequest(
            username=username, password=password, role="admin" if is_admin else "user"
        )
    except ValidationError as e:
        raise click.UsageError(
            "; ".join(f"{'.'.join(map(str, err['loc'])) or 'password'}: {err['msg']}" for err in e.errors())
        ) from None
    app = create_app(_settings())
    with app.app_context():
        try:
            user = service.create_user(database.session, **request.model_dump())
        except TrainflowError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"Created user {user.username!r} (id {user.id}, role {user.role}).")


if __name__ == "__main__":
    main()
