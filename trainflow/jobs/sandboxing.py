"""What a job may touch and use: its sandbox's policy and its limits, from the settings.

:mod:`trainflow.runner.sandbox` builds the sandbox from the policy made here and
:mod:`trainflow.runner.enforcement` holds the limits; docs/SECURITY.md says what both allow.
Whether a sandbox can be built is found once per process and logged in one line; without one
(and without the operator's ``TRAINFLOW_JOB_SANDBOX=off``) only admins run jobs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from pathlib import Path
from typing import Any

from trainflow.accounts.credentials import Principal
from trainflow.errors import PermissionDenied
from trainflow.jobs.models import Job
from trainflow.runner.supervisor import CHECKPOINT_DIR

log = logging.getLogger(__name__)


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
    """The folders a job writes; its checkpoint folder (kept across a retried job's attempts) is
    made here if need be, since the sandbox binds every one of them."""
    (folder / CHECKPOINT_DIR).mkdir(exist_ok=True)
    return [str(folder / name) for name in ("work", "output", "tmp", "home", CHECKPOINT_DIR)]


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
    policy["tcp"] = None if settings.job_network.strip().lower() == "open" else server_ports(settings)
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


def server_ports(settings: Any) -> list[int]:
    """The TCP ports a job may connect to under TRAINFLOW_JOB_NETWORK=server: the server's own,
    and the one in TRAINFLOW_PUBLIC_URL (a proxy in front of several hosts) when it differs."""
    from urllib.parse import urlsplit

    ports = {settings.port}
    if settings.public_url:
        public = urlsplit(settings.public_url)
        ports.add(public.port or (443 if public.scheme == "https" else 80))
    return sorted(ports)
