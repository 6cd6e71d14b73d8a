"""A supervisor sending its job's records to the servers' ingest (#13): none lost, none twice.

The supervisor runs for real, as the local executor starts it, with ``"ingest"`` in its spec.
The servers are either a real ``trainflow server`` or a small HTTP server of the test's own
that speaks the ingest's protocol and can fail, stall and be down for a while.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from flask import Flask
from flask_jwt_extended import JWTManager

from tests.e2e.conftest import start_server
from tests.processes import alive, free_port, wait_for
from tests.runner.supervision import read_status, supervisor_command, write_job
from trainflow.accounts.auth import jwt_config
from trainflow.jobs import tokens
from trainflow.settings import Settings

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and signals are POSIX")

TOKEN = "the-supervisors-token"
FLOOD = """
    import sys
    for i in range(1, {count} + 1):
        sys.stdout.write(f"line {{i}}\\n")
"""


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection cut while the server is "down": expected, not news


class FakeIngest:
    """The ingest's protocol, kept in memory: a test says when it fails, stalls or is down."""

    def __init__(self) -> None:
        self.port = free_port()
        self.events: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.requests = 0
        self.batches: list[tuple[int, int]] = []  # (events, bytes) of each request
        self.cancel = False
        self.fail_every = 0  # every Nth request is answered 503
        self.stall_every = 0  # every Nth request is stored, then answered too late
        self.stall_s = 0.0
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def start(self) -> None:
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the trainflow server

            def setup(self) -> None:
                super().setup()
                # As the trainflow server: without it each answer waits ~40 ms on Nagle's algorithm.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ingest.connections.add(self.connection)

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, answer = ingest.answer(self.headers.get("Authorization", ""), body)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting (a stall)

        self.connections: set[socket.socket] = set()
        self.httpd = QuietServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: no listening socket, and every open connection cut."""
        assert self.httpd is not None
        self.httpd.shutdown()
        self.httpd.server_close()
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def answer(self, authorization: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if authorization != f"Bearer {TOKEN}":
            return 401, {"error": {"code": "unauthenticated", "message": "no"}}
        with self.lock:
            self.requests += 1
            number = self.requests
            if self.fail_every and number % self.fail_every == 0:
                return 503, {"error": {"code": "busy", "message": "try again"}}
            batch = json.loads(body)
            self.batches.append((len(batch["events"]), len(body)))
            through = len(self.events)
            if batch["first"] > through + 1:
                return 409, {"error": {"code": "ingest_gap", "message": "gap", "through": through}}
            self.events.extend(batch["events"][through + 1 - batch["first"] :])
            if batch.get("status"):
                self.statuses.append(batch["status"])
            answer = {"through": len(self.events), "cancel": self.cancel}
        if self.stall_every and number % self.stall_every == 0:
            time.sleep(self.stall_s)  # stored, but the answer comes after the client gave up
        return 200, answer

    def lines(self) -> list[str]:
        with self.lock:
            return [e["line"] for e in self.events if e["type"] == "log"]


@pytest.fixture
def ingest():  # type: ignore[no-untyped-def]
    server = FakeIngest()
    yield server
    server.stop()


STARTED: list[tuple[subprocess.Popen, Path]] = []


@pytest.fixture(autouse=True)
def no_supervisor_left():  # type: ignore[no-untyped-def]
    """A test that failed half-way leaves no supervisor waiting to deliver to a server now gone."""
    yield
    while STARTED:
        supervisor, folder = STARTED.pop()
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                os.killpg(read_status(folder)["pid"], signal.SIGKILL)  # its job, in a session of its own


def start_supervisor(
    folder: Path, script: str, url: str, token: str = TOKEN, **ingest: Any
) -> subprocess.Popen:
    write_job(folder, script, grace_s=2, ingest={"url": url, "token": token, **ingest})
    with open(folder / "supervisor.log", "wb") as log:
        supervisor = subprocess.Popen(supervisor_command(folder), stdout=log, stderr=subprocess.STDOUT)
    STARTED.append((supervisor, folder))
    return supervisor


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- against a server of the test's own ------------------------------------------------------


def test_the_supervisor_writes_no_event_log_and_reports_its_end(tmp_path, ingest):
    supervisor = start_supervisor(tmp_path, "print('hello')\nraise SystemExit(3)\n", ingest.url)
    assert supervisor.wait(timeout=60) == 0
    assert ingest.lines() == ["hello"]
    assert ingest.statuses[-1]["state"] == "exited"
    assert ingest.statuses[-1]["exit_code"] == 3
    assert read_status(tmp_path)["exit_code"] == 3  # status.json, for the local executor
    assert not (tmp_path / "events.ndjson").exists()
    assert not (tmp_path / "logs.ndjson").exists()


def test_every_line_arrives_once_and_in_order_through_failures_and_lost_answers(tmp_path, ingest):
    ingest.fail_every = 7
    ingest.stall_every = 37  # stored, then answered after the sink's timeout: it sends them again
    ingest.stall_s = 1.0
    count = 200_000
    supervisor = start_supervisor(tmp_path, FLOOD.format(count=count), ingest.url, timeout_s=0.5)
    assert supervisor.wait(timeout=240) == 0
    assert ingest.lines() == [f"line {i}" for i in range(1, count + 1)]
    assert [e["n"] for e in ingest.events] == list(range(1, count + 1))
    assert read_status(tmp_path)["reason"] is None
    # A flood goes in batches, none over the sink's bounds.
    assert max(events for events, _ in ingest.batches) == 500
    assert max(size for _, size in ingest.batches) < 256 * 1024 + 1024


def test_a_job_printing_all_the_time_makes_a_bounded_number_of_requests(tmp_path, ingest):
    """Lines that come every millisecond go together, about a hundred requests a second at most."""
    script = "import time\nfor i in range(2000):\n    print(i, flush=True)\n    time.sleep(0.001)\n"
    started = time.monotonic()
    supervisor = start_supervisor(tmp_path, script, ingest.url)
    assert supervisor.wait(timeout=60) == 0
    elapsed = time.monotonic() - started
    assert ingest.lines() == [str(i) for i in range(2000)]
    assert len(ingest.batches) < 100 * elapsed + 10


def test_a_server_down_for_seconds_loses_nothing_and_the_job_waits_in_bounded_memory(tmp_path, ingest):
    line = "x" * 100
    count = 150_000  # 15 MB of output: more than the supervisor may hold
    script = f"import sys\nfor i in range(1, {count} + 1):\n    sys.stdout.write(f'{{i}} {line}\\n')\n"
    supervisor = start_supervisor(tmp_path, script, ingest.url, timeout_s=0.5)
    wait_for(lambda: len(ingest.events) > 1000, seconds=60)
    before = rss_kb(supervisor.pid)
    ingest.stop()
    down_until = time.monotonic() + 4
    peak = before
    while time.monotonic() < down_until:
        peak = max(peak, rss_kb(supervisor.pid))
        time.sleep(0.05)
    held = len(ingest.events)
    assert alive(read_status(tmp_path)["pid"])  # the job waits on its prints (unheld: done in 1 s)
    ingest.start()
    assert supervisor.wait(timeout=240) == 0
    assert ingest.lines() == [f"{i} {line}" for i in range(1, count + 1)]
    assert held < count
    # What it holds is bounded by the supervisor's backlog (8 MB of events), not by the 15 MB
    # the job would have printed meanwhile.
    print(f"the supervisor grew by {(peak - before) / 1024:.1f} MB while the server was down")
    assert (peak - before) < 14 * 1024


def test_a_cancel_in_the_answer_ends_the_job_cancelled(tmp_path, ingest):
    script = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.05)\n"
    supervisor = start_supervisor(tmp_path, script, ingest.url)
    wait_for(lambda: "tick" in ingest.lines(), seconds=60)
    ingest.cancel = True
    assert supervisor.wait(timeout=30) == 0
    assert read_status(tmp_path)["reason"] == "cancelled"
    assert ingest.statuses[-1]["state"] == "exited"
    assert ingest.statuses[-1]["reason"] == "cancelled"


def test_a_silent_job_still_reports_and_hears_a_cancel(tmp_path, ingest):
    """No line for a while: empty batches say the supervisor lives, and their answers carry a cancel."""
    script = "import time\nprint('started', flush=True)\ntime.sleep(600)\n"
    supervisor = start_supervisor(tmp_path, script, ingest.url, keepalive_s=0.3)
    wait_for(lambda: "started" in ingest.lines(), seconds=60)
    time.sleep(1.5)
    assert sum(1 for events, _ in ingest.batches[-4:] if events == 0) == 4  # silence, reported
    ingest.cancel = True
    assert supervisor.wait(timeout=30) == 0
    assert read_status(tmp_path)["reason"] == "cancelled"


def test_servers_that_refuse_for_too_long_end_the_job_and_it_says_so(tmp_path, ingest):
    script = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.05)\n"
    supervisor = start_supervisor(tmp_path, script, ingest.url, token="not-the-token", give_up_s=2)
    assert supervisor.wait(timeout=60) == 0
    status = read_status(tmp_path)
    assert status["reason"] == "storage_failed"
    assert "HTTP 401" in status["message"]
    assert "could not report how it ended" in (tmp_path / "supervisor.log").read_text()


def test_an_answer_claiming_more_than_was_sent_makes_nothing_forgotten(tmp_path, ingest):
    script = "import time\nfor i in range(300):\n    print(i, flush=True)\n    time.sleep(0.002)\n"
    original = ingest.answer
    boasted: list[bool] = []

    def boastful(authorization: str, body: bytes) -> tuple[int, dict[str, Any]]:
        status, answer = original(authorization, body)
        if json.loads(body)["events"] and not boasted:
            boasted.append(True)
            time.sleep(0.2)  # lines gather meanwhile: held, not sent yet
            answer["through"] = 10**6  # a server bug: it cannot hold what nobody sent
        return status, answer

    ingest.answer = boastful  # type: ignore[method-assign]
    supervisor = start_supervisor(tmp_path, script, ingest.url)
    assert supervisor.wait(timeout=60) == 0
    assert ingest.lines() == [str(i) for i in range(300)]


def test_a_batch_the_servers_refuse_ends_the_job_at_once(tmp_path, ingest):
    """Sending it again would get the same 400: the job ends now, not after the give-up time."""
    script = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.05)\n"
    ingest.answer = lambda authorization, body: (400, {"error": {"code": "bad_request", "message": "no"}})  # type: ignore[method-assign]
    started = time.monotonic()
    supervisor = start_supervisor(tmp_path, script, ingest.url)
    assert supervisor.wait(timeout=60) == 0
    assert time.monotonic() - started < 20
    assert read_status(tmp_path)["reason"] == "storage_failed"
    assert "HTTP 400" in read_status(tmp_path)["message"]


def test_a_job_ended_by_the_servers_is_stopped(tmp_path, ingest):
    """A server that says the job has ended (another host recorded it LOST) takes nothing more."""
    script = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.05)\n"
    original = ingest.answer

    def ended(authorization: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if ingest.requests >= 3:
            return 409, {"error": {"code": "job_finished", "message": "ended"}}
        return original(authorization, body)

    ingest.answer = ended  # type: ignore[method-assign]
    supervisor = start_supervisor(tmp_path, script, ingest.url)
    assert supervisor.wait(timeout=30) == 0
    assert not alive(read_status(tmp_path)["pid"])


# -- against a real trainflow server -----------------------------------------------------------


def test_a_flood_reaches_a_real_servers_stream_once_and_in_order(tmp_path):
    key = "k" * 64
    data = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'trainflow.db'}"
    server = start_server(
        data,
        url,
        TRAINFLOW_SECRET_KEY=key,
        TRAINFLOW_RUN_JOBS="false",
        TRAINFLOW_ADMIN_PASSWORD="adm1n-pass-word",
    )
    try:
        auth = ("admin", "adm1n-pass-word")
        script = requests.post(
            f"{server.url}/ajax-api/2.0/mlflow/train/upload",
            files={"file": ("train.py", "print(1)\n")},
            auth=auth,
            timeout=30,
        ).json()["script"]
        job = requests.post(
            f"{server.url}/ajax-api/2.0/mlflow/train/jobs", json={"script_id": script}, auth=auth, timeout=30
        ).json()
        with sqlite3.connect(tmp_path / "trainflow.db") as db:  # as a scheduler claims it
            db.execute("UPDATE tf_jobs SET status = 'RUNNING' WHERE id = ?", (job["job"],))
        db.close()
        app = Flask("tokens")
        app.config.update(jwt_config(Settings(data_dir=data), key))
        JWTManager(app)
        row = SimpleNamespace(id=job["job"], run_id=job["run_id"], timeout_s=None)  # what the token names
        token = tokens.issue_supervisor_token(app, row)  # type: ignore[arg-type]
        ingest_url = f"{server.url}/ajax-api/2.0/mlflow/train/jobs/{job['job']}/ingest"
        count = 200_000
        started = time.monotonic()
        supervisor = start_supervisor(tmp_path / "job", FLOOD.format(count=count), ingest_url, token)
        assert supervisor.wait(timeout=300) == 0, (tmp_path / "job" / "supervisor.log").read_text()
        elapsed = time.monotonic() - started
        with sqlite3.connect(tmp_path / "trainflow.db") as db:
            reported = json.loads(
                db.execute("SELECT reported_status FROM tf_jobs WHERE id = ?", (job["job"],)).fetchone()[0]
            )
            db.execute("UPDATE tf_jobs SET status = 'SUCCEEDED', exit_code = 0 WHERE id = ?", (job["job"],))
        db.close()
        response = requests.get(
            f"{server.url}/ajax-api/2.0/mlflow/train/jobs/{job['job']}/events", auth=auth, timeout=120
        )
        events = [json.loads(line) for line in response.content.splitlines()]
    finally:
        server.stop()
    logs = [e for e in events if e["type"] == "log"]
    assert [e["line"] for e in logs] == [f"line {i}" for i in range(1, count + 1)]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "end"
    assert reported["state"] == "exited"
    assert reported["exit_code"] == 0
    print(f"{count} lines through the ingest in {elapsed:.1f} s: {count / elapsed:,.0f} lines/s")
