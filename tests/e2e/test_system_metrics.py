"""A job's own CPU, memory and GPUs, live in its stream and in its MLflow run, with no setup (issue 14).

The server runs with a stub NVML (a C library built here with fixed answers) and one GPU to hand
out; the job burns a core and holds 200 MB in a child process.
"""

from __future__ import annotations

import pytest
import requests

from tests.e2e.test_events import events
from tests.e2e.test_jobs import ADMIN, PASSWORD, Api
from tests.runner.nvml_stub import build_stub
from tests.runner.test_sysmetrics import BURNER, core_floor

pytestmark = [pytest.mark.e2e, pytest.mark.serial]


@pytest.fixture
def server(server_factory, tmp_path, database_url):
    stub = build_stub(tmp_path / "nvml")
    tmp_path.chmod(0o755)  # a sandboxed job runs as another user; the supervisor loads the stub
    return server_factory(
        tmp_path / "data",
        database_url,
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_SYSTEM_METRICS_SECONDS="1",
        TRAINFLOW_GPUS="1",
        TRAINFLOW_NVML_LIBRARY=str(stub),
    )


@pytest.fixture
def users(server):
    apis = {}
    for name in ("alice", "bob"):
        requests.post(f"{server.url}/api/register", json={"username": name, "password": PASSWORD}, timeout=10)
        apis[name] = Api(server.url, (name, PASSWORD))
    return apis


def test_a_jobs_own_use_is_in_its_stream_and_its_mlflow_run(server, users, monkeypatch):
    """Alice's job, given the GPU, burns a core for 5 s holding 200 MB (one job for every check:
    each costs a server and a job)."""
    alice, bob = users["alice"], users["bob"]
    job = alice.submit(BURNER, args=["5"], gpus=1)
    done = alice.wait(job["job"], "SUCCEEDED", "FAILED", seconds=120)
    assert done["status"] == "SUCCEEDED", alice.lines(job["job"])

    seen = events(alice, job["job"])
    samples = [e for e in seen if e["type"] == "system"]
    assert len(samples) >= 3
    assert max(sample["cpu_percent"] for sample in samples) > core_floor()
    assert max(sample["rss_mb"] for sample in samples) > 150
    assert samples[0]["gpus"] == [
        {
            "device": 0,
            "id": "1",
            "utilization_percent": 20.0,
            "memory_used_mb": 2000.0,
            "memory_total_mb": 16384.0,
        }
    ]
    # Logged to MLflow by the supervisor, they are not charted again as the job's own metrics.
    assert [e for e in seen if e["type"] == "metric"] == []
    assert bob.call("GET", f"/ajax-api/2.0/mlflow/train/jobs/{job['job']}/events").status_code == 404

    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    client = MlflowClient(tracking_uri=server.url)

    def history(key: str) -> list[float]:
        return [m.value for m in client.get_metric_history(job["run_id"], f"system/{key}")]

    assert max(history("cpu_utilization_percentage")) > core_floor()
    assert max(history("process_rss_megabytes")) > 150
    assert set(history("gpu_0_utilization_percentage")) == {20.0}
    assert set(history("gpu_0_memory_usage_megabytes")) == {2000.0}
    steps = [m.step for m in client.get_metric_history(job["run_id"], "system/cpu_utilization_percentage")]
    assert steps == list(range(len(steps)))
