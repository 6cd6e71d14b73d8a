"""An HTTP client for a trainflow server, used by the command line (login, submit, logs ...).

It keeps the session's tokens (never the password) in ``~/.config/trainflow/credentials.json``
(mode 0600), one entry per server, and refreshes the access token when it expires.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import requests

from trainflow.events.types import EventType

TRAIN = "/ajax-api/2.0/mlflow/train"
RETRY_STATUSES = (502, 503, 504)  # a stream is asked for again after these


class ClientError(Exception):
    """The server refused a request; the message is the server's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "trainflow"


@dataclass
class Credentials:
    server: str
    username: str
    access_token: str
    refresh_token: str


class CredentialStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "credentials.json"

    def _all(self) -> dict[str, Any]:
        try:
            entries: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
            return entries
        except (FileNotFoundError, ValueError):
            return {}

    def get(self, server: str) -> Credentials | None:
        entry = self._all().get(server.rstrip("/"))
        return Credentials(**entry) if entry else None

    def save(self, credentials: Credentials) -> None:
        data = self._all()
        data[credentials.server.rstrip("/")] = credentials.__dict__
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.path)


class MultipartFile:
    """A ``multipart/form-data`` body read from disk in chunks, reporting progress as it goes."""

    def __init__(
        self, path: Path, fields: dict[str, str], on_read: Callable[[int], None] | None = None
    ) -> None:
        self.boundary = f"----trainflow{uuid.uuid4().hex}"
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        )
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._parts: list[bytes | BinaryIO] = [head, open(path, "rb"), tail]
        self._length = len(head) + path.stat().st_size + len(tail)
        self._on_read = on_read

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def close(self) -> None:
        for part in self._parts:
            if not isinstance(part, bytes):
                part.close()
        self._parts = []

    def read(self, size: int = -1) -> bytes:
        size = 1 << 16 if size is None or size < 0 else size
        while self._parts:
            part = self._parts[0]
            if isinstance(part, bytes):
                chunk, rest = part[:size], part[size:]
                if rest:
                    self._parts[0] = rest
                else:
                    self._parts.pop(0)
            else:
                chunk = part.read(size)
                if not chunk:
                    part.close()
                    self._parts.pop(0)
                    continue
            if self._on_read:
                self._on_read(len(chunk))
            return chunk
        return b""


class Client:
    def __init__(
        self, server: str, store: CredentialStore | None = None, basic: tuple[str, str] | None = None
    ) -> None:
        self.server = server.rstrip("/")
        self.store = store or CredentialStore()
        self.basic = basic
        self.session = requests.Session()

    # -- authentication -----------------------------------------------------------------------

    def login(self, username: str, password: str) -> Credentials:
        body = self._checked(
            self.session.post(
                f"{self.server}/api/login", timeout=30, json={"username": username, "password": password}
            )
        )
        credentials = Credentials(self.server, username, body["access_token"], body["refresh_token"])
        self.store.save(credentials)
        return credentials

    def _auth_headers(self) -> dict[str, str]:
        if self.basic is not None:
            return {}
        credentials = self.store.get(self.server)
        if credentials is None:
            raise ClientError(
                401, f"Not signed in to {self.server}; run `trainflow login --server {self.server}`."
            )
        return {"Authorization": f"Bearer {credentials.access_token}"}

    def _refresh(self) -> bool:
        credentials = self.store.get(self.server)
        if credentials is None or self.basic is not None:
            return False
        response = self.session.post(
            f"{self.server}/api/token/refresh", timeout=30, json={"refresh_token": credentials.refresh_token}
        )
        if response.status_code != 200:
            return False
        credentials.access_token = response.json()["access_token"]
        self.store.save(credentials)
        return True

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        for attempt in range(2):
            response = self.session.request(
                method,
                f"{self.server}{path}",
                headers=self._auth_headers(),
                auth=self.basic,
                timeout=kwargs.pop("timeout", 60),
                **kwargs,
            )
            if response.status_code == 401 and attempt == 0 and self._refresh():
                continue
            return response
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._checked(self.request(method, path, **kwargs))

    @staticmethod
    def _checked(response: requests.Response) -> Any:
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500] or response.reason
            raise ClientError(response.status_code, message)
        return response.json() if response.content else None

    # -- training -----------------------------------------------------------------------------

    def upload(
        self, path: Path, entrypoint: str | None = None, on_read: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Upload a script or archive, streamed from disk (``on_read`` gets each chunk's size)."""
        for attempt in range(2):
            headers = self._auth_headers()
            body = MultipartFile(path, {"entrypoint": entrypoint} if entrypoint else {}, on_read)
            try:
                response = self.session.post(
                    f"{self.server}{TRAIN}/upload",
                    data=body,
                    auth=self.basic,
                    timeout=3600,
                    headers={**headers, "Content-Type": body.content_type},
                )
            finally:
                body.close()
            if response.status_code == 401 and attempt == 0 and self._refresh():
                continue
            break
        script: dict[str, Any] = self._checked(response)
        return script

    def submit(self, **body: Any) -> dict[str, Any]:
        job: dict[str, Any] = self.call("POST", f"{TRAIN}/jobs", json=body)
        return job

    def job(self, job_id: int) -> dict[str, Any]:
        job: dict[str, Any] = self.call("GET", f"{TRAIN}/jobs/{job_id}")
        return job

    def jobs(self, **query: Any) -> dict[str, Any]:
        page: dict[str, Any] = self.call("GET", f"{TRAIN}/jobs", params={k: v for k, v in query.items() if v})
        return page

    def cancel(self, job_id: int) -> dict[str, Any]:
        job: dict[str, Any] = self.call("POST", f"{TRAIN}/jobs/{job_id}/cancel")
        return job

    def sweep(self, **body: Any) -> dict[str, Any]:
        """Submit a parameter sweep (``POST .../sweeps``); the sweep with its trials."""
        sweep: dict[str, Any] = self.call("POST", f"{TRAIN}/sweeps", json=body)
        return sweep

    def get_sweep(self, sweep_id: int) -> dict[str, Any]:
        sweep: dict[str, Any] = self.call("GET", f"{TRAIN}/sweeps/{sweep_id}")
        return sweep

    def follow_changes(self, read_timeout: float = 60.0) -> Generator[dict[str, Any]]:
        """The status changes of the caller's jobs from now on, live, heartbeats included (the
        first says the stream is open: a change after it is not missed by a read made then).

        A dropped connection is followed by a new request from the last seq received (a change's
        or a heartbeat's), so every change arrives once and in order.
        """
        after: int | None = None
        delay = 0.25
        while True:
            try:
                with self.request(
                    "GET",
                    f"{TRAIN}/events",
                    params={"after": after} if after is not None else {},
                    stream=True,
                    timeout=(10, read_timeout),
                ) as response:
                    if response.status_code in RETRY_STATUSES:
                        raise requests.ConnectionError(f"HTTP {response.status_code}")
                    if response.status_code >= 400:
                        self._checked(response)
                    delay = 0.25
                    for event in _ndjson(response):
                        seq = event.get("seq")
                        if seq is not None:
                            if after is not None and seq <= after and event["type"] != EventType.HEARTBEAT:
                                continue
                            after = seq if after is None else max(after, seq)
                        yield event
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def follow_events(
        self, job_id: int, after: int = 0, read_timeout: float = 60.0
    ) -> Iterator[dict[str, Any]]:
        """The job's events from ``after`` on, live, until its ``end`` (heartbeats left out).

        A dropped connection, a server restart or a ``resync`` is followed by a new request
        with ``after`` = the last seq received (waiting 0.25 s, doubling up to 10 s, while
        the server is unreachable), so every event arrives once and in order.
        """
        delay = 0.25
        while True:
            try:
                with self.request(
                    "GET",
                    f"{TRAIN}/jobs/{job_id}/events",
                    params={"after": after},
                    stream=True,
                    timeout=(10, read_timeout),
                ) as response:
                    if response.status_code in RETRY_STATUSES:  # busy, or restarting behind a proxy
                        raise requests.ConnectionError(f"HTTP {response.status_code}")
                    if response.status_code >= 400:
                        self._checked(response)
                    if response.status_code == 204:  # it has ended, and we had seen its end
                        return
                    delay = 0.25
                    for event in _ndjson(response):
                        seq = event.get("seq")
                        if seq is not None:
                            if seq <= after:
                                continue
                            after = seq
                        if event["type"] in (EventType.HEARTBEAT, EventType.RESYNC):
                            continue
                        yield event
                        if event["type"] in (EventType.END, EventType.DELETED):
                            return
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


def _ndjson(response: requests.Response) -> Iterator[dict[str, Any]]:
    """JSON objects from a streamed NDJSON response, each as soon as its line is complete."""
    pending = b""
    for chunk in response.iter_content(chunk_size=None):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
