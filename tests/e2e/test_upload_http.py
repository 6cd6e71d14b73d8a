"""Uploads over a real socket, as browsers, requests and broken clients send them (issue 4)."""

from __future__ import annotations

import base64
import socket
from urllib.parse import urlsplit

import pytest
import requests

from tests.scripts.test_upload import BOUNDARY, TRAIN_PY, browser_body

pytestmark = pytest.mark.e2e
UPLOAD = "/ajax-api/2.0/mlflow/train/upload"
AUTH = ("admin", "chosen-admin-pass")


@pytest.fixture
def server(server_factory, tmp_path, database_url):
    return server_factory(
        tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD=AUTH[1], TRAINFLOW_MAX_UPLOAD_MB="1"
    )


def raw_request(url: str, head: bytes, body: bytes, *, close_early: bool = False) -> bytes:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(head + body)
        if close_early:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and not close_early:
                break
        return b"".join(chunks)


def seed_head(url: str, length: int) -> bytes:
    token = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
    host = urlsplit(url).netloc
    return (
        f"POST {UPLOAD} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def test_the_seeds_raw_request_over_a_socket(server):
    body = browser_body()
    response = raw_request(server.url, seed_head(server.url, len(body)), body)
    assert response.startswith(b"HTTP/1.1 201"), response[:200]


def test_requests_files_and_chunked_bodies(server):
    response = requests.post(
        f"{server.url}{UPLOAD}",
        auth=AUTH,
        timeout=20,
        files={"file": ("train.py", TRAIN_PY, "text/x-python")},
    )
    assert response.status_code == 201, response.text
    body = browser_body()
    chunked = requests.post(
        f"{server.url}{UPLOAD}",
        auth=AUTH,
        timeout=20,
        data=(body[i : i + 7] for i in range(0, len(body), 7)),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert chunked.status_code == 201, chunked.text


def test_a_body_cut_short_is_400(server):
    body = browser_body()
    response = raw_request(
        server.url, seed_head(server.url, len(body)), body[: len(body) // 2], close_early=True
    )
    assert response.startswith(b"HTTP/1.1 400"), response[:300]
    assert b"truncated" in response


def test_over_the_limit_is_413_json(server):
    big = browser_body(content=b"x = 1\n" * 200_000)
    response = requests.post(
        f"{server.url}{UPLOAD}",
        auth=AUTH,
        data=big,
        timeout=20,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
