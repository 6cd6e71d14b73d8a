"""Helpers for the MLflow permission tests: a user's calls to MLflow's REST API, as a client sends them."""

from __future__ import annotations

import json as jsonlib
import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import TestUser

API = "/api/2.0/mlflow"
API3 = "/api/3.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


class Mlflow:
    """One user's calls to MLflow's REST API through the Flask test client."""

    def __init__(self, client: FlaskClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        query: Any = None,
        data: bytes | str | None = None,
        content_type: str | None = None,
    ) -> Any:
        if json is not None:
            data = jsonlib.dumps(json)
            content_type = content_type or "application/json"
        return self.client.open(
            path,
            method=method,
            query_string=query,
            data=data,
            headers={**self.headers, **({"Content-Type": content_type} if content_type else {})},
        )

    def ok(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.call(method, path, **kwargs)
        assert response.status_code == 200, (method, path, response.status_code, response.get_data(True))
        return response.get_json(silent=True) or {}

    # -- making objects ----------------------------------------------------------------------

    def experiment(self, name: str) -> str:
        return str(self.ok("POST", f"{API}/experiments/create", json={"name": name})["experiment_id"])

    def run(self, experiment_id: str) -> str:
        body = self.ok("POST", f"{API}/runs/create", json={"experiment_id": experiment_id})
        return str(body["run"]["info"]["run_id"])

    def registered_model(self, name: str) -> str:
        self.ok("POST", f"{API}/registered-models/create", json={"name": name})
        return name

    def model_version(self, name: str, experiment_id: str, run_id: str) -> str:
        source = f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
        body = self.ok(
            "POST", f"{API}/model-versions/create", json={"name": name, "source": source, "run_id": run_id}
        )
        return str(body["model_version"]["version"])

    def logged_model(self, experiment_id: str, run_id: str | None = None) -> str:
        body: dict[str, Any] = {"experiment_id": experiment_id, "name": "model"}
        if run_id:
            body["source_run_id"] = run_id
        return str(self.ok("POST", f"{API}/logged-models", json=body)["model"]["info"]["model_id"])

    def trace(self, experiment_id: str) -> str:
        trace_id = f"tr-{uuid.uuid4().hex}"
        body = {
            "trace": {
                "trace_info": {
                    "trace_id": trace_id,
                    "trace_location": {
                        "type": "MLFLOW_EXPERIMENT",
                        "mlflow_experiment": {"experiment_id": experiment_id},
                    },
                    "request_time": "2026-01-01T00:00:00Z",
                    "state": "OK",
                    "tags": {"owner": "mine"},
                }
            }
        }
        return str(self.ok("POST", f"{API3}/traces", json=body)["trace"]["trace_info"]["trace_id"])

    def upload(self, experiment_id: str, run_id: str, name: str, data: bytes) -> None:
        path = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/{name}"
        response = self.call("PUT", path, data=data)
        assert response.status_code == 200, response.get_data(True)


@pytest.fixture
def as_alice(client: FlaskClient, alice: TestUser) -> Mlflow:
    return Mlflow(client, alice.basic)


@pytest.fixture
def as_bob(client: FlaskClient, bob: TestUser) -> Mlflow:
    return Mlflow(client, bob.basic)


@pytest.fixture
def as_admin(client: FlaskClient, admin: TestUser) -> Mlflow:
    return Mlflow(client, admin.basic)
