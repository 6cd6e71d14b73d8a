"""Stalled and hostile clients against the real server under gevent (issue 11).

A client that starts a request and stops sending must cost a greenlet and a socket, never a
database connection: 16 (and 100) stalled uploads leave health checks and signed-in requests
answering. Every connection has a read timeout (a stalled body ends with a JSON 408 and leaves
nothing on disk) and an idle timeout; event streams, which only write, outlive both.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import _copy_sqlite
from tests.e2e.conftest import RunningServer, start_server
from tests.processes import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.serial]  # it measures latency or load
UPLOAD = "/ajax-api/2.0/mlflow/train/upload"
JOBS = "/ajax-api/2.0/mlflow/train/jobs"
ADMIN = ("admin", "chosen-admin-pass")
PASSWORD = "stalled-client-pass"
BOUNDARY = "stalledBoundary"
PART_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="train.py"\r\n'
    "Content-Type: text/x-python\r\n\r\nprint('half of a scr"
).encode()
CLIENT_TIMEOUT = 10  # "answered promptly": well before this; a starved pool waits 30 s


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=CLIENT_TIMEOUT)
    return sock


def start_request(
    url: str, path: str, authorization: str, content_type: str, length: int, sent: bytes
) -> socket.socket:
    """Send a request's head and the first ``sent`` bytes of a ``length``-byte body, then stop."""
    sock = connect(url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\nAuthorization: {authorization}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    sock.sendall(head + sent)
    return sock


def stall_upload(url: str, authorization: str) -> socket.socket:
    """An upload that sends its first 70 KB (more than the server reads at once) and stops."""
    sent = PART_HEAD + b"#" * 70_000
    return start_request(
        url, UPLOAD, authorization, f"multipart/form-data; boundary={BOUNDARY}", 200_000, sent
    )


def read_response(sock: socket.socket, seconds: float = CLIENT_TIMEOUT) -> tuple[str, dict[str, str], bytes]:
    """The status line, headers and body of one response (the body up to its Content-Length)."""
    sock.settimeout(seconds)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def is_closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (anything it sends first is read)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return False


def incoming(data_dir: Path) -> list[Path]:
    folder = data_dir / "uploads" / ".incoming"
    return sorted(folder.iterdir()) if folder.exists() else []


def scripts_stored(data_dir: Path) -> list[Path]:
    folder = data_dir / "uploads"
    return sorted(p for p in folder.iterdir() if p.name != ".incoming") if folder.exists() else []


class Users:
    """Accounts on a running server, each with a refresh token to mint fresh access tokens."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.refresh: dict[str, str] = {}

    def add(self, username: str, role: str = "user") -> None:
        response = requests.post(
            f"{self.url}/api/users",
            json={"username": username, "password": PASSWORD, "role": role},
            auth=ADMIN,
            timeout=60,
        )
        assert response.status_code == 201, response.text
        login = requests.post(
            f"{self.url}/api/login", json={"username": username, "password": PASSWORD}, timeout=60
        )
        assert login.status_code == 200, login.text
        self.refresh[username] = login.json()["refresh_token"]

    def fresh_bearer(self, username: str) -> str:
        """A new access token: no server process has seen it, so checking it reads the database."""
        response = requests.post(
            f"{self.url}/api/token/refresh", json={"refresh_token": self.refresh[username]}, timeout=30
        )
        assert response.status_code == 200, response.text
        return "Bearer " + response.json()["access_token"]


@pytest.fixture
def start(server_factory, tmp_path, database_url):  # type: ignore[no-untyped-def]
    def start(**env: str) -> RunningServer:
        return server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1], **env)

    return start


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


@pytest.mark.parametrize("stalled", [16, 100])
def test_stalled_uploads_leave_health_and_signed_in_requests_answering(start, tmp_path, sockets, stalled):
    server = start(TRAINFLOW_READ_TIMEOUT_SECONDS="60", TRAINFLOW_UPLOADS_PER_USER="25")
    users = Users(server.url)
    names = [f"staller{i}" for i in range(stalled // 25 + 1)]
    for i, name in enumerate(names):
        users.add(name, role="admin" if i % 2 == 0 else "user")
    users.add("bystander")
    cached = {"Authorization": basic("bystander", PASSWORD)}
    assert requests.get(f"{server.url}/api/me", headers=cached, timeout=30).status_code == 200

    for i in range(stalled):
        sockets.append(stall_upload(server.url, users.fresh_bearer(names[i % len(names)])))
    # Each stalled upload has passed authentication and spooled its first bytes.
    wait_for(lambda: len(incoming(tmp_path / "data")) == stalled, seconds=60)

    for _ in range(3):
        health = requests.get(f"{server.url}/api/health", timeout=CLIENT_TIMEOUT)
        assert health.status_code == 200, health.text
        me = requests.get(f"{server.url}/api/me", headers=cached, timeout=CLIENT_TIMEOUT)
        assert me.status_code == 200, me.text
        fresh = {"Authorization": users.fresh_bearer("bystander")}
        jobs = requests.get(f"{server.url}{JOBS}", headers=fresh, timeout=CLIENT_TIMEOUT)
        assert jobs.status_code == 200, jobs.text
    upload = requests.post(
        f"{server.url}{UPLOAD}",
        headers=cached,
        files={"file": ("train.py", b"print('hello')\n", "text/x-python")},
        timeout=CLIENT_TIMEOUT,
    )
    assert upload.status_code == 201, upload.text

    for sock in sockets:
        sock.close()
    # A client that goes away mid-body leaves nothing behind.
    wait_for(lambda: not incoming(tmp_path / "data"), seconds=30)


def test_stalled_artifact_uploads_through_the_mlflow_proxy_hold_no_database_connection(start, sockets):
    """The permission check of an artifact upload reads the database; MLflow then waits on the body."""
    server = start(TRAINFLOW_READ_TIMEOUT_SECONDS="60")
    users = Users(server.url)
    stallers = [f"artist{i}" for i in range(16)]  # more than the pool's 15 connections
    runs = {}
    for name in stallers:
        users.add(name)
        auth = {"Authorization": users.fresh_bearer(name)}
        experiment = requests.post(
            f"{server.url}/api/2.0/mlflow/experiments/create",
            json={"name": f"{name}-exp"},
            headers=auth,
            timeout=30,
        )
        assert experiment.status_code == 200, experiment.text
        experiment_id = experiment.json()["experiment_id"]
        run = requests.post(
            f"{server.url}/api/2.0/mlflow/runs/create",
            json={"experiment_id": experiment_id},
            headers=auth,
            timeout=30,
        )
        assert run.status_code == 200, run.text
        runs[name] = (experiment_id, run.json()["run"]["info"]["run_id"])
    users.add("bystander")
    cached = {"Authorization": basic("bystander", PASSWORD)}
    assert requests.get(f"{server.url}/api/me", headers=cached, timeout=30).status_code == 200

    for name in stallers:
        experiment_id, run_id = runs[name]
        sock = connect(server.url)
        path = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/weights.bin"
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {urlsplit(server.url).netloc}\r\n"
            f"Authorization: {users.fresh_bearer(name)}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n"
        ).encode()
        sock.sendall(head + b"\0" * 70_000)
        sockets.append(sock)
    time.sleep(2)  # every upload is past its permission check and waits on its body

    for _ in range(3):
        health = requests.get(f"{server.url}/api/health", timeout=CLIENT_TIMEOUT)
        assert health.status_code == 200, health.text
        fresh = {"Authorization": users.fresh_bearer("bystander")}
        jobs = requests.get(f"{server.url}{JOBS}", headers=fresh, timeout=CLIENT_TIMEOUT)
        assert jobs.status_code == 200, jobs.text


@pytest.fixture(scope="module")
def quick_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quick") / "data"


@pytest.fixture(scope="module")
def quick(quick_data: Path, templates) -> Iterator[RunningServer]:  # type: ignore[no-untyped-def]
    """One server for the tests below (on SQLite: what they test is the connection, not the database).

    One-second read, idle and write timeouts, and heartbeats every 0.3 s.
    """
    database = quick_data.parent / "db" / "trainflow.db"
    database.parent.mkdir()
    _copy_sqlite(templates.sqlite(), database)
    server = start_server(
        quick_data,
        f"sqlite:///{database}",
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_READ_TIMEOUT_SECONDS="1",
        TRAINFLOW_IDLE_TIMEOUT_SECONDS="1",
        TRAINFLOW_WRITE_TIMEOUT_SECONDS="1",
        TRAINFLOW_STREAM_HEARTBEAT_SECONDS="0.3",
    )
    yield server
    server.stop()


def test_a_stalled_upload_body_ends_with_a_json_408_and_leaves_nothing(quick, quick_data, sockets):
    sock = stall_upload(quick.url, basic(*ADMIN))
    sockets.append(sock)
    status, headers, body = read_response(sock)
    assert status.startswith("HTTP/1.1 408"), (status, body)
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert is_closed_within(sock, 5)
    assert incoming(quick_data) == []
    assert scripts_stored(quick_data) == []


@pytest.mark.parametrize(
    "path",
    ["/api/login", "/api/2.0/mlflow/experiments/create", "/ajax-api/2.0/mlflow/runs/log-metric"],
)
def test_a_stalled_json_body_ends_with_a_json_408(quick, sockets, path):
    sock = start_request(quick.url, path, basic(*ADMIN), "application/json", 200, b'{"name": "half')
    sockets.append(sock)
    status, _, body = read_response(sock)
    assert status.startswith("HTTP/1.1 408"), (status, body)
    assert json.loads(body)["error"]["code"] == "request_timeout"


@pytest.mark.parametrize("path", ["/api/2.0/mlflow/experiments/create", UPLOAD, "/api/login"])
def test_a_client_that_goes_away_mid_body_is_a_400_not_a_500(quick, sockets, path):
    """The body ends before its Content-Length (the client was cut off): nothing to answer for."""
    content_type = f"multipart/form-data; boundary={BOUNDARY}" if path == UPLOAD else "application/json"
    sock = start_request(quick.url, path, basic(*ADMIN), content_type, 1000, b'{"name": "cut')
    sockets.append(sock)
    sock.shutdown(socket.SHUT_WR)
    status, _, body = read_response(sock)
    assert status.startswith("HTTP/1.1 400"), (status, body)
    assert "Traceback" not in quick.text


def test_a_connection_that_sends_nothing_is_closed(quick, sockets):
    sock = connect(quick.url)
    sockets.append(sock)
    assert is_closed_within(sock, 5)


def test_an_idle_keep_alive_connection_is_closed(quick, sockets):
    sock = connect(quick.url)
    sockets.append(sock)
    host = urlsplit(quick.url).netloc
    for _ in range(2):  # the connection is reused while busy...
        sock.sendall(f"GET /api/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        status, _, _ = read_response(sock)
        assert status.startswith("HTTP/1.1 200")
    assert is_closed_within(sock, 5)  # ...and closed once idle


def test_a_request_head_that_stalls_is_closed(quick, sockets):
    sock = connect(quick.url)
    sockets.append(sock)
    sock.sendall(f"GET /api/health HTTP/1.1\r\nHost: {urlsplit(quick.url).netloc}\r\nX-Slow: ".encode())
    assert is_closed_within(sock, 5)


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(quick, sockets):
    """Slowloris: each byte comes within the read timeout, the whole head never does."""
    sock = connect(quick.url)
    sockets.append(sock)
    head = f"GET /api/health HTTP/1.1\r\nHost: {urlsplit(quick.url).netloc}\r\n" + "X-Slow: 1\r\n" * 100
    started = time.monotonic()
    answer = b""
    try:
        for byte in head.encode():
            sock.sendall(bytes([byte]))
            time.sleep(0.1)
            sock.settimeout(0.01)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            break
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert time.monotonic() - started < 5  # cut off after a second, not after the ~110 s it takes
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer


def test_an_event_stream_outlives_the_read_and_idle_timeouts(quick):
    started = time.monotonic()
    beats = 0
    with requests.get(
        f"{quick.url}/ajax-api/2.0/mlflow/train/events", auth=ADMIN, stream=True, timeout=CLIENT_TIMEOUT
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line and json.loads(line).get("type") == "heartbeat":
                beats += 1
            if time.monotonic() - started > 4:  # four times either timeout
                break
    assert beats >= 5


def test_a_client_that_stops_reading_a_response_is_disconnected(quick, sockets):
    """A download nobody reads must not hold its greenlet and socket for ever."""
    size = 24 * 1024 * 1024  # more than the kernel's socket buffers hold on both ends
    script = b"# padding\n" * (size // 10)
    upload = requests.post(
        f"{quick.url}{UPLOAD}", auth=ADMIN, files={"file": ("train.py", script, "text/x-python")}, timeout=60
    )
    assert upload.status_code == 201, upload.text
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(CLIENT_TIMEOUT)
    parts = urlsplit(quick.url)
    sock.connect((parts.hostname, parts.port))
    sockets.append(sock)
    path = f"/ajax-api/2.0/mlflow/train/scripts/{upload.json()['script']}/content"
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: {basic(*ADMIN)}\r\n\r\n".encode()
    )
    time.sleep(4)  # the server's write waits longer than its 1 s write timeout
    received = 0
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        pass
    assert 0 < received < size  # cut off, not delivered whole once the client came back


def test_one_upload_more_than_the_limit_per_user_is_a_429_before_any_byte_is_stored(start, tmp_path, sockets):
    server = start(TRAINFLOW_READ_TIMEOUT_SECONDS="4", TRAINFLOW_UPLOADS_PER_USER="2")
    users = Users(server.url)
    users.add("alice")
    users.add("bob")
    alice = basic("alice", PASSWORD)
    requests.get(f"{server.url}/api/me", headers={"Authorization": alice}, timeout=30)
    sockets.extend(stall_upload(server.url, alice) for _ in range(2))
    wait_for(lambda: len(incoming(tmp_path / "data")) == 2, seconds=5)

    third = stall_upload(server.url, alice)
    sockets.append(third)
    status, headers, body = read_response(third, seconds=5)
    assert status.startswith("HTTP/1.1 429"), (status, body)
    assert int(headers["retry-after"]) >= 1
    assert json.loads(body)["error"]["code"] == "too_many_requests"
    assert len(incoming(tmp_path / "data")) == 2

    others = requests.post(
        f"{server.url}{UPLOAD}",
        auth=("bob", PASSWORD),
        files={"file": ("train.py", b"print('bob')\n", "text/x-python")},
        timeout=CLIENT_TIMEOUT,
    )
    assert others.status_code == 201, others.text
    # The stalled ones time out and give their places back.
    wait_for(lambda: not incoming(tmp_path / "data"), seconds=15)
    again = requests.post(
        f"{server.url}{UPLOAD}",
        auth=("alice", PASSWORD),
        files={"file": ("train.py", b"print('alice')\n", "text/x-python")},
        timeout=CLIENT_TIMEOUT,
    )
    assert again.status_code == 201, again.text


@pytest.mark.parametrize(
    "headers",
    [
        "".join(f"X-Many-{i}: {i}\r\n" for i in range(120)),
        "X-Long: " + "a" * 70_000 + "\r\n",
        "".join(f"X-Big-{i}: {'b' * 9_000}\r\n" for i in range(20)),
    ],
    ids=["too-many", "one-too-long", "too-large-in-all"],
)
def test_too_many_or_too_large_header_fields_are_a_json_431(quick, sockets, headers):
    sock = connect(quick.url)
    sockets.append(sock)
    sock.sendall(f"GET /api/health HTTP/1.1\r\nHost: {urlsplit(quick.url).netloc}\r\n{headers}\r\n".encode())
    status, response_headers, body = read_response(sock)
    assert status.startswith("HTTP/1.1 431"), (status, body)
    assert response_headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "request_header_fields_too_large"
    assert "Traceback" not in quick.text
