"""Soak: many simulated users for minutes against one trainflow server, measured per route.

The script starts ``trainflow server`` itself in a temporary directory on a free loopback
port (SQLite by default; ``--database-url`` for PostgreSQL, where a fresh database is made
beside the one named when the account may create one) and runs ``--users`` simulated users
for ``--duration`` seconds, all from this one process as gevent greenlets. Each user, arriving
during the first three quarters of the warm-up:

* registers (``POST /api/register``) and signs in (``POST /api/login``), then uses the JWT;
* opens the all-jobs stream (``GET .../train/events``) and keeps it open to the end;
* uploads a small ``train.py`` that imports ``mlflow``, prints lines and logs metrics;
* in a loop, with random think time: submits a job when it has none (and follows that job's
  event stream, NDJSON, until its ``end``), lists its jobs, reads one job and a page of its
  logs, lists its scripts, asks who it is, now and then uploads again or signs in again, cancels
  a job that waited too long in the queue (or, rarely, one that runs), and logs metrics to a run
  of its own with the official client (``MlflowClient``: ``log_metric`` and ``log_batch``,
  signed in with HTTP Basic credentials in the tracking URI).

One admin follows the all-jobs stream too, from before the first user. When the time is up
every user cancels the job it still has, the job streams are followed to their ``end``
(``--drain`` seconds at most), and then:

* every job stream's ``seq`` must run 1, 2, 3 ... with no gap and no repeat (a dropped stream
  is resumed with ``after``), and end with ``end``;
* every status change a job's own stream recorded must have arrived exactly once on its
  owner's all-jobs stream and on the admin's.

Latency is each request's round trip from this process (for a stream, until its headers), p50
and p99 per route, grouped by template (``/jobs/<id>/events``), over the requests sent after
the warm-up. Any answer outside 2xx, a timeout or a broken connection is an error; those after
the warm-up are counted by status. Server memory is the RSS of the server's own processes (its
session: the web process and any workers; jobs run in sessions of their own and are left
out), sampled every second. The table marks the issue's targets: no error after the warm-up, no
event lost, p99 under 500 ms on every route but register and login.

Jobs are kept few at a time (``--job-slots`` jobs running at once, one per user) and short
(``--job-steps`` steps of 0.2 s after ``import mlflow``), so the queue, not the CPU, absorbs the
users' submissions.

Run: ``venv/bin/python bench/soak.py [--users 150] [--duration 180] [--warmup 20]``.
The results are also written as JSON under ``bench/results/`` (or to ``--json``).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before anything imports socket, ssl or threading: the users are greenlets

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402
from gevent.event import Event  # noqa: E402
from jobs import stop_jobs  # noqa: E402
from mlflow_writes import (  # noqa: E402
    base_env,
    free_port,
    fresh_database,
    log_tail,
    percentile,
    progress,
    running,
    trainflow_revision,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
TRAIN = "/ajax-api/2.0/mlflow/train"
ADMIN = ("admin", "bench-admin-pass-1234")
USER_PASSWORD = "soak-user-pass-1234"
FINISHED = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"}
P99_TARGET_MS = 500.0
P99_EXEMPT = {"POST /api/register", "POST /api/login"}  # the target excludes sign-up and login
LEAVING = " (users leaving)"  # cancels sent by every user at once when the time is up
REQUEST_TIMEOUT = (10.0, 60.0)  # connect, read (a stream reads a heartbeat at least every 15 s)
RETRY_AFTER_CAP_S = 10.0
MAX_SIGN_IN_TRIES = 8
SAMPLE_EVERY_S = 1.0
PROBE_EVERY_S = 0.5
SLOW_PROBE_MS = 250.0  # a health check this slow says the server stalled: what was in flight is kept
FIRST_LINE_WAIT_S = 5.0  # an all-jobs stream sends a heartbeat line as soon as it is open
ALL_STREAM_SETTLE_S = 3.0  # after the last job's end, for the all-jobs streams to catch up

# What each MlflowClient call sends, so its latency is filed under the REST route.
MLFLOW_ROUTES = {
    "create_experiment": "POST /api/2.0/mlflow/experiments/create",
    "create_run": "POST /api/2.0/mlflow/runs/create",
    "log_metric": "POST /api/2.0/mlflow/runs/log-metric",
    "log_batch": "POST /api/2.0/mlflow/runs/log-batch",
}

TRAIN_SCRIPT = """\
import sys
import time

import mlflow

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10
for step in range(steps):
    print(f"step {step}: loss {1.0 / (step + 1):.4f}", flush=True)
    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    time.sleep(0.2)
print("done", flush=True)
"""

# Each user comes from an address of its own, as people do: the load generator plays the reverse
# proxy in front of the server (TRAINFLOW_TRUSTED_PROXIES) and names it in X-Forwarded-For. From
# one address, sign-up is limited to a burst of 20 and 10 a minute (TRAINFLOW_LOGIN_ADDRESS_*).
_current = threading.local()  # a greenlet's own under gevent: which user is calling


def user_address(index: int) -> str:
    return f"10.{index // 62500 % 256}.{index // 250 % 250}.{index % 250 + 1}"


class UserHeaders:
    """An MLflow request header provider: the calling user's address (and, with ``--mlflow-auth
    token``, their access token) on MlflowClient's requests; MLflow's own way to add headers."""

    def in_context(self) -> bool:
        return getattr(_current, "address", None) is not None

    def request_headers(self) -> dict[str, str]:
        headers = {"X-Forwarded-For": _current.address}
        if getattr(_current, "token", None):
            headers["Authorization"] = f"Bearer {_current.token}"
        return headers


def mlflow_failure(e: Exception) -> str:
    """The status behind an MlflowClient exception: its REST error, or what urllib3 gave up on."""
    text = str(e)
    found = re.search(r"too many (\d{3}) error responses", text)
    if found:  # retries are off (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0): urllib3 raises on a 429/503
        return found.group(1)
    if "Max retries exceeded" in text or "Connection" in text:
        return "connection error"
    code = getattr(e, "get_http_status_code", lambda: 500)()
    return str(code)


_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def route_of(method: str, path: str) -> str:
    """``GET /ajax-api/.../jobs/12/events?after=3`` -> ``GET /ajax-api/.../jobs/<id>/events``."""
    return f"{method} {_ID_SEGMENT.sub('/<id>', path.split('?', 1)[0])}"


# --------------------------------------------------------------------------------------------
# What is measured
# --------------------------------------------------------------------------------------------


@dataclass
class RouteStats:
    warm_ms: list[float] = field(default_factory=list)  # requests sent during the warm-up
    ms: list[float] = field(default_factory=list)  # after it
    warm_errors: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    slowest: list[tuple[float, float]] = field(default_factory=list)  # (ms, seconds into the run)


@dataclass
class Stats:
    started: float  # monotonic
    warmup: float
    routes: dict[str, RouteStats] = field(default_factory=lambda: defaultdict(RouteStats))
    first_errors: list[str] = field(default_factory=list)

    def at(self) -> float:
        return time.monotonic() - self.started

    def add(self, route: str, sent_at: float, ms: float, status: str, ok: bool, detail: str = "") -> None:
        stats = self.routes[route]
        is_warm = sent_at < self.warmup
        (stats.warm_ms if is_warm else stats.ms).append(ms)
        if not is_warm:
            stats.slowest.append((ms, sent_at))
            if len(stats.slowest) > 64:
                stats.slowest = sorted(stats.slowest, reverse=True)[:16]
        if not ok:
            (stats.warm_errors if is_warm else stats.errors)[status] += 1
            if len(self.first_errors) < 40:
                self.first_errors.append(f"{sent_at:7.1f}s {route} -> {status} {detail[:200]}")


@dataclass
class JobWatch:
    """One submitted job, as its owner's stream follower saw it."""

    job_id: int
    owner: str
    submitted_at: float
    status: str = "QUEUED"
    statuses: list[str] = field(default_factory=list)  # status events of the job's own stream
    events: int = 0
    last_seq: int = 0
    gaps: int = 0  # seqs never received
    repeats: int = 0  # seqs received twice
    reconnects: int = 0
    resyncs: int = 0
    is_ended: bool = False
    end_status: str | None = None
    ended_at: float = math.nan  # seconds into the run, when its stream said ``end``
    started_at: float = math.nan  # seconds into the run, the RUNNING event's ts
    done: Event = field(default_factory=Event)


@dataclass
class AllFollower:
    """One all-jobs stream (a user's or the admin's): the status changes it delivered."""

    name: str
    sees_all: bool = False  # the admin's stream numbers every change; a user's skips others'
    seen: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    events: int = 0
    reconnects: int = 0
    seq_gaps: int = 0
    seq_repeats: int = 0
    last_seq: int = 0
    ready: Event = field(default_factory=Event)
    greenlet: Any = None


# --------------------------------------------------------------------------------------------
# The load: one server, many users
# --------------------------------------------------------------------------------------------


@dataclass
class Options:
    users: int
    duration: float
    warmup: float
    think: float
    drain: float
    job_slots: int
    job_steps: int
    database_url: str
    bin_dir: Path
    seed: int
    at: str
    mlflow_auth: str


def new_http() -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # never via a proxy
    return http


class Soak:
    def __init__(self, base_url: str, port: int, opts: Options) -> None:
        self.base_url = base_url
        self.port = port
        self.opts = opts
        self.stats = Stats(time.monotonic(), opts.warmup)
        self.stopping = Event()
        self.jobs: list[JobWatch] = []
        self.users: list[User] = []
        self.admin_follower = AllFollower("admin", sees_all=True)
        self.follower_greenlets: list[Any] = []
        self.sign_in_failures = 0
        self.in_flight: Counter[str] = Counter()  # requests sent and not yet answered, by route
        self.wall_started = time.time()
        self.probes: list[dict[str, Any]] = []  # the health probe: round trip, database latency

    def probe(self) -> None:
        """GET /api/health every half second; a slow one keeps what was in flight at the time."""
        http = new_http()
        while True:
            response = self.call(http, "GET", "/api/health")
            at, ms = self.stats.at(), self.stats.routes["GET /api/health"]
            last = (ms.ms or ms.warm_ms)[-1]
            sample: dict[str, Any] = {"at": round(at, 2), "ms": round(last, 1)}
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                sample["db_ms"] = response.json()["database"]["latency_ms"]  # type: ignore[union-attr]
            if last >= SLOW_PROBE_MS:
                sample["in_flight"] = {k: v for k, v in self.in_flight.items() if v > 0}
            self.probes.append(sample)
            gevent.sleep(PROBE_EVERY_S)

    def call(
        self,
        http: requests.Session,
        method: str,
        path: str,
        *,
        route: str | None = None,
        stream: bool = False,
        also_ok: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> requests.Response | None:
        """One request, timed and filed under its route; ``None`` when no answer came.

        An answer outside 2xx is an error unless its status is in ``also_ok``.
        """
        route = route or route_of(method, path)
        if self.stopping.is_set() and route.endswith("/cancel"):
            route += LEAVING  # all at once when the time is up: shown apart, errors counted, no p99 target
        sent_at = self.stats.at()
        began = time.perf_counter()
        response = None
        self.in_flight[route] += 1
        try:
            response = http.request(
                method, self.base_url + path, timeout=REQUEST_TIMEOUT, stream=stream, **kwargs
            )
            status = str(response.status_code)
            ok = 200 <= response.status_code < 300 or response.status_code in also_ok
            detail = "" if ok or stream else response.text
        except requests.Timeout as e:
            status, ok, detail = "timeout", False, str(e)
        except requests.RequestException as e:
            status, ok, detail = "connection error", False, str(e)
        finally:
            self.in_flight[route] -= 1
        ms = (time.perf_counter() - began) * 1000
        if response is not None and not ok and stream:
            detail = response.text
        self.stats.add(route, sent_at, ms, status, ok, detail)
        return response

    # ---- streams -------------------------------------------------------------------------

    def follow_job(self, http: requests.Session, job: JobWatch) -> None:
        """Follow a job's event stream to its ``end``, resuming with ``after`` when it drops."""
        while not job.is_ended:
            params = {"after": job.last_seq} if job.last_seq else None
            response = self.call(http, "GET", f"{TRAIN}/jobs/{job.job_id}/events", params=params, stream=True)
            if response is None or response.status_code != 200:
                job.reconnects += 1
                gevent.sleep(1.0)
                continue
            try:
                for line in response.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    kind = event.get("type")
                    if kind == "heartbeat":
                        continue
                    if kind == "resync":  # fell behind: resume from the log
                        job.resyncs += 1
                        break
                    seq = int(event.get("seq") or 0)
                    if seq:
                        if seq <= job.last_seq:
                            job.repeats += 1
                            continue
                        job.gaps += seq - job.last_seq - 1
                        job.last_seq = seq
                    job.events += 1
                    if kind == "status":
                        job.status = str(event.get("status"))
                        job.statuses.append(job.status)
                        if job.status == "RUNNING":
                            job.started_at = float(event.get("ts", math.nan)) - self.wall_started
                    elif kind in ("end", "deleted"):
                        job.is_ended = True
                        job.end_status = str(event.get("status", kind))
                        job.ended_at = self.stats.at()
                        break
            except (requests.RequestException, ValueError) as e:
                self.stats.add("(job stream broke)", self.stats.at(), 0.0, type(e).__name__, False, str(e))
            finally:
                response.close()
            if not job.is_ended:
                job.reconnects += 1
        job.done.set()

    def follow_all(self, http: requests.Session, follower: AllFollower) -> None:
        """Follow the all-jobs stream until killed, reconnecting (with ``after`` if it has seqs)."""
        while True:
            params = {"after": follower.last_seq} if follower.last_seq else None
            response = self.call(http, "GET", f"{TRAIN}/events", params=params, stream=True)
            if response is None or response.status_code != 200:
                follower.reconnects += 1
                gevent.sleep(1.0)
                continue
            try:
                for line in response.iter_lines():
                    follower.ready.set()  # the first line (a heartbeat) says the stream is live
                    if not line:
                        continue
                    event = json.loads(line)
                    seq = int(event.get("seq") or 0)
                    if event.get("type") == "heartbeat":
                        # A heartbeat's seq is the position reached (other users' changes too).
                        follower.last_seq = max(follower.last_seq, seq)
                        continue
                    if seq:
                        if seq <= follower.last_seq:
                            follower.seq_repeats += 1
                            continue
                        if follower.last_seq and follower.sees_all:
                            follower.seq_gaps += seq - follower.last_seq - 1
                        follower.last_seq = seq
                    if event.get("type") == "status":
                        follower.events += 1
                        follower.seen[int(event["job_id"])].append(str(event.get("status")))
            except (requests.RequestException, ValueError) as e:
                self.stats.add(
                    "(all-jobs stream broke)", self.stats.at(), 0.0, type(e).__name__, False, str(e)
                )
            finally:
                response.close()
            follower.reconnects += 1

    def start_all_follower(self, http: requests.Session, follower: AllFollower) -> None:
        follower.greenlet = gevent.spawn(self.follow_all, http, follower)
        self.follower_greenlets.append(follower.greenlet)
        follower.ready.wait(FIRST_LINE_WAIT_S)


class User:
    def __init__(self, soak: Soak, index: int, rng: random.Random) -> None:
        self.soak = soak
        self.rng = rng
        self.name = f"soak{index:04d}"
        self.address = user_address(index)
        self.http = new_http()
        self.stream_http = new_http()  # streams hold connections; keep them out of the API pool
        for http in (self.http, self.stream_http):
            http.headers["X-Forwarded-For"] = self.address
        self.script_id = 0
        self.active: JobWatch | None = None
        self.patience = 0.0
        self.next_submit = 0.0
        self.jobs: list[JobWatch] = []
        self.follower = AllFollower(self.name)
        self.mlflow: Any = None
        self.run_id = ""
        self.metric_step = 0

    # ---- signing in, with Retry-After honoured as a client would ------------------------

    def sign_in(self, path: str, expect: int) -> requests.Response | None:
        body = {"username": self.name, "password": USER_PASSWORD}
        # After a timeout the account may exist: then 409 says the first try got in.
        also_ok: tuple[int, ...] = ()
        for _ in range(MAX_SIGN_IN_TRIES):
            response = self.soak.call(self.http, "POST", path, json=body, also_ok=also_ok)
            if response is None:
                also_ok = (409,) if path.endswith("/register") else ()
                gevent.sleep(1.0)
                continue
            if response.status_code == expect:
                return response
            if response.status_code in (429, 503):
                delay = float(response.headers.get("Retry-After") or 1)
                gevent.sleep(min(max(delay, 0.5), RETRY_AFTER_CAP_S) * self.rng.uniform(1.0, 1.5))
                continue
            if response.status_code in also_ok:
                return response
            return None
        return None

    def login(self) -> bool:
        response = self.sign_in("/api/login", 200)
        if response is None:
            return False
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        _current.token = response.json()["access_token"] if self.soak.opts.mlflow_auth == "token" else None
        self.stream_http.headers["Authorization"] = self.http.headers["Authorization"]
        return True

    def upload(self) -> None:
        files = {"file": ("train.py", TRAIN_SCRIPT.encode())}
        response = self.soak.call(self.http, "POST", f"{TRAIN}/upload", files=files)
        if response is not None and response.status_code == 201:
            self.script_id = int(response.json()["script"])

    # ---- actions -------------------------------------------------------------------------

    def submit(self) -> None:
        body = {"script_id": self.script_id, "args": [str(self.soak.opts.job_steps)], "timeout_s": 300}
        response = self.soak.call(self.http, "POST", f"{TRAIN}/jobs", json=body)
        self.next_submit = self.soak.stats.at() + self.rng.uniform(2, 20)
        if response is None or response.status_code != 201:
            return
        job = JobWatch(int(response.json()["job"]), self.name, self.soak.stats.at())
        self.jobs.append(job)
        self.soak.jobs.append(job)
        self.active = job
        self.patience = self.rng.uniform(20, 90)
        self.soak.follower_greenlets.append(gevent.spawn(self.soak.follow_job, self.stream_http, job))

    def cancel(self, job: JobWatch) -> None:
        self.soak.call(self.http, "POST", f"{TRAIN}/jobs/{job.job_id}/cancel")

    def log_metrics(self) -> None:
        if self.mlflow is None:
            from mlflow import MlflowClient

            uri = f"http://127.0.0.1:{self.soak.port}"
            if self.soak.opts.mlflow_auth == "basic":  # requests sends the URL's user:password as Basic
                uri = f"http://{self.name}:{USER_PASSWORD}@127.0.0.1:{self.soak.port}"
            self.mlflow = MlflowClient(tracking_uri=uri)
            experiment_id = self.mlflow_call("create_experiment", f"{self.name}-client")
            if experiment_id is None:
                self.mlflow = None
                return
            run = self.mlflow_call("create_run", experiment_id)
            if run is None:
                self.mlflow = None
                return
            self.run_id = run.info.run_id
        for _ in range(3):
            self.metric_step += 1
            self.mlflow_call("log_metric", self.run_id, "accuracy", self.rng.random(), step=self.metric_step)
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.metric_step += 1
        batch = [Metric(f"m{i}", self.rng.random(), now, self.metric_step) for i in range(10)]
        self.mlflow_call("log_batch", self.run_id, metrics=batch)

    def mlflow_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException

        sent_at = self.soak.stats.at()
        began = time.perf_counter()
        status, ok, detail, result = "200", True, "", None
        self.soak.in_flight[MLFLOW_ROUTES[name]] += 1
        try:
            result = getattr(self.mlflow, name)(*args, **kwargs)
        except (MlflowException, requests.RequestException) as e:
            status, ok, detail = mlflow_failure(e), False, str(e)
        finally:
            self.soak.in_flight[MLFLOW_ROUTES[name]] -= 1
        ms = (time.perf_counter() - began) * 1000
        self.soak.stats.add(MLFLOW_ROUTES[name], sent_at, ms, status, ok, detail)
        return result

    def step(self) -> None:
        """One thing a user does between two pauses."""
        soak, now, active = self.soak, self.soak.stats.at(), self.active
        if active is not None and active.is_ended:
            self.active = active = None
        if active is None and now >= self.next_submit and self.script_id:
            self.submit()
            return
        if active is not None and not active.is_ended:
            waited = now - active.submitted_at
            if (active.status == "QUEUED" and waited > self.patience) or (
                active.status == "RUNNING" and self.rng.random() < 0.05
            ):
                self.cancel(active)
                return
        roll = self.rng.random()
        if roll < 0.30:
            soak.call(self.http, "GET", f"{TRAIN}/jobs", params={"size": 20})
        elif roll < 0.45 and self.jobs:
            soak.call(self.http, "GET", f"{TRAIN}/jobs/{self.rng.choice(self.jobs).job_id}")
        elif roll < 0.55 and self.jobs:
            job = self.rng.choice(self.jobs)
            soak.call(self.http, "GET", f"{TRAIN}/jobs/{job.job_id}/logs", params={"offset": 0, "limit": 50})
        elif roll < 0.80:
            self.log_metrics()
        elif roll < 0.88:
            soak.call(self.http, "GET", f"{TRAIN}/scripts", params={"size": 20})
        elif roll < 0.95:
            soak.call(self.http, "GET", "/api/me")
        elif roll < 0.98:
            self.upload()
        else:
            self.login()  # a new browser session

    def run(self, arrive_at: float) -> None:
        soak = self.soak
        _current.address = self.address
        gevent.sleep(max(0.0, arrive_at - soak.stats.at()))
        if self.sign_in("/api/register", 201) is None or not self.login():
            soak.sign_in_failures += 1
            return
        soak.start_all_follower(self.stream_http, self.follower)
        while not self.script_id and not soak.stopping.is_set():
            self.upload()
            if not self.script_id:
                gevent.sleep(1.0)
        self.next_submit = soak.stats.at() + self.rng.uniform(0, 5)
        while not soak.stopping.is_set():
            soak.stopping.wait(self.rng.expovariate(1 / soak.opts.think))
            if soak.stopping.is_set():
                break
            self.step()
        if self.active is not None and not self.active.is_ended:
            self.cancel(self.active)  # the user leaves: their job goes too


# --------------------------------------------------------------------------------------------
# Server memory and CPU, from /proc
# --------------------------------------------------------------------------------------------


def session_stats(sid: int) -> tuple[float, float, int]:
    """RSS (MiB), CPU seconds and process count of the live processes of session ``sid``."""
    rss_kib, ticks, count = 0, 0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != sid or fields[0] == "Z":
                continue
            count += 1
            ticks += int(fields[11]) + int(fields[12])
            rss_kib += int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
    return rss_kib / 1024, ticks / os.sysconf("SC_CLK_TCK"), count


@dataclass
class MemoryWatch:
    sid: int
    samples: list[tuple[float, float, float, int]] = field(default_factory=list)  # t, rss, cpu, procs
    load: list[float] = field(default_factory=list)  # the machine's 1-minute load average

    def sample(self, at: float) -> None:
        rss, cpu, count = session_stats(self.sid)
        self.samples.append((at, rss, cpu, count))
        self.load.append(os.getloadavg()[0])

    def watch(self, soak: Soak) -> None:
        while True:
            gevent.sleep(SAMPLE_EVERY_S)
            self.sample(soak.stats.at())


# --------------------------------------------------------------------------------------------
# A fresh PostgreSQL database, when asked for one
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


def server_env(tmp: Path, port: int, opts: Options, database_url: str, source: Path | None) -> dict[str, str]:
    env = base_env()
    env.update(
        TRAINFLOW_DATA_DIR=str(tmp / "data"),
        TRAINFLOW_PORT=str(port),
        TRAINFLOW_HOST="127.0.0.1",
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_MAX_CONCURRENT_JOBS=str(opts.job_slots),
        TRAINFLOW_MAX_JOBS_PER_USER="1",
        TRAINFLOW_TRUSTED_PROXIES="127.0.0.1",
    )
    if source is not None:  # run the server (and its supervisors) from that tree
        env["PYTHONPATH"] = str(source)
    if database_url:
        env["TRAINFLOW_DATABASE_URL"] = database_url
    return env


def run_users(soak: Soak, opts: Options, memory: MemoryWatch) -> dict[str, float]:
    """The whole load; returns when every user has left and the job streams have ended."""
    rng = random.Random(opts.seed)
    admin_http = new_http()
    admin_http.auth = ADMIN
    soak.start_all_follower(admin_http, soak.admin_follower)
    sampler = gevent.spawn(memory.watch, soak)
    prober = gevent.spawn(soak.probe)
    ramp = 0.75 * opts.warmup
    soak.users = [User(soak, i, random.Random(rng.random())) for i in range(opts.users)]
    arrivals = sorted(rng.uniform(0, ramp) for _ in soak.users)
    greenlets = [gevent.spawn(user.run, at) for user, at in zip(soak.users, arrivals, strict=True)]
    progress(f"{opts.users} users arriving over {ramp:.0f} s, then {opts.duration:.0f} s of load in all ...")
    last_report = 0.0
    while soak.stats.at() < opts.duration:
        gevent.sleep(1.0)
        if soak.stats.at() - last_report >= 15:
            last_report = soak.stats.at()
            done = sum(1 for job in soak.jobs if job.is_ended)
            rss = memory.samples[-1][1] if memory.samples else math.nan
            progress(
                f"  {last_report:5.0f} s: {len(soak.jobs)} jobs submitted, {done} ended; "
                f"server RSS {rss:.0f} MiB; load average {os.getloadavg()[0]:.1f}"
            )
    soak.stopping.set()
    stopped_at = soak.stats.at()
    progress("Time is up: users cancel what they still have, job streams run to their end ...")
    gevent.joinall(greenlets, timeout=opts.drain)
    deadline = time.monotonic() + opts.drain
    for job in soak.jobs:
        job.done.wait(max(0.0, deadline - time.monotonic()))
    drained_at = soak.stats.at()
    gevent.sleep(ALL_STREAM_SETTLE_S)
    gevent.killall(soak.follower_greenlets + greenlets, timeout=5)
    memory.sample(soak.stats.at())
    sampler.kill()
    prober.kill()
    return {"stopped_at": stopped_at, "drained_at": drained_at}


def compare_all_jobs(follower: AllFollower, jobs: list[JobWatch]) -> dict[str, Any]:
    """Status changes of ``jobs`` (from their own streams) against what ``follower`` saw."""
    lost = repeated = out_of_order = ends_missing = 0
    differences = []
    for job in jobs:
        expected, seen = job.statuses, follower.seen.get(job.job_id, [])
        missing = Counter(expected) - Counter(seen)
        lost += sum(missing.values())
        repeated += sum((Counter(seen) - Counter(expected)).values())
        if not missing and seen != expected:
            out_of_order += 1
        if seen != expected and len(differences) < 20:
            differences.append(
                {"job": job.job_id, "ended_at": job.ended_at, "own_stream": expected, "all_jobs_stream": seen}
            )
        if job.end_status and job.end_status in FINISHED and job.end_status not in seen:
            ends_missing += 1
    expected_total = sum(len(job.statuses) for job in jobs)
    return {
        "expected": expected_total,
        "lost": lost,
        "repeated": repeated,
        "out_of_order_jobs": out_of_order,
        "jobs_end_missing": ends_missing,
        "reconnects": follower.reconnects,
        "seq_gaps": follower.seq_gaps,
        "seq_repeats": follower.seq_repeats,
        "differences": differences,
    }


def stalls(soak: Soak) -> dict[str, Any]:
    """The health probe over the run: how often the server stalled, and what was going on then."""
    after = [p for p in soak.probes if p["at"] >= soak.opts.warmup]
    db = sorted(p["db_ms"] for p in after if "db_ms" in p)
    worst = sorted((p for p in after if "in_flight" in p), key=lambda p: -p["ms"])[:8]
    for probe in worst:
        probe["jobs_started_near"] = [
            job.job_id for job in soak.jobs if abs(job.started_at - probe["at"]) <= 2.0
        ]
    return {
        "probes": len(after),
        "slow_probes": sum(1 for p in after if p["ms"] >= SLOW_PROBE_MS),
        "db_latency_p50_ms": percentile(db, 50) if db else math.nan,
        "db_latency_p99_ms": percentile(db, 99) if db else math.nan,
        "worst": worst,
    }


def summarise(soak: Soak, memory: MemoryWatch, times: dict[str, float], server_log: Path) -> dict[str, Any]:
    routes = {}
    for route, stats in sorted(soak.stats.routes.items()):
        after = sorted(stats.ms)
        routes[route] = {
            "count": len(after),
            "p50_ms": percentile(after, 50) if after else math.nan,
            "p99_ms": percentile(after, 99) if after else math.nan,
            "max_ms": after[-1] if after else math.nan,
            "errors": dict(stats.errors),
            "warmup_count": len(stats.warm_ms),
            "warmup_p99_ms": percentile(stats.warm_ms, 99) if stats.warm_ms else math.nan,
            "warmup_errors": dict(stats.warm_errors),
            "slowest": sorted(stats.slowest, reverse=True)[:5],
        }
    errors_by_status: Counter[str] = Counter()
    for stats in soak.stats.routes.values():
        errors_by_status.update(stats.errors)
    jobs = soak.jobs
    end_statuses = Counter(job.end_status or "(no end seen)" for job in jobs)
    users_all: dict[str, Any] = {"differences": []}
    for user in soak.users:
        for key, value in compare_all_jobs(user.follower, user.jobs).items():
            users_all[key] = users_all.get(key, 0) + value
    rss = [sample[1] for sample in memory.samples]
    start, end = memory.samples[0], memory.samples[-1]
    log_text = server_log.read_text(errors="replace") if server_log.exists() else ""
    return {
        "stalls": stalls(soak),
        "routes": routes,
        "errors_after_warmup": dict(errors_by_status),
        "first_errors": soak.stats.first_errors,
        "users_signed_in": len(soak.users) - soak.sign_in_failures,
        "jobs": {
            "submitted": len(jobs),
            "ended": dict(end_statuses),
            "events": sum(job.events for job in jobs),
            "seq_gaps": sum(job.gaps for job in jobs),
            "seq_repeats": sum(job.repeats for job in jobs),
            "stream_reconnects": sum(job.reconnects for job in jobs),
            "resyncs": sum(job.resyncs for job in jobs),
            "unfinished": sum(1 for job in jobs if not job.is_ended),
        },
        "all_jobs_users": dict(users_all),
        "all_jobs_admin": compare_all_jobs(soak.admin_follower, jobs),
        "server": {
            "rss_start_mib": start[1],
            "rss_peak_mib": max(rss),
            "rss_end_mib": end[1],
            "processes_peak": max(sample[3] for sample in memory.samples),
            "cpu_s": end[2] - start[2],
            "log_tracebacks": log_text.count("Traceback (most recent call last)"),
            "log_errors": sum(1 for line in log_text.splitlines() if " ERROR " in line),
        },
        "load_generator_cpu_s": sum(os.times()[:2]),
        "load_average_mean": sum(memory.load) / len(memory.load),
        "load_average_max": max(memory.load),
        "times": times,
        "rss_timeline": [(round(t, 1), round(r, 1)) for t, r, _, _ in memory.samples],
    }


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _n(value: float, digits: int = 0) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"
    )


def _errors(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} x {status}" for status, n in sorted(counts.items())) or "0"


def _lost_of(c: dict[str, int]) -> str:
    return f"{c.get('lost', 0)} / {c.get('repeated', 0)} of {c.get('expected', 0):,}"


def _misses(c: dict[str, int]) -> str:
    return f"{c.get('jobs_end_missing', 0)}; {c.get('out_of_order_jobs', 0)}; {c.get('reconnects', 0)}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(result: dict[str, Any], opts: Options) -> str:
    out = []
    head = f"{'route (after the warm-up)':66} {'count':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    head += f"  {'errors':24} {'p99 target':>14}   warm-up: n / p99 ms / errors"
    out += [head, "-" * len(head)]
    for route, r in result["routes"].items():
        if route.startswith("("):
            continue
        exempt = route in P99_EXEMPT or route.endswith(LEAVING)
        target = "(exempt)" if exempt else f"< 500 {verdict(not r['count'] or r['p99_ms'] < P99_TARGET_MS)}"
        out.append(
            f"{route[:66]:66} {r['count']:>7,} {_n(r['p50_ms'], 1):>8} {_n(r['p99_ms'], 1):>8} "
            f"{_n(r['max_ms']):>8}  {_errors(r['errors'])[:24]:24} {target:>14}   "
            f"{r['warmup_count']:,} / {_n(r['warmup_p99_ms'])} / {_errors(r['warmup_errors'])}"
        )
    for route, r in result["routes"].items():
        if route.startswith("("):
            out.append(f"{route:66} {'':>7} {'':>8} {'':>8} {'':>8}  {_errors(r['errors'])}")
    jobs, users_all, admin_all, server = (
        result["jobs"],
        result["all_jobs_users"],
        result["all_jobs_admin"],
        result["server"],
    )
    errors_total = sum(result["errors_after_warmup"].values())
    slow = [
        route
        for route, r in result["routes"].items()
        if route not in P99_EXEMPT
        and not route.startswith("(")
        and not route.endswith(LEAVING)
        and r["count"]
        and r["p99_ms"] >= P99_TARGET_MS
    ]
    load = f"{result['load_average_mean']:.1f} / {result['load_average_max']:.1f}"
    rss = " / ".join(f"{server[k]:.0f}" for k in ("rss_start_mib", "rss_peak_mib", "rss_end_mib"))
    lost = jobs["seq_gaps"] + users_all.get("lost", 0) + admin_all["lost"]
    repeated = jobs["seq_repeats"] + users_all.get("repeated", 0) + admin_all["repeated"]
    rows = [
        ("errors after the warm-up", _errors(result["errors_after_warmup"]), "0", errors_total == 0),
        ("routes with p99 >= 500 ms (not register/login)", ", ".join(slow) or "none", "none", not slow),
        ("events lost (all streams)", f"{lost:,}", "0", lost == 0),
        ("events repeated (all streams)", f"{repeated:,}", "0", repeated == 0),
        ("  job streams: events; seq gaps / repeats", f"{jobs['events']:,}; {jobs['seq_gaps']} / "
         f"{jobs['seq_repeats']}", "", None),
        ("  job streams: resumed with after; resync; no end", f"{jobs['stream_reconnects']}; "
         f"{jobs['resyncs']}; {jobs['unfinished']}", "", None),
        ("  users' all-jobs streams: status changes lost / repeated of", _lost_of(users_all), "", None),
        ("    jobs whose end never showed; out of order; reconnects", _misses(users_all), "", None),
        ("  admin's all-jobs stream: lost / repeated of", _lost_of(admin_all), "", None),
        ("    jobs whose end never showed; out of order; reconnects", _misses(admin_all), "", None),
        ("users signed in", f"{result['users_signed_in']} of {opts.users}", "", None),
        ("jobs submitted", f"{jobs['submitted']:,}", "", None),
        ("jobs ended", ", ".join(f"{n} {s}" for s, n in sorted(jobs["ended"].items())) or "none", "", None),
        ("server RSS start / peak / end (MiB)", rss, "", None),
        ("server CPU (s); tracebacks / ERROR lines in its log",
         f"{server['cpu_s']:.0f}; {server['log_tracebacks']} / {server['log_errors']}", "", None),
        ("load generator CPU (s)", f"{result['load_generator_cpu_s']:.0f}", "", None),
        ("machine load average during the run, mean / max", load, "", None),
    ]  # fmt: skip
    out += ["", f"{'':58} {'measured':40} {'target (issue 11)':>18}", "-" * 124]
    for name, value, target, ok in rows:
        mark = "" if ok is None else verdict(ok)
        out.append(f"{name:58} {value[:40]:40} {target:>18} {mark}")
    return "\n".join(out)


def checkout(revision: str, tmp: Path) -> Path:
    """The tree of ``revision`` under ``tmp`` (other work in the working tree is left out)."""
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    source = tmp / "source"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    return source


def environment_line(opts: Options, database: str) -> str:
    from importlib.metadata import version

    return (
        f"trainflow at {trainflow_revision()}, mlflow {version('mlflow')}, gevent {version('gevent')}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}), "
        f"{database}; {opts.users} users, {opts.duration:g} s ({opts.warmup:g} s warm-up), think time "
        f"{opts.think:g} s, {opts.job_slots} job slot(s), jobs of {opts.job_steps} steps, MlflowClient "
        f"signed in with {'a password' if opts.mlflow_auth == 'basic' else 'an access token'}"
    )


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def run_soak(opts: Options, json_path: Path | None) -> int:
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="60")
    os.environ.update(MLFLOW_HTTP_POOL_MAXSIZE=str(2 * opts.users))  # one connection per user, kept
    os.environ.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # "pool is full" notes
    from mlflow.tracking.request_header.registry import _request_header_provider_registry

    _request_header_provider_registry.register(UserHeaders)  # imports mlflow: not in a timed call

    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="trainflow-soak-") as tmp_name,
        fresh_database(opts.database_url) as database_url,
    ):
        tmp = Path(tmp_name)
        database = "PostgreSQL" if database_url else "SQLite"
        environment = environment_line(opts, database)
        if opts.at:
            revision = subprocess.run(
                ["git", "rev-parse", "--short", opts.at], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
            environment = environment.replace(
                f"trainflow at {trainflow_revision()}", f"trainflow at {revision}"
            )
        port = free_port()
        log_path = tmp / "server.log"
        argv = [str(opts.bin_dir / "trainflow"), "server"]
        source = checkout(opts.at, tmp) if opts.at else None
        env = server_env(tmp, port, opts, database_url, source)
        try:
            with running(argv, env, tmp, log_path) as proc:
                wait_healthy(f"http://127.0.0.1:{port}/api/health", proc, log_path, time.monotonic())
                memory = MemoryWatch(proc.pid)  # the server runs in a session of its own
                soak = Soak(f"http://127.0.0.1:{port}", port, opts)
                memory.sample(0.0)
                try:
                    times = run_users(soak, opts, memory)
                finally:
                    stop_jobs(tmp / "data" / "jobs")  # supervisors outlive the server by design
                result = summarise(soak, memory, times, log_path)
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited during the run:\n{log_tail(log_path)}")
                result["server_log_tail"] = log_tail(log_path, 40)
                server_log = log_path.read_text(errors="replace")
        except (RuntimeError, TimeoutError, OSError) as e:
            progress(f"FAILED: {e}")
            return 1
    table = render(result, opts)
    print(f"\nSoak ({environment})\n")
    print(table)
    st = result["stalls"]
    print(
        f"\nHealth probe every {PROBE_EVERY_S:g} s after the warm-up: {st['slow_probes']} of {st['probes']} "
        f"took >= {SLOW_PROBE_MS:.0f} ms; its database check (latency_ms) p50 "
        f"{_n(st['db_latency_p50_ms'], 1)} ms, p99 {_n(st['db_latency_p99_ms'], 1)} ms. "
        "Slowest, with the requests in flight then:"
    )
    for probe in st["worst"][:5]:
        busy = ", ".join(
            f"{n} {route}" for route, n in sorted(probe["in_flight"].items(), key=lambda kv: -kv[1])
        )
        print(f"  {probe['at']:6.1f} s: {probe['ms']:,.0f} ms; jobs started within 2 s: "
              f"{len(probe['jobs_started_near'])}; in flight: {busy[:300]}")  # fmt: skip
    if result["first_errors"]:
        print("\nFirst errors (seconds into the run, route, status, message):")
        for line in result["first_errors"][:15]:
            print(f"  {line}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = json_path or RESULTS_DIR / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    document = {
        "environment": environment,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()},
        "results": result,
        "table": table,
    }
    document["options"]["database_url"] = "(set)" if opts.database_url else ""  # no password in a file
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    path.with_suffix(".server.log").write_text(server_log)
    print(f"\nWrote {path} (and the server's log beside it) in {time.monotonic() - began:.0f} s total.")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=150, help="simulated users (default 150)")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load, warm-up included")
    parser.add_argument(
        "--warmup", type=float, default=20.0,
        help="first seconds (users arrive during 3/4 of it), left out of latencies and errors (default 20)",
    )  # fmt: skip
    parser.add_argument("--think", type=float, default=2.0, help="mean pause between a user's actions, s")
    parser.add_argument("--drain", type=float, default=60.0, help="longest wait for jobs to end afterwards")
    parser.add_argument("--job-slots", type=int, default=1, help="TRAINFLOW_MAX_CONCURRENT_JOBS (default 1)")
    parser.add_argument("--job-steps", type=int, default=10, help="steps of 0.2 s each job runs (default 10)")
    parser.add_argument(
        "--database-url", default="",
        help="PostgreSQL URL: a fresh database is made beside it when allowed (default: SQLite)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="where to write the results as JSON")
    parser.add_argument(
        "--at", default="",
        help="run the server from this commit (git archive) instead of the working tree, e.g. HEAD",
    )  # fmt: skip
    parser.add_argument(
        "--mlflow-auth", choices=("basic", "token"), default="basic",
        help="how MlflowClient signs in: username and password (default), or the user's access token",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=11, help="random seed of the users' choices")
    parser.add_argument(
        "--bin-dir", type=Path, default=Path(sys.executable).parent,
        help="directory holding the trainflow script (default: this Python's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.users < 1 or args.duration <= args.warmup or args.warmup < 0 or args.think <= 0:
        parser.error("--users must be >= 1, --think > 0, and --duration longer than --warmup >= 0")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(
        users=args.users,
        duration=args.duration,
        warmup=args.warmup,
        think=args.think,
        drain=args.drain,
        job_slots=args.job_slots,
        job_steps=args.job_steps,
        database_url=args.database_url,
        bin_dir=args.bin_dir,
        seed=args.seed,
        at=args.at,
        mlflow_auth=args.mlflow_auth,
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the server on SIGTERM as on Ctrl+C
    try:
        return run_soak(opts, args.json)
    except KeyboardInterrupt:
        progress("Interrupted: server stopped.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
