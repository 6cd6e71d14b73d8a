"""Several hosts of one deployment on this machine: servers in shared mode (#13).

Each host has a data directory of its own; they share the PostgreSQL database, the Redis bus,
the signing key and an artifact store (a folder both reach, as an NFS mount or S3 would be).
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.processes import free_port

TRAIN = "/ajax-api/2.0/mlflow/train"
ADMIN = ("admin", "chosen-admin-pass")


@dataclass
class Deployment:
    """What every host of one deployment shares, as the environment of its servers."""

    database_url: str
    redis_url: str
    root: Path
    public_url: str = ""
    key: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    channel: str = field(default_factory=lambda: f"trainflow-test-{uuid.uuid4().hex}")

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def env(self, **more: str) -> dict[str, str]:
        return {
            "TRAINFLOW_SHARED": "true",
            "TRAINFLOW_REDIS_URL": self.redis_url,
            "TRAINFLOW_REDIS_CHANNEL": self.channel,
            "TRAINFLOW_SECRET_KEY": self.key,
            "TRAINFLOW_ARTIFACTS_URI": str(self.artifacts),
            "TRAINFLOW_PUBLIC_URL": self.public_url,
            "TRAINFLOW_ADMIN_PASSWORD": ADMIN[1],
            "TRAINFLOW_JOB_GRACE_SECONDS": "2",
            **more,
        }

    def start(self, server_factory: Any, name: str, **more: str) -> Any:
        """A host with the data directory ``<root>/<name>``; its jobs reach the deployment's
        public URL, or this host itself when none is set."""
        port = more.pop("TRAINFLOW_PORT", "") or str(free_port())
        env = self.env(**more)
        env["TRAINFLOW_PUBLIC_URL"] = self.public_url or f"http://127.0.0.1:{port}"
        return server_factory(self.root / name, self.database_url, TRAINFLOW_PORT=port, **env)


class Api:
    def __init__(self, url: str, auth: tuple[str, str] = ADMIN) -> None:
        self.url, self.auth = url, auth

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", auth=self.auth, timeout=30, **kwargs)

    def upload(self, content: bytes | str, filename: str = "train.py") -> int:
        response = self.call("POST", f"{TRAIN}/upload", files={"file": (filename, content)})
        assert response.status_code == 201, response.text
        return int(response.json()["script"])

    def submit(self, script_id: int, **body: Any) -> dict[str, Any]:
        response = self.call("POST", f"{TRAIN}/jobs", json={"script_id": script_id, **body})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"{TRAIN}/jobs/{job_id}").json())

    def wait(self, job_id: int, *statuses: str, seconds: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} is {self.job(job_id)['status']}, not {statuses}")

    def lines(self, job_id: int) -> list[str]:
        answer = self.call("GET", f"{TRAIN}/jobs/{job_id}/logs?limit=10000").json()
        return [record["line"] for record in answer["lines"]]
