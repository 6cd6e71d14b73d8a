"""The all-jobs stream on the real server: every status change once, in order, under load and
across a Redis outage (issue 11).

Both servers here send heartbeats once an hour, so nothing looks at the database for a missed
notice on a timer: what arrives came through the bus, or through the re-read after the Redis
bus reconnected.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.e2e.test_jobs import ADMIN, TRAIN, Api
from tests.processes import free_port

pytestmark = pytest.mark.e2e
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
QUIET = "import time\ntime.sleep(0.2)\nprint('done')\n"
ENDS = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST")


class Follower:
    """Reads the all-jobs stream in a thread; ``position`` is its first line's seq."""

    def __init__(self, api: Api, **params: int) -> None:
        self.response = requests.get(
            f"{api.url}{TRAIN}/events", params=params, auth=api.auth, stream=True, timeout=(10, 300)
        )
        assert self.response.status_code == 200, self.response.text
        self.socket = self.response.raw._connection.sock  # to end a read another thread waits in
        self.lines = self._lines()
        first = next(self.lines)
        assert first["type"] == "heartbeat"
        self.position: int = first["seq"]
        self.events: list[dict] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _lines(self):
        pending = b""
        for chunk in self.response.iter_content(chunk_size=None):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line:
                    yield json.loads(line)

    def _read(self) -> None:
        try:
            for event in self.lines:
                if event["type"] != "heartbeat":
                    self.events.append(event)
        except (requests.RequestException, ValueError):
            return  # closed by the test

    def wait_for(self, count: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.events) >= count, f"{len(self.events)} of {count} changes arrived: {self.events}"

    def close(self) -> None:
        # Closing the response while the reader waits for a line would wait with it (one lock).
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.response.close()


def by_job(events: list[dict]) -> dict[int, list[str]]:
    statuses: dict[int, list[str]] = defaultdict(list)
    for event in events:
        statuses[event["job_id"]].append(event["status"])
    return statuses


def assert_once_in_order(events: list[dict]) -> None:
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs)), "a change came twice or out of order"


def submit(api: Api, script: int) -> int:
    response = api.call("POST", f"{TRAIN}/jobs", json={"script_id": script})
    assert response.status_code == 201, response.text
    return response.json()["job"]


@sqlite_only
def test_30_quiet_jobs_under_cpu_load_show_all_90_changes_once_and_in_order(
    server_factory, tmp_path, database_url
):
    server = server_factory(
        tmp_path / "data",
        database_url,
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_STREAM_HEARTBEAT_SECONDS="3600",
        TRAINFLOW_MAX_CONCURRENT_JOBS="30",
    )
    api = Api(server.url, ADMIN)
    script = api.upload(QUIET)
    follower = Follower(api)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        # Submitted 10 at a time and all run at once: bursts of notices. Before the fix, 50 of
        # the 90 changes arrived and 21 jobs never showed their end.
        with ThreadPoolExecutor(10) as pool:
            jobs = list(pool.map(lambda _: submit(api, script), range(30)))
        follower.wait_for(90, seconds=150)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
        follower.close()
    events = follower.events
    assert len(events) == 90
    assert_once_in_order(events)
    assert by_job(events) == {job: ["QUEUED", "RUNNING", "SUCCEEDED"] for job in jobs}
    assert all(event["seq"] > follower.position for event in events)


def start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(
        [
            redis_server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import redis

            if redis.Redis(port=port, socket_connect_timeout=0.5).ping():
                return process
        except redis.RedisError:
            time.sleep(0.05)
    process.kill()
    pytest.fail(f"redis-server did not start on port {port}")


@sqlite_only
def test_changes_made_while_redis_is_down_arrive_when_it_returns(server_factory, tmp_path, database_url):
    port = free_port()
    redis_server = start_redis(port, tmp_path)
    try:
        server = server_factory(
            tmp_path / "data",
            database_url,
            TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
            TRAINFLOW_REDIS_URL=f"redis://127.0.0.1:{port}/0",
            TRAINFLOW_STREAM_HEARTBEAT_SECONDS="3600",
        )
        api = Api(server.url, ADMIN)
        script = api.upload(
            "import time\nfor i in range(10):\n    print(i, flush=True)\n    time.sleep(0.3)\n"
        )
        follower = Follower(api)
        before = submit(api, script)
        follower.wait_for(2, seconds=30)  # QUEUED, RUNNING: the bus works
        redis_server.kill()  # mid-run
        redis_server.wait()
        during = submit(api, script)
        api.wait(before, "SUCCEEDED", seconds=60)
        api.wait(during, "SUCCEEDED", seconds=60)
        redis_server = start_redis(port, tmp_path)
        follower.wait_for(6, seconds=30)  # the stream re-reads once the bus is back
        after = submit(api, script)
        follower.wait_for(9, seconds=60)
        follower.close()
    finally:
        redis_server.kill()
        redis_server.wait()
    events = follower.events
    assert len(events) == 9
    assert_once_in_order(events)
    assert by_job(events) == {job: ["QUEUED", "RUNNING", "SUCCEEDED"] for job in (before, during, after)}


@sqlite_only
def test_a_follower_that_reconnects_gets_exactly_what_it_missed(server_factory, tmp_path, database_url):
    server = server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1])
    api = Api(server.url, ADMIN)
    script = api.upload(QUIET)
    first = Follower(api)
    jobs = [submit(api, script) for _ in range(3)]
    first.wait_for(2, seconds=30)
    first.close()
    seen = list(first.events)
    for job in jobs:
        api.wait(job, *ENDS, seconds=60)
    resumed = Follower(api, after=seen[-1]["seq"])
    assert resumed.position == seen[-1]["seq"]
    resumed.wait_for(9 - len(seen), seconds=30)
    time.sleep(0.5)  # nothing more comes
    resumed.close()
    events = seen + resumed.events
    assert len(events) == 9
    assert_once_in_order(events)
    assert by_job(events) == {job: ["QUEUED", "RUNNING", "SUCCEEDED"] for job in jobs}
