"""A server killed during uploads leaves spooled bodies and unpacked folders; its next start
removes them, and keeps every script that was stored (#11)."""

from __future__ import annotations

import base64
import io
import re
import signal
import socket
import threading
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import create_engine, select

from tests.e2e.test_jobs import ADMIN, PASSWORD, TRAIN
from tests.processes import wait_for
from trainflow.scripts.models import Script

pytestmark = pytest.mark.e2e
KEY = re.compile(r"[0-9a-f]{32}")
BOUNDARY = "debris-boundary"


def slow_upload(url: str, username: str, stop: threading.Event) -> None:
    """An upload of a 400 MB body, sent 32 KB every 20 ms until ``stop`` (or the server dies): it
    is still being sent when the server is killed."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    size = 400 * 1024 * 1024
    credentials = base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()
    parts = urlsplit(url)
    request = (
        f"POST {TRAIN}/upload HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Basic {credentials}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        try:
            sock.sendall(request + head)
            while not stop.is_set():
                sock.sendall(b"\0" * 32768)
                time.sleep(0.02)
        except OSError:
            return  # the server was killed


def project(files: int) -> bytes:
    """A project archive of many small files: unpacking it takes a moment."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.py", "print('hi')\n")
        for n in range(files):
            archive.writestr(f"data/{n:05d}.txt", f"row {n}\n" * 100)
    return buffer.getvalue()


def complete_upload(url: str, username: str, body: bytes) -> None:
    try:
        requests.post(
            f"{url}{TRAIN}/upload",
            files={"file": ("project.zip", body)},
            auth=(username, PASSWORD),
            timeout=60,
        )
    except requests.RequestException:
        pass  # the server was killed


def storage_keys(uploads: Path) -> set[str]:
    return {p.name for p in uploads.iterdir() if KEY.fullmatch(p.name)} if uploads.is_dir() else set()


def unpacking(uploads: Path, before: set[str]) -> bool:
    """Whether a new script folder has some of its archive's files (it is being unpacked)."""
    for key in storage_keys(uploads) - before:
        data = uploads / key / "files" / "data"
        if data.is_dir() and sum(1 for _ in data.iterdir()) >= 100:
            return True
    return False


def stored_keys(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return set(connection.execute(select(Script.storage_key)).scalars())
    finally:
        engine.dispose()


def test_a_restart_after_a_kill_during_uploads_leaves_no_debris(server_factory, tmp_path, database_url):
    data = tmp_path / "data"
    uploads = data / "uploads"
    incoming = uploads / ".incoming"
    server = server_factory(
        data, database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1], TRAINFLOW_MAX_UPLOAD_MB="1000"
    )
    users = ["alice", "bob", "carol"]
    for user in users:
        requests.post(f"{server.url}/api/register", json={"username": user, "password": PASSWORD}, timeout=30)
    kept = requests.post(
        f"{server.url}{TRAIN}/upload",
        files={"file": ("train.py", "print('kept')\n")},
        auth=("alice", PASSWORD),
        timeout=30,
    )
    assert kept.status_code == 201

    stop = threading.Event()
    senders = [
        threading.Thread(target=slow_upload, args=(server.url, user, stop), daemon=True) for user in users * 2
    ]
    for sender in senders:
        sender.start()
    wait_for(lambda: incoming.is_dir() and sum(1 for _ in incoming.iterdir()) >= len(senders), seconds=30)
    archive = project(3000)
    before = storage_keys(uploads)
    unpackers = [
        threading.Thread(target=complete_upload, args=(server.url, user, archive), daemon=True)
        for user in users[:2]
    ]
    for unpacker in unpackers:
        unpacker.start()
    wait_for(lambda: unpacking(uploads, before), seconds=60)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    stop.set()

    spooled = list(incoming.iterdir())
    orphans = storage_keys(uploads) - stored_keys(database_url)
    assert len(spooled) >= len(senders)  # what a crash leaves: partial bodies ...
    assert orphans  # ... and an unpacked folder whose row never came

    restarted = server_factory(data, database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1])

    assert list(incoming.iterdir()) == []
    assert storage_keys(uploads) == stored_keys(database_url)
    assert "partial upload(s)" in restarted.text
    listed = requests.get(f"{restarted.url}{TRAIN}/scripts", auth=("alice", PASSWORD), timeout=10).json()
    assert kept.json()["script"] in [script["script"] for script in listed["list"]]
