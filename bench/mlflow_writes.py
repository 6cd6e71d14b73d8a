"""MLflow write throughput, latency, cold start and idle memory: trainflow against stock MLflow.

Every figure is taken through the official ``mlflow`` client (``MlflowClient``) against a
server this script starts itself, on SQLite, in its own temporary directory, on a free
loopback port. One run prints ONE table with one column per server:

* ``trainflow``         ``trainflow server``, the client signed in as the ``admin`` account;
* ``trainflow-user``    the same server, the client signed in as a registered non-admin user;
* ``mlflow``            stock ``mlflow server`` with its defaults (uvicorn, 4 workers);
* ``mlflow-1``          stock ``mlflow server --workers 1``;
* ``basic-auth``        ``mlflow server --app-name basic-auth`` with MLflow's default auth config;
* ``basic-auth-cache``  the same with ``auth_cache_ttl_seconds = 60``.

Rows, per column:

* ``log_metric`` calls/s from one client thread, and the round trip of each call (p50, p99);
* ``log_metric`` calls/s from 4 client threads, each logging to its own run;
* ``log_batch`` of 1,000 metrics per call, in metrics/s;
* cold start: seconds from launching the server on an existing data directory (a first start
  created the database and was stopped) until its health endpoint first answers 200;
* idle memory: PSS summed over the server process and all its descendants
  (``/proc/<pid>/smaps_rollup``), in MiB, after the workload and a few idle seconds;
* failed calls: client calls that raised (the client is told not to retry, so errors show).

Before the client starts, the server is left to settle until its process tree idles (stock
MLflow keeps starting its job runner and huey consumers for ~10 s after it first answers; on
2 cores that would otherwise be timed too). Each row then runs for a fixed time
(``--seconds``, bounded by a call count too) after a warm-up.

The client work runs in a fresh subprocess per column (this same file with ``--client``), so
MLflow client state (env vars, cached credentials, HTTP sessions) never leaks between servers.
Servers run in their own process group and are stopped at the end, on error and on Ctrl+C.

trainflow's cells are marked PASS/FAIL against the issue's targets: at least twice the best
stock figure of this run on each throughput row (and at least 230 log_metric/s from one
thread), p50 under 5 ms, cold start under 3 s, idle memory under 300 MB.

Run: ``venv/bin/python bench/mlflow_writes.py [--seconds 5] [--only trainflow,mlflow-1]``.
The table is also written as JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
ADMIN_USERNAME = "admin"
# Long enough for both trainflow (>= 8 characters) and MLflow's basic auth (>= 12).
ADMIN_PASSWORD = "bench-admin-pass-1234"
USER_USERNAME = "benchuser"
USER_PASSWORD = "bench-user-pass-1234"
BATCH_SIZE = 1000
THREADS = 4
MAX_CALLS_PER_ROW = 200_000  # every timed loop stops at --seconds or at this many calls
MAX_ERRORS_PER_LOOP = 50  # a loop that keeps failing stops early instead of spinning
HEALTH_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
CLIENT_TIMEOUT_S = 600.0
SETTLE_WINDOW_S = 1.0
SETTLE_CPU_FRACTION = 0.05
NO_PROXY_ENV = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# What is measured: servers, columns, rows, targets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of the table: a server and the account the client signs in with."""

    key: str
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server; ``columns`` are the client runs made against it."""

    name: str
    kind: str  # "trainflow" or "mlflow"
    health_path: str
    columns: tuple[Column, ...]
    workers: int | None = None  # mlflow --workers; None keeps MLflow's default
    basic_auth: bool = False
    auth_cache_ttl: int = 0


ADMIN = (ADMIN_USERNAME, ADMIN_PASSWORD)
SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec(
        "trainflow",
        "trainflow",
        "/api/health",
        (Column("trainflow", *ADMIN), Column("trainflow-user", USER_USERNAME, USER_PASSWORD)),
    ),
    ServerSpec("mlflow", "mlflow", "/health", (Column("mlflow"),)),
    ServerSpec("mlflow-1", "mlflow", "/health", (Column("mlflow-1"),), workers=1),
    ServerSpec("basic-auth", "mlflow", "/health", (Column("basic-auth", *ADMIN),), basic_auth=True),
    ServerSpec(
        "basic-auth-cache",
        "mlflow",
        "/health",
        (Column("basic-auth-cache", *ADMIN),),
        basic_auth=True,
        auth_cache_ttl=60,
    ),
)
ALL_COLUMNS = [column.key for spec in SERVERS for column in spec.columns]
TRAINFLOW_COLUMNS = {"trainflow", "trainflow-user"}
SERVER_WIDE_ROWS = {"cold_start_s", "idle_pss_mb"}  # measured once per server, not per column


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    digits: int
    higher_is_better: bool


ROWS: tuple[Row, ...] = (
    Row("log_metric_1t", "log_metric, 1 thread (calls/s)", 1, True),
    Row("p50_ms", "  round trip p50 (ms)", 1, False),
    Row("p99_ms", "  round trip p99 (ms)", 1, False),
    Row("log_metric_4t", f"log_metric, {THREADS} threads (calls/s)", 1, True),
    Row("log_batch", f"log_batch x{BATCH_SIZE} (metrics/s)", 0, True),
    Row("cold_start_s", "cold start (s)", 2, False),
    Row("idle_pss_mb", "idle memory, PSS (MB)", 0, False),
    Row("errors", "failed client calls", 0, False),
)
THROUGHPUT_ROWS = ("log_metric_1t", "log_metric_4t", "log_batch")
# Used only when this run measured no stock column to compare with (e.g. --only trainflow):
# figures measured earlier on the 2-core dev machine with mlflow 3.17.2 (best stock column).
REFERENCE_BEST_STOCK = {"log_metric_1t": 115.0, "log_batch": 6000.0}
FIXED_TARGETS: dict[str, tuple[str, float]] = {
    "log_metric_1t": (">=", 230.0),
    "p50_ms": ("<", 5.0),
    "cold_start_s": ("<", 3.0),
    "idle_pss_mb": ("<", 300.0),
}


@dataclass(frozen=True)
class Target:
    op: str  # ">=" or "<"
    value: float
    why: str

    def passes(self, measured: float) -> bool:
        return measured >= self.value if self.op == ">=" else measured < self.value

    def __str__(self) -> str:
        return f"{self.op} {_fmt_number(self.value, 1 if self.value < 100 else 0)} ({self.why})"


# --------------------------------------------------------------------------------------------
# Client side: runs in a subprocess per column, prints one JSON line
# --------------------------------------------------------------------------------------------


@dataclass
class LoopResult:
    calls: int = 0
    errors: int = 0
    started: float = 0.0
    ended: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    first_error: str = ""

    @property
    def elapsed(self) -> float:
        return max(self.ended - self.started, 1e-9)


def timed_loop(call: Callable[[int], None], seconds: float, max_calls: int) -> LoopResult:
    """Call ``call(i)`` until ``seconds`` pass, ``max_calls`` are made or errors pile up."""
    result = LoopResult(started=time.perf_counter())
    deadline = result.started + seconds
    for i in range(max_calls):
        before = time.perf_counter()
        if before >= deadline or result.errors >= MAX_ERRORS_PER_LOOP:
            break
        try:
            call(i)
        except Exception as e:
            result.errors += 1
            result.first_error = result.first_error or f"{type(e).__name__}: {e}"[:500]
            continue
        result.latencies_ms.append((time.perf_counter() - before) * 1000)
        result.calls += 1
    result.ended = time.perf_counter()
    return result


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def metric_logger(client: Any, run_id: str, key: str) -> Callable[[int], None]:
    def log(i: int) -> None:
        client.log_metric(run_id, key, float(i), timestamp=int(time.time() * 1000), step=i)

    return log


def warm_up(client: Any, run_id: str, calls: int) -> None:
    log = metric_logger(client, run_id, "warmup")
    for i in range(calls):
        log(i)


def bench_one_thread(client: Any, experiment_id: str, seconds: float, warmup: int) -> dict[str, Any]:
    run_id = client.create_run(experiment_id).info.run_id
    warm_up(client, run_id, warmup)
    loop = timed_loop(metric_logger(client, run_id, "loss"), seconds, MAX_CALLS_PER_ROW)
    latencies = loop.latencies_ms or [math.nan]
    return {
        "log_metric_1t": loop.calls / loop.elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "calls_1t": loop.calls,
        "errors_1t": loop.errors,
        "first_error_1t": loop.first_error,
    }


def bench_threads(experiment_id: str, seconds: float, threads: int) -> dict[str, Any]:
    """``threads`` clients, each with its own run, start together and log for ``seconds``."""
    from mlflow import MlflowClient

    barrier = threading.Barrier(threads, timeout=120)
    results: list[LoopResult] = [LoopResult() for _ in range(threads)]

    def worker(slot: int) -> None:
        client = MlflowClient()
        try:
            run_id = client.create_run(experiment_id).info.run_id
            warm_up(client, run_id, 5)
        except Exception:
            barrier.abort()  # the others stop waiting; the missing result fails the row
            raise
        barrier.wait()
        results[slot] = timed_loop(metric_logger(client, run_id, "loss"), seconds, MAX_CALLS_PER_ROW)

    pool = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=seconds + 300)
    finished = [r for r in results if r.ended]
    if len(finished) < threads:
        raise RuntimeError(f"only {len(finished)} of {threads} client threads finished")
    calls = sum(r.calls for r in finished)
    elapsed = max(r.ended for r in finished) - min(r.started for r in finished)
    return {
        "log_metric_4t": calls / max(elapsed, 1e-9),
        "calls_4t": calls,
        "errors_4t": sum(r.errors for r in finished),
        "first_error_4t": next((r.first_error for r in finished if r.first_error), ""),
    }


def bench_batch(client: Any, experiment_id: str, seconds: float) -> dict[str, Any]:
    from mlflow.entities import Metric

    run_id = client.create_run(experiment_id).info.run_id

    def log_batch(i: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(f"batch_{j % 10}", float(j), now, i * BATCH_SIZE + j) for j in range(BATCH_SIZE)]
        client.log_batch(run_id, metrics=metrics)

    log_batch(-1)  # warm-up
    loop = timed_loop(log_batch, seconds, MAX_CALLS_PER_ROW // BATCH_SIZE)
    return {
        "log_batch": loop.calls * BATCH_SIZE / loop.elapsed,
        "calls_batch": loop.calls,
        "errors_batch": loop.errors,
        "first_error_batch": loop.first_error,
    }


def client_main(seconds: float, warmup: int) -> dict[str, Any]:
    """The whole client workload against ``MLFLOW_TRACKING_URI``; returns the figures."""
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(f"bench-{uuid.uuid4().hex[:12]}")
    figures: dict[str, Any] = {}
    figures.update(bench_one_thread(client, experiment_id, seconds, warmup))
    figures.update(bench_threads(experiment_id, seconds, THREADS))
    figures.update(bench_batch(client, experiment_id, seconds))
    figures["errors"] = figures["errors_1t"] + figures["errors_4t"] + figures["errors_batch"]
    return figures


# --------------------------------------------------------------------------------------------
# Server side: start, wait for health, stop, measure memory
# --------------------------------------------------------------------------------------------


_LIVE: dict[int, subprocess.Popen[bytes]] = {}  # every process group we started and not yet stopped


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_process(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (so its whole process group can be stopped)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _LIVE[proc.pid] = proc
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left of it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (e.g. uvicorn workers) too
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT_S)
    _LIVE.pop(proc.pid, None)


def stop_all() -> None:
    for proc in list(_LIVE.values()):
        stop_process(proc)


@contextlib.contextmanager
def running(
    argv: list[str], env: dict[str, str], cwd: Path, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_process(argv, env, cwd, log_path)
    try:
        yield proc
    finally:
        stop_process(proc)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError):
        return None


def log_tail(path: Path, lines: int = 25) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path, started: float) -> float:
    """Poll ``url`` until it answers 200; return seconds since ``started``."""
    deadline = started + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}:\n{log_tail(log_path)}")
        if http_status(url) == 200:
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"{url} not healthy after {HEALTH_TIMEOUT_S:.0f} s:\n{log_tail(log_path)}")


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from the parent ids in ``/proc/<pid>/stat``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    tree, queue = [], [root]
    while queue and len(tree) < 10_000:
        pid = queue.pop()
        tree.append(pid)
        queue.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by ``pids`` (utime and stime in ``/proc/<pid>/stat``)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_settled(root: int, max_wait: float) -> float:
    """Wait until the server's process tree idles (< 5% of a core for 1 s); return the seconds waited.

    A healthy MLflow server keeps starting background processes (its job runner and huey
    consumers) for several seconds; timing the workload then would measure that start-up.
    """
    started = time.monotonic()
    before = cpu_seconds(process_tree(root))
    while time.monotonic() - started < max_wait:
        time.sleep(SETTLE_WINDOW_S)
        now = cpu_seconds(process_tree(root))
        if now - before < SETTLE_CPU_FRACTION * SETTLE_WINDOW_S:
            break
        before = now
    return time.monotonic() - started


def pss_mib(root: int) -> float:
    """PSS of ``root`` and its descendants, in MiB."""
    total_kib = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
                    break
    return total_kib / 1024


# --------------------------------------------------------------------------------------------
# One server: command line, environment, the sequence of starts and client runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    seconds: float
    warmup: int
    idle: float
    settle: float
    bin_dir: Path


@contextlib.contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """Yield a URL to an empty database made beside ``url`` (dropped after), or ``url`` itself."""
    if not url or not url.startswith(("postgres", "postgresql")):
        yield url
        return
    import psycopg2
    from sqlalchemy.engine import make_url

    base = make_url(url.replace("postgres://", "postgresql://", 1))
    name = f"trainflow_bench_{uuid.uuid4().hex[:8]}"
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        conn.close()
    except psycopg2.Error as e:
        progress(f"Could not create a fresh database ({str(e).strip()}); using {base.database} as it is.")
        yield url
        return
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.close()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRAINFLOW_"))}
    env.update(NO_PROXY_ENV)
    env.update(PYTHONUNBUFFERED="1", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    return env


def write_auth_ini(spec: ServerSpec, tmp: Path) -> Path:
    path = tmp / "basic_auth.ini"
    lines = [
        "[mlflow]",
        "default_permission = READ",
        f"database_uri = sqlite:///{tmp / 'basic_auth.db'}",
        f"admin_username = {ADMIN_USERNAME}",
        f"admin_password = {ADMIN_PASSWORD}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
    ]
    if spec.auth_cache_ttl:
        lines.append(f"auth_cache_ttl_seconds = {spec.auth_cache_ttl}")
    path.write_text("\n".join(lines) + "\n")
    return path


def server_command(spec: ServerSpec, opts: Options, tmp: Path, port: int) -> tuple[list[str], dict[str, str]]:
    env = base_env()
    if spec.kind == "trainflow":
        env.update(
            TRAINFLOW_DATA_DIR=str(tmp / "data"),
            TRAINFLOW_PORT=str(port),
            TRAINFLOW_HOST="127.0.0.1",
            TRAINFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD,
        )
        return [str(opts.bin_dir / "trainflow"), "server"], env
    argv = [
        str(opts.bin_dir / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
        "--artifacts-destination", str(tmp / "mlartifacts"),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    if spec.workers is not None:
        argv += ["--workers", str(spec.workers)]
    if spec.basic_auth:
        argv += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_ini(spec, tmp))
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "bench-" + uuid.uuid4().hex
    return argv, env


def register_user(base_url: str) -> None:
    """Create trainflow's non-admin benchmark account (POST /api/register)."""
    body = json.dumps({"username": USER_USERNAME, "password": USER_PASSWORD}).encode()
    request = urllib.request.Request(  # noqa: S310 - an http://127.0.0.1 URL built above
        f"{base_url}/api/register", data=body, headers={"Content-Type": "application/json"}
    )
    with _DIRECT.open(request, timeout=30) as response:
        if response.status != 201:
            raise RuntimeError(f"POST /api/register answered {response.status}")


def run_client(column: Column, base_url: str, opts: Options, tmp: Path) -> dict[str, Any]:
    """The client workload in a fresh subprocess, signed in as ``column``'s account."""
    env = base_env()
    env.update(MLFLOW_TRACKING_URI=base_url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
    if column.username:
        env.update(MLFLOW_TRACKING_USERNAME=column.username, MLFLOW_TRACKING_PASSWORD=column.password or "")
    argv = [sys.executable, str(Path(__file__).resolve()), "--client"]
    argv += ["--seconds", str(opts.seconds), "--warmup", str(opts.warmup)]
    log_path = tmp / f"client-{column.key}.log"
    with running(argv, env, tmp, log_path) as proc:
        try:
            proc.wait(timeout=CLIENT_TIMEOUT_S + 6 * opts.seconds)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"client for {column.key} did not finish:\n{log_tail(log_path)}") from None
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"client for {column.key} failed ({proc.returncode}):\n{log_tail(log_path)}")
    return dict(json.loads(lines[-1]))


def bench_server(spec: ServerSpec, columns: list[Column], opts: Options) -> dict[str, dict[str, Any]]:
    """Start ``spec`` twice (create, then time a cold start), run each column's client, measure."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp_name:
        tmp = Path(tmp_name)
        log_path = tmp / "server.log"
        port = free_port()
        argv, env = server_command(spec, opts, tmp, port)
        base_url = f"http://127.0.0.1:{port}"
        progress(f"[{spec.name}] first start (creates the database) ...")
        with running(argv, env, tmp, log_path) as proc:
            first = wait_healthy(base_url + spec.health_path, proc, log_path, time.monotonic())
            if spec.kind == "trainflow" and any(c.key == "trainflow-user" for c in columns):
                register_user(base_url)
        progress(f"[{spec.name}] first start healthy in {first:.1f} s; stopped. Timing a cold start ...")
        started = time.monotonic()
        with running(argv, env, tmp, log_path) as proc:
            cold = wait_healthy(base_url + spec.health_path, proc, log_path, started)
            settle = wait_settled(proc.pid, opts.settle)
            progress(f"[{spec.name}] cold start {cold:.1f} s; settled (CPU idle) {settle:.1f} s later")
            results = {}
            for column in columns:
                progress(f"[{spec.name}] client workload for column {column.key} ...")
                results[column.key] = run_client(column, base_url, opts, tmp)
            time.sleep(opts.idle)
            memory = pss_mib(proc.pid)
            progress(f"[{spec.name}] idle PSS {memory:.0f} MB over {len(process_tree(proc.pid))} processes")
        first_column, *others = results
        results[first_column].update(
            cold_start_s=cold, first_start_s=first, settle_s=settle, idle_pss_mb=memory
        )
        for column in others:  # the server's figures are shown once, in its first column
            results[column]["same_server_as"] = first_column
        return results


# --------------------------------------------------------------------------------------------
# Targets and the table
# --------------------------------------------------------------------------------------------


def targets(results: dict[str, dict[str, Any]]) -> dict[str, Target]:
    """trainflow's targets; throughput ones are 2x the best stock column of this run."""
    found: dict[str, Target] = {
        row: Target(op, value, "issue") for row, (op, value) in FIXED_TARGETS.items() if op == "<"
    }
    stock = {k: v for k, v in results.items() if k not in TRAINFLOW_COLUMNS and "error" not in v}
    for row in THROUGHPUT_ROWS:
        best = max(stock.items(), key=lambda item: item[1][row], default=None)
        if best is not None:
            value, why = 2 * best[1][row], f"2x {best[0]}"
        elif row in REFERENCE_BEST_STOCK:
            value, why = 2 * REFERENCE_BEST_STOCK[row], "2x reference"
        else:
            continue
        floor = FIXED_TARGETS.get(row)
        if floor and floor[1] > value:
            value, why = floor[1], f"issue; > {why}"
        found[row] = Target(">=", value, why)
    return found


def _fmt_number(value: float, digits: int) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def cell(column: str, row: Row, figures: dict[str, Any], goals: dict[str, Target]) -> str:
    if "error" in figures:
        return "error"
    if row.key in SERVER_WIDE_ROWS and figures.get("same_server_as"):
        return "(same)"
    value = figures.get(row.key)
    if value is None:
        return "-"
    text = _fmt_number(value, row.digits)
    if column not in TRAINFLOW_COLUMNS:
        return text
    goal = goals.get(row.key)
    if goal is None:
        return text + " " * len(" PASS")  # keep the numbers of a trainflow column aligned
    return text + (" PASS" if goal.passes(value) else " FAIL")


def target_text(row: Row, goals: dict[str, Target]) -> str:
    goal = goals.get(row.key)
    if goal is not None:
        return str(goal)
    return "(2x the best stock column: run one)" if row.key in THROUGHPUT_ROWS else ""


def render_table(results: dict[str, dict[str, Any]], goals: dict[str, Target]) -> str:
    header = ["", *results, "trainflow target"]
    body = [
        [
            row.label,
            *(cell(col, row, figs, goals) for col, figs in results.items()),
            target_text(row, goals),
        ]
        for row in ROWS
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        parts = [line[0].ljust(widths[0])]
        parts += [text.rjust(width) for text, width in zip(line[1:-1], widths[1:-1], strict=True)]
        parts.append(line[-1].ljust(widths[-1]))
        return "  ".join(parts).rstrip()

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(line) for line in body)])


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    return done.stdout.strip()


def trainflow_revision() -> str:
    """The commit the trainflow package is measured at, with ``+dirty`` for local edits."""
    try:
        commit = _git("rev-parse", "--short", "HEAD") or "unknown"
        return commit + ("+dirty" if _git("status", "--porcelain", "--", "trainflow") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_line(opts: Options) -> str:
    from importlib.metadata import version

    return (
        f"trainflow at {trainflow_revision()}, mlflow {version('mlflow')}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}), "
        f"SQLite, {opts.seconds:g} s per row after {opts.warmup} warm-up calls, {opts.idle:g} s idle"
    )


def write_json(
    results: dict[str, dict[str, Any]], goals: dict[str, Target], opts: Options, environment: str, table: str
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"mlflow_writes-{time.strftime('%Y%m%d-%H%M%S')}.json"
    verdicts = {
        col: {row: goal.passes(figs[row]) for row, goal in goals.items() if row in figs}
        for col, figs in results.items()
        if col in TRAINFLOW_COLUMNS and "error" not in figs
    }
    document = {
        "environment": environment,
        "options": {"seconds": opts.seconds, "warmup": opts.warmup, "idle": opts.idle, "settle": opts.settle},
        "results": results,
        "targets": {row: {"op": g.op, "value": g.value, "why": g.why} for row, g in goals.items()},
        "trainflow_passes": verdicts,
        "table": table,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each timed row (default 5)")
    parser.add_argument("--warmup", type=int, default=20, help="log_metric calls before timing (default 20)")
    parser.add_argument("--idle", type=float, default=3.0, help="idle seconds before measuring memory")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="most seconds to wait for a started server to idle"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated columns to run (default all: {','.join(ALL_COLUMNS)})"
    )
    parser.add_argument(
        "--bin-dir", type=Path, default=Path(sys.executable).parent,
        help="directory holding the trainflow and mlflow scripts (default: this Python's)",
    )  # fmt: skip
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 10_000 or min(args.idle, args.settle) < 0:
        parser.error("--seconds must be in (0, 600], --warmup in [0, 10000], --idle and --settle >= 0")
    unknown = set(filter(None, args.only.split(","))) - set(ALL_COLUMNS)
    if unknown:
        parser.error(f"unknown column(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL_COLUMNS)}")
    return args


def selected_servers(only: str) -> list[tuple[ServerSpec, list[Column]]]:
    wanted = set(filter(None, only.split(","))) or set(ALL_COLUMNS)
    plan = [(spec, [c for c in spec.columns if c.key in wanted]) for spec in SERVERS]
    return [(spec, columns) for spec, columns in plan if columns]


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_benchmark(args: argparse.Namespace) -> int:
    opts = Options(args.seconds, args.warmup, args.idle, args.settle, args.bin_dir)
    results: dict[str, dict[str, Any]] = {}
    environment = environment_line(opts)  # before the run, whose own load would show
    began = time.monotonic()
    try:
        for spec, columns in selected_servers(args.only):
            try:
                results.update(bench_server(spec, columns, opts))
            except (RuntimeError, TimeoutError, OSError, ValueError) as e:
                progress(f"[{spec.name}] FAILED: {e}")
                results.update({c.key: {"error": str(e)} for c in columns})
    finally:
        stop_all()
    goals = targets(results)
    table = render_table(results, goals)
    print(f"\nMLflow writes through MlflowClient ({environment})\n")
    print(table)
    print(f"\nColumns: {', '.join(results)}. PASS/FAIL marks trainflow cells against the target column.")
    for column, figures in results.items():
        for key in ("error", "first_error_1t", "first_error_4t", "first_error_batch"):
            if figures.get(key):
                print(f"  {column} {key}: {str(figures[key]).splitlines()[0][:300]}")
    path = write_json(results, goals, opts, environment, table)
    print(f"\nWrote {path.relative_to(ROOT)} in {time.monotonic() - began:.0f} s total.")
    return 1 if any("error" in figures for figures in results.values()) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        print(json.dumps(client_main(args.seconds, args.warmup), default=str), flush=True)
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the servers on SIGTERM as on Ctrl+C
    try:
        return run_benchmark(args)
    except KeyboardInterrupt:
        progress("Interrupted: servers stopped.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
