"""The real server, driven with the official mlflow client and plain HTTP (issue 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import requests

from tests.e2e.conftest import GENERATED

pytestmark = pytest.mark.e2e
PASSWORD = "e2e-password-1"

MLFLOW_SCRIPT = textwrap.dedent("""
    import json, sys, mlflow
    mlflow.set_experiment("e2e-experiment")
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.01)
        for step in range(20):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_text("hello artifacts", "notes/readme.txt")
    print(json.dumps({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id}))
""")


def run_mlflow_client(
    url: str, username: str | None, password: str | None, script: str
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRAINFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = url
    if username is not None:
        env.update(MLFLOW_TRACKING_USERNAME=username, MLFLOW_TRACKING_PASSWORD=password or "")
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


def register(url: str, username: str) -> None:
    response = requests.post(
        f"{url}/api/register", json={"username": username, "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 201, response.text


def test_the_official_mlflow_client_works_against_trainflow(server_factory, tmp_path, database_url):
    server = server_factory(tmp_path / "data", database_url)
    # The first start created an admin and showed its generated password once.
    match = GENERATED.search(server.text)
    assert match, server.text
    admin_password = match.group(1)
    assert (
        requests.get(f"{server.url}/api/me", auth=("admin", admin_password), timeout=10).json()["role"]
        == "admin"
    )

    register(server.url, "alice")
    result = run_mlflow_client(server.url, "alice", PASSWORD, MLFLOW_SCRIPT)
    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stdout.strip().splitlines()[-1])

    # Read it back through MLflow's REST API with plain HTTP and a bearer token.
    token = requests.post(
        f"{server.url}/api/login", json={"username": "alice", "password": PASSWORD}, timeout=10
    ).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    run = requests.get(
        f"{server.url}/api/2.0/mlflow/runs/get", params={"run_id": ids["run_id"]}, headers=bearer, timeout=10
    ).json()["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {"key": "lr", "value": "0.01"} in run["data"]["params"]
    history = requests.get(
        f"{server.url}/api/2.0/mlflow/metrics/get-history",
        params={"run_id": ids["run_id"], "metric_key": "loss"},
        headers=bearer,
        timeout=10,
    )
    assert [m["step"] for m in history.json()["metrics"]] == list(range(20))
    artifacts = requests.get(
        f"{server.url}/api/2.0/mlflow/artifacts/list",
        params={"run_id": ids["run_id"]},
        headers=bearer,
        timeout=10,
    ).json()
    assert artifacts["files"][0]["path"] == "notes"

    # Without credentials: 401 for the API, and a sign-in prompt for the UI.
    anonymous = run_mlflow_client(server.url, None, None, "import mlflow; mlflow.search_experiments()")
    assert anonymous.returncode != 0 and "UNAUTHENTICATED" in anonymous.stderr
    ui = requests.get(f"{server.url}/", timeout=10)
    assert ui.status_code == 401 and ui.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(f"{server.url}/", auth=("alice", PASSWORD), timeout=10).status_code == 200

    # Another user cannot change alice's run through the client.
    register(server.url, "bob")
    sneaky = run_mlflow_client(
        server.url,
        "bob",
        PASSWORD,
        textwrap.dedent(f"""
        from mlflow import MlflowClient
        MlflowClient().log_metric("{ids["run_id"]}", "loss", 99.0)
    """),
    )
    assert sneaky.returncode != 0 and "PERMISSION_DENIED" in sneaky.stderr

    # A restart reuses the data directory: no new admin, the signing key is the same.
    assert server.stop() == 0
    again = server_factory(tmp_path / "data", database_url)
    assert GENERATED.search(again.text) is None
    assert requests.get(f"{again.url}/api/me", headers=bearer, timeout=10).status_code == 200
    for line in server.text.splitlines() + again.text.splitlines():
        assert PASSWORD not in line and token not in line


def test_the_admin_password_can_be_set_and_is_never_printed(server_factory, tmp_path, database_url):
    server = server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass")
    assert "chosen-admin-pass" not in server.text and GENERATED.search(server.text) is None
    assert (
        requests.get(f"{server.url}/api/me", auth=("admin", "chosen-admin-pass"), timeout=10).status_code
        == 200
    )
    assert requests.get(f"{server.url}/api/health", timeout=10).json()["database"]["state"] == "ok"


def test_workers_share_logins_and_forget_changed_passwords_together(server_factory, tmp_path, database_url):
    server = server_factory(
        tmp_path / "data", database_url, TRAINFLOW_WORKERS="2", TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass"
    )
    register(server.url, "carol")
    session = requests.Session()
    for _ in range(40):  # new connections land on either worker
        response = requests.get(f"{server.url}/api/me", auth=("carol", PASSWORD), timeout=10)
        assert response.status_code == 200
    response = session.post(
        f"{server.url}/api/me/password",
        auth=("carol", PASSWORD),
        timeout=10,
        json={"old_password": PASSWORD, "new_password": "carols-new-pass"},
    )
    assert response.status_code == 200
    assert (
        requests.get(f"{server.url}/api/me", auth=("carol", "carols-new-pass"), timeout=10).status_code == 200
    )
    # Every worker refuses the old password (401; 429 once the failed-login limit is reached).
    statuses = [
        requests.get(f"{server.url}/api/me", auth=("carol", PASSWORD), timeout=10).status_code
        for _ in range(40)
    ]
    assert statuses[0] == 401 and set(statuses) <= {401, 429}
    assert server.stop() == 0


def run_server_once(tmp_path, database_url, **env_vars: str) -> subprocess.CompletedProcess:
    """Run `trainflow server` expecting it to refuse to start; its output comes back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINFLOW_", "MLFLOW_"))}
    env.update(TRAINFLOW_DATA_DIR=str(tmp_path / "data"), TRAINFLOW_DATABASE_URL=database_url, **env_vars)
    return subprocess.run(
        [sys.executable, "-m", "trainflow.cli", "server"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_weak_admin_password_is_refused_at_start(tmp_path, database_url):
    result = run_server_once(tmp_path, database_url, TRAINFLOW_ADMIN_PASSWORD="admin", TRAINFLOW_PORT="1")
    assert result.returncode == 1
    assert "TRAINFLOW_ADMIN_PASSWORD is too weak" in result.stderr


def test_a_taken_port_is_a_clear_error(tmp_path, database_url):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_server_once(
            tmp_path, database_url, TRAINFLOW_PORT=str(port), TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass"
        )
    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr
