"""The scheduler: starts queued jobs when slots and GPUs are free, and records how jobs end.

Exactly one runs per data directory (in `trainflow server`, the only or first process). It
works from the database and each job's folder, so a new one picks up where a killed one left
off: on start it looks at every job marked RUNNING, keeps watching those whose supervisor is
still alive, records the end of those that finished meanwhile, and marks LOST the ones whose
supervisor vanished without recording an exit. A job is claimed with a conditional UPDATE
before its supervisor starts, so no job starts twice.

Supervisors announce state changes with a datagram on a local socket; the scheduler also
looks at running jobs' status files once a second in case a datagram was missed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from trainflow.db import db, utcnow
from trainflow.errors import is_disk_full
from trainflow.events.bus import describe as describe_bus
from trainflow.events.bus import private_folder, run_folder
from trainflow.events.record import add_change, record_status
from trainflow.housekeeping import has_room_to_start
from trainflow.jobs import environments, sandboxing, service
from trainflow.jobs.local import LaunchSpec, LocalExecutor
from trainflow.jobs.models import Job, JobStatus
from trainflow.jobs.venv import python_of
from trainflow.runner.limits import REASONS as LIMIT_REASONS
from trainflow.runner.supervisor import STORAGE_REASONS
from trainflow.scripts import service as scripts
from trainflow.scripts.models import Script

if TYPE_CHECKING:
    from flask import Flask

    from trainflow.settings import Settings

log = logging.getLogger(__name__)
POLL_S = 1.0
EXTENSION = "trainflow.scheduler"


def notify_socket_path(settings: Settings) -> Path:
    """Where the scheduler listens: beside the bus's sockets, the same path for every process."""
    return run_folder(settings) / "notify.sock"


class JobScheduler:
    def __init__(self, app: Flask, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.notify_path = notify_socket_path(settings) if hasattr(socket, "AF_UNIX") else None
        self.executor = LocalExecutor(settings.jobs_dir, self.notify_path, describe_bus(settings))
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socket: socket.socket | None = None
        self._is_short_of_room = False  # queued jobs wait for disk space (said once per spell)

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        self.settings.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sandboxing.sandbox_state(self.settings)  # says once, at start-up, whether jobs are sandboxed
        log.info("%s", sandboxing.describe_limits(self.settings))
        if self.notify_path is not None:
            self._socket = _bind(self.notify_path)
            self._threads.append(threading.Thread(target=self._listen, name="job-notify", daemon=True))
        self._threads.append(threading.Thread(target=self._loop, name="job-scheduler", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def wake(self) -> None:
        self._wake.set()

    def _listen(self) -> None:
        assert self._socket is not None
        while not self._stop.is_set():
            try:
                self._socket.recv(4096)
            except OSError:
                return
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self.app.app_context():
                try:
                    self.tick()
                except Exception:
                    log.exception("The job scheduler failed a round; it will try again")
                finally:
                    db.session.remove()
            self._wake.wait(timeout=POLL_S)
            self._wake.clear()

    def tick(self) -> None:
        self.executor.reap()
        self._observe_running()
        self._start_queued()

    # -- watching -----------------------------------------------------------------------------

    def _observe_running(self) -> None:
        for job in db.session.scalars(select(Job).where(Job.status == JobStatus.RUNNING.value)).all():
            status = self.executor.status(job.id)
            if status and status.get("state") == "exited":
                self._record_exit(job, status)
            elif not self.executor.is_supervising(job.id, job.supervisor_pid):
                status = self.executor.status(job.id)  # it may have written its exit just now
                if status and status.get("state") == "exited":
                    self._record_exit(job, status)
                    continue
                self.executor.kill_orphan((status or {}).get("pid"))
                sandboxing.remove_leftover_cgroups(self.settings, job.id)  # what left its group too
                self._record_vanished(job)
            elif status and status.get("pid") and job.pid != status["pid"]:
                job.pid = status["pid"]
                db.session.commit()

    def _record_vanished(self, job: Job) -> None:
        """A supervisor ended without a word: cancelled while it was starting up, or lost."""
        if self.executor.was_cancelled(job.id):
            service.finish(db.session, job, JobStatus.CANCELLED, exit_code=None, reason="Cancelled.")
            return
        service.finish(
            db.session,
            job,
            JobStatus.LOST,
            exit_code=None,
            reason="Its supervisor process ended without recording how the job ended "
            "(the machine restarted, or the process was killed).",
        )
        log.warning("Job %d: LOST", job.id)

    def _record_exit(self, job: Job, status: dict[str, Any]) -> None:
        reason = status.get("reason")
        code, signal_number = status.get("exit_code"), status.get("signal")
        if reason == "cancelled":
            outcome, text = JobStatus.CANCELLED, "Cancelled."
        elif reason == "timed_out":
            timeout = sandboxing.job_timeout(job, self.settings)
            outcome, text = JobStatus.TIMED_OUT, f"Ran past its timeout of {timeout} s."
        elif reason in STORAGE_REASONS:
            # The disk holding the data directory stayed full (its supervisor says so).
            outcome, text = JobStatus.FAILED, status.get("message") or "The disk holding the data is full."
        elif reason in LIMIT_REASONS:
            # status.json names the limit: "memory limit of 4096 MB exceeded".
            outcome, text = JobStatus.FAILED, status.get("message") or f"Exceeded a limit ({reason})."
        elif reason == "setup_failed":
            outcome, text = (
                JobStatus.FAILED,
                "Its environment could not be set up (requirements.txt); see its log.",
            )
        elif reason == "start_failed":
            outcome, text = JobStatus.FAILED, "The job's process could not start; see its log."
        elif code == 0:
            outcome, text = JobStatus.SUCCEEDED, None
        elif signal_number:
            outcome, text = JobStatus.FAILED, f"Killed by signal {signal_number}."
        else:
            outcome, text = JobStatus.FAILED, f"Exited with code {code}."
        if service.finish(
            db.session,
            job,
            outcome,
            exit_code=code,
            reason=text,
            finished_at=status.get("finished_at"),
            output_dir=self.executor.output_dir(job.id),
        ):
            log.info("Job %d: %s (%s)", job.id, outcome.value, text or "exit code 0")

    # -- starting -----------------------------------------------------------------------------

    def _start_queued(self) -> None:
        running = db.session.scalars(select(Job).where(Job.status == JobStatus.RUNNING.value)).all()
        if len(running) >= self.settings.max_concurrent_jobs:
            return
        per_user = Counter(job.owner_id for job in running)
        busy_gpus = {gpu for job in running for gpu in (job.gpu_ids or "").split(",") if gpu}
        slots = self.settings.max_concurrent_jobs - len(running)
        queued = db.session.scalars(
            select(Job).where(Job.status == JobStatus.QUEUED.value).order_by(Job.id)
        ).all()
        if queued and not has_room_to_start(self.settings):
            # A job started now could not even record its start; it waits, QUEUED, for room.
            if not self._is_short_of_room:
                log.warning("Queued jobs wait: the disk holding the data directory is (nearly) full")
            self._is_short_of_room = True
            return
        self._is_short_of_room = False
        for job in queued:
            if slots <= 0:
                return
            limit = self.settings.max_jobs_per_user
            if limit and per_user[job.owner_id] >= limit:
                continue  # this user's turn comes when one of theirs ends
            free = [gpu for gpu in self.settings.gpu_ids if gpu not in busy_gpus]
            if job.gpus > len(free):
                continue
            gpu_ids = free[: job.gpus]
            if not self._claim(job, gpu_ids):
                continue
            self._launch(job, gpu_ids)
            slots -= 1
            per_user[job.owner_id] += 1
            busy_gpus.update(gpu_ids)

    def _claim(self, job: Job, gpu_ids: list[str]) -> bool:
        claimed = db.session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.QUEUED.value)
            .values(
                status=JobStatus.RUNNING.value,
                started_at=utcnow(),
                gpu_ids=",".join(gpu_ids) if self.settings.gpu_ids else None,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        change = (
            add_change(db.session, job.id, job.owner_id, status=JobStatus.RUNNING.value) if claimed else None
        )
        db.session.commit()
        db.session.refresh(job)
        if claimed:
            record_status(self.app, job, change)
        return bool(claimed)

    def _launch(self, job: Job, gpu_ids: list[str]) -> None:
        from trainflow.jobs.tokens import issue_job_token

        try:
            script = db.session.get(Script, job.script_id)
            assert script is not None
            folder = self.executor.prepare(job.id, scripts.files_dir(self.settings, script))
            env = environments.job_env(
                job,
                base_env=dict(os.environ),
                tracking_uri=self.settings.local_url,
                token=issue_job_token(self.app, job),
                folder=folder,
                gpu_ids=",".join(gpu_ids) if self.settings.gpu_ids else None,
            )
            argv = service.job_argv(job, script.entrypoint)
            setup: list[list[str]] = []
            venv = None
            if script.has_requirements:
                venv, setup = environments.venv_setup(self.settings, folder / "work" / "requirements.txt")
                argv[0] = str(python_of(venv))
            setup_env = environments.setup_env(env, dict(os.environ))
            policy = setup_policy = None
            publish: list[list[str]] = []
            if sandboxing.is_sandboxed(self.settings):
                gpus = env.get("CUDA_VISIBLE_DEVICES")
                policy = sandboxing.job_policy(self.settings, folder, venv, gpus)
                if setup and venv is not None:
                    setup_policy, publish = sandboxing.setup_policy(
                        self.settings, folder, venv, setup, setup_env
                    )
                sandboxing.grant_folders(self.settings, folder)
            elif sandboxing.sandbox_state(self.settings)["mode"] != "off" and not _is_admin(job.owner_id):
                # Queued while a sandbox could be built, or by a user since made admin no longer.
                raise RuntimeError(
                    "this server cannot sandbox jobs now, and only admins' jobs run unsandboxed"
                )
            spec = LaunchSpec(
                job.id,
                argv,
                env,
                sandboxing.job_timeout(job, self.settings),
                float(self.settings.job_grace_seconds),
                setup,
                setup_env,
                sandbox=policy,
                setup_sandbox=setup_policy,
                setup_publish=publish,
                limits=sandboxing.job_limits(self.settings),
                disk_full_s=float(self.settings.job_disk_full_seconds),
            )
            job.supervisor_pid = self.executor.start(spec)
            db.session.commit()
            _set_run_running(job.run_id)
            log.info("Job %d: started (supervisor %d)", job.id, job.supervisor_pid)
        except Exception as e:
            log.exception("Job %d: could not start", job.id)
            why = "the disk holding the data directory is full" if is_disk_full(e) else e
            reason = f"Could not start: {why}"
            service.finish(db.session, job, JobStatus.FAILED, exit_code=None, reason=reason)


def _is_admin(user_id: int) -> bool:
    from trainflow.accounts.models import User

    user = db.session.get(User, user_id)
    return user is not None and user.is_admin


def _set_run_running(run_id: str) -> None:
    from trainflow.tracking.runs import set_run_status

    try:
        set_run_status(run_id, "RUNNING")
    except Exception:
        log.exception("Could not mark run %s RUNNING", run_id)


def _bind(path: Path) -> socket.socket:
    private_folder(path.parent)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    return sock


def wake_scheduler(app: Flask) -> None:
    """Tell the scheduler something changed: directly in its process, by datagram elsewhere."""
    scheduler: JobScheduler | None = app.extensions.get(EXTENSION)
    if scheduler is not None:
        scheduler.wake()
        return
    path = notify_socket_path(app.config["TRAINFLOW"])
    if path.exists() and hasattr(socket, "AF_UNIX"):
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(json.dumps({"event": "wake"}).encode(), str(path))


def executor_for(app: Flask) -> LocalExecutor:
    """The running scheduler's executor, or one that can read job folders and signal supervisors."""
    scheduler: JobScheduler | None = app.extensions.get(EXTENSION)
    if scheduler is not None:
        return scheduler.executor
    return LocalExecutor(app.config["TRAINFLOW"].jobs_dir, None)


def start_scheduler(app: Flask) -> JobScheduler:
    scheduler = JobScheduler(app, app.config["TRAINFLOW"])
    app.extensions[EXTENSION] = scheduler
    scheduler.start()
    return scheduler
