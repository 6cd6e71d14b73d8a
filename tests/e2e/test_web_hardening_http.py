"""Web hardening against the real server (issue 10): what pywsgi answers itself, artifacts logged
by the official MLflow client, and CORS as a browser on another localhost port would meet it."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from trainflow.web_security import USER_BYTES_POLICY

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]
ADMIN_PASSWORD = "chosen-admin-pass"
AUTH = ("admin", ADMIN_PASSWORD)


@pytest.fixture
def server(server_factory, tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    return server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD)


def raw_request(url: str, request_line: str) -> tuple[str, dict[str, str], bytes]:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"{request_line}\r\nHost: {parts.netloc}\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


def test_a_request_line_over_8kb_is_a_json_414(server):
    status, headers, body = raw_request(server.url, f"GET /api/health?x={'a' * 9000} HTTP/1.1")
    assert status.startswith("HTTP/1.1 414")
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "uri_too_long"


def test_a_request_line_that_is_not_http_is_a_json_400(server):
    status, _, body = raw_request(server.url, "NONSENSE")
    assert status.startswith("HTTP/1.1 400")
    assert json.loads(body)["error"]["code"] == "bad_request"


def test_an_artifact_logged_by_the_official_client_never_runs(server, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", AUTH[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", AUTH[1])
    mlflow.set_tracking_uri(server.url)
    script = tmp_path / "x.mjs"
    script.write_text("export default 1; alert(document.domain)")
    try:
        client = mlflow.MlflowClient(server.url)
        experiment_id = client.create_experiment("admin/web")
        run = client.create_run(experiment_id)
        client.log_artifact(run.info.run_id, str(script))
        assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["x.mjs"]
    finally:
        mlflow.set_tracking_uri(None)
    prefix = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    for url in (
        f"{server.url}/get-artifact?run_id={run.info.run_id}&path=x.mjs",
        f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{prefix}/x.mjs",
    ):
        response = requests.get(url, auth=AUTH, timeout=30)
        assert response.status_code == 200, url
        assert response.content == script.read_bytes()
        assert response.headers["Content-Type"] == "application/octet-stream", url
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Security-Policy"] == USER_BYTES_POLICY
        assert response.headers["Content-Disposition"].startswith("attachment")


def test_another_localhost_port_gets_no_cors_and_changes_nothing(server):
    origin = "http://localhost:1234"
    preflight = requests.options(
        f"{server.url}/api/2.0/mlflow/experiments/create",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    read = requests.get(f"{server.url}/api/health", headers={"Origin": origin}, timeout=30)
    assert "Access-Control-Allow-Origin" not in read.headers
    created = requests.post(
        f"{server.url}/api/2.0/mlflow/experiments/create",
        json={"name": "from-a-page-elsewhere"},
        headers={"Origin": origin},
        auth=AUTH,
        timeout=30,
    )
    assert created.status_code == 403
    assert created.json()["error"]["code"] == "cross_origin_refused"
