"""Under TRAINFLOW_DEFAULT_PERMISSION=NO_PERMISSIONS another user's objects cannot be read (issue 10).

Not by id, not by an aliased id, not through a search, the artifact routes or GraphQL.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tracking.conftest import AJAX, API, API3, ARTIFACTS, Mlflow
from tests.tracking.test_aliasing import World, _fill


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.replace(default_permission="NO_PERMISSIONS")


@pytest.fixture
def world(as_alice: Mlflow, as_bob: Mlflow) -> World:
    e_a = as_alice.experiment("alice-exp")
    r_a = as_alice.run(e_a)
    as_alice.ok(
        "POST", f"{API}/runs/log-metric", json={"run_id": r_a, "key": "loss", "value": 1, "timestamp": 1}
    )
    as_alice.upload(e_a, r_a, "a.txt", b"alice's weights")
    m_a = as_alice.registered_model("alice-model")
    as_alice.model_version(m_a, e_a, r_a)
    as_alice.ok("POST", f"{API}/registered-models/alias", json={"name": m_a, "alias": "prod", "version": "1"})
    e_b = as_bob.experiment("bob-exp")
    r_b = as_bob.run(e_b)
    m_b = as_bob.registered_model("bob-model")
    as_bob.model_version(m_b, e_b, r_b)
    return World(
        e_a=e_a,
        r_a=r_a,
        m_a=m_a,
        lm_a=as_alice.logged_model(e_a, r_a),
        t_a=as_alice.trace(e_a),
        e_b=e_b,
        r_b=r_b,
        m_b=m_b,
        lm_b=as_bob.logged_model(e_b, r_b),
        t_b=as_bob.trace(e_b),
    )


def _graphql(field: str, argument: str) -> dict[str, Any]:
    return {"json": {"query": "query { " + field + "(input: " + argument + ") { __typename } }"}}


# Reads of A's objects: A gets 200, B gets 403.
READS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", f"{API}/experiments/get", {"query": {"experiment_id": "{e_a}"}}),
    ("GET", f"{API}/experiments/get-by-name", {"query": {"experiment_name": "alice-exp"}}),
    ("GET", f"{API}/runs/get", {"query": {"run_id": "{r_a}"}}),
    ("GET", f"{API}/runs/get", {"query": {"run_uuid": "{r_a}"}}),
    ("GET", f"{API}/metrics/get-history", {"query": {"run_id": "{r_a}", "metric_key": "loss"}}),
    ("GET", f"{AJAX}/metrics/get-history-bulk", {"query": {"run_id": "{r_a}", "metric_key": "loss"}}),
    (
        "GET",
        f"{API}/metrics/get-history-bulk-interval",
        {"query": {"run_ids": "{r_a}", "metric_key": "loss"}},
    ),
    ("POST", f"{API}/runs/search", {"json": {"experiment_ids": ["{e_a}"]}}),
    ("GET", f"{API}/artifacts/list", {"query": {"run_id": "{r_a}"}}),
    ("GET", ARTIFACTS, {"query": {"path": "{e_a}/{r_a}/artifacts"}}),
    ("GET", f"{ARTIFACTS}/{{e_a}}/{{r_a}}/artifacts/a.txt", {}),
    ("GET", "/get-artifact", {"query": {"run_id": "{r_a}", "path": "a.txt"}}),
    ("GET", "/get-artifact", {"query": {"run_uuid": "{r_a}", "path": "a.txt"}}),
    ("GET", f"{API}/registered-models/get", {"query": {"name": "{m_a}"}}),
    ("POST", f"{API}/registered-models/get-latest-versions", {"json": {"name": "{m_a}"}}),
    ("GET", f"{API}/registered-models/alias", {"query": {"name": "{m_a}", "alias": "prod"}}),
    ("GET", f"{API}/model-versions/get", {"query": {"name": "{m_a}", "version": "1"}}),
    ("GET", f"{API}/model-versions/get-download-uri", {"query": {"name": "{m_a}", "version": "1"}}),
    ("GET", "/model-versions/get-artifact", {"query": {"name": "{m_a}", "version": "1", "path": "a.txt"}}),
    ("GET", f"{API}/logged-models/{{lm_a}}", {}),
    ("POST", f"{API}/logged-models/search", {"json": {"experiment_ids": ["{e_a}"]}}),
    ("GET", f"{API3}/traces/{{t_a}}", {}),
    (
        "POST",
        f"{API3}/traces/search",
        {"json": {"locations": [{"mlflow_experiment": {"experiment_id": "{e_a}"}}]}},
    ),
    ("GET", f"{API}/traces", {"query": {"experiment_ids": "{e_a}"}}),
    ("GET", f"{API3}/scorers/list", {"query": {"experiment_id": "{e_a}"}}),
]

# Reads B is refused where A's own read fails for other reasons (a trace with no spans stored).
REFUSED_ONLY: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", f"{API3}/traces/get", {"query": {"trace_id": "{t_a}"}}),
    ("GET", f"{API3}/traces/batchGet", {"query": {"trace_ids": "{t_a}"}}),
]

# The same reads with the object named twice, or where MLflow does not look: 400 for everyone.
ALIASED_READS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", f"{API}/runs/get", {"query": [("run_id", "{r_b}"), ("run_id", "{r_a}")]}),
    ("GET", f"{API}/runs/get", {"query": {"run_id": "{r_b}", "run_uuid": "{r_a}"}}),
    ("GET", f"{API}/runs/get", {"query": {"runId": "{r_a}"}}),
    ("GET", f"{API}/runs/get", {"query": {"run_id": "{r_b}"}, "json": {"run_id": "{r_a}"}}),
    ("GET", f"{API}/experiments/get", {"query": {"experiment_id": "{e_b}", "experimentId": "{e_a}"}}),
    ("GET", "/get-artifact", {"query": {"run_id": "{r_b}", "run_uuid": "{r_a}", "path": "a.txt"}}),
    ("GET", "/get-artifact", {"query": [("run_id", "{r_b}"), ("run_id", "{r_a}"), ("path", "a.txt")]}),
    ("GET", f"{API}/registered-models/get", {"query": [("name", "{m_b}"), ("name", "{m_a}")]}),
]


def _send(caller: Mlflow, w: World, method: str, path: str, request: dict[str, Any]) -> Any:
    return caller.call(method, _fill(path, w), **_fill(dict(request), w))


def test_the_owner_reads_their_own_objects(as_alice, world):
    for method, path, request in READS:
        response = _send(as_alice, world, method, path, request)
        assert response.status_code == 200, (method, path, response.get_data(True)[:300])
        response.close()


def test_another_user_cannot_read_them(as_bob, world):
    for method, path, request in READS + REFUSED_ONLY:
        response = _send(as_bob, world, method, path, request)
        assert response.status_code == 403, (method, path, response.get_data(True)[:300])
        assert response.json["error_code"] == "PERMISSION_DENIED"


def test_nor_by_naming_them_twice(as_bob, world):
    for method, path, request in ALIASED_READS:
        response = _send(as_bob, world, method, path, request)
        assert response.status_code == 400, (method, path, response.get_data(True)[:300])
        assert response.json["error_code"] == "INVALID_PARAMETER_VALUE"


def test_nor_in_a_get_body_which_mlflow_reads_when_there_is_no_query(as_bob, world):
    response = as_bob.call("GET", f"{API}/runs/get", json={"run_id": world.r_a})
    assert response.status_code == 403


def test_nor_through_a_model_version_made_from_their_run(as_bob, world):
    for source in (f"runs:/{world.r_a}/model", f"mlflow-artifacts:/{world.e_a}/{world.r_a}/artifacts"):
        response = as_bob.call(
            "POST", f"{API}/model-versions/create", json={"name": world.m_b, "source": source}
        )
        assert response.status_code == 403, source
    response = as_bob.call(
        "POST", f"{API}/model-versions/create", json={"name": world.m_b, "source": "x", "run_id": world.r_a}
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("path", "list_key", "mine", "theirs"),
    [
        (f"{API}/experiments/search", "experiments", "bob-exp", "alice-exp"),
        (f"{API}/registered-models/search", "registered_models", "bob-model", "alice-model"),
        (f"{API}/model-versions/search", "model_versions", "bob-model", "alice-model"),
    ],
)
def test_searches_list_only_what_the_user_may_read(as_alice, as_bob, world, path, list_key, mine, theirs):
    query = {"max_results": 100}
    names = {item["name"] for item in as_bob.ok("GET", path, query=query).get(list_key, [])}
    assert mine in names
    assert theirs not in names
    assert theirs in {item["name"] for item in as_alice.ok("GET", path, query=query).get(list_key, [])}


def test_graphql_reads_are_checked_per_field(as_alice, as_bob, world):
    queries = [
        _graphql("mlflowGetRun", '{runId: "{r_a}"}'),
        _graphql("mlflowGetExperiment", '{experimentId: "{e_a}"}'),
        _graphql("mlflowSearchRuns", '{experimentIds: ["{e_a}"]}'),
        _graphql("mlflowListArtifacts", '{runId: "{r_a}"}'),
    ]
    for request in queries:
        mine = _send(as_alice, world, "POST", "/graphql", request).json
        assert mine["errors"] is None, mine
        theirs = _send(as_bob, world, "POST", "/graphql", request).json
        assert theirs["errors"], theirs
        assert not any((theirs["data"] or {}).values()), theirs
    run = _send(as_bob, world, "POST", "/graphql", _graphql("mlflowGetRun", '{runId: "{r_b}"}')).json
    assert run["errors"] is None
