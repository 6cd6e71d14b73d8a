"""Job start-up overhead and output capture: trainflow jobs against plain Python and Ray Jobs.

Every figure is taken against servers this script starts itself, each in its own temporary
directory on free loopback ports: ``trainflow server`` (admin account, two job slots) and,
when the ``ray`` package is importable, a local Ray head (``ray start --head --block``). One run
prints ONE table; the columns are:

* ``trainflow``       the job submitted through trainflow's HTTP API;
* ``python, pipe``    the same script run directly as ``python -u`` (the command trainflow
                      runs), its stdout a pipe read by a plain reader in this process;
* ``python, null``    the same, its stdout ``/dev/null``;
* ``Ray 2.60``        the same one-line job through Ray Jobs (``JobSubmissionClient``);
* ``Ray (issue)``     the issue's Ray 2.60 figures, for reference: not measured in this run.

Sections (``--only startup,throughput,ray`` picks some):

* start-up: a script that only does ``print("first", flush=True)``, ``--runs`` times. The
  clock starts as the submit POST is sent and stops at the first stored log record's ``ts``
  (the supervisor's wall clock when it read the line), watched by polling the job's
  ``logs.ndjson`` every 1 ms. Python's own start is timed the same way, from spawning
  ``python -u job.py`` to its first line read from a pipe, in a run interleaved with each job;
  "beyond Python's own start" is the difference of the two percentiles. Where the time goes is
  read from the records the platform keeps: the 201 answer, the job's ``started_at`` (the
  scheduler's claim), the mtime of the job's ``spec.json`` (written just before the supervisor
  is spawned), ``status.json``'s ``started_at`` (the supervisor has spawned the job's process).
  ``--api-runs`` more jobs time the first line as a client sees it: polling the logs API every
  10 ms (Basic auth; the slowest poll per job is kept too), and
  ``trainflow.client.Client.follow_events`` (the live event stream ``trainflow logs --follow``
  reads; its first ``log`` event is the first line) at the same time. Ray's jobs time
  ``get_job_logs`` polled every 10 ms and ``tail_job_logs`` at the same time, after one
  warm-up job (which builds the runtime env);
* sandbox: the cost of a job's sandbox (bubblewrap and the launcher, docs/SECURITY.md). The
  one-line script is started ``--runs`` times each way, interleaved: as ``python -u job.py``
  and through the exact sandbox command a supervisor runs (a job's policy: its folders, the
  read-only runtime, Landlock, the uid switch when root), first line read from a pipe; and as
  one-line jobs on the sandboxed server and on a second server with
  ``TRAINFLOW_JOB_SANDBOX=off`` (column ``no sandbox``), submit to first line stored;
* throughput: ``print(i)`` for ``i`` in ``range(--lines)`` as fast as it can, and a paced
  variant printing ``--rate`` lines/s for ``--seconds`` (batches of 1,000, then a sleep to keep
  the pace). The job's run time, CPU time and time spent printing (not sleeping) are the
  script's own (it writes them to a file in its working directory, so no extra line is
  printed); the supervisor's CPU time is sampled from ``/proc`` every 20 ms while it runs.
  Each is run ``--repeats`` times, the three ways interleaved, and the median is shown. Every
  stored record is checked: the k-th holds the number k-1, on stdout, whole, with no gap and
  no duplicate.

Servers and Ray run in their own sessions and are stopped at the end, on error and on Ctrl+C
or SIGTERM (Ray's processes by their session id: its workers make process groups of their
own; a job still running is cancelled through its supervisor, which outlives the server).
trainflow's cells are marked PASS/FAIL against the issue's targets: at most 150 ms beyond
Python's own start, at most 10% slower at 100k lines/s, every line kept, and at most 50 ms
added by the sandbox.

Run: ``venv/bin/python bench/jobs.py [--runs 20] [--lines 1000000] [--only startup,throughput]``.
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

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
ADMIN = ("admin", "bench-admin-pass")
TRAIN = "/ajax-api/2.0/mlflow/train"
FINISHED = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"}
MAX_CONCURRENT_JOBS = 2
FILE_POLL_S = 0.001  # watching logs.ndjson / status.json
API_POLL_S = 0.010  # polling the logs API, and Ray's get_job_logs
JOB_TIMEOUT_S = 300.0  # any one job, from submit to its recorded end
RAY_CLIENT_TIMEOUT_S = 420.0
RAY_SUBMIT_RETRY_S = 90.0  # the head's job agent may answer a little after its dashboard
SESSION_STOP_S = 5.0
PACED_BATCH = 1000
STARTUP_TARGET_MS = 150.0
SLOWDOWN_TARGET_PCT = 10.0
SANDBOX_TARGET_MS = 50.0
RAY_REFERENCE_MS = {"poll": 1100.0, "follow": 3000.0}  # from the issue; not measured here

FIRST_SCRIPT = 'print("first", flush=True)\n'
PRINTER_SCRIPT = '''\
"""Print numbered lines: ``flood N`` as fast as possible, ``paced RATE SECONDS BATCH`` at a pace."""

import json
import sys
import time

mode = sys.argv[1]
started, cpu_started, slept = time.perf_counter(), time.process_time(), 0.0
if mode == "flood":
    for i in range(int(sys.argv[2])):
        print(i)
    count, printed_at = int(sys.argv[2]), time.time()
else:
    rate, seconds, batch = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    count = 0
    for b in range(int(rate * seconds) // batch):
        for _ in range(batch):
            print(count)
            count += 1
        printed_at = time.time()
        delay = started + (b + 1) * batch / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
            slept += delay
elapsed = time.perf_counter() - started
own = {"elapsed": elapsed, "cpu": time.process_time() - cpu_started, "busy": elapsed - slept}
with open("elapsed.json", "w") as f:
    json.dump({**own, "lines": count, "printed_at": printed_at}, f)
'''


# --------------------------------------------------------------------------------------------
# Small helpers: ports, sessions, files
# --------------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open until every one is chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``sid`` (``/proc/<pid>/stat``)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[3]) == sid:
                members.append(int(entry.name))
    return members


def stop_session(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM every process of ``proc``'s session, SIGKILL what is left after a while, reap."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        deadline = time.monotonic() + SESSION_STOP_S
        while session_members(proc.pid) and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
    stop_process(proc)


_SESSIONS: dict[int, subprocess.Popen[bytes]] = {}  # Ray heads: stopped by session, not group


def stop_sessions() -> None:
    for proc in list(_SESSIONS.values()):
        stop_session(proc)
        _SESSIONS.pop(proc.pid, None)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (FileNotFoundError, ValueError):
        return None


def first_record(path: Path, deadline: float) -> tuple[dict[str, Any], float]:
    """Poll ``path`` every ms until it holds a whole line; return that record and when it was seen."""
    while time.time() < deadline:
        try:
            if path.stat().st_size:
                with open(path, "rb") as f:
                    line = f.readline()
                if line.endswith(b"\n"):
                    return dict(json.loads(line)), time.time()
        except FileNotFoundError:
            pass
        time.sleep(FILE_POLL_S)
    raise TimeoutError(f"no log line in {path}")


def iso_seconds(text: str | None) -> float:
    """A trainflow API timestamp (ISO 8601, UTC) as epoch seconds."""
    return datetime.fromisoformat(text).timestamp() if text else math.nan


def ms(later: float, earlier: float) -> float:
    return (later - earlier) * 1000


def summary(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if not math.isnan(v)] or [math.nan]
    return {"p50": percentile(finite, 50), "p90": percentile(finite, 90), "n": len(values)}


def job_env(bin_dir: Path, home: Path) -> dict[str, str]:
    """Roughly the environment trainflow gives a job, for the scripts run directly."""
    env = {k: v for k, v in os.environ.items() if k in {"LANG", "LC_ALL", "LC_CTYPE", "TZ"}}
    env.update(
        PATH=f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        HOME=str(home),
        PYTHONUNBUFFERED="1",
        PYTHONIOENCODING="utf-8",
    )
    return env


# --------------------------------------------------------------------------------------------
# Direct runs: the same scripts as ``python -u``, outside any platform
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Direct:
    """Where and how the scripts run directly: the interpreter the server runs jobs with."""

    python: Path
    cwd: Path
    env: dict[str, str]


def python_first_line_ms(direct: Direct) -> float:
    """From spawning ``python -u job.py`` to its first line read from a pipe."""
    started = time.time()
    proc = subprocess.Popen(
        [str(direct.python), "-u", "job.py"],
        cwd=direct.cwd,
        env=direct.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    seen = time.time()
    proc.stdout.read()
    proc.wait(timeout=60)
    if line.strip() != b"first":
        raise RuntimeError(f"python -u job.py printed {line!r}")
    return ms(seen, started)


def run_printer_direct(direct: Direct, args: list[str], sink: str) -> dict[str, Any]:
    """``python -u printer.py ARGS`` with stdout to a pipe (read here) or to /dev/null."""
    (direct.cwd / "elapsed.json").unlink(missing_ok=True)
    argv = [str(direct.python), "-u", "printer.py", *args]
    lines = -1
    started = time.perf_counter()
    if sink == "null":
        subprocess.run(
            argv, cwd=direct.cwd, env=direct.env, stdout=subprocess.DEVNULL, check=True, timeout=600
        )
    else:
        proc = subprocess.Popen(argv, cwd=direct.cwd, env=direct.env, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        fd, lines = proc.stdout.fileno(), 0
        while chunk := os.read(fd, 1 << 16):  # a plain reader: count the lines, keep nothing
            lines += chunk.count(b"\n")
        if proc.wait(timeout=600):
            raise RuntimeError(f"printer.py exited with {proc.returncode}")
    wall = time.perf_counter() - started
    own = read_json(direct.cwd / "elapsed.json") or {}
    return {
        "elapsed_s": own.get("elapsed", math.nan),
        "cpu_s": own.get("cpu", math.nan),
        "busy_s": own.get("busy", math.nan),
        "wall_s": wall,
        "lines_read": lines,
    }


# --------------------------------------------------------------------------------------------
# trainflow: the server, submitting, watching
# --------------------------------------------------------------------------------------------


@dataclass
class Trainflow:
    base_url: str
    data_dir: Path
    http: Any  # requests.Session signed in as admin
    scripts: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base_url}{TRAIN}{path}"

    def job_dir(self, job_id: int) -> Path:
        return self.data_dir / "jobs" / str(job_id)

    def upload(self, name: str, source: str) -> int:
        response = self.http.post(self.url("/upload"), files={"file": (name, source.encode())}, timeout=60)
        if response.status_code != 201:
            raise RuntimeError(f"upload {name}: {response.status_code} {response.text[:300]}")
        return int(response.json()["script"])

    def submit(self, script: str, args: list[str] | None = None) -> tuple[int, float, float]:
        """Submit; return the job id, when the POST was sent and when its answer came (epoch s)."""
        body: dict[str, Any] = {"script_id": self.scripts[script]}
        if args:
            body["args"] = args
        sent = time.time()
        response = self.http.post(self.url("/jobs"), json=body, timeout=60)
        answered = time.time()
        if response.status_code != 201:
            raise RuntimeError(f"submit {script}: {response.status_code} {response.text[:300]}")
        return int(response.json()["job"]), sent, answered

    def wait_done(self, job_id: int, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
        """Wait for the supervisor's exit (status.json), then for the API's final status."""
        deadline = time.time() + timeout
        status_path = self.job_dir(job_id) / "status.json"
        while time.time() < deadline and (read_json(status_path) or {}).get("state") != "exited":
            time.sleep(0.02)
        while time.time() < deadline:
            job = dict(self.http.get(self.url(f"/jobs/{job_id}"), timeout=60).json())
            if job.get("status") in FINISHED:
                if job["status"] != "SUCCEEDED":
                    log = (self.job_dir(job_id) / "logs.ndjson").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('reason')}\n{log}")
                return job
            time.sleep(0.02)
        raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f} s")


def trainflow_env(tmp: Path, port: int) -> dict[str, str]:
    env = base_env()
    env.update(
        TRAINFLOW_DATA_DIR=str(tmp / "data"),
        TRAINFLOW_PORT=str(port),
        TRAINFLOW_HOST="127.0.0.1",
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_MAX_CONCURRENT_JOBS=str(MAX_CONCURRENT_JOBS),
    )
    return env


@contextlib.contextmanager
def trainflow_server(bin_dir: Path, tmp: Path, **env: str) -> Iterator[tuple[Trainflow, float]]:
    """A started, healthy trainflow server with both scripts uploaded; yields it and its start time."""
    import requests

    port = free_ports(1)[0]
    log_path = tmp / "server.log"
    started = time.monotonic()
    environ = {**trainflow_env(tmp, port), **env}
    with running([str(bin_dir / "trainflow"), "server"], environ, tmp, log_path) as proc:
        ready = wait_healthy(f"http://127.0.0.1:{port}/api/health", proc, log_path, started)
        http = requests.Session()
        http.trust_env = False  # never via a proxy
        http.auth = ADMIN
        server = Trainflow(f"http://127.0.0.1:{port}", tmp / "data", http)
        server.scripts = {"job.py": server.upload("job.py", FIRST_SCRIPT)}
        server.scripts["printer.py"] = server.upload("printer.py", PRINTER_SCRIPT)
        try:
            yield server, ready
        finally:
            http.close()
            stop_jobs(tmp / "data" / "jobs")  # supervisors run in sessions of their own


def stop_jobs(jobs_dir: Path) -> None:
    """End the jobs still running under ``jobs_dir`` (an interrupted run): their supervisors
    outlive the server by design. SIGTERM makes a supervisor end its job's process group."""
    running_jobs = []
    for status_path in jobs_dir.glob("*/status.json"):
        status = read_json(status_path) or {}
        pid = int(status.get("supervisor_pid") or 0)
        with contextlib.suppress(OSError):
            if (
                status.get("state") != "exited"
                and str(status_path.parent).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
            ):
                os.kill(pid, signal.SIGTERM)
                running_jobs.append((status_path, pid))
    deadline = time.monotonic() + SESSION_STOP_S
    for status_path, pid in running_jobs:
        while (read_json(status_path) or {}).get("state") != "exited" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = read_json(status_path) or {}
        if status.get("state") == "exited":
            continue
        job_pid = int(status.get("pid") or 0)  # its process group's id too
        for target, kill in ((pid, os.kill), (job_pid, os.killpg)):
            if target:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(target, signal.SIGKILL)


def one_line_job(server: Trainflow) -> dict[str, float]:
    """Submit job.py, watch logs.ndjson for its first record; the stages in ms after the POST."""
    job_id, sent, answered = server.submit("job.py")
    record, seen = first_record(server.job_dir(job_id) / "logs.ndjson", sent + JOB_TIMEOUT_S)
    job = server.wait_done(job_id)
    status = read_json(server.job_dir(job_id) / "status.json") or {}
    handed_over = (server.job_dir(job_id) / "spec.json").stat().st_mtime  # just before the supervisor's Popen
    if record.get("line") != "first":
        raise RuntimeError(f"job {job_id}'s first line is {record!r}")
    return {
        "answered": ms(answered, sent),
        "claimed": ms(iso_seconds(job.get("started_at")), sent),
        "handed_over": ms(handed_over, sent),
        "spawned": ms(float(status.get("started_at", math.nan)), sent),
        "stored": ms(float(record["ts"]), sent),
        "seen": ms(seen, sent),
    }


def one_line_job_as_client(server: Trainflow) -> dict[str, float]:
    """Submit job.py; time its first line through the logs API (10 ms polls) and the event stream."""
    from trainflow.client import Client, CredentialStore

    follower = Client(server.base_url, CredentialStore(server.data_dir.parent / "credentials.json"), ADMIN)
    follower.session.trust_env = False
    followed: dict[str, float] = {}
    job_id, sent, _ = server.submit("job.py")

    def follow() -> None:
        for event in follower.follow_events(job_id):
            if event["type"] == "log":  # the first one is the job's first line
                followed.setdefault("at", time.time())

    thread = threading.Thread(target=follow, name="follower", daemon=True)
    thread.start()
    polled, slowest = math.nan, 0.0
    while time.time() < sent + JOB_TIMEOUT_S:  # on until the job has ended, to see its end too
        before = time.time()
        page = server.http.get(
            server.url(f"/jobs/{job_id}/logs"), params={"offset": 0, "limit": 10}, timeout=60
        ).json()
        slowest = max(slowest, ms(time.time(), before))
        if page["lines"] and math.isnan(polled):
            polled = time.time()
        if page["is_complete"]:
            break
        time.sleep(API_POLL_S)
    server.wait_done(job_id)
    thread.join(timeout=60)
    follower.session.close()
    record, _ = first_record(server.job_dir(job_id) / "logs.ndjson", time.time() + 10)
    return {
        "api_poll": ms(polled, sent),
        "follow": ms(followed.get("at", math.nan), sent),
        "stored": ms(float(record["ts"]), sent),  # stored while those two watched
        "slowest_poll": slowest,
    }


def verify_numbered(path: Path, expected: int) -> dict[str, Any]:
    """Check that record k (0-based) is stdout line ``str(k)``, numbered k+1, whole; count them."""
    count, bad, first_bad = 0, 0, ""
    first_ts = last_ts = math.nan
    with open(path, "rb") as f:
        for index, raw in enumerate(f):
            record = json.loads(raw)
            count += 1
            ok = (
                record.get("n") == index + 1
                and record.get("line") == str(index)
                and record.get("stream") == "stdout"
                and not record.get("partial")
            )
            if not ok:
                bad += 1
                first_bad = first_bad or f"record {index}: {raw[:200]!r}"
            if index == 0:
                first_ts = float(record["ts"])
            last_ts = float(record["ts"])
    return {
        "records": count,
        "bad_records": bad,
        "first_bad": first_bad,
        "all_kept": count == expected and bad == 0,
        "first_ts": first_ts,
        "last_ts": last_ts,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/<pid>/stat``); NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def watch_supervisor_cpu(status_path: Path, deadline: float) -> float:
    """Sample the job's supervisor's CPU time every 20 ms until it records the job's exit.

    The last sample is taken at most 20 ms before the end, so the figure is a slight undercount.
    """
    last = math.nan
    while time.time() < deadline:
        status = read_json(status_path) or {}
        if status.get("state") == "exited":
            return last
        if status.get("supervisor_pid"):
            sample = cpu_seconds(int(status["supervisor_pid"]))
            last = sample if not math.isnan(sample) else last
        time.sleep(0.02)
    return last


def printer_job(server: Trainflow, args: list[str], expected: int) -> dict[str, Any]:
    """Run printer.py as a job; its own run time, the capture rate, the check of every record."""
    job_id, sent, _ = server.submit("printer.py", args)
    folder = server.job_dir(job_id)
    supervisor_cpu = watch_supervisor_cpu(folder / "status.json", sent + JOB_TIMEOUT_S)
    server.wait_done(job_id)
    own = read_json(folder / "work" / "elapsed.json") or {}
    status = read_json(folder / "status.json") or {}
    checked = verify_numbered(folder / "logs.ndjson", expected)
    spawned = float(status.get("started_at", math.nan))
    tail_page = math.nan
    if checked["records"] > 100:  # a reader catching up on the end of a long log
        before = time.perf_counter()
        page = server.http.get(
            server.url(f"/jobs/{job_id}/logs"),
            params={"offset": checked["records"] - 100, "limit": 100},
            timeout=60,
        )
        tail_page = ms(time.perf_counter(), before)
        if len(page.json()["lines"]) != 100:
            raise RuntimeError("the logs API did not return the last 100 lines")
    return {
        **checked,
        "job": job_id,
        "elapsed_s": own.get("elapsed", math.nan),
        "cpu_s": own.get("cpu", math.nan),
        "busy_s": own.get("busy", math.nan),
        "supervisor_cpu_s": supervisor_cpu,
        "supervisor_us_per_line": supervisor_cpu / max(checked["records"], 1) * 1e6,
        "capture_s": checked["last_ts"] - spawned,  # job spawned -> last line stored
        "captured_lines_s": checked["records"] / max(checked["last_ts"] - spawned, 1e-9),
        "last_line_lag_ms": ms(checked["last_ts"], own.get("printed_at", math.nan)),
        "supervised_s": float(status.get("finished_at", math.nan)) - spawned,
        "submit_to_end_s": float(status.get("finished_at", math.nan)) - sent,
        "tail_page_ms": tail_page,
    }


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    runs: int
    api_runs: int
    ray_runs: int
    lines: int
    rate: int
    seconds: float
    repeats: int
    sections: frozenset[str]
    bin_dir: Path


def bench_startup(server: Trainflow, direct: Direct, opts: Options) -> dict[str, Any]:
    progress("[startup] first job after the server's start (not counted) ...")
    first = one_line_job(server)
    stages: dict[str, list[float]] = {}
    python_ms: list[float] = []
    for run in range(opts.runs):
        python_ms.append(python_first_line_ms(direct))
        for stage, value in one_line_job(server).items():
            stages.setdefault(stage, []).append(value)
        if run % 5 == 4:
            progress(
                f"[startup] {run + 1}/{opts.runs} jobs; last: first line stored {stages['stored'][-1]:.0f} ms"
            )
        time.sleep(0.1)  # let the scheduler finish recording the job before the next one
    client_view: dict[str, list[float]] = {}
    for _ in range(opts.api_runs):
        for key, value in one_line_job_as_client(server).items():
            client_view.setdefault(key, []).append(value)
        time.sleep(0.1)
    progress(f"[startup] {opts.api_runs} more jobs watched through the logs API and the event stream")
    return {
        "first_job": first,
        "stages_ms": {stage: summary(values) for stage, values in stages.items()},
        "python_ms": summary(python_ms),
        "client_ms": {key: summary(values) for key, values in client_view.items()},
        "raw": {"stages_ms": stages, "python_ms": python_ms, "client_ms": client_view},
    }


def sandboxed_first_line_ms(direct: Direct, policy: dict[str, Any]) -> float:
    """From spawning ``python -u job.py`` in a job's sandbox, as a supervisor does, to its first line."""
    from trainflow.runner import sandbox

    started = time.time()
    proc, applied = sandbox.spawn(
        [str(direct.python), "-u", "job.py"],
        policy,
        str(direct.cwd),
        env=direct.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    seen = time.time()
    proc.stdout.read()
    error = proc.stderr.read()
    proc.wait(timeout=60)
    if applied is None or line.strip() != b"first":
        raise RuntimeError(f"the sandboxed job printed {line!r}: {error.decode(errors='replace')[-300:]}")
    return ms(seen, started)


def sandbox_direct(tmp: Path) -> tuple[Direct, dict[str, Any]]:
    """A job folder laid out as the scheduler lays one out, and that job's sandbox policy."""
    from trainflow.jobs import sandboxing
    from trainflow.settings import Settings

    settings = Settings(data_dir=tmp / "data")
    folder = settings.jobs_dir / "1"
    for name in ("work", "output", "tmp", "home"):
        (folder / name).mkdir(parents=True)
    (folder / "work" / "job.py").write_text(FIRST_SCRIPT)
    policy = sandboxing.job_policy(settings, folder, None, None)
    sandboxing.grant_folders(settings, folder)
    env = {**job_env(Path(sys.executable).parent, folder / "home"), "TMPDIR": str(folder / "tmp")}
    return Direct(Path(sys.executable), folder / "work", env), policy


def bench_sandbox(server: Trainflow, unsandboxed: Trainflow, tmp: Path, opts: Options) -> dict[str, Any]:
    direct, policy = sandbox_direct(tmp)
    one_line_job(unsandboxed)  # its first job after the server's start, not counted
    plain: list[float] = []
    boxed: list[float] = []
    stored: dict[str, list[float]] = {"trainflow": [], "no_sandbox": []}
    for run in range(opts.runs):
        plain.append(python_first_line_ms(direct))
        boxed.append(sandboxed_first_line_ms(direct, policy))
        stored["trainflow"].append(one_line_job(server)["stored"])
        time.sleep(0.1)
        stored["no_sandbox"].append(one_line_job(unsandboxed)["stored"])
        time.sleep(0.1)
        if run % 5 == 4:
            progress(
                f"[sandbox] {run + 1}/{opts.runs}; last: {boxed[-1]:.0f} ms sandboxed, {plain[-1]:.0f} ms not"
            )
    return {
        "python_ms": summary(plain),
        "sandboxed_python_ms": summary(boxed),
        "stored_ms": {way: summary(values) for way, values in stored.items()},
        "raw": {"python_ms": plain, "sandboxed_python_ms": boxed, "stored_ms": stored},
    }


def bench_throughput(server: Trainflow, direct: Direct, opts: Options) -> dict[str, Any]:
    workloads = {
        "flood": (["flood", str(opts.lines)], opts.lines),
        "paced": (
            ["paced", str(opts.rate), str(opts.seconds), str(PACED_BATCH)],
            int(opts.rate * opts.seconds) // PACED_BATCH * PACED_BATCH,
        ),
    }
    results: dict[str, Any] = {}
    for name, (args, expected) in workloads.items():
        runs: dict[str, list[dict[str, Any]]] = {"pipe": [], "null": [], "trainflow": []}
        for repeat in range(opts.repeats):
            progress(f"[throughput] {name} ({expected:,} lines), round {repeat + 1}/{opts.repeats} ...")
            runs["pipe"].append(run_printer_direct(direct, args, "pipe"))
            runs["null"].append(run_printer_direct(direct, args, "null"))
            runs["trainflow"].append(printer_job(server, args, expected))
            mine, pipe, null = (runs[way][-1] for way in ("trainflow", "pipe", "null"))
            progress(
                f"[throughput]   trainflow {mine['elapsed_s']:.2f} s, pipe {pipe['elapsed_s']:.2f} s, "
                f"null {null['elapsed_s']:.2f} s; {mine['records']:,} records, all kept: {mine['all_kept']}"
            )
        median = {way: statistics.median(r["elapsed_s"] for r in rs) for way, rs in runs.items()}
        tf = runs["trainflow"]
        results[name] = {
            "expected_lines": expected,
            "elapsed_s": median,
            "cpu_s": {way: statistics.median(r["cpu_s"] for r in rs) for way, rs in runs.items()},
            "busy_s": {way: statistics.median(r["busy_s"] for r in rs) for way, rs in runs.items()},
            "supervisor_us_per_line": statistics.median(r["supervisor_us_per_line"] for r in tf),
            "slowdown_vs_pipe_pct": (median["trainflow"] / median["pipe"] - 1) * 100,
            "slowdown_vs_null_pct": (median["trainflow"] / median["null"] - 1) * 100,
            "captured_lines_s": statistics.median(r["captured_lines_s"] for r in tf),
            "last_line_lag_ms": statistics.median(r["last_line_lag_ms"] for r in tf),
            "tail_page_ms": statistics.median(r["tail_page_ms"] for r in tf),
            "all_kept": all(r["all_kept"] for r in tf),
            "pipe_lines_ok": all(r["lines_read"] == expected for r in runs["pipe"]),
            "records": [r["records"] for r in tf],
            "raw": runs,
        }
    return results


# --------------------------------------------------------------------------------------------
# Ray: a local head, and a client subprocess (``--ray-client``) that submits and watches
# --------------------------------------------------------------------------------------------


def ray_available(bin_dir: Path) -> str:
    """Ray's version if ``ray`` is importable by the benchmark's Python and its CLI is there; else ''."""
    if not (bin_dir / "ray").exists():
        return ""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return ""


def ray_command(bin_dir: Path, tmp: Path) -> tuple[list[str], dict[str, str], int]:
    """``ray start --head --block`` on free loopback ports; returns argv, env and the dashboard port."""
    gcs, dashboard, client, agent_http, agent_grpc, runtime_env, metrics, node, objects, *workers = (
        free_ports(9 + 15)
    )
    argv = [
        str(bin_dir / "ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--temp-dir", str(tmp / "t"),
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--port", str(gcs), "--ray-client-server-port", str(client),
        "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(runtime_env), "--metrics-export-port", str(metrics),
        "--node-manager-port", str(node), "--object-manager-port", str(objects),
        "--worker-port-list", ",".join(map(str, workers)),
    ]  # fmt: skip
    env = base_env()
    env.update(RAY_USAGE_STATS_ENABLED="0", PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}")
    return argv, env, dashboard


def bench_ray(opts: Options) -> dict[str, Any]:
    # Ray's unix sockets live under --temp-dir: keep the path short (they are limited to ~107 bytes).
    short_root = "/tmp" if Path("/tmp").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="bench-ray-", dir=short_root, ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        (tmp / "wd").mkdir()
        (tmp / "wd" / "job.py").write_text(FIRST_SCRIPT)
        argv, env, dashboard = ray_command(opts.bin_dir, tmp)
        log_path = tmp / "ray-head.log"
        progress("[ray] starting a local head ...")
        started = time.monotonic()
        proc = start_process(argv, env, tmp, log_path)
        _SESSIONS[proc.pid] = proc
        try:
            address = f"http://127.0.0.1:{dashboard}"
            ready = wait_healthy(f"{address}/api/version", proc, log_path, started)
            progress(
                f"[ray] dashboard up in {ready:.1f} s; submitting {opts.ray_runs} jobs after a warm-up ..."
            )
            client_argv = [sys.executable, str(Path(__file__).resolve()), "--ray-client", address]
            client_argv += ["--ray-workdir", str(tmp / "wd"), "--ray-runs", str(opts.ray_runs)]
            client_log = tmp / "ray-client.log"
            with running(client_argv, env, tmp, client_log) as client:
                try:
                    client.wait(timeout=RAY_CLIENT_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    raise TimeoutError(f"the Ray client did not finish:\n{log_tail(client_log)}") from None
            lines = [
                line for line in client_log.read_text(errors="replace").splitlines() if line.startswith("{")
            ]
            if client.returncode != 0 or not lines:
                raise RuntimeError(f"the Ray client failed ({client.returncode}):\n{log_tail(client_log)}")
            figures = dict(json.loads(lines[-1]))
            figures["head_ready_s"] = ready
            return figures
        finally:
            progress("[ray] stopping the head (its whole session) ...")
            stop_session(proc)
            _SESSIONS.pop(proc.pid, None)


def ray_client_main(address: str, workdir: str, runs: int) -> dict[str, Any]:
    """Submit the one-line job ``runs`` + 1 times; first line via get_job_logs polls and tail_job_logs."""
    import asyncio

    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)

    def submit() -> str:
        deadline = time.time() + RAY_SUBMIT_RETRY_S
        while True:
            try:
                return str(
                    client.submit_job(entrypoint="python -u job.py", runtime_env={"working_dir": workdir})
                )
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def one_job() -> dict[str, float]:
        sent = time.time()
        job_id = submit()
        answered = time.time()
        tailed: dict[str, float] = {}

        async def tail() -> None:
            async for chunk in client.tail_job_logs(job_id):
                if "first" in chunk:
                    tailed.setdefault("at", time.time())

        thread = threading.Thread(target=lambda: asyncio.run(tail()), name="tail", daemon=True)
        thread.start()
        polled = math.nan
        while time.time() < sent + JOB_TIMEOUT_S:
            if "first" in client.get_job_logs(job_id):
                polled = time.time()
                break
            time.sleep(API_POLL_S)
        while time.time() < sent + JOB_TIMEOUT_S and not client.get_job_status(job_id).is_terminal():
            time.sleep(0.05)
        thread.join(timeout=60)
        status = client.get_job_status(job_id)
        if status != JobStatus.SUCCEEDED:
            raise RuntimeError(f"Ray job {job_id} ended {status}: {client.get_job_logs(job_id)[-1000:]}")
        return {
            "answered": ms(answered, sent),
            "poll": ms(polled, sent),
            "follow": ms(tailed.get("at", math.nan), sent),
        }

    first = one_job()
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        for key, value in one_job().items():
            samples.setdefault(key, []).append(value)
    from importlib.metadata import version

    return {
        "version": version("ray"),
        "first_job": first,
        "ms": {key: summary(values) for key, values in samples.items()},
        "raw": samples,
    }


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------

COLUMNS = {
    "trainflow": "trainflow",
    "no_sandbox": "no sandbox",
    "pipe": "python, pipe",
    "null": "python, null",
    "ray": "Ray 2.60",
    "ray_ref": "Ray (issue)",
}


@dataclass
class Line:
    label: str
    cells: dict[str, str] = field(default_factory=dict)
    target: str = ""


def num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if round(value, digits) == 0:
        value = 0.0  # not "-0.0"
    return f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return " PASS" if ok else " FAIL"


def startup_lines(startup: dict[str, Any] | None, ray: dict[str, Any], runs: int) -> list[Line]:
    lines = []
    if startup is not None:
        lines.append(Line(f"One-line job: submit -> first line, ms ({runs} runs)"))
        stages, python = startup["stages_ms"], startup["python_ms"]
        for q in ("p50", "p90"):
            lines.append(
                Line(
                    f"  first line stored (python: read from its pipe), {q}",
                    {"trainflow": num(stages["stored"][q]), "pipe": num(python[q])},
                )
            )
        for q in ("p50", "p90"):
            beyond = stages["stored"][q] - python[q]
            lines.append(
                Line(
                    f"  beyond Python's own start, {q}",
                    {"trainflow": num(beyond) + verdict(beyond <= STARTUP_TARGET_MS)},
                    f"<= {STARTUP_TARGET_MS:.0f} (issue)",
                )
            )
        lines.append(
            Line("  seen by a 1 ms watch of logs.ndjson, p50", {"trainflow": num(stages["seen"]["p50"])})
        )
        lines.append(Line("  where it goes (p50, from the POST):"))
        for stage, label in (
            ("answered", "201 answer received"),
            ("claimed", "claimed by the scheduler (started_at)"),
            ("handed_over", "supervisor being started (spec.json)"),
            ("spawned", "job process spawned (status.json)"),
            ("stored", "first line stored (record ts)"),
        ):
            lines.append(Line(f"    {label}", {"trainflow": num(stages[stage]["p50"])}))
    client = (startup or {}).get("client_ms", {})
    ray_ms = ray.get("ms", {})
    n_api, n_ray = (client.get("api_poll") or {}).get("n", 0), (ray_ms.get("poll") or {}).get("n", 0)
    lines.append(Line(f"A client sees the first line, ms (trainflow {n_api} runs, Ray {n_ray})"))
    for key, label in (
        ("api_poll", "polling every 10 ms (logs API | get_job_logs)"),
        ("follow", "a follower (follow_events, stream | tail_job_logs)"),
    ):
        ray_key = "poll" if key == "api_poll" else "follow"
        for q in ("p50", "p90"):
            cells = {
                "trainflow": num((client.get(key) or {}).get(q)),
                "ray": num((ray_ms.get(ray_key) or {}).get(q)),
            }
            if q == "p50":
                cells["ray_ref"] = "~" + num(RAY_REFERENCE_MS[ray_key])
            lines.append(Line(f"  {label}, {q}", cells))
    if client:
        stored_meanwhile = (client.get("stored") or {}).get("p50")
        lines.append(Line("  first line stored meanwhile, p50", {"trainflow": num(stored_meanwhile)}))
        slowest = (client.get("slowest_poll") or {}).get("p50")
        lines.append(Line("  slowest 10 ms poll (Basic auth) per job, p50", {"trainflow": num(slowest)}))
    lines.append(
        Line(
            "  submit call answered, p50",
            {
                "trainflow": num((startup or {}).get("stages_ms", {}).get("answered", {}).get("p50")),
                "ray": num((ray_ms.get("answered") or {}).get("p50")),
            },
        )
    )
    lines.append(
        Line(
            "  first job after start (trainflow: stored; Ray: get_job_logs)",
            {
                "trainflow": num((startup or {}).get("first_job", {}).get("stored")),
                "ray": num(ray.get("first_job", {}).get("poll")),
            },
        )
    )
    return lines


def sandbox_lines(result: dict[str, Any], runs: int) -> list[Line]:
    lines = [Line(f"Job start with and without the sandbox, ms ({runs} runs each, interleaved)")]
    python, boxed, stored = result["python_ms"], result["sandboxed_python_ms"], result["stored_ms"]
    for q in ("p50", "p90"):
        lines.append(
            Line(
                f"  python -u job.py -> first line (trainflow: in its sandbox), {q}",
                {"trainflow": num(boxed[q]), "pipe": num(python[q])},
            )
        )
    for q in ("p50", "p90"):
        added = boxed[q] - python[q]
        lines.append(
            Line(
                f"  added by the sandbox (bubblewrap, launcher), {q}",
                {"trainflow": num(added) + verdict(added <= SANDBOX_TARGET_MS)},
                f"<= {SANDBOX_TARGET_MS:.0f} (issue)",
            )
        )
    for q in ("p50", "p90"):
        cells = {way: num(stored[way][q]) for way in ("trainflow", "no_sandbox")}
        lines.append(Line(f"  one-line job: submit -> first line stored, {q}", cells))
    added = stored["trainflow"]["p50"] - stored["no_sandbox"]["p50"]
    lines.append(
        Line(
            "  added by the sandbox on the server, p50",
            {"trainflow": num(added) + verdict(added <= SANDBOX_TARGET_MS)},
            f"<= {SANDBOX_TARGET_MS:.0f} (issue)",
        )
    )
    return lines


def throughput_lines(throughput: dict[str, Any], opts: Options) -> list[Line]:
    lines: list[Line] = []
    for name, title in (
        ("flood", f"print(i) x {opts.lines:,}, as fast as it can"),
        ("paced", f"paced: {opts.rate:,} lines/s for {opts.seconds:g} s"),
    ):
        result = throughput.get(name)
        if result is None:
            continue
        elapsed, expected = result["elapsed_s"], result["expected_lines"]
        lines.append(Line(f"{title} (median of {opts.repeats})"))
        lines.append(
            Line(
                "  job's own run time (s)",
                {way: num(elapsed[way], 2) for way in ("trainflow", "pipe", "null")},
            )
        )
        lines.append(
            Line(
                "  job's lines/s",
                {way: num(expected / elapsed[way]) for way in ("trainflow", "pipe", "null")},
            )
        )
        ways = ("trainflow", "pipe", "null")
        lines.append(Line("  job's CPU time (s)", {way: num(result["cpu_s"][way], 2) for way in ways}))
        if name == "paced":
            busy = {way: num(result["busy_s"][way], 2) for way in ways}
            lines.append(Line("  job's time printing, not sleeping (s)", busy))
        lines.append(
            Line("  captured lines/s (spawn -> last stored)", {"trainflow": num(result["captured_lines_s"])})
        )
        per_line = num(result["supervisor_us_per_line"], 1)
        lines.append(Line("  supervisor CPU per line (us)", {"trainflow": per_line}))
        slow = result["slowdown_vs_pipe_pct"]
        target = f"<= {SLOWDOWN_TARGET_PCT:.0f}% (issue)" if name == "paced" else ""
        cell = num(slow, 1) + (verdict(slow <= SLOWDOWN_TARGET_PCT) if name == "paced" else "")
        lines.append(Line("  slowdown vs python, pipe (%)", {"trainflow": cell}, target))
        lines.append(
            Line("  slowdown vs python, null (%)", {"trainflow": num(result["slowdown_vs_null_pct"], 1)})
        )
        kept = f"{min(result['records']):,}/{expected:,}" + verdict(result["all_kept"])
        lines.append(Line("  lines kept, in order, no gap/dup", {"trainflow": kept}, "all (issue)"))
        lines.append(
            Line(
                "  last line stored after it was printed (ms)", {"trainflow": num(result["last_line_lag_ms"])}
            )
        )
        lines.append(
            Line("  logs API, last 100 lines of the log (ms)", {"trainflow": num(result["tail_page_ms"], 1)})
        )
    return lines


def render_table(lines: list[Line], columns: list[str]) -> str:
    header = Line("", {c: COLUMNS[c] for c in columns}, "trainflow target")
    rows = [[line.label, *(line.cells.get(c, "") for c in columns), line.target] for line in [header, *lines]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def fmt(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])]
        parts += [text.rjust(width) for text, width in zip(row[1:-1], widths[1:-1], strict=True)]
        parts.append(row[-1].ljust(widths[-1]))
        return "  ".join(parts).rstrip()

    rule = "-" * len(fmt(rows[0]))
    return "\n".join([fmt(rows[0]), rule, *(fmt(row) for row in rows[1:])])


def environment_line(opts: Options, ray_version: str) -> str:
    from importlib.metadata import version

    ray = f"ray {ray_version}" if ray_version else "ray not installed"
    return (
        f"trainflow at {trainflow_revision()}, mlflow {version('mlflow')}, {ray}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})"
    )


def write_json(results: dict[str, Any], opts: Options, environment: str, table: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"jobs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    options = {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in opts.__dict__.items()}
    document = {"environment": environment, "options": options, "results": results, "table": table}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------

SECTIONS = ("startup", "sandbox", "throughput", "ray")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="one-line jobs timed (default 20)")
    parser.add_argument(
        "--api-runs", type=int, default=5, help="one-line jobs watched as a client (default 5)"
    )
    parser.add_argument(
        "--ray-runs", type=int, default=5, help="one-line Ray jobs after a warm-up (default 5)"
    )
    parser.add_argument(
        "--lines", type=int, default=1_000_000, help="lines the flood job prints (default 1M)"
    )
    parser.add_argument("--rate", type=int, default=100_000, help="lines/s of the paced job (default 100k)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of the paced job (default 3)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each throughput job, each way (default 3)"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated sections (default all: {','.join(SECTIONS)})"
    )
    parser.add_argument(
        "--bin-dir", type=Path, default=Path(sys.executable).parent,
        help="directory holding python and the trainflow and ray scripts (default: this Python's)",
    )  # fmt: skip
    parser.add_argument("--ray-client", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ray-workdir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (
        1 <= args.runs <= 1000
        and 0 <= args.api_runs <= 100
        and 1 <= args.ray_runs <= 100
        and 1000 <= args.lines <= 20_000_000
        and PACED_BATCH <= args.rate <= 2_000_000
        and 0 < args.seconds <= 60
        and 1 <= args.repeats <= 20
    ):
        parser.error(
            "--runs in [1, 1000], --api-runs in [0, 100], --ray-runs in [1, 100], --lines in [1000, 20M], "
            f"--rate in [{PACED_BATCH}, 2M], --seconds in (0, 60], --repeats in [1, 20]"
        )
    unknown = set(filter(None, args.only.split(","))) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def guarded(name: str, errors: dict[str, str], work: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return work()
    except (RuntimeError, TimeoutError, OSError, ValueError, KeyError) as e:
        progress(f"[{name}] FAILED: {e}")
        errors[name] = str(e)
        return None


def run_benchmark(opts: Options) -> int:
    ray_version = ray_available(opts.bin_dir)
    environment = environment_line(opts, ray_version)  # before the run, whose own load would show
    began = time.monotonic()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    try:
        if opts.sections & {"startup", "throughput", "sandbox"}:
            with tempfile.TemporaryDirectory(prefix="bench-jobs-") as name:
                tmp = Path(name)
                (tmp / "direct").mkdir()
                (tmp / "direct" / "job.py").write_text(FIRST_SCRIPT)
                (tmp / "direct" / "printer.py").write_text(PRINTER_SCRIPT)
                direct = Direct(
                    opts.bin_dir / "python", tmp / "direct", job_env(opts.bin_dir, tmp / "direct")
                )
                progress("[trainflow] starting the server ...")
                with trainflow_server(opts.bin_dir, tmp) as (server, ready):
                    results["trainflow_ready_s"] = ready
                    progress(f"[trainflow] healthy in {ready:.1f} s")
                    if "startup" in opts.sections:
                        results["startup"] = guarded(
                            "startup", errors, lambda: bench_startup(server, direct, opts)
                        )
                    if "sandbox" in opts.sections:
                        progress("[sandbox] starting a second server, with TRAINFLOW_JOB_SANDBOX=off ...")
                        (tmp / "off").mkdir()
                        with trainflow_server(opts.bin_dir, tmp / "off", TRAINFLOW_JOB_SANDBOX="off") as (
                            unsandboxed,
                            _,
                        ):
                            results["sandbox"] = guarded(
                                "sandbox",
                                errors,
                                lambda: bench_sandbox(server, unsandboxed, tmp / "sandbox", opts),
                            )
                    if "throughput" in opts.sections:
                        results["throughput"] = guarded(
                            "throughput", errors, lambda: bench_throughput(server, direct, opts)
                        )
        if "ray" in opts.sections:
            if ray_version:
                results["ray"] = guarded("ray", errors, lambda: bench_ray(opts))
            else:
                progress("[ray] not installed: the table shows the issue's reference figures only")
    finally:
        stop_sessions()
        stop_all()
    columns = [
        *(
            ["trainflow"]
            if results.get("startup") or results.get("throughput") or results.get("sandbox")
            else []
        ),
        *(["no_sandbox"] if results.get("sandbox") else []),
        *(
            ["pipe", "null"]
            if results.get("startup") or results.get("throughput") or results.get("sandbox")
            else []
        ),
        *(["ray"] if results.get("ray") else []),
        *(["ray_ref"] if opts.sections & {"startup", "ray"} else []),
    ]
    lines: list[Line] = []
    if opts.sections & {"startup", "ray"}:
        lines += startup_lines(results.get("startup"), results.get("ray") or {}, opts.runs)
    if results.get("sandbox"):
        lines += sandbox_lines(results["sandbox"], opts.runs)
    if results.get("throughput"):
        lines += throughput_lines(results["throughput"], opts)
    table = render_table(lines, columns)
    print(f"\nJobs: start-up and output capture ({environment})\n")
    print(table)
    print(
        "\nColumns: trainflow jobs (sandboxed); "
        + ("the same on a server with TRAINFLOW_JOB_SANDBOX=off; " if results.get("sandbox") else "")
        + "the same script as `python -u`, stdout to a pipe / to /dev/null; "
        + (f"Ray {ray_version} Jobs on a local head, measured; " if results.get("ray") else "")
        + "Ray (issue): the issue's Ray 2.60 figures, reference only, NOT measured in this run."
    )
    print("PASS/FAIL marks trainflow cells against the target column.")
    for name, message in errors.items():
        print(f"  {name} error: {message.splitlines()[0][:300]}")
    results["errors"] = errors
    path = write_json(results, opts, environment, table)
    print(f"\nWrote {path.relative_to(ROOT)} in {time.monotonic() - began:.0f} s total.")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ray_client:
        print(json.dumps(ray_client_main(args.ray_client, args.ray_workdir, args.ray_runs)), flush=True)
        return 0
    opts = Options(
        args.runs,
        args.api_runs,
        args.ray_runs,
        args.lines,
        args.rate,
        args.seconds,
        args.repeats,
        frozenset(filter(None, args.only.split(","))) or frozenset(SECTIONS),
        args.bin_dir,
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)  # stop the servers on SIGTERM as on Ctrl+C
    try:
        return run_benchmark(opts)
    except KeyboardInterrupt:
        progress("Interrupted: servers stopped.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
