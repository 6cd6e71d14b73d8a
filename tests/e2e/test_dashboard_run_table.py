"""The run table and a job's housekeeping, driven in Chromium against the real server.

The jobs are real: each logs its metrics with MLflow's own client from inside the job, and the
flow (tests/e2e/js/dashboard/run_table.mjs) searches, sorts by a metric column it picks,
tags and annotates a job, answers the question before a cancel both ways, and deletes a job with
its MLflow run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_dashboard import PASSWORD, run_flow, sqlite_only
from tests.e2e.test_jobs import Api

pytestmark = pytest.mark.e2e

TRAIN_SCRIPT = """
import argparse
import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--lr")
parser.add_argument("--loss", type=float)
args = parser.parse_args()
mlflow.log_metric("loss", args.loss)
mlflow.log_metric("acc", 1 - args.loss)
print("done", flush=True)
"""
SLEEP_SCRIPT = "import time\nprint('sleeping', flush=True)\ntime.sleep(300)\n"


@sqlite_only
def test_search_sort_columns_housekeeping_and_questions(server_factory, tmp_path: Path, database_url: str):
    server = server_factory(
        tmp_path / "data",
        database_url,
        TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass",
        TRAINFLOW_JOB_GRACE_SECONDS="2",
    )
    import requests

    requests.post(f"{server.url}/api/register", json={"username": "alice", "password": PASSWORD}, timeout=10)
    api = Api(server.url, ("alice", PASSWORD), server.process.pid)
    runs = {}
    for name, loss, lr in (("alpha", 0.3, "0.1"), ("beta", 0.1, "0.01"), ("gamma", 0.2, "1e-3")):
        runs[name] = api.submit(
            TRAIN_SCRIPT, run_name=name, experiment_name="alice/mnist", params={"lr": lr, "loss": loss}
        )
    for job in runs.values():
        api.wait(job["job"], "SUCCEEDED", seconds=120)
    sleeper = api.submit(SLEEP_SCRIPT, run_name="sleeper", experiment_name="alice/mnist")
    api.wait(sleeper["job"], "RUNNING", seconds=120)

    result = run_flow(
        tmp_path,
        server.url,
        "run_table.mjs",
        {
            "username": "alice",
            "password": PASSWORD,
            "tagged": runs["beta"]["job"],
            "deleted": runs["alpha"]["job"],
            "sleeper": sleeper["job"],
        },
    )
    assert result["initial"] == ["sleeper", "gamma", "beta", "alpha"]  # newest first
    assert result["searched"] == ["beta"] and "q=BETA" in result["searchUrl"]
    assert result["afterSearchCleared"] == 4
    assert result["metricHeader"] == "loss"
    assert result["ascending"] == {"aria": "ascending", "rows": ["beta", "gamma", "alpha", "sleeper"]}
    assert result["descending"] == {"aria": "descending", "rows": ["alpha", "gamma", "beta", "sleeper"]}
    assert result["lossCells"][:3] == ["0.3", "0.2", "0.1"] and result["lossCells"][3] == "—"
    assert result["rememberedColumns"] == {"params": None, "metrics": ["loss"]}
    assert result["metricColumnAfterReload"] is True
    assert result["tags"] == ["team: vision"] and result["note"] == "lr was too low"
    assert result["keptRunning"] == {"status": "RUNNING", "cancelCalls": 0}
    assert result["cancelled"] == "CANCELLED"
    assert result["compareUrl"].endswith(f"/train/compare?jobs={runs['gamma']['job']},{runs['beta']['job']}")
    # Deleted with its run: the job is gone and MLflow says the run is deleted.
    assert api.call("GET", f"/ajax-api/2.0/mlflow/train/jobs/{runs['alpha']['job']}").status_code == 404
    assert api.run(runs["alpha"]["run_id"])["info"]["lifecycle_stage"] == "deleted"
    shown = api.job(runs["beta"]["job"])
    assert shown["tags"] == {"team": "vision"} and shown["note"] == "lr was too low"
