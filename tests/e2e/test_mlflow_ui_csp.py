"""The MLflow UI runs under trainflow's Content-Security-Policy, in headless Chromium (issue 10).

The policy (trainflow.web_security.MLFLOW_UI_POLICY) is the strictest the UI runs under: this test
loads the real UI from the real server, shows a run, its metric chart and an image artifact, and
fails on any CSP violation or page error; an HTML artifact is shown with its script blocked.
"""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest
import requests

from tests.e2e.browser import CHROMIUM, run_node
from tests.e2e.test_dashboard import FLOW_RUNNER, run_flow
from trainflow.web_security import MLFLOW_UI_POLICY

pytestmark = pytest.mark.e2e
ADMIN_PASSWORD = "chosen-admin-pass"
RUN_NAME = "csp-visible-run"


def png(width: int = 4, height: int = 4) -> bytes:
    """A small red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_mlflow_ui_shows_a_run_under_its_policy(server_factory, tmp_path: Path, database_url: str):
    server = server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD)
    auth = ("admin", ADMIN_PASSWORD)
    api = f"{server.url}/api/2.0/mlflow"
    experiment_id = requests.post(
        f"{api}/experiments/create", json={"name": "csp"}, auth=auth, timeout=30
    ).json()["experiment_id"]
    run = requests.post(
        f"{api}/runs/create",
        json={"experiment_id": experiment_id, "run_name": RUN_NAME},
        auth=auth,
        timeout=30,
    ).json()["run"]["info"]
    requests.post(
        f"{api}/runs/log-metric",
        json={"run_id": run["run_id"], "key": "loss", "value": 0.5, "timestamp": 1, "step": 1},
        auth=auth,
        timeout=30,
    ).raise_for_status()
    prefix = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
    requests.put(
        f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{prefix}/plot.png",
        data=png(),
        auth=auth,
        timeout=30,
    ).raise_for_status()
    requests.put(
        f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{prefix}/page.html",
        data=b"<h1>Report</h1><script>window.top.__htmlArtifactRan = true</script>",
        auth=auth,
        timeout=30,
    ).raise_for_status()
    requests.post(
        f"{api}/runs/update", json={"run_id": run["run_id"], "status": "FINISHED"}, auth=auth, timeout=30
    ).raise_for_status()

    options = {
        "authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode(),
        "experimentId": experiment_id,
        "runId": run["run_id"],
        "runName": RUN_NAME,
        "part": "run",
    }
    result = run_flow(tmp_path, server.url, "mlflow_ui.mjs", options)
    assert result["policy"] == MLFLOW_UI_POLICY
    assert result["runNameShown"] is True
    assert result["images"], "the image artifact is shown"

    # An HTML artifact: shown, but its inline script is blocked (the one violation reported).
    request = {
        "origin": server.url,
        "flow": "mlflow_ui.mjs",
        "options": {**options, "part": "html"},
        "executablePath": str(CHROMIUM),
        "timeoutMs": 150_000,
        "screenshots": str(tmp_path),
    }
    out = run_node(FLOW_RUNNER, request, 150)
    assert out["error"] is None, out
    assert out["result"] == {"htmlScriptRan": False, "heading": "Report"}
    assert [(v["directive"], v["blocked"]) for v in out["csp"]] == [("script-src-elem", "inline")]
    assert out["pageErrors"] == []
