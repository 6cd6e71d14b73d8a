"""One local Ray head for all Ray tests of a run (``ray start --head`` takes ~30 s), stopped after.

Every Ray test is marked ``serial``: ``make test`` runs those in one process after the rest, so
one head serves them all. Without Ray installed they skip, and under CI they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import _unavailable
from tests.processes import free_port

START_TIMEOUT_S = 120


@dataclass
class RayHead:
    """A local Ray head: its job-submission address, and how to stop and start it again."""

    temp_dir: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    def start(self) -> None:
        p = self.ports
        command = [
            _ray(),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={p['gcs']}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={p['dashboard']}",
            f"--dashboard-agent-listen-port={p['agent_http']}",
            f"--dashboard-agent-grpc-port={p['agent_grpc']}",
            f"--ray-client-server-port={p['client']}",
            f"--runtime-env-agent-port={p['runtime_env']}",
            f"--metrics-export-port={p['metrics']}",
            f"--node-manager-port={p['node_manager']}",
            f"--object-manager-port={p['object_manager']}",
            "--num-cpus=1",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        ]
        result = subprocess.run(
            command, env=_ray_env(), capture_output=True, text=True, timeout=START_TIMEOUT_S
        )
        if result.returncode != 0:
            pytest.fail(f"ray start failed:\n{result.stdout}\n{result.stderr}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.address}/api/version", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        pytest.fail(f"Ray's job-submission API at {self.address} did not answer")

    def stop(self) -> None:
        subprocess.run([_ray(), "stop", "--force"], env=_ray_env(), capture_output=True, timeout=120)


def _ray() -> str:
    return str(Path(sys.executable).parent / "ray")


def _ray_env() -> dict[str, str]:
    """The test's environment, with this venv's Python first on PATH: Ray runs `python` from it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINFLOW_", "MLFLOW_", "RAY_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    if not Path(_ray()).exists() or shutil.which("python", path=str(Path(sys.executable).parent)) is None:
        _unavailable("Ray is not installed (pip install -r requirements-test.txt)")
    names = ("gcs", "dashboard", "agent_http", "agent_grpc", "client", "runtime_env", "metrics")
    head = RayHead(Path(tempfile_dir(tmp_path_factory)))
    head.ports = {name: free_port() for name in (*names, "node_manager", "object_manager")}
    head.start()
    yield head
    head.stop()


def tempfile_dir(factory: pytest.TempPathFactory) -> Path:
    """Ray's temp dir: short, since Ray's unix sockets live under it (paths of 107 bytes at most)."""
    return factory.mktemp("ray", numbered=True)
