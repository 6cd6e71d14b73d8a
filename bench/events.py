"""The live event stream: latency to a follower, and ten thousand followers held by one server.

Every figure is taken against servers this script starts itself (``trainflow server``, admin
account, each in its own temporary directory on free loopback ports), and, when ``ray`` is
importable, a local Ray head (``ray start --head --block``). One run prints ONE table with a
``trainflow`` column, a ``Ray 2.60`` column (measured in the same run, or the issue's figures
marked "(issue)" when Ray is not installed), the target and PASS/FAIL. Sections
(``--only latency,followers,redis,ray`` picks some):

* latency: a job prints ``--lines`` lines at ``--line-rate`` lines/s (``flush=True``), each
  holding the job's own ``time.time()``. A plain HTTP client (``requests``, ``stream=True``,
  ``iter_content(chunk_size=None)``) follows ``GET .../jobs/<id>/events`` from the moment the
  job is submitted and notes when each ``log`` event arrives; the latency is arrival minus
  printed time (one machine, one clock). Each event's ``ts`` (the supervisor's clock when it
  read the line) splits it in two: printed -> read by the supervisor, read -> at the client.
  A second job calls ``mlflow.log_metric("x", i, step=i)`` ``--metrics`` times and prints the
  time just before the call and just after it returned; the latency of the ``metric`` event is
  its arrival minus that return time. It may be 0 or less: the server appends and announces
  the event before it answers the call;
* ray: the same printing job through Ray Jobs on a local head, read with
  ``JobSubmissionClient.tail_job_logs`` (after one warm-up job, which builds the runtime env);
  the latency is the arrival of the chunk holding the line minus its printed time;
* redis: the latency section again across two server processes sharing one data directory
  and one SQLite database, both on the Redis bus (a private ``redis-server`` on a free port,
  or ``--redis-url``): server A runs the jobs, server B (``TRAINFLOW_RUN_JOBS=false``) serves
  the follower;
* followers: a job that prints nothing until told (through a file in its working directory) is
  followed by ``--streams`` connections to one server process (one gevent process). The
  connections are held by ``--clients`` processes (this file run with ``--client``), one
  ``epoll`` loop each over raw non-blocking sockets sending ``GET ... HTTP/1.1`` with Basic auth
  and decoding the chunked body, opened in batches of ``--batch`` at a time (all clients
  together). Memory per idle stream is the server process's PSS (and RSS) from
  ``/proc/<pid>/smaps_rollup`` after all are open and 3 s idle, minus before the first one
  opened (after 20 warm-up streams), over the count. Then the job prints ``tick RATE I TIME``
  lines at 2 events/s (20,000 deliveries/s with 10,000 streams) for ``--step-seconds``, then 4,
  8, 16 ... events/s, and each client notes every line's arrival on every connection (a
  histogram at 0.1 ms, sent back in a file), and for each event the latency of the first and of
  the last stream to get it. Stepping stops at the first rate whose p99 passes 250 ms, or when
  deliveries fall short; when 2 events/s fails already, the rate is halved instead (down to 0.5
  events/s).

The clients run on the same 2 cores as the server: a latency here includes the time a client
process takes to get to a socket that has data, as it would for a browser on a busy machine.
Servers, Redis, Ray and the clients are stopped at the end, on error and on Ctrl+C or SIGTERM
(Ray by its session id; a job still running through its supervisor).

Run: ``venv/bin/python bench/events.py [--quick] [--streams 10000] [--only latency,followers]``.
The table is also written as JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs import (
    _SESSIONS,
    ADMIN,
    RAY_CLIENT_TIMEOUT_S,
    RAY_SUBMIT_RETRY_S,
    TRAIN,
    Trainflow,
    _raise_interrupt,
    cpu_seconds,
    free_ports,
    guarded,
    num,
    ray_available,
    ray_command,
    read_json,
    stop_jobs,
    stop_session,
    stop_sessions,
    trainflow_env,
    verdict,
)
from mlflow_writes import (
    base_env,
    log_tail,
    percentile,
    progress,
    running,
    start_process,
    stop_all,
    stop_process,
    trainflow_revision,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
START_DELAY_S = 1.0  # the printing job waits this long first, so the follower is connected
JOB_TIMEOUT_S = 300.0
HIST_PER_MS = 10  # the followers' latency histogram: 0.1 ms buckets
CONNECT_TIMEOUT_S = 60.0
BATCH_TIMEOUT_S = 120.0
CLIENT_REPLY_TIMEOUT_S = 120.0
WARMUP_STREAMS = 20
IDLE_BEFORE_MEMORY_S = 3.0
DRAIN_S = 2.0  # after each step, before the clients report
FOLLOW_RATES = (2, 4, 8, 16, 32, 64, 128, 256)
MIN_RATE = 0.5  # stepping down, when the first rate fails already

TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
TARGET_STREAMS = 10_000
TARGET_KB_PER_STREAM = 50.0
TARGET_FOLLOW_P99_MS = 250.0
TARGET_FOLLOW_RATE = 2  # events/s of the job the 10,000 follow
TARGET_REDIS_P99_MS = 100.0
RAY_ISSUE_MS = {"p50": 950.0, "p99": 1960.0}  # the issue's Ray 2.60 tail_job_logs figures
POLL_REFERENCES = (("MLflow UI refetches every 30 s", 30_000), ("ClearML / Aim poll every 10 s", 10_000))

PRINTER_SCRIPT = '''\
"""Print COUNT lines at RATE lines/s after DELAY s, each ``line <i> <time.time()>``."""

import sys
import time

count, rate, delay = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
time.sleep(delay)
started = time.perf_counter()
for i in range(count):
    wait = started + i / rate - time.perf_counter()
    if wait > 0:
        time.sleep(wait)
    print(f"line {i} {time.time():.6f}", flush=True)
'''

METRIC_SCRIPT = '''\
"""COUNT x mlflow.log_metric("x", i, step=i) at RATE calls/s; print the time before and after."""

import sys
import time

import mlflow

count, rate = int(sys.argv[1]), float(sys.argv[2])
mlflow.log_metric("warmup", 0)
started = time.perf_counter()
for i in range(count):
    wait = started + i / rate - time.perf_counter()
    if wait > 0:
        time.sleep(wait)
    called = time.time()
    mlflow.log_metric("x", i, step=i)
    returned = time.time()
    print(f"ret {i} {called:.6f} {returned:.6f}", flush=True)
'''

TICKER_SCRIPT = '''\
"""Print ``tick <rate> <i> <time.time()>`` at the rate named in the file ``rate``; 0: be quiet."""

import time

i, current, due = 0, 0.0, time.perf_counter()
while True:
    try:
        with open("rate") as f:
            text = f.read().strip()
    except OSError:
        text = "0"
    if text == "stop":
        break
    rate = float(text or 0)
    now = time.perf_counter()
    if rate != current or now - due > 1.0:  # a new rate, or far behind: start the pace again
        current, due = rate, now
    if rate <= 0:
        time.sleep(0.05)
        continue
    if due > now:
        time.sleep(due - now)
    print(f"tick {rate:g} {i} {time.time():.6f}", flush=True)
    i += 1
    due += 1.0 / rate
'''

SCRIPTS = {"printer.py": PRINTER_SCRIPT, "metric.py": METRIC_SCRIPT, "ticker.py": TICKER_SCRIPT}


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
        "n": len(values),
    }


def hist_summary(hist: Counter[int]) -> dict[str, float]:
    """p50/p99/max (ms) of a histogram of 0.1 ms buckets."""
    total = sum(hist.values())
    if not total:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
    figures: dict[str, float] = {"n": total, "max": max(hist) / HIST_PER_MS}
    ordered = sorted(hist.items())
    for name, q in (("p50", 50), ("p99", 99)):
        rank, seen = max(math.ceil(q / 100 * total), 1), 0
        for bucket, count in ordered:
            seen += count
            if seen >= rank:
                figures[name] = (bucket + 1) / HIST_PER_MS  # the bucket's upper edge
                break
    return figures


def memory_kib(pid: int) -> dict[str, int]:
    """Pss and Rss of one process, in KiB (``/proc/<pid>/smaps_rollup``)."""
    figures = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Pss", "Rss"):
            figures[name.lower()] = int(rest.split()[0])
    return figures


def open_files_limit(pid: int) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    return "?"


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the servers and clients started)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------------------------
# trainflow servers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def trainflow_server(
    bin_dir: Path, tmp: Path, name: str, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[Trainflow, subprocess.Popen[bytes]]]:
    """A started, healthy trainflow server on ``tmp/data``, signed in as admin.

    The scripts are uploaded through the server that runs jobs (not ``TRAINFLOW_RUN_JOBS=false``).
    """
    import requests

    port = free_ports(1)[0]
    env = trainflow_env(tmp, port)
    env.update(extra_env or {})
    runs_jobs = env.get("TRAINFLOW_RUN_JOBS", "true") != "false"
    log_path = tmp / f"{name}.log"
    started = time.monotonic()
    with running([str(bin_dir / "trainflow"), "server"], env, tmp, log_path) as proc:
        ready = wait_healthy(f"http://127.0.0.1:{port}/api/health", proc, log_path, started)
        progress(f"[{name}] healthy in {ready:.1f} s (open files limit {open_files_limit(proc.pid)})")
        http = requests.Session()
        http.trust_env = False  # never via a proxy
        http.auth = ADMIN
        server = Trainflow(f"http://127.0.0.1:{port}", tmp / "data", http)
        if runs_jobs:
            server.scripts = {script: server.upload(script, source) for script, source in SCRIPTS.items()}
        try:
            yield server, proc
        finally:
            http.close()
            if runs_jobs:
                stop_jobs(tmp / "data" / "jobs")  # supervisors run in sessions of their own


def wait_running(server: Trainflow, job_id: int, timeout: float = JOB_TIMEOUT_S) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = (read_json(server.job_dir(job_id) / "status.json") or {}).get("state")
        if state == "running":
            return
        if state == "exited":
            raise RuntimeError(
                f"job {job_id} exited early:\n{log_tail(server.job_dir(job_id) / 'logs.ndjson')}"
            )
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not start in {timeout:.0f} s")


# --------------------------------------------------------------------------------------------
# Latency: one plain streaming client
# --------------------------------------------------------------------------------------------


def follow_timed(server: Trainflow, job_id: int) -> list[tuple[float, dict[str, Any]]]:
    """Every event of the job with its arrival time (epoch s), until ``end``; resumes on resync."""
    url = server.url(f"/jobs/{job_id}/events")
    got: list[tuple[float, dict[str, Any]]] = []
    after = 0
    deadline = time.time() + JOB_TIMEOUT_S
    while time.time() < deadline:
        with server.http.get(url, params={"after": after}, stream=True, timeout=(10, 60)) as response:
            if response.status_code != 200:
                raise RuntimeError(f"events of job {job_id}: {response.status_code} {response.text[:300]}")
            pending = b""
            for chunk in response.iter_content(chunk_size=None):
                arrived = time.time()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in filter(None, lines):
                    event = json.loads(raw)
                    after = event.get("seq", after)
                    if event["type"] == "resync":
                        progress(f"[latency] resync at seq {event['seq']}: resuming")
                    elif event["type"] != "heartbeat":
                        got.append((arrived, event))
                    if event["type"] in ("end", "deleted"):
                        return got
    raise TimeoutError(f"job {job_id} did not end in {JOB_TIMEOUT_S:.0f} s")


def printed_lines(server: Trainflow, follower: Trainflow, lines: int, rate: float) -> dict[str, Any]:
    """Submit the printing job on ``server``, follow it on ``follower``: latency per line."""
    job_id, _, _ = server.submit("printer.py", [str(lines), str(rate), str(START_DELAY_S)])
    events = follow_timed(follower, job_id)
    latency, read, deliver = [], [], []
    for arrived, event in events:
        if event["type"] == "log" and event["line"].startswith("line "):
            printed = float(event["line"].split()[2])
            latency.append((arrived - printed) * 1000)
            read.append((float(event["ts"]) - printed) * 1000)
            deliver.append((arrived - float(event["ts"])) * 1000)
    if len(latency) != lines or events[-1][1].get("status") != "SUCCEEDED":
        raise RuntimeError(f"job {job_id}: {len(latency)} of {lines} lines, last event {events[-1][1]}")
    return {
        "job": job_id,
        "latency_ms": summary(latency),
        "read_ms": summary(read),
        "deliver_ms": summary(deliver),
        "raw_latency_ms": latency,
    }


def metric_events(server: Trainflow, follower: Trainflow, count: int, rate: float) -> dict[str, Any]:
    """Submit the log_metric job; latency of each ``metric`` event from the call's return (and start)."""
    job_id, _, _ = server.submit("metric.py", [str(count), str(rate)])
    events = follow_timed(follower, job_id)
    arrivals: dict[int, float] = {}
    calls: dict[int, tuple[float, float]] = {}
    for arrived, event in events:
        if event["type"] == "metric" and event["key"] == "x":
            arrivals[int(event["step"])] = arrived
        elif event["type"] == "log" and event["line"].startswith("ret "):
            _, step, called, returned = event["line"].split()
            calls[int(step)] = (float(called), float(returned))
    steps = sorted(set(arrivals) & set(calls))
    if len(steps) != count:
        raise RuntimeError(f"job {job_id}: {len(arrivals)} metric events, {len(calls)} calls of {count}")
    from_return = [(arrivals[s] - calls[s][1]) * 1000 for s in steps]
    return {
        "job": job_id,
        "from_return_ms": summary(from_return),
        "from_call_ms": summary([(arrivals[s] - calls[s][0]) * 1000 for s in steps]),
        "call_ms": summary([(calls[s][1] - calls[s][0]) * 1000 for s in steps]),
        "before_return": sum(1 for value in from_return if value <= 0),
    }


def measure_latency(server: Trainflow, follower: Trainflow, opts: Options, name: str) -> dict[str, Any]:
    progress(f"[{name}] {opts.lines:,} lines at {opts.line_rate:g}/s ...")
    lines = printed_lines(server, follower, opts.lines, opts.line_rate)
    progress(
        f"[{name}]   p50 {lines['latency_ms']['p50']:.1f} ms, p99 {lines['latency_ms']['p99']:.1f} ms; "
        f"{opts.metrics:,} log_metric calls at {opts.metric_rate:g}/s ..."
    )
    metrics = metric_events(server, follower, opts.metrics, opts.metric_rate)
    progress(
        f"[{name}]   from return p50 {metrics['from_return_ms']['p50']:.1f} ms, "
        f"p99 {metrics['from_return_ms']['p99']:.1f} ms"
    )
    return {"lines": lines, "metrics": metrics}


def bench_latency(opts: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-events-") as name:
        with trainflow_server(opts.bin_dir, Path(name), "latency") as (server, _):
            return measure_latency(server, server, opts, "latency")


# --------------------------------------------------------------------------------------------
# Redis: the job on server A, the follower on server B
# --------------------------------------------------------------------------------------------


def redis_ping(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@contextlib.contextmanager
def redis_bus(tmp: Path, url: str) -> Iterator[str]:
    """``url`` when given; else a private redis-server on a free port, no persistence."""
    if url:
        if not redis_ping(url):
            raise RuntimeError(f"no Redis answers at {url}")
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: pass --redis-url")
    port = free_ports(1)[0]
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with running(argv, base_env(), tmp, tmp / "redis.log") as proc:
        private = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 30
        while not redis_ping(private):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{log_tail(tmp / 'redis.log')}")
            time.sleep(0.05)
        yield private


def bench_redis(opts: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-events-redis-") as name:
        tmp = Path(name)
        with redis_bus(tmp, opts.redis_url) as url:
            progress(f"[redis] bus at {'--redis-url' if opts.redis_url else 'a private redis-server'}")
            bus = {"TRAINFLOW_REDIS_URL": url}
            with (
                trainflow_server(opts.bin_dir, tmp, "redis-A", bus) as (runner, _),
                trainflow_server(opts.bin_dir, tmp, "redis-B", {**bus, "TRAINFLOW_RUN_JOBS": "false"}) as (
                    other,
                    _,
                ),
            ):
                return measure_latency(runner, other, opts, "redis")


# --------------------------------------------------------------------------------------------
# Ray: a local head, and a client subprocess (``--ray-client``) tailing the printing job
# --------------------------------------------------------------------------------------------


def bench_ray(opts: Options) -> dict[str, Any]:
    # Ray's unix sockets live under --temp-dir: keep the path short (they are limited to ~107 bytes).
    short_root = "/tmp" if Path("/tmp").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="bench-ray-", dir=short_root, ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        (tmp / "wd").mkdir()
        (tmp / "wd" / "printer.py").write_text(PRINTER_SCRIPT)
        argv, env, dashboard = ray_command(opts.bin_dir, tmp)
        log_path = tmp / "ray-head.log"
        progress("[ray] starting a local head ...")
        started = time.monotonic()
        proc = start_process(argv, env, tmp, log_path)
        _SESSIONS[proc.pid] = proc
        try:
            address = f"http://127.0.0.1:{dashboard}"
            ready = wait_healthy(f"{address}/api/version", proc, log_path, started)
            progress(f"[ray] dashboard up in {ready:.1f} s; a warm-up job, then {opts.lines:,} lines ...")
            client_argv = [sys.executable, str(Path(__file__).resolve()), "--ray-client", address]
            client_argv += ["--ray-workdir", str(tmp / "wd"), "--lines", str(opts.lines)]
            client_argv += ["--line-rate", str(opts.line_rate)]
            client_log = tmp / "ray-client.log"
            with running(client_argv, env, tmp, client_log) as client:
                try:
                    client.wait(timeout=RAY_CLIENT_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    raise TimeoutError(f"the Ray client did not finish:\n{log_tail(client_log)}") from None
            found = [
                line for line in client_log.read_text(errors="replace").splitlines() if line.startswith("{")
            ]
            if client.returncode != 0 or not found:
                raise RuntimeError(f"the Ray client failed ({client.returncode}):\n{log_tail(client_log)}")
            figures = dict(json.loads(found[-1]))
            latency = figures.pop("latency_ms")
            if len(latency) != opts.lines:
                raise RuntimeError(f"tail_job_logs gave {len(latency)} of {opts.lines} lines")
            progress(f"[ray]   p50 {percentile(latency, 50):.0f} ms, p99 {percentile(latency, 99):.0f} ms")
            return {
                **figures,
                "head_ready_s": ready,
                "latency_ms": summary(latency),
                "raw_latency_ms": latency,
            }
        finally:
            progress("[ray] stopping the head (its whole session) ...")
            stop_session(proc)
            _SESSIONS.pop(proc.pid, None)


def ray_client_main(address: str, workdir: str, lines: int, rate: float) -> dict[str, Any]:
    """A warm-up job, then the printing job, read through ``tail_job_logs`` as it runs."""
    import asyncio

    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)

    def submit(entrypoint: str) -> str:
        deadline = time.time() + RAY_SUBMIT_RETRY_S
        while True:
            try:
                return str(client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": workdir}))
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def wait_end(job_id: str) -> None:
        deadline = time.time() + JOB_TIMEOUT_S
        while time.time() < deadline and not client.get_job_status(job_id).is_terminal():
            time.sleep(0.05)
        status = client.get_job_status(job_id)
        if status != JobStatus.SUCCEEDED:
            raise RuntimeError(f"Ray job {job_id} ended {status}: {client.get_job_logs(job_id)[-1000:]}")

    wait_end(submit("python -u printer.py 1 1 0"))
    job_id = submit(f"python -u printer.py {lines} {rate} {START_DELAY_S}")
    latency: list[float] = []

    async def tail() -> None:
        pending = ""
        async for chunk in client.tail_job_logs(job_id):
            arrived = time.time()
            pending += chunk
            *complete, pending = pending.split("\n")
            for line in complete:
                if line.startswith("line "):
                    latency.append((arrived - float(line.split()[2])) * 1000)

    asyncio.run(asyncio.wait_for(tail(), JOB_TIMEOUT_S))
    wait_end(job_id)
    from importlib.metadata import version

    return {"version": version("ray"), "latency_ms": latency}


# --------------------------------------------------------------------------------------------
# Followers: the client processes (``--client``): one epoll loop, raw sockets, chunked HTTP/1.1
# --------------------------------------------------------------------------------------------


class ChunkedLines:
    """An incremental reader of one HTTP/1.1 response: its status, then whole body lines."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.ended = False
        self._chunked = False
        self._buffer = b""
        self._body = b""
        self._need: int | None = None  # the size of the chunk being read

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        if self.status is None:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return []
            head = self._buffer[:head_end].decode("latin-1").lower()
            self.status = int(head.split(" ", 2)[1])
            self._chunked = "transfer-encoding: chunked" in head
            self._buffer = self._buffer[head_end + 4 :]
        if not self._chunked:
            self._body, self._buffer = self._body + self._buffer, b""
        while self._chunked and not self.ended:
            if self._need is None:
                line_end = self._buffer.find(b"\r\n")
                if line_end < 0:
                    break
                self._need = int(self._buffer[:line_end].split(b";")[0], 16)
                self._buffer = self._buffer[line_end + 2 :]
                self.ended = self._need == 0
                continue
            if len(self._buffer) < self._need + 2:
                break
            self._body += self._buffer[: self._need]
            self._buffer = self._buffer[self._need + 2 :]
            self._need = None
        *lines, self._body = self._body.split(b"\n")
        return lines


class Stream:
    """One follower connection in a client process."""

    __slots__ = ("after", "connecting", "opened", "reader", "sock")

    def __init__(self, sock: socket.socket, after: int, opened: bool) -> None:
        self.sock = sock
        self.after = after
        self.opened = opened  # it has had its 200 (a reconnection after resync stays opened)
        self.connecting = True
        self.reader = ChunkedLines()


class FollowerClient:
    """Holds a share of the streams in one process; counts and times every tick it receives.

    One ``epoll`` loop over non-blocking sockets, no greenlet per connection: a delivery costs
    the client a read and a few string operations, so the client processes take as little as
    they can of the two cores they share with the server.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.host, self.port = config["host"], int(config["port"])
        self.path = config["path"]
        self.auth = "Basic " + base64.b64encode(config["auth"].encode()).decode()
        self.share, self.batch = int(config["share"]), int(config["batch"])
        self.folder = Path(config["folder"])
        self.name = config["name"]
        self.hist: dict[str, Counter[int]] = {}
        self.received: Counter[str] = Counter()
        self.spread: dict[str, list[float]] = {}  # "rate i": the first and last arrival's latency
        self.counts: Counter[str] = Counter()  # open, failed, ended, resyncs, errors by kind
        self._parsed: dict[bytes, tuple[str, float] | None] = {}
        self._reports = 0
        self.poll = select.epoll()
        self.streams: dict[int, Stream] = {}
        self.pending_opens = 0  # streams of the current batch not yet answered

    def request(self, after: int) -> bytes:
        return (
            f"GET {self.path}?after={after} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: {self.auth}\r\nAccept: application/x-ndjson\r\n\r\n"
        ).encode()

    def tick(self, raw: bytes) -> tuple[str, float, str] | None:
        """(rate, printed time, "rate i") of a ``tick`` log event; parsed once for all the streams.

        ``resync``, ``end`` and ``deleted`` give (their type, their seq, "").
        """
        if raw in self._parsed:
            return self._parsed[raw]
        event = json.loads(raw)
        parsed = None
        if event.get("type") == "log" and event.get("line", "").startswith("tick "):
            _, rate, i, printed = event["line"].split()
            parsed = (rate, float(printed), f"{rate} {i}")
        elif event.get("type") in ("resync", "end", "deleted"):
            parsed = (event["type"], float(event.get("seq", 0)), "")
        if len(self._parsed) > 2000:
            self._parsed.clear()
        self._parsed[raw] = parsed
        return parsed

    # -- connections ------------------------------------------------------------------------

    def connect(self, after: int, opened: bool) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((self.host, self.port))
        self.streams[sock.fileno()] = Stream(sock, after, opened)
        self.poll.register(sock.fileno(), select.EPOLLOUT)

    def close(self, stream: Stream) -> None:
        fd = stream.sock.fileno()
        self.poll.unregister(fd)
        del self.streams[fd]
        stream.sock.close()

    def on_ready(self, fd: int, events: int) -> None:
        stream = self.streams[fd]
        if stream.connecting:
            if events & (select.EPOLLERR | select.EPOLLHUP):
                self.finish(stream, "error")
                return
            stream.connecting = False
            stream.sock.send(self.request(stream.after))
            self.poll.modify(fd, select.EPOLLIN)
            return
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            self.counts[f"error {type(e).__name__}"] += 1
            self.finish(stream, "error")
            return
        arrived = time.time()
        if not data:
            self.finish(stream, "closed")
            return
        reader = stream.reader
        first_answer = reader.status is None
        lines = reader.feed(data)
        if first_answer and reader.status is not None and not stream.opened:
            stream.opened = reader.status == 200
            self.counts["open" if stream.opened else f"http {reader.status}"] += 1
            self.pending_opens -= 1
            if not stream.opened:
                self.counts["failed"] += 1
                self.close(stream)
                return
        for raw in lines:
            outcome = self.on_line(raw, arrived)
            if raw.startswith(b'{"seq":'):
                stream.after = int(raw[7 : raw.index(b",", 7)])
            if outcome == "resync":  # resume after the seq it names
                stream.after = int(self._parsed[raw][1])  # type: ignore[index]
                self.counts["resyncs"] += 1
                self.close(stream)
                self.connect(stream.after, opened=True)
                return
            if outcome:
                self.finish(stream, outcome)
                return
        if reader.ended:
            self.finish(stream, "closed")

    def finish(self, stream: Stream, outcome: str) -> None:
        if not stream.opened:
            self.counts["failed"] += 1
            self.pending_opens -= 1
        else:
            self.counts["open"] -= 1
            self.counts["ended" if outcome == "end" else "lost"] += 1
        self.close(stream)

    def on_line(self, raw: bytes, arrived: float) -> str:
        if not raw:
            return ""
        parsed = self.tick(raw)
        if parsed is None:
            return ""
        kind, value, tick = parsed
        if kind in ("resync", "end", "deleted"):
            return "resync" if kind == "resync" else "end"
        latency_ms = max(arrived - value, 0.0) * 1000
        self.hist.setdefault(kind, Counter())[int(latency_ms * HIST_PER_MS)] += 1
        self.received[kind] += 1
        spread = self.spread.get(tick)
        if spread is None:
            self.spread[tick] = [latency_ms, latency_ms]
        elif latency_ms > spread[1]:  # arrivals only get later
            spread[1] = latency_ms
        return ""

    def turn(self, timeout: float) -> list[tuple[int, int]]:
        """One round of the loop; returns the events of the fds that are not streams (stdin)."""
        others = []
        for fd, events in self.poll.poll(timeout):
            if fd in self.streams:
                self.on_ready(fd, events)
            else:
                others.append((fd, events))
        return others

    # -- the client process -----------------------------------------------------------------

    def open_all(self) -> None:
        started = time.monotonic()
        for first in range(0, self.share, self.batch):
            size = min(self.batch, self.share - first)
            self.pending_opens = size
            for _ in range(size):
                self.connect(0, opened=False)
            deadline = time.monotonic() + BATCH_TIMEOUT_S
            while self.pending_opens > 0 and time.monotonic() < deadline:
                self.turn(1.0)
            emit({"opened": self.counts["open"], "failed": self.counts["failed"]})
        emit({"ready": True, "seconds": time.monotonic() - started, **self.counts})

    def report(self) -> None:
        self._reports += 1
        path = self.folder / f"{self.name}-{self._reports}.json"
        document = {
            "hist": {rate: dict(counter) for rate, counter in self.hist.items()},
            "received": dict(self.received),
            "spread": self.spread,
            "counts": dict(self.counts),
        }
        path.write_text(json.dumps(document))
        self.hist, self.received, self.spread = {}, Counter(), {}
        emit({"report": str(path)})

    def serve_commands(self) -> None:
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        self.poll.register(stdin, select.EPOLLIN)
        pending = b""
        while True:
            for fd, _ in self.turn(1.0):
                data = os.read(fd, 4096)
                if not data:
                    return
                pending += data
                *commands, pending = pending.split(b"\n")
                for command in commands:
                    if command.strip() == b"report":
                        self.report()
                    elif command.strip() == b"stop":
                        return


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def client_main(config: dict[str, Any]) -> int:
    raise_open_files_limit()
    client = FollowerClient(config)
    client.open_all()
    client.serve_commands()
    return 0


# --------------------------------------------------------------------------------------------
# Followers: the benchmark's side
# --------------------------------------------------------------------------------------------


class ClientProcess:
    """One ``--client`` subprocess: commands on its stdin, JSON lines back on its stdout."""

    def __init__(self, config: dict[str, Any], log_path: Path) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--client", json.dumps(config)]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
        self.log_path = log_path
        self._pending = b""

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, key: str, timeout: float = CLIENT_REPLY_TIMEOUT_S) -> dict[str, Any]:
        """The next message holding ``key`` (earlier ones are progress, shown on stderr)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                message = dict(json.loads(line))
                if key in message:
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"a client sent no {key!r} in {timeout:.0f} s:\n{log_tail(self.log_path)}")
            data = os.read(fd, 1 << 16)
            if not data:
                raise RuntimeError(f"a client exited ({self.proc.wait()}):\n{log_tail(self.log_path)}")
            self._pending += data

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.send("stop")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        stop_process(self.proc)


@contextlib.contextmanager
def client_processes(configs: list[dict[str, Any]], folder: Path) -> Iterator[list[ClientProcess]]:
    clients: list[ClientProcess] = []
    try:
        for config in configs:
            clients.append(ClientProcess(config, folder / f"{config['name']}.log"))
        yield clients
    finally:
        for client in clients:
            client.stop()


@dataclass
class Tally:
    """What the clients reported, merged: a histogram and a delivery count per rate, and for each
    event the latency of the first and of the last stream to receive it."""

    hist: dict[str, Counter[int]] = field(default_factory=dict)
    received: Counter[str] = field(default_factory=Counter)
    spread: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # the last counts of each client

    def collect(self, clients: list[ClientProcess]) -> None:
        for client in clients:
            client.send("report")
        for index, client in enumerate(clients):
            document = json.loads(Path(client.expect("report")["report"]).read_text())
            for rate, buckets in document["hist"].items():
                counter = self.hist.setdefault(rate, Counter())
                counter.update({int(bucket): count for bucket, count in buckets.items()})
            self.received.update(document["received"])
            for tick, (first, last) in document["spread"].items():
                known = self.spread.setdefault(tick, [first, last])
                known[:] = [min(known[0], first), max(known[1], last)]
            self.counts[str(index)] = Counter(document["counts"])

    def fan_out(self, rate: str) -> dict[str, dict[str, float]]:
        """Over the events printed at ``rate``: when the first and the last stream got each."""
        spreads = [v for k, v in self.spread.items() if k.split()[0] == rate]
        return {
            "first_ms": summary([first for first, _ in spreads]),
            "last_ms": summary([last for _, last in spreads]),
        }

    def total(self, name: str) -> int:
        return sum(counts.get(name, 0) for counts in self.counts.values())


def set_rate(server: Trainflow, job_id: int, rate: float | str) -> None:
    """Tell the ticker job its rate (a file in its working directory, replaced atomically)."""
    work = server.job_dir(job_id) / "work"
    (work / "rate.tmp").write_text(f"{rate:g}" if isinstance(rate, float | int) else rate)
    os.replace(work / "rate.tmp", work / "rate")


def ticks_printed(server: Trainflow, job_id: int) -> Counter[str]:
    """How many ``tick`` lines the job printed at each rate (from its stored log)."""
    printed: Counter[str] = Counter()
    with open(server.job_dir(job_id) / "logs.ndjson", "rb") as f:
        for raw in f:
            line = json.loads(raw).get("line", "")
            if line.startswith("tick "):
                printed[line.split()[1]] += 1
    return printed


def warm_up_streams(server: Trainflow, job_id: int, count: int) -> None:
    """Open and close a few streams, so that what the first one loads is not counted per stream."""
    for _ in range(count):
        with server.http.get(server.url(f"/jobs/{job_id}/events"), stream=True, timeout=(10, 30)) as response:
            if response.status_code != 200:
                raise RuntimeError(f"events of job {job_id}: {response.status_code}")
            next(response.iter_content(chunk_size=None))


def client_configs(server: Trainflow, job_id: int, opts: Options, folder: Path) -> list[dict[str, Any]]:
    """What each client process is to hold: its share of the streams, opened in batches."""
    port = int(server.base_url.rsplit(":", 1)[1])
    shares = [opts.streams // opts.clients + (i < opts.streams % opts.clients) for i in range(opts.clients)]
    return [
        {
            "name": f"client-{i}",
            "host": "127.0.0.1",
            "port": port,
            "path": f"{TRAIN}/jobs/{job_id}/events",
            "auth": f"{ADMIN[0]}:{ADMIN[1]}",
            "share": share,
            "batch": max(opts.batch // opts.clients, 1),
            "folder": str(folder),
        }
        for i, share in enumerate(shares)
    ]


def run_step(
    server: Trainflow,
    proc: subprocess.Popen[bytes],
    job_id: int,
    clients: list[ClientProcess],
    rate: float,
    seconds: float,
    tally: Tally,
) -> dict[str, Any]:
    """The job prints ``rate`` events/s for ``seconds`` (at least 8 events); what the streams got."""
    streams = tally.total("open")
    cpu_before, client_cpu_before = cpu_seconds(proc.pid), sum(cpu_seconds(c.proc.pid) for c in clients)
    started = time.monotonic()
    set_rate(server, job_id, rate)
    time.sleep(max(seconds, 8 / rate))
    set_rate(server, job_id, 0.0)
    elapsed = time.monotonic() - started
    server_cpu = (cpu_seconds(proc.pid) - cpu_before) / elapsed
    client_cpu = (sum(cpu_seconds(c.proc.pid) for c in clients) - client_cpu_before) / elapsed
    time.sleep(DRAIN_S)
    tally.collect(clients)
    key = f"{rate:g}"
    printed = ticks_printed(server, job_id)[key]
    figures = hist_summary(tally.hist.get(key, Counter()))
    step = {
        "rate": rate,
        "streams": streams,
        "deliveries_s": rate * streams,
        "printed": printed,
        "delivered": tally.received[key],
        "expected": printed * streams,
        "latency_ms": figures,
        **tally.fan_out(key),
        "server_cpu": server_cpu,
        "clients_cpu": client_cpu,
    }
    progress(
        f"[followers] {rate:g} events/s x {streams:,} streams = {rate * streams:,.0f} deliveries/s: "
        f"p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms (first stream p50 "
        f"{step['first_ms']['p50']:.1f} ms, last {step['last_ms']['p50']:.1f} ms), "
        f"delivered {step['delivered'] / max(step['expected'], 1):.1%}, "
        f"server CPU {server_cpu:.0%}, clients CPU {client_cpu:.0%}"
    )
    return step


def run_steps(
    server: Trainflow,
    proc: subprocess.Popen[bytes],
    job_id: int,
    clients: list[ClientProcess],
    opts: Options,
    tally: Tally,
) -> list[dict[str, Any]]:
    """Step the job's rate up until p99 passes the target or deliveries fall short.

    If the first rate fails already, halve it (down to ``MIN_RATE``) until p99 is within target.
    """

    def fails(step: dict[str, Any]) -> bool:
        short = step["delivered"] < 0.99 * step["expected"]
        return bool(step["latency_ms"]["p99"] > TARGET_FOLLOW_P99_MS or short)

    steps = []
    for rate in opts.rates:
        steps.append(run_step(server, proc, job_id, clients, rate, opts.step_seconds, tally))
        if fails(steps[-1]):
            break
    if len(steps) == 1 and fails(steps[0]):
        rate = opts.rates[0] / 2
        while rate >= MIN_RATE:
            steps.insert(0, run_step(server, proc, job_id, clients, rate, opts.step_seconds, tally))
            if not fails(steps[0]):
                break
            rate /= 2
    return steps


def open_streams(clients: list[ClientProcess], opts: Options) -> dict[str, Any]:
    """Wait until every client holds its share; how long it took, how many opened and failed."""
    started = time.monotonic()
    timeout = BATCH_TIMEOUT_S * (opts.streams // opts.batch + 2)
    ready = [client.expect("ready", timeout) for client in clients]
    figures = {
        "open_s": time.monotonic() - started,
        "opened": sum(int(r.get("open", 0)) for r in ready),
        "failed": sum(int(r.get("failed", 0)) for r in ready),
    }
    progress(
        f"[followers] {figures['opened']:,} streams open ({figures['failed']:,} failed) "
        f"in {figures['open_s']:.1f} s; idle {IDLE_BEFORE_MEMORY_S:g} s"
    )
    return figures


def wait_streams_ended(clients: list[ClientProcess], tally: Tally, timeout: float = 60.0) -> None:
    """After the job's end: collect until no client holds a stream (all got ``end``), or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        time.sleep(DRAIN_S)
        tally.collect(clients)
        if tally.total("open") <= 0 or time.monotonic() > deadline:
            return


def server_errors(log_path: Path) -> dict[str, int]:
    """Exception lines in a server's log (``SomeError: message``), counted."""
    found: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            match = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Timeout)\w*): (.*)$", line)
            if match:
                found[f"{match.group(1)}: {match.group(2)[:160]}"] += 1
    return dict(found.most_common(5))


def bench_followers(opts: Options) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-events-followers-") as name,
        trainflow_server(opts.bin_dir, Path(name), "followers") as (server, proc),
    ):
        tmp = Path(name)
        job_id, _, _ = server.submit("ticker.py")
        wait_running(server, job_id)
        set_rate(server, job_id, 0.0)
        warm_up_streams(server, job_id, WARMUP_STREAMS)
        time.sleep(1.0)
        before = memory_kib(proc.pid)
        progress(
            f"[followers] server PSS {before['pss'] / 1024:.0f} MB; opening {opts.streams:,} streams ..."
        )
        tally = Tally()
        with client_processes(client_configs(server, job_id, opts, tmp), tmp) as clients:
            opening = open_streams(clients, opts)
            time.sleep(IDLE_BEFORE_MEMORY_S)
            after = memory_kib(proc.pid)
            descriptors = len(os.listdir(f"/proc/{proc.pid}/fd"))
            tally.collect(clients)  # counts only: nothing was printed yet
            held = tally.total("open")
            per_stream = {
                kind: (after[kind] - before[kind]) / max(held, 1) * 1.024 for kind in ("pss", "rss")
            }
            progress(f"[followers] {held:,} held; PSS +{per_stream['pss']:.1f} KB per stream")
            steps = run_steps(server, proc, job_id, clients, opts, tally)
            set_rate(server, job_id, "stop")
            server.wait_done(job_id)
            wait_streams_ended(clients, tally)
        printed = ticks_printed(server, job_id)
        for step in steps:  # with the late arrivals of each rate, counted in later reports
            key = f"{step['rate']:g}"
            step["delivered"] = tally.received[key]
            step["latency_ms"] = hist_summary(tally.hist.get(key, Counter()))
            step.update(tally.fan_out(key))
            step["printed"] = printed[key]
            step["expected"] = printed[key] * step["streams"]
        client_errors: Counter[str] = Counter()
        for counts in tally.counts.values():
            client_errors.update({k: v for k, v in counts.items() if k.startswith(("error", "http"))})
        return {
            "streams": opts.streams,
            "batch": opts.batch,
            **opening,
            "held": held,
            "client_errors": dict(client_errors),
            "server_errors": server_errors(tmp / "followers.log"),
            "ended": tally.total("ended"),
            "lost": tally.total("lost"),
            "resyncs": tally.total("resyncs"),
            "before_kib": before,
            "after_kib": after,
            "pss_kb_per_stream": per_stream["pss"],
            "rss_kb_per_stream": per_stream["rss"],
            "server_fds": descriptors,
            "open_files_limit": open_files_limit(proc.pid),
            "steps": steps,
        }


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    trainflow: str = ""
    ray: str = ""
    target: str = ""
    verdict: str = ""


def checked(value: float, limit: float) -> str:
    return verdict(value <= limit).strip() if not math.isnan(value) else "n/a"


def latency_rows(latency: dict[str, Any] | None, ray: dict[str, Any] | None, opts: Options) -> list[Row]:
    rows = [
        Row(f"Job prints a line -> client receives it, ms ({opts.lines:,} lines at {opts.line_rate:g}/s)")
    ]
    lines = (latency or {}).get("lines", {})
    tf = lines.get("latency_ms", {})
    for q, target in (("p50", TARGET_P50_MS), ("p99", TARGET_P99_MS)):
        ray_cell = num(ray["latency_ms"][q]) if ray else f"~{num(RAY_ISSUE_MS[q])} (issue)"
        rows.append(
            Row(
                f"  {q}",
                num(tf.get(q), 1),
                ray_cell,
                f"<= {target:g} (issue)",
                checked(tf.get(q, math.nan), target) if latency else "",
            )
        )
    if latency:
        for key, label in (
            ("read_ms", "printed -> read by the supervisor"),
            ("deliver_ms", "read -> at the client"),
        ):
            figures = lines[key]
            rows.append(
                Row(f"    {label}, p50 / p99", f"{num(figures['p50'], 1)} / {num(figures['p99'], 1)}")
            )
        metrics = latency["metrics"]
        rows.append(
            Row(f"log_metric returns -> client receives the metric event, ms ({opts.metrics:,} calls)")
        )
        for q in ("p50", "p99"):
            rows.append(
                Row(f"  {q} (<= 0: pushed before the call returned)", num(metrics["from_return_ms"][q], 1))
            )
        rows.append(
            Row(
                "  events in before the call returned",
                f"{metrics['before_return']:,}/{metrics['from_return_ms']['n']:,}",
            )
        )
        call, start = metrics["call_ms"], metrics["from_call_ms"]
        rows.append(Row("  log_metric call, p50 / p99", f"{num(call['p50'], 1)} / {num(call['p99'], 1)}"))
        rows.append(
            Row("  from the call's start, p50 / p99", f"{num(start['p50'], 1)} / {num(start['p99'], 1)}")
        )
    for label, interval in POLL_REFERENCES:
        rows.append(Row(f"  reference, not measured: {label}", "", "", f"waits up to {interval:,}"))
    return rows


def redis_rows(redis: dict[str, Any]) -> list[Row]:
    lines, metrics = redis["lines"]["latency_ms"], redis["metrics"]["from_return_ms"]
    rows = [Row("Redis bus: job on server A, client follows on server B, ms")]
    rows.append(Row("  printed line, p50", num(lines["p50"], 1)))
    rows.append(
        Row(
            "  printed line, p99",
            num(lines["p99"], 1),
            "",
            f"<= {TARGET_REDIS_P99_MS:g} (issue)",
            checked(lines["p99"], TARGET_REDIS_P99_MS),
        )
    )
    deliver = redis["lines"]["deliver_ms"]
    rows.append(
        Row(
            "    read by the supervisor -> at the client, p50 / p99",
            f"{num(deliver['p50'], 1)} / {num(deliver['p99'], 1)}",
        )
    )
    rows.append(
        Row(
            "  metric event from log_metric's return, p50 / p99",
            f"{num(metrics['p50'], 1)} / {num(metrics['p99'], 1)}",
        )
    )
    return rows


def follower_rows(followers: dict[str, Any]) -> list[Row]:
    f = followers
    # The issue's targets are for 10,000 streams; a run with fewer (--quick) is marked against them
    # all the same, and says so.
    issue = "(issue)" if f["streams"] >= TARGET_STREAMS else f"(issue, at {TARGET_STREAMS:,})"
    rows = [Row(f"Followers held by ONE server process ({f['streams']:,} streams to one job)")]
    rows.append(
        Row(
            "  streams open (failed)",
            f"{f['held']:,} ({f['failed']:,})",
            "",
            f">= {f['streams']:,} " + ("(issue)" if f["streams"] >= TARGET_STREAMS else "(issue: 10,000)"),
            verdict(f["held"] >= f["streams"]).strip(),
        )
    )
    for error, count in f["client_errors"].items():
        rows.append(Row(f"    failed: {error}", f"{count:,}"))
    rows.append(Row(f"  time to open them, s (batches of {f['batch']:,})", num(f["open_s"], 1)))
    rows.append(
        Row(
            "  memory per idle stream, PSS (KB)",
            num(f["pss_kb_per_stream"], 1),
            "",
            f"<= {TARGET_KB_PER_STREAM:g} (issue)",
            checked(f["pss_kb_per_stream"], TARGET_KB_PER_STREAM),
        )
    )
    rows.append(Row("  memory per idle stream, RSS (KB)", num(f["rss_kb_per_stream"], 1)))
    before, after = f["before_kib"]["pss"] / 1024, f["after_kib"]["pss"] / 1024
    rows.append(Row("  server PSS before -> after (MB)", f"{before:,.0f} -> {after:,.0f}"))
    for step in f["steps"]:
        figures = step["latency_ms"]
        label = f"  {step['rate']:g} events/s = {step['deliveries_s']:,.0f} deliveries/s: p50 / p99 ms"
        target = verdict_cell = ""
        if step["rate"] == TARGET_FOLLOW_RATE:
            target = f"p99 <= {TARGET_FOLLOW_P99_MS:g} {issue}"
            verdict_cell = checked(figures["p99"], TARGET_FOLLOW_P99_MS)
        rows.append(
            Row(label, f"{num(figures['p50'], 1)} / {num(figures['p99'], 1)}", "", target, verdict_cell)
        )
        first, last = step["first_ms"]["p50"], step["last_ms"]["p50"]
        rows.append(
            Row("    first / last stream to get an event, p50 ms", f"{num(first, 1)} / {num(last, 1)}")
        )
        share = step["delivered"] / max(step["expected"], 1) * 100
        rows.append(
            Row(
                "    delivered; server CPU, clients CPU (of 1 core)",
                f"{share:.1f}%; {step['server_cpu']:.0%}, {step['clients_cpu']:.0%}",
            )
        )
    rows.append(Row("  p99 passes 250 ms at (deliveries/s)", passes_at(f["steps"])))
    return rows


def passes_at(steps: list[dict[str, Any]]) -> str:
    ok = [s for s in steps if s["latency_ms"]["p99"] <= TARGET_FOLLOW_P99_MS]
    over = [s for s in steps if s["latency_ms"]["p99"] > TARGET_FOLLOW_P99_MS]
    if over and ok:
        return f"{ok[-1]['deliveries_s']:,.0f} .. {over[0]['deliveries_s']:,.0f}"
    if over:
        return f"< {over[0]['deliveries_s']:,.0f} (every rate tried)"
    return f"> {steps[-1]['deliveries_s']:,.0f} (not reached)" if steps else "n/a"


def render_table(rows: list[Row], ray_header: str) -> str:
    header = Row("", "trainflow", ray_header, "target", "")
    table = [[r.label, r.trainflow, r.ray, r.target, r.verdict] for r in [header, *rows]]
    widths = [max(len(row[i]) for row in table) for i in range(5)]

    def fmt(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2])]
        parts += [row[3].ljust(widths[3]), row[4]]
        return "  ".join(parts).rstrip()

    return "\n".join([fmt(table[0]), "-" * len(fmt(table[0])), *(fmt(row) for row in table[1:])])


def environment_line(ray_version: str) -> str:
    from importlib.metadata import version

    ray = f"ray {ray_version}" if ray_version else "ray not installed"
    return (
        f"trainflow at {trainflow_revision()}, mlflow {version('mlflow')}, {ray}, "
        f"gevent {version('gevent')}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})"
    )


def write_json(results: dict[str, Any], opts: Options, environment: str, table: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"events-{time.strftime('%Y%m%d-%H%M%S')}.json"
    options = {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in opts.__dict__.items()}
    document = {"environment": environment, "options": options, "results": results, "table": table}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------

SECTIONS = ("latency", "redis", "ray", "followers")


@dataclass(frozen=True)
class Options:
    sections: frozenset[str]
    lines: int
    line_rate: float
    metrics: int
    metric_rate: float
    streams: int
    clients: int
    batch: int
    step_seconds: float
    rates: tuple[float, ...]
    redis_url: str
    bin_dir: Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default="", help=f"comma-separated sections (default all: {','.join(SECTIONS)})"
    )
    parser.add_argument("--quick", action="store_true", help="fewer lines, 1,000 streams, 4 s steps")
    parser.add_argument("--lines", type=int, help="lines the printing job prints (default 1,000; quick 200)")
    parser.add_argument("--line-rate", type=float, default=50.0, help="its lines/s (default 50)")
    parser.add_argument("--metrics", type=int, help="log_metric calls (default 500; quick 100)")
    parser.add_argument("--metric-rate", type=float, default=50.0, help="their calls/s (default 50)")
    parser.add_argument("--streams", type=int, help="streams held open (default 10,000; quick 1,000)")
    parser.add_argument("--clients", type=int, default=2, help="client processes holding them (default 2)")
    parser.add_argument("--batch", type=int, default=500, help="streams opened at a time, all clients (500)")
    parser.add_argument("--step-seconds", type=float, help="seconds per rate step (default 10; quick 4)")
    parser.add_argument(
        "--rates", default=",".join(map(str, FOLLOW_RATES)), help="events/s steps of the followed job"
    )
    parser.add_argument("--redis-url", default="", help="use this Redis (default: start a private one)")
    parser.add_argument(
        "--bin-dir", type=Path, default=Path(sys.executable).parent,
        help="directory holding python and the trainflow and ray scripts (default: this Python's)",
    )  # fmt: skip
    parser.add_argument("--client", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ray-client", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ray-workdir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.lines = args.lines or (200 if quick else 1000)
    args.metrics = args.metrics or (100 if quick else 500)
    args.streams = args.streams or (1000 if quick else 10_000)
    args.step_seconds = args.step_seconds or (4.0 if quick else 10.0)
    unknown = set(filter(None, args.only.split(","))) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if not (
        1 <= args.lines <= 100_000
        and 0 < args.line_rate <= 10_000
        and 1 <= args.metrics <= 100_000
        and 0 < args.metric_rate <= 1000
        and 1 <= args.streams <= 60_000
        and 1 <= args.clients <= 16
        and 1 <= args.batch <= 10_000
        and 1 <= args.step_seconds <= 120
        and all(0 < float(rate) <= 10_000 for rate in args.rates.split(",") if rate)
    ):
        parser.error("an option is out of range (see --help)")
    return args


def run_benchmark(opts: Options) -> int:
    ray_version = ray_available(opts.bin_dir)
    environment = environment_line(ray_version)  # before the run, whose own load would show
    limit = raise_open_files_limit()
    progress(f"Open files limit (soft) for the servers and clients: {limit:,}")
    began = time.monotonic()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    benches = {"latency": bench_latency, "redis": bench_redis, "ray": bench_ray, "followers": bench_followers}
    try:
        for section in SECTIONS:
            if section not in opts.sections:
                continue
            if section == "ray" and not ray_version:
                progress("[ray] not installed: the table shows the issue's figures for Ray")
                continue
            results[section] = guarded(section, errors, lambda section=section: benches[section](opts))
    finally:
        stop_sessions()
        stop_all()
    ray = results.get("ray")
    rows: list[Row] = []
    if opts.sections & {"latency", "ray"}:
        rows += latency_rows(results.get("latency"), ray, opts)
    if results.get("redis"):
        rows += redis_rows(results["redis"])
    if results.get("followers"):
        rows += follower_rows(results["followers"])
    ray_header = f"Ray {ray['version']} (measured)" if ray else "Ray 2.60 (issue, not measured)"
    table = render_table(rows, ray_header)
    print(f"\nLive event stream: latency and followers ({environment})\n")
    print(table)
    print(
        "\nLatency = arrival at the client minus the time the job printed (or log_metric returned), "
        "same clock; the client\nruns on the same cores. trainflow: GET .../jobs/<id>/events "
        "(NDJSON, chunked); Ray: JobSubmissionClient.tail_job_logs\n"
        + ("on a local head, measured in this run. " if ray else "NOT measured: the issue's figures. ")
        + "Reference rows are polling intervals, not measured.\n"
        "Followers: one trainflow server process (gevent); PSS/RSS per stream = (after - before) / "
        "streams held; CPU = share of\none core over the step. PASS/FAIL marks trainflow against the "
        "target column."
    )
    for name, message in errors.items():
        print(f"  {name} error: {message.splitlines()[0][:300]}")
    for error, count in ((results.get("followers") or {}).get("server_errors") or {}).items():
        print(f"  followers server's log: {count:,} x {error}")
    results["errors"] = errors
    path = write_json(results, opts, environment, table)
    print(f"\nWrote {path.relative_to(ROOT)} in {time.monotonic() - began:.0f} s total.")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        return client_main(json.loads(args.client))
    if args.ray_client:
        figures = ray_client_main(args.ray_client, args.ray_workdir, args.lines, args.line_rate)
        print(json.dumps(figures), flush=True)
        return 0
    opts = Options(
        frozenset(filter(None, args.only.split(","))) or frozenset(SECTIONS),
        args.lines,
        args.line_rate,
        args.metrics,
        args.metric_rate,
        args.streams,
        args.clients,
        args.batch,
        args.step_seconds,
        tuple(float(rate) for rate in args.rates.split(",") if rate),
        args.redis_url,
        args.bin_dir,
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the servers on SIGTERM as on Ctrl+C
    try:
        return run_benchmark(opts)
    except KeyboardInterrupt:
        progress("Interrupted: servers and clients stopped.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
