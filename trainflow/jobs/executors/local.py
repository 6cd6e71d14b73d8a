"""The local executor: each job under its own supervisor process on this machine.

Everything it knows of a job is in the job's folder (``JOBS_DIR/<id>``): the supervisor
writes ``status.json`` and the job's log there, so a restarted server reads where its jobs
stand. It builds what a job runs in here too: the folder, the environment, the virtualenv
steps and the sandbox policy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trainflow
from trainflow.jobs import environments, sandboxing
from trainflow.jobs.executors.base import Exit, Launch, Observation, State, Watched
from trainflow.jobs.venv import python_of
from trainflow.runner.supervisor import CANCEL_MARKER, CHECKPOINT_DIR, RESERVE

PACKAGE_ROOT = Path(trainflow.__file__).resolve().parent.parent  # the folder holding trainflow/

if TYPE_CHECKING:
    from trainflow.settings import Settings


@dataclass(frozen=True)
class LaunchSpec:
    """What to run for one job; written to the job's folder as spec.json."""

    job_id: int
    argv: list[str]
    env: dict[str, str]
    timeout_s: int | None
    grace_s: float
    setup: list[list[str]] = field(default_factory=list)  # steps run before the job (its venv)
    setup_env: dict[str, str] | None = None
    # Sandbox policies (trainflow.runner.sandbox) of the job and of its setup steps; None: none.
    sandbox: dict[str, Any] | None = None
    setup_sandbox: dict[str, Any] | None = None
    setup_publish: list[list[str]] = field(default_factory=list)  # [built, place] after setup
    limits: dict[str, Any] | None = None  # trainflow.runner.limits.Limits, as JSON
    disk_full_s: float = 120.0  # how long the job may wait for room on a full disk before it ends
    # {"url", "token"}: the supervisor sends the job's records to the servers' ingest instead
    # of writing its event log (shared mode); None: it writes them in the job's folder.
    ingest: dict[str, Any] | None = None
    attempt: int = 1  # a retry's number: written in its status, so an earlier one's is not taken for it
    log_from: int = 0  # lines earlier attempts wrote: the supervisor numbers on from there


class LocalExecutor:
    """Starts, cancels and observes supervisors; everything it knows is in each job's folder."""

    def __init__(
        self, settings: Settings, notify_path: Path | None = None, bus: dict[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self.jobs_dir = settings.jobs_dir
        # This machine and data directory: two servers on one host with their own data
        # directories each run (and may only observe) their own supervisors.
        digest = hashlib.sha256(str(self.jobs_dir).encode()).hexdigest()[:12]
        self.name = f"local:{socket.gethostname()}:{digest}"
        self.notify_path = notify_path  # where supervisors say that a job's state changed
        self.bus = bus  # where the supervisor announces new events
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def open(self) -> str:
        self.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sandboxing.sandbox_state(self.settings)  # says once, at start-up, whether jobs are sandboxed
        return sandboxing.describe_limits(self.settings)

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    def work_dir(self, job_id: int) -> Path:
        return self.job_dir(job_id) / "work"

    def output_dir(self, job_id: int) -> Path:
        return self.job_dir(job_id) / "output"

    def prepare(self, job_id: int, files: Path) -> Path:
        """The job's folder, with a fresh copy of its script's files to run in.

        The folder may exist already: it holds the job's event log from the moment it was queued,
        and for a retry the earlier attempts' log, status and checkpoint folder. The checkpoint
        folder is kept (it is what a retry resumes from); the last attempt's status goes, so that
        nothing takes it for this attempt's end.
        """
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in ("work", "output", "tmp", "home"):
            shutil.rmtree(folder / name, ignore_errors=True)
        for name in ("status.json", RESERVE):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        shutil.copytree(files, folder / "work")
        for name in ("output", "tmp", "home"):
            (folder / name).mkdir()
        (folder / CHECKPOINT_DIR).mkdir(exist_ok=True)
        return folder

    def start(self, launch: Launch) -> int:
        """Prepare the job's folder, environment and sandbox, and start its supervisor.

        Returns the supervisor's pid. Raises if the job cannot start (the scheduler records
        why): a sandbox required but not available to a non-admin, a full disk...
        """
        folder = self.prepare(launch.job_id, launch.files)
        env = environments.job_env(launch, base_env=dict(os.environ), folder=folder)
        argv = list(launch.argv)
        setup: list[list[str]] = []
        venv = None
        if launch.has_requirements:
            venv, setup = environments.venv_setup(self.settings, folder / "work" / "requirements.txt")
            argv[0] = str(python_of(venv))
        setup_env = environments.setup_env(env, dict(os.environ))
        policy = setup_policy = None
        publish: list[list[str]] = []
        if sandboxing.is_sandboxed(self.settings):
            policy = sandboxing.job_policy(self.settings, folder, venv, env.get("CUDA_VISIBLE_DEVICES"))
            if setup and venv is not None:
                setup_policy, publish = sandboxing.setup_policy(self.settings, folder, venv, setup, setup_env)
            sandboxing.grant_folders(self.settings, folder)
        elif sandboxing.sandbox_state(self.settings)["mode"] != "off" and not launch.owner_is_admin:
            # Queued while a sandbox could be built, or by a user since made admin no longer.
            raise RuntimeError("this server cannot sandbox jobs now, and only admins' jobs run unsandboxed")
        return self.start_supervisor(
            LaunchSpec(
                launch.job_id,
                argv,
                env,
                launch.timeout_s,
                float(self.settings.job_grace_seconds),
                setup,
                setup_env,
                sandbox=policy,
                setup_sandbox=setup_policy,
                setup_publish=publish,
                limits=sandboxing.job_limits(self.settings),
                disk_full_s=float(self.settings.job_disk_full_seconds),
                ingest=_ingest_of(self.settings, launch),
                attempt=launch.attempt,
                log_from=launch.log_from,
            )
        )

    def start_supervisor(self, spec: LaunchSpec) -> int:
        """Launch the supervisor in a session of its own; return its pid."""
        folder = self.job_dir(spec.job_id)
        document = {
            "job": spec.job_id,
            "argv": spec.argv,
            "cwd": str(folder / "work"),
            "env": spec.env,
            "timeout_s": spec.timeout_s,
            "grace_s": spec.grace_s,
            "setup": spec.setup,
            "setup_env": spec.setup_env or spec.env,
            "sandbox": spec.sandbox,
            "setup_sandbox": spec.setup_sandbox,
            "setup_publish": spec.setup_publish,
            "limits": spec.limits,
            "disk_full_s": spec.disk_full_s,
            "notify": str(self.notify_path) if self.notify_path else None,
            "bus": self.bus,
            # trainflow.runner.sysmetrics: how often the job's CPU, memory and GPUs are sampled
            "system_metrics": {
                "every_s": self.settings.system_metrics_seconds,
                "nvml": self.settings.nvml_library,
            },
            "attempt": spec.attempt,
            "log_from": spec.log_from,
        }
        if spec.ingest is not None:
            document["ingest"] = spec.ingest
        # The spec holds the job's token: only the server's user may read it.
        fd = os.open(folder / "spec.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f)
        with open(folder / "supervisor.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "trainflow.runner.supervisor", str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=_supervisor_env(),
            )
        self._children[process.pid] = process
        return process.pid

    def reap(self) -> int:
        """Collect exited supervisors we started (after a restart, init collects them).

        Returns how many of those are still running.
        """
        for pid, process in list(self._children.items()):
            if process.poll() is not None:
                del self._children[pid]
        return len(self._children)

    def observe(self, jobs: Sequence[Watched]) -> list[Observation]:
        self.reap()
        return [self._observe(job.job_id, job.handle, job.attempt) for job in jobs]

    def _observe(self, job_id: int, supervisor_pid: int | None, attempt: int = 1) -> Observation:
        status = self.status(job_id, attempt)
        if status and status.get("state") == "exited":
            return self._exited(job_id, status)
        if not self.is_supervising(job_id, supervisor_pid):
            status = self.status(job_id, attempt)  # it may have written its exit just now
            if status and status.get("state") == "exited":
                return self._exited(job_id, status)
            self.kill_orphan((status or {}).get("pid"))
            sandboxing.remove_leftover_cgroups(self.settings, job_id)  # what left its group too
            return Observation(job_id, State.VANISHED, was_cancelled=self.was_cancelled(job_id))
        return Observation(job_id, State.RUNNING, pid=(status or {}).get("pid"))

    def _exited(self, job_id: int, status: dict[str, Any]) -> Observation:
        ended = Exit.from_status(status, outputs=self.output_dir(job_id))
        return Observation(job_id, State.EXITED, pid=status.get("pid"), exit=ended)

    def status(self, job_id: int, attempt: int | None = None) -> dict[str, Any] | None:
        """The job's ``status.json``; None if there is none, or it is another attempt's than ``attempt``."""
        try:
            status = json.loads((self.job_dir(job_id) / "status.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        if not isinstance(status, dict):
            return None
        if attempt is not None and status.get("attempt", 1) != attempt:
            return None  # an earlier attempt's end (a server stopped between a claim and a start)
        return status

    def is_supervising(self, job_id: int, pid: int | None) -> bool:
        """Whether ``pid`` is still this job's supervisor (not a reused pid)."""
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():
            with contextlib.suppress(OSError):
                # The exact argument: /jobs/1 must not match the supervisor of /jobs/10.
                return str(self.job_dir(job_id)).encode() in cmdline.read_bytes().split(b"\0")
        return True

    def cancel(self, job_id: int, supervisor_pid: int | None) -> bool:
        """Ask the supervisor to end the job (SIGTERM, then SIGKILL after the grace period).

        The request is written down first, in the job's folder: a job claimed but whose
        supervisor is not started yet finds it and ends before it runs, and a supervisor still
        starting up (before its handler is set) dies of the SIGTERM without a word, so the
        scheduler must know the job was cancelled rather than lost.
        """
        with contextlib.suppress(OSError):
            (self.job_dir(job_id) / CANCEL_MARKER).touch()
        if not self.is_supervising(job_id, supervisor_pid):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor_pid, signal.SIGTERM)  # type: ignore[arg-type]
        return True

    def was_cancelled(self, job_id: int) -> bool:
        """Whether a cancel was asked for this job (see :meth:`cancel`)."""
        return (self.job_dir(job_id) / CANCEL_MARKER).exists()

    def kill_orphan(self, pid: int | None) -> None:
        """End a job whose supervisor vanished, so nothing runs unwatched."""
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def remove(self, job_id: int) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)


def _ingest_of(settings: Settings, launch: Launch) -> dict[str, str] | None:
    """In shared mode the supervisor sends the job's records to the servers, whichever host
    serves its followers; on one machine it writes them in the job's folder itself."""
    if not settings.shared or not launch.ingest_url:
        return None
    ingest: dict[str, Any] = {"url": launch.ingest_url, "token": launch.supervisor_token}
    if launch.attempt > 1:
        ingest["resume"] = True  # the servers hold an earlier attempt's records: number on after them
    return ingest


def _supervisor_env() -> dict[str, str]:
    """The supervisor needs only to find Python and trainflow; it gets nothing else."""
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "LANG", "LC_ALL", "SYSTEMROOT"}}
    env["PYTHONPATH"] = str(PACKAGE_ROOT)
    return env
