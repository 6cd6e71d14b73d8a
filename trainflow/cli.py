"""The ``trainflow`` command: run the server, migrate the database, manage users."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from trainflow.errors import ConfigError, TrainflowError
from trainflow.events.types import EventType, JobStatus

if TYPE_CHECKING:
    from flask import Flask

    from trainflow.client import Client
    from trainflow.settings import Settings

T = TypeVar("T")


def _settings(**overrides: object) -> Settings:
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
    from trainflow.server_logging import configure_logging

    configure_logging(settings.log_level)
    from trainflow.accounts.bootstrap import ADMIN_USERNAME, ensure_admin
    from trainflow.app import create_app
    from trainflow.db import db
    from trainflow.housekeeping import start_sweeper, sweep_at_start
    from trainflow.migrate import upgrade_all, upgrade_lock
    from trainflow.server import serve
    from trainflow.tracking.mlflow_server import dispose_stores

    try:
        with upgrade_lock(settings):
            app = upgrade_all(settings, create_app)
            with app.app_context():
                generated = ensure_admin(settings)
        with app.app_context():
            # What a crash left (partial uploads, folders without a row), before any request runs.
            sweep_at_start(app)
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
            f"  Dashboard:  {url}/train/\n"
            f"  Data:       {settings.resolved_data_dir}\n  Press Ctrl+C to stop."
        )
        sys.stdout.flush()

    from trainflow.events.hub import hub_of
    from trainflow.jobs.scheduler import start_scheduler

    first_app = [app]
    # What start-up built lives as long as the process: keep the collector off it (and, with
    # workers, keep forked pages shared instead of touching them on every collection).
    gc.collect()
    gc.freeze()
    gc.enable()

    def app_factory(slot: int) -> Flask:
        # The app built for migrations serves the first (or only) process.
        served = first_app.pop() if first_app and settings.workers <= 1 else create_app(settings)
        if slot == 0 and settings.run_jobs:  # one scheduler (and debris sweeper) per data directory
            start_scheduler(served)
            start_sweeper(served)
        if settings.redis_url:
            # Listen from the start, not from the first stream: other hosts' cache epochs too.
            hub_of(served).start()
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
    from trainflow.app import create_app
    from trainflow.migrate import upgrade_all, upgrade_lock

    settings = _settings()
    with upgrade_lock(settings):
        upgrade_all(settings, create_app)
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
            user = service.create_user(database.session(), **request.model_dump())
        except TrainflowError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"Created user {user.username!r} (id {user.id}, role {user.role}).")


# -- talking to a server ------------------------------------------------------------------------

DEFAULT_SERVER = "http://127.0.0.1:5000"
server_option = click.option(
    "--server",
    default=DEFAULT_SERVER,
    show_default=True,
    envvar="TRAINFLOW_URL",
    help="The trainflow server (env TRAINFLOW_URL).",
)
# Ends of a followed job, as exit codes (as `ray job submit` reflects its job's end).
EXIT_CODES = {
    JobStatus.SUCCEEDED.value: 0,
    JobStatus.FAILED.value: 1,
    JobStatus.LOST.value: 1,
    JobStatus.TIMED_OUT.value: 124,
    JobStatus.CANCELLED.value: 130,
}


def _client(server: str) -> Client:
    from trainflow.client import Client

    return Client(server)


def _run(action: Callable[[], T]) -> T:
    """Turn a server's refusal or an unreachable server into a one-line error, not a traceback."""
    import requests

    from trainflow.client import ClientError

    try:
        return action()
    except ClientError as e:
        raise click.ClickException(str(e)) from None
    except requests.ConnectionError:
        raise click.ClickException("Cannot reach the server; is `trainflow server` running there?") from None


@main.command()
@server_option
@click.option("--username", prompt=True, help="Your trainflow username.")
@click.password_option(confirmation_prompt=False, help="Prompted when not given; never stored.")
def login(server: str, username: str, password: str) -> None:
    """Sign in and keep the session's tokens (not the password) for later commands."""
    credentials = _run(lambda: _client(server).login(username, password))
    click.echo(f"Signed in to {credentials.server} as {credentials.username}.")


def _parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise click.UsageError(f"--param takes key=value, not {pair!r}.")
        params[key] = value
    return params


@main.command()
@server_option
@click.argument("script", type=click.Path(exists=True, path_type=Path))
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter (repeatable).")
@click.option("--arg", "args", multiple=True, help="An extra command-line argument (repeatable).")
@click.option("--experiment", help="MLflow experiment name (default: <you>/<script name>).")
@click.option("--run-name", help="MLflow run name.")
@click.option("--entrypoint", help="For archives: the script to run (default train.py).")
@click.option(
    "--timeout", "timeout_s", type=click.IntRange(min=1), help="Kill the job after this many seconds."
)
@click.option("--gpus", type=click.IntRange(min=0), default=0, help="GPUs the job needs.")
@click.option(
    "--max-retries",
    type=click.IntRange(min=0, max=10),
    default=0,
    help="Run it again, into the same MLflow run, after a FAILED or LOST attempt (up to this many times).",
)
@click.option("--follow", is_flag=True, help="Print the job's output until it ends; exit with its outcome.")
def submit(
    server: str,
    script: Path,
    params: tuple[str, ...],
    args: tuple[str, ...],
    experiment: str | None,
    run_name: str | None,
    entrypoint: str | None,
    timeout_s: int | None,
    gpus: int,
    max_retries: int,
    follow: bool,
) -> None:
    """Upload SCRIPT (a .py file, a .zip/.tar.gz project, or a project folder) and run it as a job."""
    parsed = _parse_params(params)  # a usage mistake is reported before anything is uploaded
    client = _client(server)
    if script.is_dir():
        script = _pack(script)
    size = script.stat().st_size
    with click.progressbar(
        length=size, label=f"Uploading {script.name}", file=sys.stderr, show_pos=False
    ) as bar:
        uploaded = _run(lambda: client.upload(script, entrypoint, on_read=lambda n: bar.update(min(n, size))))
    body = {
        "script_id": uploaded["script"],
        "params": parsed,
        "args": list(args),
        "gpus": gpus,
    }
    if max_retries:
        body["max_retries"] = max_retries
    body.update(
        {
            k: v
            for k, v in {"experiment_name": experiment, "run_name": run_name, "timeout_s": timeout_s}.items()
            if v is not None
        }
    )
    job = _run(lambda: client.submit(**body))
    click.echo(
        f"Job {job['job']} {job['status']}: run {job['run_id']} in experiment {job['experiment_id']}",
        err=follow,
    )
    if follow:
        sys.exit(_follow(client, job["job"]))


SKIPPED_IN_PACKS = {"__pycache__", ".git", ".venv", "venv", ".mypy_cache", ".pytest_cache", "mlruns"}


def _pack(folder: Path) -> Path:
    """A project folder as a .tar.gz in a temporary directory (caches and VCS data left out)."""
    import tarfile
    import tempfile

    target = Path(tempfile.mkdtemp(prefix="trainflow-")) / f"{folder.resolve().name}.tar.gz"

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = set(Path(info.name).parts)
        if parts & SKIPPED_IN_PACKS or info.name.endswith(".pyc") or info.issym() or info.islnk():
            return None
        return info

    with tarfile.open(target, "w:gz") as archive:
        for child in sorted(folder.iterdir()):
            archive.add(child, arcname=child.name, filter=keep)
    return target


def _follow(client: Client, job_id: int) -> int:
    """Print the job's lines as they come; return the exit code its end maps to."""
    show_progress = sys.stderr.isatty()
    ending: dict[str, Any] = {}

    def stream() -> None:
        for event in client.follow_events(job_id):
            kind = event["type"]
            if kind == EventType.LOG:
                if show_progress and ending.pop("bar", None):
                    click.echo("\r\033[K", err=True, nl=False)
                click.echo(event["line"], err=event["stream"] == "stderr", nl=not event.get("partial"))
            elif kind == EventType.PROGRESS and show_progress:
                click.echo("\r\033[K" + _progress_text(event), err=True, nl=False)
                ending["bar"] = True
            elif kind == EventType.STATUS:
                ending["reason"] = event.get("reason")
                if event.get("retry"):  # an attempt ended and the job runs again (trainflow.jobs.retries)
                    click.echo(f"Job {job_id}: {event.get('reason')}", err=True)
            elif kind in (EventType.END, EventType.DELETED):
                ending.update(event)

    _run(stream)
    if ending.get("type") == EventType.DELETED:
        click.echo(f"Job {job_id} was deleted.", err=True)
        return 1
    status = ending.get("status", JobStatus.LOST.value)
    reason = f" ({ending['reason']})" if ending.get("reason") else ""
    click.echo(f"Job {job_id} {status}{reason}", err=True)
    if status == JobStatus.FAILED and ending.get("exit_code"):
        return min(int(ending["exit_code"]), 255)
    return EXIT_CODES.get(status, 1)


def _progress_text(event: dict[str, Any]) -> str:
    current, total = event.get("current"), event.get("total")
    text = f"{event.get('desc', 'progress')}: {current}" + (f"/{total}" if total else "")
    if total and current is not None:
        text += f" ({100 * current / total:.0f}%)"
    if event.get("rate"):
        text += f", {event['rate']:.3g}/s"
    if event.get("eta_s") is not None:
        text += f", {event['eta_s']:.0f} s left"
    return text


@main.command()
@server_option
@click.option(
    "--status",
    type=click.Choice([status.value for status in JobStatus]),
    help="Only jobs in this state.",
)
@click.option("--page", type=click.IntRange(min=1), default=1)
@click.option("--size", type=click.IntRange(1, 100), default=20)
def jobs(server: str, status: str | None, page: int, size: int) -> None:
    """List your jobs, newest first."""
    listing = _run(lambda: _client(server).jobs(status=status, page=page, size=size))
    click.echo(f"{'JOB':>6}  {'STATUS':<10} {'USER':<12} {'SCRIPT':<24} {'CREATED':<20} DURATION")
    for job in listing["list"]:
        position = f" #{job['queue_position']}" if job.get("queue_position") else ""
        duration = f"{job['duration_s']:.1f}s" if job.get("duration_s") is not None else "-"
        click.echo(
            f"{job['job']:>6}  {job['status'] + position:<10} {job['user'][:12]:<12} "
            f"{job['script'][:24]:<24} {job['created_at'][:19]:<20} {duration}"
        )
    click.echo(
        f"Page {listing['page']} of {max(1, -(-listing['total'] // listing['size']))} "
        f"({listing['total']} jobs)",
        err=True,
    )


@main.command()
@server_option
@click.argument("job_id", type=int)
@click.option("--follow", is_flag=True, help="Keep printing until the job ends; exit with its outcome.")
def logs(server: str, job_id: int, follow: bool) -> None:
    """Print a job's output."""
    client = _client(server)
    if follow:
        sys.exit(_follow(client, job_id))

    def print_all() -> None:
        offset = 0
        while True:
            page = client.call(
                "GET",
                f"/ajax-api/2.0/mlflow/train/jobs/{job_id}/logs",
                params={"offset": offset, "limit": 10000},
            )
            for record in page["lines"]:
                click.echo(record["line"], err=record["stream"] == "stderr", nl=not record.get("partial"))
            if len(page["lines"]) < 10000:
                return
            offset = page["next_offset"]

    _run(print_all)


@main.command()
@server_option
@click.argument("job_id", type=int)
def cancel(server: str, job_id: int) -> None:
    """Cancel a job (a finished job stays as it is)."""
    job = _run(lambda: _client(server).cancel(job_id))
    click.echo(
        f"Job {job_id}: {job['status']}" + (" (stopping)" if job["status"] == JobStatus.RUNNING else "")
    )


# -- parameter sweeps ---------------------------------------------------------------------------

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")


def _sweep_value(text: str) -> str | int | float | bool:
    """A value as written on the command line: an integer or a number when it reads as one."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _sweep_params(pairs: tuple[str, ...], is_random: bool) -> dict[str, Any]:
    """``lr=0.1,0.01`` (grid: the values; random: a choice among them) or, with --trials,
    ``lr=loguniform:1e-4:1e-1``, ``dropout=uniform:0:0.5``, ``layers=int:2:8``, ``batch=choice:32,64``."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, separator, spec = pair.partition("=")
        if not separator or not name or not spec:
            raise click.UsageError(f"--param takes name=values, not {pair!r}.")
        kind, colon, rest = spec.partition(":")
        if colon and kind in DISTRIBUTIONS:
            if not is_random:
                raise click.UsageError(f"--param {name}: {kind}:... draws at random; give --trials N too.")
            if kind == "choice":
                params[name] = {"distribution": kind, "values": [_sweep_value(v) for v in rest.split(",")]}
                continue
            low, colon, high = rest.partition(":")
            bounds = [_sweep_value(low), _sweep_value(high)]
            if not colon or not all(isinstance(b, int | float) for b in bounds):
                raise click.UsageError(f"--param {name}: {kind} takes {kind}:LOW:HIGH, not {spec!r}.")
            params[name] = {"distribution": kind, "low": bounds[0], "high": bounds[1]}
            continue
        values = [_sweep_value(v) for v in spec.split(",")]
        params[name] = {"distribution": "choice", "values": values} if is_random else values
    if not params:
        raise click.UsageError("Give at least one --param to sweep over.")
    return params


@main.command()
@server_option
@click.argument("script", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=SPEC",
    help="Grid: lr=0.1,0.01 (every combination runs). With --trials: loguniform:1e-4:1e-1, "
    "uniform:0:0.5, int:2:8 or choice:32,64 (repeatable).",
)
@click.option("--trials", type=click.IntRange(1), help="Draw this many trials at random instead of a grid.")
@click.option("--seed", type=click.IntRange(0), help="Random draws: the same seed draws the same trials.")
@click.option("--metric", help="The metric that ranks the trials (its latest value).")
@click.option("--goal", type=click.Choice(["min", "max"]), default="min", show_default=True)
@click.option("--experiment", help="MLflow experiment name (default: <you>/<script name>).")
@click.option("--name", help="The sweep's name (its parent run's).")
@click.option("--arg", "args", multiple=True, help="An extra command-line argument for every trial.")
@click.option("--entrypoint", help="For archives: the script to run (default train.py).")
@click.option(
    "--timeout", "timeout_s", type=click.IntRange(min=1), help="Each trial's time limit in seconds."
)
@click.option("--gpus", type=click.IntRange(min=0), default=0, help="GPUs each trial needs.")
@click.option(
    "--follow", is_flag=True, help="Print the trials' progress until all end; exit 0 if all succeeded."
)
def sweep(
    server: str,
    script: Path,
    params: tuple[str, ...],
    trials: int | None,
    seed: int | None,
    metric: str | None,
    goal: str,
    experiment: str | None,
    name: str | None,
    args: tuple[str, ...],
    entrypoint: str | None,
    timeout_s: int | None,
    gpus: int,
    follow: bool,
) -> None:
    """Upload SCRIPT and run it once per combination of params (a grid), or --trials times with
    params drawn at random; each trial is a job and a child run of the sweep's MLflow run."""
    space = _sweep_params(params, trials is not None)  # a usage mistake is reported before uploading
    client = _client(server)
    if script.is_dir():
        script = _pack(script)
    size = script.stat().st_size
    with click.progressbar(
        length=size, label=f"Uploading {script.name}", file=sys.stderr, show_pos=False
    ) as bar:
        uploaded = _run(lambda: client.upload(script, entrypoint, on_read=lambda n: bar.update(min(n, size))))
    body: dict[str, Any] = {
        "script_id": uploaded["script"],
        "strategy": "random" if trials is not None else "grid",
        "params": space,
        "goal": goal,
        "args": list(args),
        "gpus": gpus,
    }
    optional = {
        "trials": trials,
        "seed": seed,
        "metric": metric,
        "experiment_name": experiment,
        "name": name,
        "timeout_s": timeout_s,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    created = _run(lambda: client.sweep(**body))
    seeded = f" (seed {created['seed']})" if created.get("seed") is not None else ""
    click.echo(
        f"Sweep {created['sweep']} {created['name']}: {created['trials']} trials{seeded}, "
        f"run {created['run_id']} in experiment {created['experiment_id']}",
        err=follow,
    )
    if follow:
        sys.exit(_run(lambda: _follow_sweep(client, created["sweep"])))


def _follow_sweep(client: Client, sweep_id: int) -> int:
    """Print each trial's status change with the count done, then the ranking; 0 if all succeeded."""
    changes = client.follow_changes()
    next(changes)  # the stream is open: a change from now on is not missed by the read below
    state = client.get_sweep(sweep_id)
    trials = {t["job"]["job"]: t["job"] for t in state["list"]}
    shown: dict[int, str] = {}

    def report() -> bool:
        for trial in state["list"]:
            job = trial["job"]
            if trial["superseded_by"] is None and shown.get(job["job"]) != job["status"]:
                shown[job["job"]] = job["status"]
                params = " ".join(f"{k}={v}" for k, v in job["params"].items())
                progress = f"[{state['done']} of {state['trials']} done]"
                click.echo(f"Trial {job['job']} ({params}): {job['status']}  {progress}", err=True)
        return bool(state["done"] >= state["trials"])

    try:
        done = report()
        for event in () if done else changes:
            if event["type"] == EventType.STATUS and event["job_id"] in trials:
                state = client.get_sweep(sweep_id)
                trials = {t["job"]["job"]: t["job"] for t in state["list"]}
                if report():
                    break
            elif event["type"] == EventType.DELETED and event["job_id"] in trials:
                click.echo(f"Sweep {sweep_id}: trial {event['job_id']} was deleted.", err=True)
                return 1
    finally:
        changes.close()  # the stream's connection
    metric = state.get("metric")
    click.echo(f"{'RANK':>4}  {'JOB':>6}  {'STATUS':<10} {(metric or 'VALUE')[:16]:>16}  PARAMS")
    for trial in state["list"]:
        if trial["superseded_by"] is not None:
            continue
        job = trial["job"]
        value = "-" if trial["value"] is None else f"{trial['value']:.6g}"
        params = " ".join(f"{k}={v}" for k, v in job["params"].items())
        click.echo(f"{trial['rank']:>4}  {job['job']:>6}  {job['status']:<10} {value:>16}  {params}")
    succeeded = state["counts"].get(JobStatus.SUCCEEDED.value, 0) == state["trials"]
    click.echo(f"Sweep {sweep_id}: {state['done']} of {state['trials']} done", err=True)
    return 0 if succeeded else 1


if __name__ == "__main__":
    main()
