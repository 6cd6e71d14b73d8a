"""A job's token reaches its own run and nothing else, and dies with the job (issue 10).

The token acts for the job's owner, but only on the job's run: its metrics, params, tags and
status, its artifacts, and the logged models made from it. Another run of the same owner, the
same run named next to another, and everything outside MLflow's run API are refused.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.records import running_job
from tests.tracking.conftest import AJAX, API, ARTIFACTS, Mlflow
from trainflow.db import db
from trainflow.jobs import tokens
from trainflow.jobs.models import Job, JobStatus


@pytest.fixture
def ids(as_alice: Mlflow, as_bob: Mlflow) -> dict[str, str]:
    e_a = as_alice.experiment("alice-exp")
    e_b = as_bob.experiment("bob-exp")
    return {
        "e_a": e_a,
        "job_run": as_alice.run(e_a),
        "other_run": as_alice.run(e_a),  # the owner's own, but not the job's
        "e_b": e_b,
        "bob_run": as_bob.run(e_b),
    }


@pytest.fixture
def job(app, alice, ids) -> Job:  # type: ignore[no-untyped-def]
    return running_job(app, alice.id, experiment_id=ids["e_a"], run_id=ids["job_run"])


@pytest.fixture
def as_job(app, client, job) -> Mlflow:  # type: ignore[no-untyped-def]
    return Mlflow(client, {"Authorization": f"Bearer {tokens.issue_job_token(app, job)}"})


def _metric(run_key: str = "run_id") -> dict[str, Any]:
    return {"key": "loss", "value": 0.5, "timestamp": 1, "step": 0}


def test_a_job_token_writes_its_own_run(as_job, ids):
    run = ids["job_run"]
    as_job.ok("POST", f"{API}/runs/log-metric", json={"run_id": run, **_metric()})
    as_job.ok(
        "POST", f"{API}/runs/log-batch", json={"run_id": run, "params": [{"key": "lr", "value": "0.1"}]}
    )
    as_job.ok("POST", f"{API}/runs/set-tag", json={"run_id": run, "key": "k", "value": "v"})
    as_job.ok("POST", f"{API}/runs/update", json={"run_id": run, "status": "RUNNING"})
    as_job.ok("GET", f"{API}/runs/get", query={"run_id": run})
    as_job.ok("GET", f"{API}/experiments/get", query={"experiment_id": ids["e_a"]})
    as_job.ok("PUT", f"{ARTIFACTS}/{ids['e_a']}/{run}/artifacts/out/model.bin", data=b"w")
    as_job.ok("POST", f"{AJAX}/upload-artifact", query={"run_uuid": run, "path": "log.txt"}, data=b"x")
    listed = as_job.ok("GET", ARTIFACTS, query={"path": f"{ids['e_a']}/{run}/artifacts"})
    assert {f["path"] for f in listed["files"]} == {"out", "log.txt"}
    as_job.ok("GET", "/api/3.0/mlflow/server-info")


def test_a_job_token_logs_a_model_made_from_its_run(as_job, as_alice, ids):
    """mlflow.<flavor>.log_model: a logged model whose source run is the job's, and its files."""
    other = as_alice.logged_model(ids["e_a"], ids["other_run"])
    body = {"experiment_id": ids["e_a"], "name": "model", "source_run_id": ids["job_run"]}
    model_id = as_job.ok("POST", f"{API}/logged-models", json=body)["model"]["info"]["model_id"]
    as_job.ok("PUT", f"{ARTIFACTS}/{ids['e_a']}/models/{model_id}/artifacts/MLmodel", data=b"m")
    as_job.ok("PATCH", f"{API}/logged-models/{model_id}", json={"model_id": model_id, "status": "READY"})
    as_job.ok(
        "POST", f"{API}/runs/outputs", json={"run_id": ids["job_run"], "models": [{"model_id": model_id}]}
    )
    # The client's list_artifacts searches the experiment's logged models: it sees the job's alone.
    found = as_job.ok("POST", f"{API}/logged-models/search", json={"experiment_ids": [ids["e_a"]]})
    assert [m["info"]["model_id"] for m in found["models"]] == [model_id]
    assert as_job.call("GET", f"{API}/logged-models/{other}").status_code == 403
    assert as_job.call("PATCH", f"{API}/logged-models/{other}", json={"status": "READY"}).status_code == 403


# Requests a job's token must not get through, with the status it gets instead.
OUTSIDE: list[tuple[str, str, str, dict[str, Any]]] = [
    ("owner's other run", "POST", f"{API}/runs/log-metric", {"json": {"run_id": "{other_run}", **_metric()}}),
    ("another user's run", "POST", f"{API}/runs/log-metric", {"json": {"run_id": "{bob_run}", **_metric()}}),
    ("read the other run", "GET", f"{API}/runs/get", {"query": {"run_id": "{other_run}"}}),
    (
        "run_id vs run_uuid",
        "POST",
        f"{API}/runs/log-metric",
        {"json": {"run_id": "{job_run}", "run_uuid": "{other_run}", **_metric()}},
    ),
    (
        "query vs body",
        "POST",
        f"{API}/runs/set-tag",
        {"query": {"run_id": "{job_run}"}, "json": {"run_id": "{other_run}", "key": "k", "value": "v"}},
    ),
    (
        "snake vs camel",
        "POST",
        f"{API}/runs/set-tag",
        {"json": {"run_id": "{job_run}", "runId": "{other_run}", "key": "k", "value": "v"}},
    ),
    (
        "query snake vs body camel",
        "POST",
        f"{API}/runs/log-batch",
        {
            "query": {"run_id": "{job_run}"},
            "json": {"runId": "{other_run}", "tags": [{"key": "k", "value": "v"}]},
        },
    ),
    (
        "repeated query key",
        "GET",
        f"{API}/runs/get",
        {"query": [("run_id", "{job_run}"), ("run_id", "{other_run}")]},
    ),
    (
        "upload run_id vs run_uuid",
        "POST",
        f"{AJAX}/upload-artifact",
        {"query": {"run_id": "{job_run}", "run_uuid": "{other_run}", "path": "x.txt"}, "data": b"x"},
    ),
    (
        "upload to the other run",
        "POST",
        f"{AJAX}/upload-artifact",
        {"query": {"run_uuid": "{other_run}", "path": "x.txt"}, "data": b"x"},
    ),
    ("proxy to the other run", "PUT", f"{ARTIFACTS}/{{e_a}}/{{other_run}}/artifacts/x.txt", {"data": b"x"}),
    (
        "proxy dot-dot",
        "PUT",
        f"{ARTIFACTS}/{{e_a}}/{{job_run}}/artifacts/../../{{other_run}}/artifacts/x.txt",
        {"data": b"x"},
    ),
    ("proxy delete own file", "DELETE", f"{ARTIFACTS}/{{e_a}}/{{job_run}}/artifacts/x.txt", {}),
    ("list the experiment's folder", "GET", ARTIFACTS, {"query": {"path": "{e_a}"}}),
    ("delete its own run", "POST", f"{API}/runs/delete", {"json": {"run_id": "{job_run}"}}),
    ("a new run", "POST", f"{API}/runs/create", {"json": {"experiment_id": "{e_a}"}}),
    ("a new experiment", "POST", f"{API}/experiments/create", {"json": {"name": "job-made"}}),
    (
        "rename the experiment",
        "POST",
        f"{API}/experiments/update",
        {"json": {"experiment_id": "{e_a}", "new_name": "x"}},
    ),
    ("a registered model", "POST", f"{API}/registered-models/create", {"json": {"name": "job-model"}}),
    (
        "a model from another run",
        "POST",
        f"{API}/logged-models",
        {"json": {"experiment_id": "{e_a}", "source_run_id": "{other_run}"}},
    ),
    ("search", "POST", f"{API}/runs/search", {"json": {"experiment_ids": ["{e_a}"]}}),
    ("search experiments", "GET", f"{API}/experiments/search", {"query": {"max_results": "10"}}),
    ("graphql", "POST", "/graphql", {"json": {"query": 'query { test(inputString: "x") { output } }'}}),
    ("trainflow's API", "GET", "/api/me", {}),
    ("the MLflow UI", "GET", "/", {}),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, key in ids.items():
            value = value.replace("{" + name + "}", key)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, tuple):
        return tuple(_fill(v, ids) for v in value)
    return value


def test_a_job_token_reaches_nothing_else(as_job, as_alice, ids):
    def others() -> list[Any]:
        return [
            as_alice.ok("GET", f"{API}/runs/get", query={"run_id": ids["other_run"]}),
            as_alice.ok("GET", f"{API}/experiments/get", query={"experiment_id": ids["e_a"]}),
            as_alice.ok("GET", ARTIFACTS, query={"path": f"{ids['e_a']}/{ids['other_run']}/artifacts"}),
        ]

    before = others()
    for what, method, path, request in OUTSIDE:
        response = as_job.call(method, _fill(path, ids), **_fill(dict(request), ids))
        assert response.status_code in (400, 403), (what, response.status_code, response.get_data(True)[:300])
    assert others() == before


def test_the_token_dies_when_the_job_ends(app, as_job, job, ids):
    as_job.ok("POST", f"{API}/runs/log-metric", json={"run_id": ids["job_run"], **_metric()})
    with app.app_context():
        db.session.get(Job, job.id).status = JobStatus.SUCCEEDED.value
        db.session.commit()
    tokens.forget_job_tokens(app)
    response = as_job.call("POST", f"{API}/runs/log-metric", json={"run_id": ids["job_run"], **_metric()})
    assert response.status_code == 401


def test_the_token_dies_when_the_owner_logs_out_everywhere(client, alice, as_job, ids):
    as_job.ok("POST", f"{API}/runs/log-metric", json={"run_id": ids["job_run"], **_metric()})
    assert client.post("/api/logout", json={"all": True}, headers=alice.bearer()).status_code == 204
    response = as_job.call("POST", f"{API}/runs/log-metric", json={"run_id": ids["job_run"], **_metric()})
    assert response.status_code == 401


def test_the_token_dies_when_the_owner_changes_password(client, alice, as_job, ids):
    as_job.ok("GET", f"{API}/runs/get", query={"run_id": ids["job_run"]})
    body = {"old_password": alice.password, "new_password": "a-whole-new-password"}
    assert client.post("/api/me/password", json=body, headers=alice.basic).status_code == 200
    assert as_job.call("GET", f"{API}/runs/get", query={"run_id": ids["job_run"]}).status_code == 401
