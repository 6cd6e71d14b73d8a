"""The official mlflow client against trainflow over real HTTP: artifacts list, jobs log (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.records import running_job
from trainflow.jobs import tokens


@pytest.fixture
def live_url(app: Any) -> Iterator[str]:
    """The test's app served over HTTP on a free loopback port, in a thread."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def run_client(url: str, script: str, **env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRAINFLOW_"))}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**clean, "MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


OWNER = """
    import json, mlflow
    from mlflow import MlflowClient
    client = MlflowClient()
    run = client.create_run(client.create_experiment("client-exp"))
    run_id = run.info.run_id
    client.log_text(run_id, "hello", "notes/readme.txt")
    client.log_text(run_id, "top", "top.txt")
    print(json.dumps({
        "run_id": run_id,
        "top": sorted(a.path for a in client.list_artifacts(run_id)),
        "notes": [a.path for a in client.list_artifacts(run_id, "notes")],
        "text": mlflow.artifacts.load_text(f"runs:/{run_id}/notes/readme.txt"),
    }))
"""

OTHER = """
    import json
    from mlflow import MlflowClient
    client = MlflowClient()
    run_id = "{run_id}"
    listed = sorted(a.path for a in client.list_artifacts(run_id))
    try:
        client.log_text(run_id, "overwritten", "top.txt")
        error = None
    except Exception as e:  # the artifact client raises requests' HTTPError
        error = "PERMISSION_DENIED" if "PERMISSION_DENIED" in str(e) else repr(e)
    print(json.dumps({"listed": listed, "error": error}))
"""


def test_the_official_client_lists_and_reads_artifacts(live_url, alice, bob):
    """MlflowClient().list_artifacts(run_id) used to answer 400 "run_id is required"."""
    mine = run_client(
        live_url, OWNER, MLFLOW_TRACKING_USERNAME=alice.username, MLFLOW_TRACKING_PASSWORD=alice.password
    )
    assert mine["top"] == ["notes", "top.txt"]
    assert mine["notes"] == ["notes/readme.txt"]
    assert mine["text"] == "hello"
    theirs = run_client(
        live_url,
        OTHER.replace("{run_id}", mine["run_id"]),
        MLFLOW_TRACKING_USERNAME=bob.username,
        MLFLOW_TRACKING_PASSWORD=bob.password,
    )
    assert theirs == {"listed": ["notes", "top.txt"], "error": "PERMISSION_DENIED"}


JOB = """
    import json, mlflow
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.1)
        mlflow.log_metric("loss", 0.5, step=1)
        mlflow.log_text("done", "out/result.txt")
        listed = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "out")]
    print(json.dumps({"run_id": run.info.run_id, "listed": listed}))
"""


def test_an_unmodified_script_logs_with_its_job_token(app, live_url, alice, client):
    from tests.tracking.conftest import Mlflow

    as_alice = Mlflow(client, alice.basic)
    experiment_id = as_alice.experiment("job-exp")
    run_id = as_alice.run(experiment_id)
    job = running_job(app, alice.id, experiment_id=experiment_id, run_id=run_id)
    token = tokens.issue_job_token(app, job)
    result = run_client(live_url, JOB, MLFLOW_RUN_ID=run_id, MLFLOW_TRACKING_TOKEN=token)
    assert result == {"run_id": run_id, "listed": ["out/result.txt"]}
    run = as_alice.ok("GET", "/api/2.0/mlflow/runs/get", query={"run_id": run_id})["run"]
    assert run["info"]["status"] == "FINISHED"
    assert run["data"]["metrics"][0]["value"] == 0.5
