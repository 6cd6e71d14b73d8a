"""trainflow behind Debian's nginx, with docs/deploy/nginx.conf, in front of two hosts (#13).

Two servers in shared mode (separate data directories, one PostgreSQL, one Redis) behind nginx
started by the test with the deployment guide's own configuration: its upstreams, listen line and
stream timeout filled in for this machine, plus a header naming the upstream that answered.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.shared_hosts import TRAIN, Deployment
from tests.processes import free_port, wait_for

pytestmark = pytest.mark.e2e
ON_POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # shared mode
CONFIG = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_LOCATION = re.compile(r"location ~ \^/ajax-api/2\\\.0/mlflow/train/\(jobs/\[0-9\]\+/\)\?events\$ \{")
HEARTBEAT_S = 0.5  # TRAINFLOW_STREAM_HEARTBEAT_SECONDS, scaled down with nginx's timeout:
READ_TIMEOUT_S = 2  # proxy_read_timeout of the streams, scaled from the guide's 300 s
IDLE_S = 3 * READ_TIMEOUT_S  # the job's silence: nginx would cut a stream with no heartbeat in it


def _seconds(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(value[:-1]) * units[value[-1]] if value[-1] in units else float(value)


def render(port: int, upstreams: list[str], read_timeout: str = f"{READ_TIMEOUT_S}s") -> str:
    """The guide's configuration for this machine: upstreams, listen port and the scaled timeout."""
    text = CONFIG.read_text()
    servers = "\n".join(f"    server {address} max_fails=3 fail_timeout=10s;" for address in upstreams)
    text, count = re.subn(r"(upstream trainflow \{\n)(?:.*\n)*?(?=    keepalive)", rf"\g<1>{servers}\n", text)
    assert count == 1
    text, count = re.subn(r"listen 80;", f"listen 127.0.0.1:{port};", text)
    assert count == 1
    text, count = re.subn(
        r"proxy_read_timeout \S+;  # scaled in the test", f"proxy_read_timeout {read_timeout};", text
    )
    assert count == 1
    text, count = STREAM_LOCATION.subn(
        lambda m: m.group(0) + "\n        add_header X-Upstream $upstream_addr always;", text
    )
    assert count == 1
    return text


def start_nginx(folder: Path, site: str, port: int) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True)
    (folder / "trainflow.conf").write_text(site)
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers write the temp folders here
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (folder / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n"
        f"    include {folder / 'trainflow.conf'};\n}}\n"
    )
    process = subprocess.Popen(
        [NGINX, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(folder / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited: {(folder / 'error.log').read_text()}")
        try:
            requests.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
        except requests.ConnectionError:
            return False
        return True

    wait_for(listening, 20)
    return process


@pytest.fixture
def proxied(server_factory, database_url, redis_url, tmp_path) -> Iterator[tuple[str, Deployment, list]]:  # type: ignore[type-arg]
    """nginx's URL in front of two hosts of one deployment."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    deployment = Deployment(database_url, redis_url, tmp_path, public_url=url)
    settings = {
        "TRAINFLOW_TRUSTED_PROXIES": "127.0.0.1",
        "TRAINFLOW_STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
    }
    hosts = [deployment.start(server_factory, name, **settings) for name in ("a", "b")]
    nginx = start_nginx(
        tmp_path / "nginx", render(port, [h.url.removeprefix("http://") for h in hosts]), port
    )
    try:
        yield url, deployment, hosts
    finally:
        stop_nginx(nginx)


def stop_nginx(nginx: subprocess.Popen[bytes]) -> None:
    nginx.send_signal(signal.SIGQUIT)
    try:
        nginx.wait(timeout=10)
    except subprocess.TimeoutExpired:
        nginx.kill()
        nginx.wait()


def sign_in(url: str) -> dict[str, str]:
    registered = requests.post(
        f"{url}/api/register", json={"username": "carol", "password": "a-users-passphrase"}, timeout=30
    )
    assert registered.status_code == 201, registered.text
    login = requests.post(
        f"{url}/api/login", json={"username": "carol", "password": "a-users-passphrase"}, timeout=30
    )
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


JOB = f"""
import time
print("first", flush=True)
time.sleep({IDLE_S})
print("second", flush=True)
"""


def events_of(response: requests.Response, seconds: float = 60) -> Iterator[tuple[float, dict]]:  # type: ignore[type-arg]
    deadline = time.monotonic() + seconds
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            raise AssertionError(f"the stream did not end within {seconds} s")
        if line:
            yield time.monotonic(), json.loads(line)


def runner_of(job_id: int, deployment: Deployment, hosts: list) -> str:  # type: ignore[type-arg]
    """The address of the host that runs the job (the one whose data directory has its spec)."""

    def started() -> list[str]:
        return [
            host.url.removeprefix("http://")
            for name, host in zip("ab", hosts, strict=True)
            if (deployment.root / name / "jobs" / str(job_id) / "spec.json").exists()
        ]

    wait_for(started, 30)
    return started()[0]


def open_stream(url: str, auth: dict[str, str], job_id: int, upstream: str) -> requests.Response:
    """The job's stream, as ``upstream`` serves it: nginx takes turns, so ask until it answers.

    Until job events are stored for every host (#13), only the host running a job has its
    events; test_a_jobs_stream_through_nginx_is_the_same_whichever_host_answers waits for that.
    """
    for _ in range(6):
        stream = requests.get(
            f"{url}{TRAIN}/jobs/{job_id}/events", headers=auth, stream=True, timeout=(5, 4 * READ_TIMEOUT_S)
        )
        if stream.headers.get("X-Upstream") == upstream:
            return stream
        stream.close()
    raise AssertionError(f"nginx never sent the stream to {upstream}")


@ON_POSTGRESQL
def test_a_job_followed_through_nginx_streams_live_and_stays_open_through_silence(proxied):
    url, deployment, hosts = proxied
    auth = sign_in(url)
    upload = requests.post(
        f"{url}{TRAIN}/upload", files={"file": ("train.py", JOB)}, headers=auth, timeout=30
    )
    assert upload.status_code == 201, upload.text
    job = requests.post(
        f"{url}{TRAIN}/jobs", json={"script_id": upload.json()["script"]}, headers=auth, timeout=30
    )
    assert job.status_code == 201, job.text
    job_id = job.json()["job"]

    seen: list[tuple[float, dict]] = []  # type: ignore[type-arg]
    with open_stream(url, auth, job_id, runner_of(job_id, deployment, hosts)) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("application/x-ndjson")
        for at, event in events_of(stream):
            seen.append((at, event))
            if event["type"] == "log" and event["line"] == "first":
                status = requests.get(f"{url}{TRAIN}/jobs/{job_id}", headers=auth, timeout=30).json()[
                    "status"
                ]
                assert status == "RUNNING"  # the first line came while the job ran: not buffered
            if event["type"] == "end":
                break
    lines = [e["line"] for _, e in seen if e["type"] == "log"]
    assert lines == ["first", "second"]
    first = next(at for at, e in seen if e.get("line") == "first")
    second = next(at for at, e in seen if e.get("line") == "second")
    assert second - first > 2 * READ_TIMEOUT_S  # silent past nginx's timeout, and still open
    heartbeats = [at for at, e in seen if e["type"] == "heartbeat" and first < at < second]
    assert len(heartbeats) >= IDLE_S / HEARTBEAT_S / 2  # what kept it open
    assert seen[-1][1]["status"] == "SUCCEEDED"


def test_the_guides_stream_timeout_outlasts_nginxs_default_and_the_heartbeat():
    from trainflow.settings import Settings

    text = CONFIG.read_text()
    stream = text[STREAM_LOCATION.search(text).end() :].split("}", 1)[0]  # type: ignore[union-attr]
    timeout = _seconds(re.search(r"proxy_read_timeout (\S+);", stream).group(1))  # type: ignore[union-attr]
    assert re.search(r"proxy_buffering off;", stream)
    assert timeout > 60  # nginx's default, which the scaled test above shows cutting a silent stream
    assert timeout >= 4 * Settings().stream_heartbeat_seconds
    assert READ_TIMEOUT_S / HEARTBEAT_S <= timeout / Settings().stream_heartbeat_seconds  # as in the test


@ON_POSTGRESQL
def test_a_jobs_stream_through_nginx_is_the_same_whichever_host_answers(proxied):
    url, _, _ = proxied
    auth = sign_in(url)
    upload = requests.post(
        f"{url}{TRAIN}/upload",
        files={"file": ("train.py", "print('one')\nprint('two')\n")},
        headers=auth,
        timeout=30,
    )
    job = requests.post(
        f"{url}{TRAIN}/jobs", json={"script_id": upload.json()["script"]}, headers=auth, timeout=30
    )
    job_id = job.json()["job"]
    wait_for(
        lambda: (
            requests.get(f"{url}{TRAIN}/jobs/{job_id}", headers=auth, timeout=30).json()["status"]
            == "SUCCEEDED"
        ),
        60,
    )
    bodies: dict[str, str] = {}
    for _ in range(10):  # nginx takes turns between the two hosts
        answer = requests.get(f"{url}{TRAIN}/jobs/{job_id}/events", headers=auth, timeout=30)
        assert answer.status_code == 200
        bodies.setdefault(answer.headers["X-Upstream"], answer.text)
        if len(bodies) == 2:
            break
    assert len(bodies) == 2, "both hosts answered"
    first, second = bodies.values()
    assert first == second
    assert '"line": "one"' in first.replace('":"', '": "')


def read_for(url: str, auth: dict[str, str], seconds: float) -> tuple[str, int]:
    """Read the all-jobs stream (silent but for heartbeats here) for ``seconds``: how it went, and
    how many lines came."""
    count = 0
    deadline = time.monotonic() + seconds
    try:
        with requests.get(f"{url}{TRAIN}/events", headers=auth, stream=True, timeout=(5, seconds)) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                count += bool(line)
                if time.monotonic() > deadline:
                    return "open", count
    except requests.exceptions.ChunkedEncodingError:
        return "cut", count
    return "ended", count


@ON_POSTGRESQL
def test_heartbeats_keep_a_silent_stream_open_past_nginxs_timeout_which_cuts_it_without_them(
    proxied, tmp_path
):
    url, _, hosts = proxied
    auth = sign_in(url)
    how, lines = read_for(url, auth, IDLE_S)
    assert how == "open"  # three of nginx's timeouts of silence, bridged by heartbeats
    assert lines >= IDLE_S / HEARTBEAT_S / 2
    # The same configuration with a timeout shorter than the heartbeat: nginx cuts the stream.
    port = free_port()
    upstreams = [h.url.removeprefix("http://") for h in hosts]
    short = start_nginx(
        tmp_path / "nginx-short", render(port, upstreams, f"{int(HEARTBEAT_S * 400)}ms"), port
    )
    try:
        how, lines = read_for(f"http://127.0.0.1:{port}", auth, IDLE_S)
    finally:
        stop_nginx(short)
    assert how in {"cut", "ended"}
    assert lines <= 1  # the first line (sent at once), then silence until nginx gave up
