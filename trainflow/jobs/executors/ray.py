"""The Ray executor: each job a Ray job, through Ray's Job Submission REST API.

Web hosts need no ``ray`` install: jobs go to the cluster's job-submission address with
``requests`` (``POST /api/jobs/``, ``GET /api/jobs/<id>``, ``POST /api/jobs/<id>/stop``, and the
package upload Ray's SDK does for a local ``working_dir``: ``GET`` then ``PUT
/api/packages/gcs/_ray_pkg_<hash>.zip``).

A job's Ray job runs trainflow's own supervisor, so its output, progress and exit status are
recorded as a local job's are: the entrypoint is ``python -m trainflow.runner.remote --server
URL --job ID --ticket T``, and the runner package travels as a ``py_modules`` package beside the
job's files (its ``working_dir``). Ray's job table (entrypoint, runtime environment, metadata) is
readable by anyone with access to Ray's API, so it holds no secret: the ticket is single-use and
short-lived (:mod:`trainflow.jobs.tickets`), and the remote runner exchanges it for the
supervisor's spec, tokens included.

The submission id is derived from the job (its id and a digest of its run id), so a submit
retried after a timeout finds its own job ("already exists") instead of starting another.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shlex
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

import trainflow
from trainflow.jobs import environments, sandboxing
from trainflow.jobs.executors.base import Exit, Launch, Observation, State, Watched

if TYPE_CHECKING:
    from trainflow.settings import Settings

log = logging.getLogger(__name__)

PACKAGE_ROOT = Path(trainflow.__file__).resolve().parent  # trainflow/
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0  # a submit waits for Ray to place the job; a package upload for its store
STOP_MARGIN_S = 5  # Ray's SIGKILL comes this long after the supervisor's own grace period
ENDED = {"STOPPED", "SUCCEEDED", "FAILED"}
ENDED_GRACE_S = 5.0  # how long a Ray job may have ended before its supervisor's report is missed
# Fixed for every file in a package, so the same files make the same package (and name).
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class RayUnavailable(Exception):
    """Ray's job-submission API did not answer (or answered 5xx): nothing is known."""


class RayRefused(Exception):
    """Ray's job-submission API answered that it will not do what was asked."""


class RayClient:
    """The few calls of Ray's Job Submission REST API trainflow makes; every wait is bounded."""

    def __init__(self, address: str, timeout_s: float = READ_TIMEOUT_S) -> None:
        self.address = address.rstrip("/")
        self.timeout = (CONNECT_TIMEOUT_S, timeout_s)
        self.session = requests.Session()

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, self.address + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as e:
            raise RayUnavailable(f"Ray at {self.address} does not answer: {e.__class__.__name__}") from None
        if response.status_code >= 500 and "already exists" not in response.text:
            raise RayUnavailable(f"Ray at {self.address} answered {response.status_code}: {_tail(response)}")
        return response

    def version(self) -> dict[str, Any]:
        response = self._call("GET", "/api/version")
        if response.status_code != 200:
            raise RayUnavailable(f"{self.address} is no Ray job-submission API ({response.status_code})")
        data: dict[str, Any] = response.json()
        return data

    def upload_package(self, data: bytes) -> str:
        """Store a zip in Ray's package store (unless it is there already); return its URI."""
        name = f"_ray_pkg_{hashlib.sha1(data, usedforsecurity=False).hexdigest()}.zip"
        path = f"/api/packages/gcs/{name}"
        if self._call("GET", path).status_code != 200:  # 200 also pins it for a while
            response = self._call("PUT", path, data=data)
            if response.status_code != 200:
                raise RayRefused(f"Ray refused the package ({response.status_code}): {_tail(response)}")
        return f"gcs://{name}"

    def submit(self, request: dict[str, Any]) -> bool:
        """Submit a job; False if a job with its submission id exists already (a retry)."""
        response = self._call("POST", "/api/jobs/", json=request)
        if response.status_code == 200:
            return True
        if "already exists" in response.text:
            return False
        raise RayRefused(f"Ray refused the job ({response.status_code}): {_tail(response)}")

    def job(self, submission_id: str) -> dict[str, Any] | None:
        """Ray's record of a job; None if Ray knows no such job."""
        response = self._call("GET", f"/api/jobs/{submission_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RayUnavailable(f"Ray answered {response.status_code} for job {submission_id}")
        data: dict[str, Any] = response.json()
        return data

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop a job; False if it is unknown or ended already."""
        response = self._call("POST", f"/api/jobs/{submission_id}/stop")
        if response.status_code != 200:
            return False
        return bool(response.json().get("stopped"))

    def logs(self, submission_id: str) -> str:
        """What the job's entrypoint printed (the remote runner's own lines)."""
        response = self._call("GET", f"/api/jobs/{submission_id}/logs")
        return str(response.json().get("logs", "")) if response.status_code == 200 else ""


def _tail(response: requests.Response) -> str:
    text = response.text.strip().splitlines()
    return text[-1][:500] if text else ""


def zip_folder(folder: Path, prefix: str = "") -> bytes:
    """The files under ``folder`` as a zip, as Ray's packaging makes one: paths relative to it.

    Sorted, with fixed dates, so the same files give the same bytes, and so the same package name.
    Links are left out: a job's files hold none (uploads refuse them).
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not (path.is_file() or (path.is_dir() and not any(path.iterdir()))):
                continue
            name = prefix + path.relative_to(folder).as_posix() + ("/" if path.is_dir() else "")
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.external_attr = (0o40755 if path.is_dir() else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, b"" if path.is_dir() else path.read_bytes())
    return buffer.getvalue()


def runner_package() -> bytes:
    """``trainflow/__init__.py`` and ``trainflow/runner/``: all a Ray node needs to supervise a job."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        files = [PACKAGE_ROOT / "__init__.py", *sorted((PACKAGE_ROOT / "runner").glob("*.py"))]
        for path in files:
            info = zipfile.ZipInfo("trainflow/" + path.relative_to(PACKAGE_ROOT).as_posix(), ZIP_DATE)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def pip_packages(requirements: Path, working_dir: str) -> list[str]:
    """Ray's ``pip`` for a job: its requirements.txt, read where Ray unpacked the job's files.

    Ray names (and reuses) a virtualenv by a digest of this list, not of the file it names, so
    the first line says what decides the install: the file's digest, and the whole package's
    when the file reads the job's own files (``--find-links wheels``, ``./pkg``). pip reads it
    as a comment. Relative paths in the file are pip's to resolve, from the file's folder.
    """
    text = requirements.read_bytes()
    key = hashlib.sha256(text).hexdigest()
    if environments.reads_local_files(text.decode("utf-8", "replace")):
        key += " " + working_dir
    return [f"# trainflow requirements {key}", "-r ${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}/requirements.txt"]


def handle_of(run_id: str) -> int:
    """A job's handle on Ray: 31 bits of its run id's digest (never 0), kept as ``supervisor_pid``."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:4], "big") & 0x7FFFFFFF or 1


def submission_id(job_id: int, handle: int) -> str:
    """The Ray job of a trainflow job: the same for every submit of it, different for any other
    job (another deployment's job with the same id has another run)."""
    return f"trainflow-{job_id}-{handle:08x}"


class RayExecutor:
    """Starts, stops and observes jobs on a Ray cluster; knows nothing but what Ray answers."""

    def __init__(
        self,
        settings: Settings,
        issue_ticket: Callable[[int, dict[str, Any]], str] | None = None,
        client: RayClient | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or RayClient(settings.ray_address)
        self.name = f"ray:{self.client.address}"
        self.issue_ticket = issue_ticket
        self._runner: bytes | None = None  # the runner package, zipped once
        self._stops_pending: dict[int, str] = {}  # job id -> submission id, stops Ray did not get
        self._is_unreachable = False  # said once per spell
        self._ended_at: dict[int, float] = {}  # jobs Ray says ended, unreported: since when

    def open(self) -> str:
        try:
            version = self.client.version().get("ray_version", "?")
        except RayUnavailable as e:
            return f"Jobs run on Ray at {self.client.address}, which does not answer yet ({e})"
        return (
            f"Jobs run on Ray {version} at {self.client.address} (no sandbox on Ray nodes; "
            f"{sandboxing.describe_limits(self.settings)})"
        )

    def start(self, launch: Launch) -> int:
        """Upload the job's files and submit its Ray job; return its handle.

        Raises (the scheduler records the job FAILED) when Ray refuses it or does not answer.
        """
        if self.issue_ticket is None:
            raise RuntimeError("this Ray executor was made without tickets; it can only observe and stop")
        # A retry is a Ray job of its own: the first attempt's submission id is taken.
        handle = handle_of(launch.run_id if launch.attempt == 1 else f"{launch.run_id}#{launch.attempt}")
        sid = submission_id(launch.job_id, handle)
        ticket = self.issue_ticket(launch.job_id, self.supervisor_spec(launch))
        working_dir = self.client.upload_package(zip_folder(launch.files))
        # Asked for at every start, as Ray's SDK does: the look-up pins the package for a while,
        # and Ray deletes a package no job refers to (a job whose runtime env failed let go of it).
        if self._runner is None:
            self._runner = runner_package()
        runner_uri = self.client.upload_package(self._runner)
        request = self.submission(launch, sid, ticket, working_dir, runner_uri)
        self._submit(request)
        self._ended_at.pop(launch.job_id, None)  # an earlier attempt's end is not this one's
        return handle

    def _submit(self, request: dict[str, Any]) -> None:
        """Submit, trying again once after no answer: the same submission id makes a retry safe."""
        for attempt in (1, 2):
            try:
                if not self.client.submit(request):
                    log.info("Ray job %s: submitted already", request["submission_id"])
                return
            except RayUnavailable:
                if attempt == 2:
                    raise
                time.sleep(1.0)

    def supervisor_spec(self, launch: Launch) -> dict[str, Any]:
        """What the remote runner gets for its ticket: the supervisor's spec, less the node's paths."""
        env = {**launch.user_env, **environments.run_env(launch)}
        spec: dict[str, Any] = {
            "job": launch.job_id,
            "argv": list(launch.argv),  # the remote runner puts the node's Python first
            "env": env,
            "timeout_s": launch.timeout_s,
            "grace_s": float(self.settings.job_grace_seconds),
            "limits": sandboxing.job_limits(self.settings),
            "disk_full_s": float(self.settings.job_disk_full_seconds),
            "system_metrics": {
                "every_s": self.settings.system_metrics_seconds,
                "nvml": self.settings.nvml_library,
            },
            "attempt": launch.attempt,
            "log_from": launch.log_from,
        }
        # The supervisor sends its records (lines, progress, its end) to the servers' ingest
        # endpoint, with a token of its own, where the Launch carries one.
        if launch.supervisor_token and launch.ingest_url:
            spec["ingest"] = {"url": launch.ingest_url, "token": launch.supervisor_token}
            if launch.attempt > 1:
                spec["ingest"]["resume"] = True  # number on after the earlier attempts' records
        return spec

    def submission(
        self, launch: Launch, sid: str, ticket: str, working_dir: str, runner_uri: str
    ) -> dict[str, Any]:
        """The body of Ray's ``POST /api/jobs/``: nothing in it may be a secret but the ticket."""
        server = launch.tracking_uri
        entrypoint = shlex.join(
            [
                "python",
                "-m",
                "trainflow.runner.remote",
                "--server",
                server,
                "--job",
                str(launch.job_id),
                "--ticket",
                ticket,
            ]
        )
        stop_wait = int(self.settings.job_grace_seconds) + STOP_MARGIN_S
        runtime_env: dict[str, Any] = {
            "working_dir": working_dir,
            "py_modules": [runner_uri],
            # Ray reads this in the job's own supervisor actor: SIGKILL only after our grace.
            "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(stop_wait)},
        }
        if launch.has_requirements:
            runtime_env["pip"] = {"packages": pip_packages(launch.files / "requirements.txt", working_dir)}
        gpus = len([g for g in (launch.gpu_ids or "").split(",") if g])
        return {
            "entrypoint": entrypoint,
            "submission_id": sid,
            "runtime_env": runtime_env,
            "metadata": {"trainflow_job": str(launch.job_id), "trainflow_run": launch.run_id},
            # Always some CPU: a job that asks for nothing runs on the head node.
            "entrypoint_num_cpus": 1,
            "entrypoint_num_gpus": gpus,
        }

    def cancel(self, job_id: int, handle: int | None) -> bool:
        """Ask Ray to stop the job: its supervisor gets SIGTERM, and Ray's SIGKILL waits past the
        supervisor's grace (``RAY_JOB_STOP_WAIT_TIME_S``), so the job's end is recorded."""
        if not handle:
            return False
        sid = submission_id(job_id, handle)
        try:
            stopped = self.client.stop(sid)
        except RayUnavailable as e:
            log.warning("Job %d: Ray did not take the cancel (%s); asking again each round", job_id, e)
            self._stops_pending[job_id] = sid
            return True
        self._stops_pending.pop(job_id, None)
        return stopped

    def observe(self, jobs: Sequence[Watched]) -> list[Observation]:
        watched = {job.job_id for job in jobs}
        self._retry_stops(watched)
        self._ended_at = {job_id: at for job_id, at in self._ended_at.items() if job_id in watched}
        observed = []
        is_ray = None  # whether the address answers as Ray does, asked once a round at most
        is_down = False  # one call that got no answer ends the round's calls: no wait per job
        for job in jobs:
            if not job.handle:
                # Claimed, but its start never recorded a handle (the server died mid-start).
                message = "It was claimed but never reached Ray (the server stopped while starting it)."
                observed.append(Observation(job.job_id, State.VANISHED, message=message))
                continue
            reported = job.reported_status  # what the supervisor sent through the ingest, if anything
            if reported is not None and reported.get("state") == "exited":
                observed.append(_exited(job.job_id, reported))
                continue
            sid = submission_id(job.job_id, job.handle)
            if is_down:
                observed.append(Observation(job.job_id, State.RUNNING))
                continue
            try:
                info = self.client.job(sid)
                if info is None and is_ray is None:
                    is_ray = bool(self.client.version())
            except RayUnavailable as e:
                self._unreachable(e)
                is_down = True
                observed.append(Observation(job.job_id, State.RUNNING))
                continue
            self._reachable()
            observed.append(self._observation(job.job_id, info))
        return observed

    def _observation(self, job_id: int, info: dict[str, Any] | None) -> Observation:
        """Ray's account of a job whose supervisor has not reported its end (yet)."""
        if info is None:
            return Observation(
                job_id,
                State.VANISHED,
                message="Ray no longer knows its job (the cluster was restarted, or the job deleted), "
                "and the job's end was never recorded.",
            )
        status = str(info.get("status", ""))
        if status not in ENDED:
            self._ended_at.pop(job_id, None)
            return Observation(job_id, State.RUNNING)
        # The supervisor reports its end before it exits, but this round may have read the job
        # just before the report came: Ray's word decides only after a grace period.
        first_seen = self._ended_at.setdefault(job_id, time.monotonic())
        if time.monotonic() - first_seen < ENDED_GRACE_S:
            return Observation(job_id, State.RUNNING)
        del self._ended_at[job_id]
        if status == "STOPPED":
            # Only a stop makes STOPPED: trainflow's cancel, or someone with Ray's API.
            return Observation(job_id, State.VANISHED, was_cancelled=True)
        message = str(info.get("message") or "").strip()
        return Observation(
            job_id,
            State.VANISHED,
            message=f"Its Ray job ended ({status}) without its supervisor recording how the job "
            f"ended. Ray: {_summary(message) or status}",
        )

    def _retry_stops(self, watched: set[int]) -> None:
        for job_id, sid in list(self._stops_pending.items()):
            if job_id not in watched:
                del self._stops_pending[job_id]
                continue
            try:
                self.client.stop(sid)
            except RayUnavailable:
                return  # still not answering; the next round asks again
            del self._stops_pending[job_id]

    def _unreachable(self, error: Exception) -> None:
        if not self._is_unreachable:
            log.warning("Ray is unreachable (%s): its jobs stay RUNNING until it answers", error)
        self._is_unreachable = True

    def _reachable(self) -> None:
        if self._is_unreachable:
            log.info("Ray at %s answers again", self.client.address)
        self._is_unreachable = False

    def remove(self, job_id: int) -> None:
        """Nothing of a Ray job is kept on this host (Ray keeps its own record of it)."""


def _exited(job_id: int, status: dict[str, Any]) -> Observation:
    """The end the supervisor reported (its status.json's fields): preferred to Ray's account."""
    ended = Exit(
        exit_code=status.get("exit_code"),
        signal=status.get("signal"),
        reason=status.get("reason"),
        message=status.get("message"),
        finished_at=status.get("finished_at"),
    )
    return Observation(job_id, State.EXITED, pid=status.get("pid"), exit=ended)


def _summary(text: str) -> str:
    """Ray's first line, and the last error pip or Python printed (Ray adds a traceback between)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    errors = [
        line for line in lines[1:] if line.startswith(("ERROR:", "Error:", "trainflow:")) or "Error: " in line
    ]
    return " ".join([lines[0], *errors[-1:]])[:1000]
