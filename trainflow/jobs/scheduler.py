"""The scheduler: starts queued jobs when slots and GPUs are free, and records how jobs end.

Exactly one runs per data directory (in `trainflow server`, the only or first process). It
works from the database and what its executor (``trainflow.jobs.executors``) observes, so a
new one picks up where a killed one left off: on start it looks at every job marked RUNNING,
keeps watching those still running, records the end of those that finished meanwhile, and
marks LOST the ones that vanished without recording an exit. A job is claimed with a
conditional UPDATE before the executor starts it, so no job starts twice.

The local executor's supervisors announce state changes with a datagram on a local socket;
the scheduler also observes running jobs once a second in case a datagram was missed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import or_, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from trainflow.db import db, utcnow
from trainflow.errors import is_disk_full
from trainflow.events.bus import describe as describe_bus
from trainflow.events.bus import private_folder, run_folder
from trainflow.events.record import add_change, record_status
from trainflow.housekeeping import has_room_to_start
from trainflow.jobs import hints, hosts, retries, sandboxing, service
from trainflow.jobs.executors import Executor, Exit, Launch, State, Watched
from trainflow.jobs.executors.local import LocalExecutor
from trainflow.jobs.models import Job, JobStatus
from trainflow.runner.limits import REASONS as LIMIT_REASONS
from trainflow.runner.supervisor import STORAGE_REASONS
from trainflow.scripts import service as scripts
from trainflow.scripts.models import Script
from trainflow.scripts.shared import shared_files

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import CursorResult

    from trainflow.settings import Settings

log = logging.getLogger(__name__)
POLL_S = 1.0
EXTENSION = "trainflow.scheduler"
RAY_EXECUTOR = "trainflow.ray_executor"  # a process without the scheduler cancels Ray jobs with it
# PostgreSQL advisory lock held by the one scheduler (of all hosts) starting jobs this round:
# the concurrency, per-user and GPU limits count every host's jobs. ("tf-sched" in ASCII.)
START_LOCK_KEY = 0x74662D7363686564


def notify_socket_path(settings: Settings) -> Path:
    """Where the scheduler listens: beside the bus's sockets, the same path for every process."""
    return run_folder(settings) / "notify.sock"


class JobScheduler:
    """Decides which queued job starts next and records how jobs end; the executor runs them."""

    def __init__(self, app: Flask, settings: Settings, executor: Executor | None = None) -> None:
        self.app = app
        self.settings = settings
        self.notify_path = notify_socket_path(settings) if hasattr(socket, "AF_UNIX") else None
        self.executor: Executor = executor or make_executor(app, settings, self.notify_path)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socket: socket.socket | None = None
        self._is_short_of_room = False  # queued jobs wait for disk space (said once per spell)
        self._cancels_sent: set[int] = set()  # jobs whose cancel was passed to the executor
        self._heartbeat: hosts.Heartbeat | None = None
        self._running_here: set[int] = set()  # this host's RUNNING jobs, as of the last round
        self._silent_since: datetime | None = None  # this host's last heartbeat before it started
        self._waiting_for_store: set[int] = set()  # queued jobs whose script the shared store holds back

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        log.info("%s", self.executor.open())
        self._start_heartbeat()
        if self.notify_path is not None:
            self._socket = _bind(self.notify_path)
            self._threads.append(threading.Thread(target=self._listen, name="job-notify", daemon=True))
        self._threads.append(threading.Thread(target=self._loop, name="job-scheduler", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._heartbeat is not None:
            self._heartbeat.stop()
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
        self._observe_running()
        self._start_queued()
        self._stop_jobs_taken_over()  # last: the jobs it just started are among those it watches

    # -- watching -----------------------------------------------------------------------------

    def _is_mine(self) -> ColumnElement[bool]:
        """Jobs this scheduler's executor runs (and those claimed before jobs named their runner)."""
        return or_(Job.runner == self.executor.name, Job.runner.is_(None))

    def _observe_running(self) -> None:
        running = db.session.scalars(
            select(Job).where(Job.status == JobStatus.RUNNING.value, self._is_mine())
        ).all()
        self._pass_on_cancels(running)
        observations = self.executor.observe(
            [Watched(job.id, job.supervisor_pid, job.reported_status, job.attempt) for job in running]
        )
        for job, seen in zip(running, observations, strict=True):
            if seen.exit is not None:
                self._record_exit(job, seen.exit)
            elif seen.state is State.VANISHED:
                self._record_vanished(job, seen.was_cancelled, seen.message)
            elif seen.pid and job.pid != seen.pid:
                job.pid = seen.pid
                db.session.commit()

    def _pass_on_cancels(self, running: Sequence[Job]) -> None:
        """Cancels asked on any host (``Job.cancel_requested``) reach this host's executor once."""
        self._cancels_sent &= {job.id for job in running}
        for job in running:
            if job.cancel_requested and job.id not in self._cancels_sent:
                self.executor.cancel(job.id, job.supervisor_pid)
                self._cancels_sent.add(job.id)

    def _record_vanished(self, job: Job, was_cancelled: bool, message: str | None = None) -> None:
        """A job's process ended without a word: cancelled while it was starting up, or lost."""
        if was_cancelled:
            service.finish(db.session(), job, JobStatus.CANCELLED, exit_code=None, reason="Cancelled.")
            return
        self._end_attempt(
            job,
            JobStatus.LOST,
            exit_code=None,
            # The executor's own words where it has some (a cluster's account of the job).
            reason=message
            or "Its supervisor process ended without recording how the job ended "
            "(the machine restarted, or the process was killed).",
        )
        log.warning("Job %d: LOST", job.id)

    def _record_exit(self, job: Job, ended: Exit) -> None:
        reason = ended.reason
        code, signal_number = ended.exit_code, ended.signal
        if reason == "cancelled":
            outcome, text = JobStatus.CANCELLED, "Cancelled."
        elif reason == "timed_out":
            timeout = sandboxing.job_timeout(job, self.settings)
            outcome, text = JobStatus.TIMED_OUT, f"Ran past its timeout of {timeout} s."
        elif reason in STORAGE_REASONS:
            # The disk holding the data directory stayed full (its supervisor says so).
            outcome, text = JobStatus.FAILED, ended.message or "The disk holding the data is full."
        elif reason in LIMIT_REASONS:
            # The runner names the limit: "memory limit of 4096 MB exceeded".
            outcome, text = JobStatus.FAILED, ended.message or f"Exceeded a limit ({reason})."
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
            hint = self._missing_module_hint(job, ended)
            text += f" {hint}" if hint else ""
        if self._end_attempt(
            job,
            outcome,
            exit_code=code,
            reason=text,
            finished_at=ended.finished_at,
            output_dir=ended.outputs,
            lines=ended.lines,
        ):
            log.info("Job %d: %s (%s)", job.id, outcome.value, text or "exit code 0")

    def _missing_module_hint(self, job: Job, ended: Exit) -> str | None:
        """How to declare the package a job failed to import: in a single file's inline
        metadata, or in an archive's requirements.txt."""
        if not ended.missing_module:
            return None
        script = db.session.get(Script, job.script_id)
        return hints.missing_module_hint(ended.missing_module, script is None or script.kind == "python")

    def _end_attempt(
        self,
        job: Job,
        outcome: JobStatus,
        *,
        exit_code: int | None,
        reason: str | None,
        finished_at: float | None = None,
        output_dir: Path | None = None,
        lines: int | None = None,
    ) -> bool:
        """An attempt ended: the job is queued again if it may be retried, else it ends."""
        if retries.retry(
            self.app,
            db.session(),
            job,
            outcome,
            exit_code=exit_code,
            reason=reason,
            finished_at=finished_at,
            lines=lines,
            output_dir=output_dir,
        ):
            self._wake.set()  # its next attempt may start at once
            return False
        return service.finish(
            db.session(),
            job,
            outcome,
            exit_code=exit_code,
            reason=reason,
            finished_at=finished_at,
            output_dir=output_dir,
        )

    # -- hosts that die -----------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        """Say this host lives, now and every few seconds (PostgreSQL: where hosts share a database)."""
        with self.app.app_context():
            try:
                if not hosts.is_supported(db.session()):
                    return
                self._silent_since = hosts.beat(db.session(), self.executor.name)
            except Exception:
                log.exception("Could not record this host's first heartbeat; its thread tries again")
            finally:
                db.session.remove()
        interval = hosts.interval_for(self.settings.host_dead_seconds)
        self._heartbeat = hosts.Heartbeat(self.app, self.executor.name, interval)
        self._heartbeat.start()

    def _decide_for_dead_hosts(self) -> None:
        """RUNNING jobs of hosts silent for ``TRAINFLOW_HOST_DEAD_SECONDS``: LOST, and retried only
        where the job asked for retries (its next attempt runs wherever the next start puts it).

        Under the start lock, so one scheduler of all decides; ``service.finish`` records each
        end once (a host coming back at that moment records nothing over it). A job whose
        supervisor still reports is left RUNNING; one whose supervisor reported its exit through
        the ingest ends as it said, not LOST.
        """
        session = db.session()
        if not hosts.is_supported(session):
            return
        dead_s = self.settings.host_dead_seconds
        others = set(
            session.scalars(
                select(Job.runner)
                .distinct()
                .where(Job.status == JobStatus.RUNNING.value, Job.runner != self.executor.name)
            ).all()
        )
        silent = hosts.silent(session, {name for name in others if name}, dead_s)
        if not silent:
            return
        now = hosts.now(session)
        orphaned = session.scalars(
            select(Job).where(Job.status == JobStatus.RUNNING.value, Job.runner.in_(silent)).order_by(Job.id)
        ).all()
        for job in orphaned:
            reported_status = job.reported_status or {}
            if reported_status.get("state") == "exited":
                # Its supervisor said how it ended before its host fell silent: that is its end
                # (its output folder stayed on that host, so no artifacts are logged).
                self._record_exit(job, Exit.from_status(reported_status))
                continue
            reported = hosts.last_report(job)
            if reported is not None and (now - reported).total_seconds() < dead_s:
                continue  # its supervisor still reports: the job lives, whatever its host
            seen = silent[job.runner or ""]
            reason = (
                f"Its host ({job.runner}) stopped: silent since {seen:%Y-%m-%d %H:%M:%S} UTC, over "
                f"{dead_s:g} s, and the job no longer reported."
            )
            if not retries.may_retry(job, JobStatus.LOST):
                reason += " It was not run again."
            if self._end_attempt(job, JobStatus.LOST, exit_code=None, reason=reason):
                log.warning("Job %d: LOST with its host %s", job.id, job.runner)

    def _stop_jobs_taken_over(self) -> None:
        """This host's jobs that another recorded LOST while this one was silent: stop them here.

        A host that was away (killed and restarted, or paused) finds them no longer RUNNING, so
        it never observes them again; a supervisor of theirs that still runs is asked to end.
        """
        session = db.session()
        if not hosts.is_supported(session):
            return  # one host (SQLite): no other to take its jobs over
        running = set(
            session.scalars(
                select(Job.id).where(Job.status == JobStatus.RUNNING.value, Job.runner == self.executor.name)
            ).all()
        )
        left, self._running_here = self._running_here - running, running
        since, self._silent_since = self._silent_since, None
        if not left and since is None:
            return
        lost = select(Job).where(Job.runner == self.executor.name, Job.status == JobStatus.LOST.value)
        condition: ColumnElement[bool] = Job.id.in_(left)
        if since is not None:
            # Restarted: those recorded since its last heartbeat (clocks may differ a little).
            margin = timedelta(seconds=self.settings.host_dead_seconds)
            condition = or_(condition, Job.finished_at >= since - margin)
        for job in session.scalars(lost.where(condition)).all():
            if self.executor.cancel(job.id, job.supervisor_pid):
                log.warning("Job %d: recorded LOST by another host while this one was away; stopped", job.id)
        session.rollback()

    # -- starting -----------------------------------------------------------------------------

    def _start_queued(self) -> None:
        with self._start_lock() as is_ours:
            if is_ours:
                self._decide_for_dead_hosts()
                self._start_queued_within_limits()

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[bool]:
        """Whether this scheduler starts jobs this round: one of all hosts' at a time.

        A lock on a connection of its own, tried rather than waited for: a round that finds it
        taken starts nothing, and the next one (a second later) tries again.
        """
        if db.engine.dialect.name != "postgresql":
            yield True  # SQLite: one host
            return
        with db.engine.connect() as connection:
            is_ours = bool(
                connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": START_LOCK_KEY})
            )
            try:
                yield is_ours
            finally:
                if is_ours:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": START_LOCK_KEY})
                connection.rollback()

    def _start_queued_within_limits(self) -> None:
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
            if not self._has_files(job):
                continue  # the shared store is away: the job waits, QUEUED
            if not self._claim(job, gpu_ids):
                continue
            self._launch(job, gpu_ids)
            slots -= 1
            per_user[job.owner_id] += 1
            busy_gpus.update(gpu_ids)

    def _has_files(self, job: Job) -> bool:
        """Whether this host has the job's script, fetching it first (shared mode) if need be.

        Only a store that does not answer keeps the job queued; any other failure is the job's
        own, and its launch records it.
        """
        script = db.session.get(Script, job.script_id)
        if script is None or shared_files(self.app) is None:
            return True
        # Any other failure is recorded as the job's own by _launch, which tries again.
        with contextlib.suppress(Exception):
            try:
                self._script_files(script)
            except scripts.SharedStoreUnavailable:
                if job.id not in self._waiting_for_store:  # said once per job
                    log.warning("Job %d waits: the shared store holding its script is away", job.id)
                self._waiting_for_store.add(job.id)
                return False
        self._waiting_for_store.discard(job.id)
        return True

    def _script_files(self, script: Script) -> Path:
        """The script's files on this host: in shared mode, fetched from the shared store first
        when it was uploaded elsewhere (checked as an upload is; once per host and script)."""
        stored = scripts.StoredScript.of(script)
        return scripts.ensure_here(self.settings, stored, shared_files(self.app)) / "files"

    def _claim(self, job: Job, gpu_ids: list[str]) -> bool:
        result = db.session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.QUEUED.value)
            .values(
                status=JobStatus.RUNNING.value,
                started_at=job.started_at or utcnow(),  # a retry keeps the first start
                gpu_ids=",".join(gpu_ids) if self.settings.gpu_ids else None,
                runner=self.executor.name,
            )
            .execution_options(synchronize_session=False)
        )
        claimed = cast("CursorResult[Any]", result).rowcount  # an UPDATE's result has a rowcount
        if claimed:
            retries.mark_running(db.session(), job.id, job.attempt)
        change = (
            add_change(db.session(), job.id, job.owner_id, status=JobStatus.RUNNING.value)
            if claimed
            else None
        )
        db.session.commit()
        db.session.refresh(job)
        if claimed:
            record_status(self.app, job, change)
        return bool(claimed)

    def _launch(self, job: Job, gpu_ids: list[str]) -> None:
        from trainflow.jobs.ingest import ingest_url
        from trainflow.jobs.tokens import issue_job_token, issue_supervisor_token

        try:
            script = db.session.get(Script, job.script_id)
            assert script is not None
            launch = Launch(
                job_id=job.id,
                run_id=job.run_id,
                experiment_id=job.experiment_id,
                files=self._script_files(script),
                argv=service.job_argv(job, script.entrypoint),
                has_requirements=script.has_requirements,
                user_env=dict(job.env),
                token=issue_job_token(self.app, job),
                tracking_uri=self.settings.jobs_tracking_url,
                gpu_ids=",".join(gpu_ids) if self.settings.gpu_ids else None,
                timeout_s=sandboxing.job_timeout(job, self.settings),
                owner_is_admin=_is_admin(job.owner_id),
                supervisor_token=issue_supervisor_token(self.app, job),
                ingest_url=ingest_url(self.settings.jobs_tracking_url, job.id),
                attempt=job.attempt,
                log_from=retries.log_from(db.session(), job.id, job.attempt),
            )
            job.supervisor_pid = self.executor.start(launch)
            db.session.commit()
            _set_run_running(job.run_id)
            if job.max_retries:
                retries.tag_attempt(job)
            log.info("Job %d: started (supervisor %d)", job.id, job.supervisor_pid)
        except Exception as e:
            log.exception("Job %d: could not start", job.id)
            why = "the disk holding the data directory is full" if is_disk_full(e) else e
            reason = f"Could not start: {why}"
            service.finish(db.session(), job, JobStatus.FAILED, exit_code=None, reason=reason)


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


def make_executor(app: Flask, settings: Settings, notify_path: Path | None = None) -> Executor:
    """The executor ``TRAINFLOW_EXECUTOR`` names: this host's supervisors, or a Ray cluster."""
    if settings.executor == "ray":
        from trainflow.jobs import tickets
        from trainflow.jobs.executors.ray import RayExecutor

        return RayExecutor(settings, tickets.issuer(app, settings.ray_ticket_seconds))
    return LocalExecutor(settings, notify_path, describe_bus(settings))


def executor_for(app: Flask) -> Executor:
    """The running scheduler's executor, or one that can cancel and remove this host's jobs."""
    scheduler: JobScheduler | None = app.extensions.get(EXTENSION)
    if scheduler is not None:
        return scheduler.executor
    settings = app.config["TRAINFLOW"]
    if settings.executor != "ray":
        return LocalExecutor(settings)
    # One per app: it keeps a connection pool to Ray.
    executor: Executor | None = app.extensions.get(RAY_EXECUTOR)
    if executor is None:
        executor = app.extensions[RAY_EXECUTOR] = make_executor(app, settings)
    return executor


def start_scheduler(app: Flask) -> JobScheduler:
    scheduler = JobScheduler(app, app.config["TRAINFLOW"])
    app.extensions[EXTENSION] = scheduler
    scheduler.start()
    return scheduler
