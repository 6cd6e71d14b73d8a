"""Job operations: submit, find, list, cancel, delete, and recording how a job ended."""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import logging
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trainflow.accounts.credentials import Principal
from trainflow.accounts.models import User
from trainflow.db import get_by_id, utcnow
from trainflow.errors import BadRequest, Conflict, NotFound, PermissionDenied
from trainflow.events.record import announce_deleted, record_status
from trainflow.jobs.models import MLFLOW_RUN_STATUS, Job, JobStatus
from trainflow.jobs.quota import check_jobs_quota
from trainflow.jobs.schemas import SubmitJobRequest
from trainflow.scripts import service as scripts
from trainflow.scripts.models import Script

log = logging.getLogger(__name__)
PASSED_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")  # from the server's environment, and no more


def submit(session: Session, principal: Principal, request: SubmitJobRequest, authorizer: Any) -> Job:
    """Check the request, create the job's MLflow run, and queue the job."""
    ensure_may_run_jobs(current_app.config["TRAINFLOW"], principal)
    script = scripts.get_script(session, principal, request.script_id)
    check_jobs_quota(session, current_app.config["TRAINFLOW"], principal, script)
    from mlflow.entities import Param, RunStatus, RunTag
    from mlflow.server.handlers import _get_tracking_store

    store = _get_tracking_store()
    experiment_name = request.experiment_name or f"{principal.username}/{Path(script.filename).stem}"
    experiment_id = _experiment_for(store, principal, experiment_name, authorizer)
    run = store.create_run(
        experiment_id=experiment_id,
        user_id=principal.username,
        start_time=int(time.time() * 1000),
        tags=[
            RunTag("mlflow.source.name", script.entrypoint),
            RunTag("mlflow.source.type", "JOB"),
            RunTag("mlflow.user", principal.username),
        ],
        run_name=request.run_name,
    )
    run_id = run.info.run_id
    try:
        if request.params:
            store.log_batch(
                run_id, metrics=[], params=[Param(k, str(v)) for k, v in request.params.items()], tags=[]
            )
        store.update_run_info(run_id, RunStatus.SCHEDULED, end_time=None, run_name=None)
        job = Job(
            owner_id=principal.user_id,
            script_id=script.id,
            experiment_id=experiment_id,
            run_id=run_id,
            params=request.params,
            args=request.args,
            env=request.env,
            timeout_s=request.timeout_s,
            gpus=request.gpus,
            status=JobStatus.QUEUED.value,
        )
        session.add(job)
        session.commit()
        record_status(current_app, job)
    except BaseException:
        # No job was queued: the run it would have used ends as failed, not left scheduled.
        session.rollback()
        with contextlib.suppress(Exception):
            store.update_run_info(run_id, RunStatus.FAILED, end_time=int(time.time() * 1000), run_name=None)
        raise
    with contextlib.suppress(Exception):
        store.set_tag(run_id, RunTag("trainflow.job_id", str(job.id)))
    return job


def _experiment_for(store: Any, principal: Principal, name: str, authorizer: Any) -> str:
    from mlflow.exceptions import MlflowException

    from trainflow.experiment_names import check_experiment_name, may_use_name
    from trainflow.mlflow_permissions import Permission

    experiment = store.get_experiment_by_name(name)
    if experiment is None:
        check_experiment_name(principal, name)  # no one creates a name in another user's namespace
        try:
            experiment_id = str(store.create_experiment(name))
        except MlflowException as e:
            raise BadRequest(f"Cannot create experiment {name!r}: {e.message}") from None
        authorizer.grant(principal.user_id, "experiment", experiment_id, Permission.MANAGE)
        return experiment_id
    experiment_id = str(experiment.experiment_id)
    if experiment.lifecycle_stage != "active":
        raise BadRequest(f"Experiment {name!r} is deleted; restore it or choose another name.")
    if not principal.is_admin and not authorizer.permission(
        principal.user_id, "experiment", experiment_id
    ).allows("update"):
        raise PermissionDenied(
            f"You may not add runs to experiment {name!r}; choose another experiment_name"
            + (
                " (someone else created it before names were reserved per user; an admin can rename it)."
                if may_use_name(principal.username, False, name)
                else "."
            )
        )
    return experiment_id


def get_job(session: Session, principal: Principal, job_id: int) -> Job:
    """The job if it exists and is the caller's (or the caller is an admin); 404 otherwise."""
    job = get_by_id(session, Job, job_id)
    if job is None or not (principal.is_admin or job.owner_id == principal.user_id):
        raise NotFound(f"No job {job_id}; GET /ajax-api/2.0/mlflow/train/jobs lists yours.")
    return job


def list_jobs(
    session: Session, principal: Principal, page: int, size: int, status: str | None, username: str | None
) -> tuple[int, list[Job]]:
    query = select(Job)
    if not principal.is_admin:
        query = query.where(Job.owner_id == principal.user_id)
    if status:
        query = query.where(Job.status == status)
    if username:
        from trainflow.accounts.service import find_user

        user = find_user(session, username)
        query = query.where(Job.owner_id == (user.id if user else -1))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    jobs = session.scalars(query.order_by(Job.id.desc()).offset((page - 1) * size).limit(size)).all()
    return total, list(jobs)


def queue_positions(session: Session) -> dict[int, int]:
    """1-based positions of queued jobs, first in first out."""
    ids = session.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED.value).order_by(Job.id)).all()
    return {job_id: index + 1 for index, job_id in enumerate(ids)}


def usernames(session: Session, jobs: list[Job]) -> dict[int, str]:
    owner_ids = {job.owner_id for job in jobs}
    rows = (
        session.execute(select(User.id, User.username).where(User.id.in_(owner_ids))).all()
        if owner_ids
        else []
    )
    return {row[0]: row[1] for row in rows}


def script_names(session: Session, jobs: list[Job]) -> dict[int, str]:
    ids = {job.script_id for job in jobs}
    rows = session.execute(select(Script.id, Script.filename).where(Script.id.in_(ids))).all() if ids else []
    return {row[0]: row[1] for row in rows}


def ensure_deletable(job: Job) -> None:
    if not JobStatus(job.status).is_finished:
        raise Conflict(f"Job {job.id} is {job.status}; cancel it first.")


def ensure_script_unused(session: Session, script_id: int) -> None:
    count = session.scalar(select(func.count()).select_from(Job).where(Job.script_id == script_id)) or 0
    if count:
        raise Conflict(f"Script {script_id} is used by {count} job(s); delete those jobs first.")


def finish(
    session: Session,
    job: Job,
    status: JobStatus,
    *,
    exit_code: int | None,
    reason: str | None,
    finished_at: float | None = None,
    output_dir: Path | None = None,
) -> bool:
    """Record the end of a job and of its MLflow run, once; return whether this call did it."""
    updated = session.execute(
        Job.__table__.update()
        .where(Job.id == job.id, Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
        .values(
            status=status.value,
            exit_code=exit_code,
            reason=reason,
            finished_at=datetime.fromtimestamp(finished_at, UTC) if finished_at else utcnow(),
        )
    ).rowcount
    session.commit()
    if not updated:
        return False
    from trainflow.accounts.auth import forget_job_tokens

    # Before the artifacts are copied (which can take seconds): a cached token of the job must
    # not keep writing to its run once the job has ended.
    forget_job_tokens(current_app)
    session.refresh(job)
    _end_run(job, status, output_dir)
    record_status(current_app, job)  # after the run's end: a follower that sees `end` finds it ended
    return True


def _end_run(job: Job, status: JobStatus, output_dir: Path | None) -> None:
    from mlflow.entities import RunStatus
    from mlflow.server.handlers import _get_tracking_store

    store = _get_tracking_store()
    try:
        if output_dir is not None and output_dir.is_dir() and any(output_dir.iterdir()):
            from trainflow.runner.sandbox import remove_links

            # The job wrote this folder: a link in it would have the server copy what it names.
            if removed := remove_links(str(output_dir)):
                log.warning("Job %d: left out of its artifacts, not plain files: %s", job.id, removed[:10])
            _log_artifacts(store, job.run_id, output_dir)
        end = int((job.finished_at or utcnow()).timestamp() * 1000)
        store.update_run_info(
            job.run_id, RunStatus.from_string(MLFLOW_RUN_STATUS[status]), end_time=end, run_name=None
        )
    except Exception:
        log.exception("Job %d: could not finish its MLflow run %s", job.id, job.run_id)


def _log_artifacts(store: Any, run_id: str, output_dir: Path) -> None:
    """Copy the job's output folder into the run's artifacts (through MLflow's artifact store)."""
    from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts

    run = store.get_run(run_id)
    root = run.info.artifact_uri  # mlflow-artifacts:/<experiment>/<run>/artifacts
    prefix = root.split(":", 1)[1].lstrip("/") if root.startswith("mlflow-artifacts:") else None
    if prefix is None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(root).log_artifacts(str(output_dir))
        return
    _get_artifact_repo_mlflow_artifacts().log_artifacts(str(output_dir), artifact_path=prefix)


def job_argv(job: Job, entrypoint: str) -> list[str]:
    argv = [sys.executable, "-u", entrypoint]
    for key, value in job.params.items():
        argv += [f"--{key}", str(value)]
    return argv + list(job.args)


# From the server's environment to the setup step, and no more: proxies and certificates decide
# how pip reaches an index, never what it installs. No PIP_* variable: pip runs --isolated, with
# the server's index settings (TRAINFLOW_PIP_*) on its command line.
SETUP_PASSED_ENV = (
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "SYSTEMROOT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
VENV_KEY_FORMAT = "2"
# requirements.txt options that only name an index or choose among what it offers; any other
# option (-r, -c, -e, -f, ...) or a requirement given as a path may read the job's own files.
_INDEX_OPTIONS = (
    "-i",
    "--index-url",
    "--extra-index-url",
    "--trusted-host",
    "--pre",
    "--prefer-binary",
    "--only-binary",
    "--no-binary",
    "--require-hashes",
)


def job_limits(settings: Any) -> dict[str, Any]:
    """Each job's limits (TRAINFLOW_JOB_*), for its supervisor."""
    from trainflow.runner.limits import Limits

    return Limits(
        memory_mb=settings.job_memory_mb,
        processes=settings.job_max_processes,
        open_files=settings.job_open_files,
        disk_mb=settings.job_disk_mb,
        cgroup=settings.job_cgroup,
    ).to_json()


def remove_leftover_cgroups(settings: Any, job_id: int) -> None:
    """Kill whatever is left of a job whose supervisor vanished, by its cgroup, and remove it."""
    from trainflow.runner.enforcement import remove_leftover_cgroups
    from trainflow.runner.limits import Limits

    with contextlib.suppress(OSError):
        remove_leftover_cgroups(Limits.from_json(job_limits(settings)), settings.jobs_dir, job_id)


def describe_limits(settings: Any) -> str:
    """Each job's limits and the mechanism that holds each here, for the start-up log."""
    from trainflow.runner.enforcement import describe_enforcement
    from trainflow.runner.limits import Limits

    return describe_enforcement(Limits.from_json(job_limits(settings)))


def job_timeout(job: Job, settings: Any) -> int | None:
    """The job's timeout: its own, never past TRAINFLOW_JOB_MAX_SECONDS, which is also the default."""
    most = settings.job_max_seconds or None
    if job.timeout_s is None:
        return most
    return min(job.timeout_s, most) if most else job.timeout_s


def venv_constraints() -> list[str]:
    """What holds a listed MLflow to the server's version."""
    import mlflow

    version = mlflow.__version__
    return [f"mlflow=={version}", f"mlflow-skinny=={version}", f"mlflow-tracing=={version}"]


def pip_index_args(settings: Any) -> list[str]:
    """The server's pip options for a venv build: what TRAINFLOW_PIP_* say, or else what the
    server's own pip configuration says of where packages come from."""
    if settings.pip_index_url or settings.pip_extra_index_url or settings.pip_trusted_host:
        args = ["--index-url", settings.pip_index_url] if settings.pip_index_url else []
        args += [a for url in settings.pip_extra_index_url.split() for a in ("--extra-index-url", url)]
        args += [a for host in settings.pip_trusted_host.split() for a in ("--trusted-host", host)]
        return args
    return list(_server_pip_options())


_PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host", "cert", "constraint", "no-index")


@functools.cache
def _server_pip_options() -> tuple[str, ...]:
    return tuple(server_pip_options(dict(os.environ), _pip_config_files(os.environ)))


def _pip_config_files(environ: Any) -> list[str]:
    """pip's configuration files, lowest precedence first (global, user, PIP_CONFIG_FILE)."""
    xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [os.path.join(d, "pip", "pip.conf") for d in reversed(xdg_dirs.split(":")) if d]
    files.append("/etc/pip.conf")
    home = os.path.expanduser("~")
    xdg_home = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files += [os.path.join(home, ".pip", "pip.conf"), os.path.join(xdg_home, "pip", "pip.conf")]
    if environ.get("PIP_CONFIG_FILE"):
        files.append(environ["PIP_CONFIG_FILE"])
    return files


def server_pip_options(environ: dict[str, str], config_files: list[str]) -> list[str]:
    """The server's own pip configuration (its pip.conf files, then its PIP_* variables) as
    command-line options: only where packages come from (index, wheel folders, trusted hosts,
    certificate, constraints). Local paths become file:// URLs, which the build's sandbox shows."""
    import configparser

    values: dict[str, str] = {}
    if environ.get("PIP_CONFIG_FILE") != os.devnull:
        for path in config_files:
            parser = configparser.RawConfigParser()
            with contextlib.suppress(configparser.Error, OSError, UnicodeDecodeError):
                parser.read(path, encoding="utf-8")
            for section in ("global", "install"):
                if parser.has_section(section):
                    for key, value in parser.items(section):
                        values[key.replace("_", "-")] = value
    for key in _PIP_KEYS:
        env = "PIP_" + key.upper().replace("-", "_")
        if environ.get(env):
            values[key] = environ[env]
    options: list[str] = []
    for key in _PIP_KEYS:
        value = values.get(key, "").strip()
        if not value:
            continue
        if key == "no-index":
            if value.lower() in {"1", "true", "yes", "on"}:
                options.append("--no-index")
        elif key in {"index-url", "cert"}:
            options += [f"--{key}", value]
        else:
            for word in value.split():
                options += [f"--{key}", _as_url(word) if key in {"find-links", "constraint"} else word]
    return options


def _as_url(word: str) -> str:
    return word if "://" in word else Path(os.path.abspath(os.path.expanduser(word))).as_uri()


def reads_local_files(requirements: str) -> bool:
    """Whether the requirements may install from the job's own files (``-e .``, ``./pkg``...)."""
    for raw in requirements.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            option = line.split("=", 1)[0].split()[0]
            if option not in _INDEX_OPTIONS:
                return True
        elif line.startswith((".", "/", "~", "file:")) or "/" in line or "\\" in line:
            return True
    return False


def _folder_digest(folder: Path) -> str:
    """A digest of every file under ``folder``: names and contents."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        digest.update(str(path.relative_to(folder)).encode("utf-8", "surrogateescape") + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def venv_key(settings: Any, requirements: Path) -> str:
    """The cache key of a job's environment: everything that decides what pip installs.

    The requirements file, the constraints, the server's index settings, this Python (version,
    implementation, installation) and the platform; and, when the requirements read the job's
    own files, every file of the job's copy of its script. Not the job's ``env``: it never
    reaches pip.
    """
    import hashlib
    import platform
    import sysconfig

    text = requirements.read_bytes()
    digest = hashlib.sha256()

    def add(label: str, value: str | bytes) -> None:
        data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        digest.update(f"{label}:{len(data)}:".encode() + data)

    add("format", VENV_KEY_FORMAT)
    add("requirements", text)
    add("constraints", "\n".join(venv_constraints()))
    add("pip", "\0".join(pip_index_args(settings)))
    add("python", f"{sys.version}|{sys.implementation.cache_tag}|{sys.base_prefix}")
    add("executable", os.path.realpath(sys.executable))
    add("platform", f"{sysconfig.get_platform()}|{platform.libc_ver()}")
    if reads_local_files(text.decode("utf-8", "replace")):
        add("project", _folder_digest(requirements.parent))
    return digest.hexdigest()[:32]


def venv_setup(settings: Any, requirements: Path) -> tuple[Path, list[list[str]]]:
    """The cached environment for this requirements.txt, and the step that makes sure it exists."""
    from trainflow.jobs.venv import server_site_packages

    venv = settings.resolved_data_dir / "venvs" / venv_key(settings, requirements)
    step = [
        sys.executable,
        "-m",
        "trainflow.jobs.venv",
        str(requirements),
        str(venv),
        server_site_packages(),
        *venv_constraints(),
        "--pip",
        *pip_index_args(settings),
    ]
    return venv, [step]


def setup_env(job_env: dict[str, str], server_env: dict[str, str]) -> dict[str, str]:
    """The setup step's environment: a fixed allow-list, nothing of the job's own ``env``.

    PATH, HOME and TMPDIR are the job's (trainflow sets them, in the job's folder); locale,
    proxies and certificates come from the server; no pip configuration file is read.
    """
    env = {k: v for k, v in server_env.items() if k in SETUP_PASSED_ENV}
    env.update({k: job_env[k] for k in ("PATH", "HOME", "TMPDIR") if k in job_env})
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHONNOUSERSITE="1")
    return env


def job_env(
    job: Job, *, base_env: dict[str, str], tracking_uri: str, token: str, folder: Path, gpu_ids: str | None
) -> dict[str, str]:
    """The job's whole environment: an allow-list, never the server's secrets."""
    env = {k: v for k, v in base_env.items() if k in PASSED_ENV}
    env.update(job.env)
    env.update(
        PATH=str(Path(sys.executable).parent) + ":/usr/local/bin:/usr/bin:/bin",
        HOME=str(folder / "home"),
        TMPDIR=str(folder / "tmp"),
        PYTHONUNBUFFERED="1",
        PYTHONIOENCODING="utf-8",
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_RUN_ID=job.run_id,
        MLFLOW_EXPERIMENT_ID=job.experiment_id,
        MLFLOW_TRACKING_TOKEN=token,
        TRAINFLOW_OUTPUT_DIR=str(folder / "output"),
        TRAINFLOW_JOB_ID=str(job.id),
    )
    if gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu_ids
    return env


def purge_owner(session: Session, settings: Any, executor: Any, user_id: int) -> None:
    """Before a user is deleted: end their running jobs, delete their jobs and scripts and files.

    Done here, in order, rather than by cascading deletes: jobs hold their scripts with
    RESTRICT, which PostgreSQL checks row by row during a cascade.
    """
    from sqlalchemy import delete

    jobs = session.scalars(select(Job).where(Job.owner_id == user_id)).all()
    running = {job.id for job in jobs if job.status == JobStatus.RUNNING.value}
    for job in jobs:
        if job.id in running:
            executor.cancel(job.id, job.supervisor_pid)
    scripts_owned = session.scalars(select(Script).where(Script.owner_id == user_id)).all()
    session.execute(delete(Job).where(Job.owner_id == user_id))
    session.execute(delete(Script).where(Script.owner_id == user_id))
    session.commit()
    for job in jobs:
        if job.id not in running:  # a running job's supervisor still writes in its folder
            executor.remove(job.id)
        announce_deleted(current_app, job.id, user_id)
    for script in scripts_owned:
        shutil.rmtree(scripts.files_dir(settings, script).parent, ignore_errors=True)


# -- the job sandbox's policy (trainflow.runner.sandbox builds it; docs/SECURITY.md) -------------

SANDBOX_MODES = ("auto", "required", "off")
_probes: dict[tuple[Any, ...], dict[str, Any]] = {}  # bubblewrap tried, per process
_states: dict[tuple[Any, ...], dict[str, Any]] = {}  # and what that means for each data directory


def sandbox_identity(settings: Any) -> dict[str, int] | None:
    """Whom jobs run as: an unprivileged uid when the server is root, else the server's own."""
    if os.geteuid() != 0:
        return None
    return {"uid": settings.job_uid, "gid": settings.job_gid}


def sandbox_state(settings: Any) -> dict[str, Any]:
    """Whether jobs can be sandboxed here, found once per process and logged in one line.

    Bubblewrap is tried once per process (its answer is the same for every data directory);
    what a job would see is checked against these settings' data directory. Raises ConfigError
    for an unknown mode, and in mode ``required`` when no sandbox can be built (the server
    then refuses to start).
    """
    from trainflow.errors import ConfigError
    from trainflow.runner import sandbox

    if settings.job_network.strip().lower() not in ("server", "open"):
        raise ConfigError(f"TRAINFLOW_JOB_NETWORK must be server or open, not {settings.job_network!r}.")
    mode = settings.job_sandbox.strip().lower()
    if mode not in SANDBOX_MODES:
        raise ConfigError(
            f"TRAINFLOW_JOB_SANDBOX must be auto, required or off, not {settings.job_sandbox!r}."
        )
    identity = sandbox_identity(settings)
    key = (
        mode,
        settings.bwrap,
        json.dumps(identity),
        str(settings.resolved_data_dir),
        settings.job_read_paths,
    )
    state = _states.get(key)
    if state is None:
        state = {**_sandbox_state(settings, mode, identity), "mode": mode}
        if mode == "off":
            log.warning(
                "Jobs are NOT sandboxed (TRAINFLOW_JOB_SANDBOX=off): every user's jobs run as the "
                "server's user and can read its data directory, database and key."
            )
        elif state["is_available"]:
            log.info("%s", sandbox.describe(state))
        elif mode == "auto":
            log.warning(
                "%s. Jobs run only for admins, unsandboxed; set TRAINFLOW_JOB_SANDBOX=off to "
                "run them for everyone anyway (see docs/SECURITY.md).",
                sandbox.describe(state).capitalize(),
            )
        _states[key] = state
    if mode == "required" and not state["is_available"]:
        raise ConfigError(
            f"TRAINFLOW_JOB_SANDBOX=required, but {sandbox.describe(state)}. Install bubblewrap "
            "(`make install` as root) or see docs/SECURITY.md."
        )
    return state


def _sandbox_state(settings: Any, mode: str, identity: dict[str, int] | None) -> dict[str, Any]:
    from trainflow.runner import sandbox

    if mode == "off":
        return {"is_available": False, "reason": "TRAINFLOW_JOB_SANDBOX=off"}
    probe_key = (settings.bwrap, json.dumps(identity))
    if probe_key not in _probes:
        _probes[probe_key] = sandbox.probe({"bwrap": settings.bwrap, "identity": identity, "tcp": []})
    state = _probes[probe_key]
    if state["is_available"]:
        try:
            _base_policy(settings, None)
            sandbox.check_hidden(sandbox.runtime_paths(), [str(settings.resolved_data_dir)])
        except sandbox.SandboxError as e:
            return {**state, "is_available": False, "reason": str(e)}
    return state


def is_sandboxed(settings: Any) -> bool:
    """Whether jobs run in a sandbox (False when the operator turned it off, or none can be built)."""
    return bool(sandbox_state(settings)["is_available"])


def ensure_may_run_jobs(settings: Any, principal: Principal) -> None:
    """Without a sandbox (and without the operator's explicit opt-out) only admins run jobs."""
    state = sandbox_state(settings)
    if state["is_available"] or state["mode"] == "off" or principal.is_admin:
        return
    raise PermissionDenied(
        f"This server cannot sandbox jobs ({state.get('reason')}), so only admins may run them. "
        "Ask an operator to install bubblewrap (see docs/SECURITY.md)."
    )


def _job_folders(folder: Path) -> list[str]:
    return [str(folder / name) for name in ("work", "output", "tmp", "home")]


def _base_policy(settings: Any, gpu_ids: str | None) -> dict[str, Any]:
    from trainflow.runner import sandbox

    extra = [path for path in settings.job_read_paths.split(":") if path.strip()]
    devices = sorted(glob.glob("/dev/nvidia*")) if gpu_ids else []
    policy = {
        "bwrap": settings.bwrap,
        "identity": sandbox_identity(settings),
        "read": [os.path.abspath(path) for path in extra],
        "write": [],
        "binds": [],
        "devices": devices,
        "hidden": [str(settings.resolved_data_dir)],
        "require_landlock": False,
    }
    sandbox.check_hidden(policy["read"], policy["hidden"])
    return policy


def job_policy(settings: Any, folder: Path, venv: Path | None, gpu_ids: str | None) -> dict[str, Any]:
    """What a job may touch: its folders, its venv (read-only), the server's port."""
    policy = _base_policy(settings, gpu_ids)
    policy["write"] = _job_folders(folder)
    if venv is not None:
        policy["read"].append(str(venv))
    # None: Landlock leaves TCP alone (TRAINFLOW_JOB_NETWORK=open).
    policy["tcp"] = None if settings.job_network.strip().lower() == "open" else [settings.port]
    return policy


def setup_policy(
    settings: Any, folder: Path, venv: Path, setup: list[list[str]], setup_env: dict[str, str]
) -> tuple[dict[str, Any], list[list[str]]]:
    """The venv build's sandbox, and what the supervisor moves into place once it succeeded.

    The build (pip runs the packages' own code) sees the venv cache only as a folder of the
    job's own, shown where the cache is: it cannot touch other environments. A finished
    environment for the same key is shown read-only, so the build finds it and stops. It may
    read the local indexes (``file://``) and certificates it is given, and connect to ports
    80 and 443 and those of the index and proxy URLs it is given.
    """
    from trainflow.runner.sandbox import remove_tree

    policy = _base_policy(settings, None)
    staging = folder / "venv-build"
    remove_tree(str(staging))  # what a build froze is read-only
    staging.mkdir()
    venv.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    policy["write"] = _job_folders(folder)
    policy["binds"] = [[str(staging), str(venv.parent), "rw"]]
    if venv.is_dir() and not venv.is_symlink():
        policy["binds"].append([str(venv), str(venv), "ro"])
    words = [word for step in setup for word in step]
    words += [word for value in setup_env.values() for word in value.split()]
    policy["read"] += _local_paths(words, settings.resolved_data_dir)
    policy["tcp"] = sorted({80, 443, *_url_ports(words)})
    return policy, [[str(staging / venv.name), str(venv)]]


def _local_paths(words: list[str], data_dir: Path) -> list[str]:
    """Local indexes (``file://``) and certificate files named among the words."""
    paths = set()
    for word in words:
        path = word.removeprefix("file://") if word.startswith(("file:///", "/etc/ssl/")) else None
        if path and os.path.basename(path.rstrip("/")) == "simple":
            path = os.path.dirname(path.rstrip("/"))  # a mirror's files lie beside its simple/ index
        if path and os.path.exists(path) and not Path(path).resolve().is_relative_to(data_dir):
            paths.add(os.path.abspath(path))
    return sorted(paths)


def _url_ports(words: list[str]) -> set[int]:
    """TCP ports of the http(s) URLs among the words (indexes, proxies)."""
    from urllib.parse import urlsplit

    ports: set[int] = set()
    for word in words:
        with contextlib.suppress(ValueError):
            parts = urlsplit(word)
            if parts.scheme in {"http", "https"} and parts.port:
                ports.add(parts.port)
    return ports


def grant_folders(settings: Any, folder: Path) -> None:
    """Give the job's own folders to the uid it runs as (the server is root)."""
    from trainflow.runner import sandbox

    identity = sandbox_identity(settings)
    if identity is not None:
        paths = _job_folders(folder)
        if (folder / "venv-build").is_dir():
            paths.append(str(folder / "venv-build"))
        sandbox.chown_tree(paths, identity["uid"], identity["gid"])
