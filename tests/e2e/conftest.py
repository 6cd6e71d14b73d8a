"""Start the real `trainflow server` in a subprocess, as a user would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.processes import free_port

READY = re.compile(r"trainflow is serving on (http://\S+)")
GENERATED = re.compile(r"username 'admin', password '([^']+)'")


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def text(self) -> str:
        return "".join(self.output)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.reader is not None:
            self.reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def start_server(data_dir: Path, database_url: str, **env: str) -> RunningServer:
    port = int(env.pop("TRAINFLOW_PORT", 0)) or free_port()  # a restart may ask for the same port
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINFLOW_", "MLFLOW_"))}
    environ.update(
        TRAINFLOW_DATA_DIR=str(data_dir),
        TRAINFLOW_PORT=str(port),
        TRAINFLOW_DATABASE_URL=database_url,
        PYTHONUNBUFFERED="1",
        **env,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "trainflow.cli", "server"],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = RunningServer(process, url=f"http://127.0.0.1:{port}")
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.output.append(line)
            if READY.search(line):
                ready.set()

    server.reader = threading.Thread(target=pump, daemon=True)
    server.reader.start()
    deadline = time.monotonic() + 90
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"the server did not start:\n{server.text}")
    assert requests.get(f"{server.url}/api/health", timeout=10).status_code == 200
    return server


@pytest.fixture
def server_factory() -> Iterator:  # type: ignore[type-arg]
    started: list[RunningServer] = []

    def start(data_dir: Path, database_url: str, **env: str) -> RunningServer:
        server = start_server(data_dir, database_url, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
