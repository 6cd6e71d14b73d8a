"""Naming an object twice in disagreeing ways reaches nothing (issue 10).

User B sends each aliasing form (query vs body, ``run_id`` vs ``run_uuid``, snake_case vs
protobuf JSON names, a body MLflow parses whatever its Content-Type says, a path segment vs a
body field, a repeated query key, ``..`` in an artifact path) against user A's experiment, run,
registered model, model version, alias, tag, logged model, trace and artifact. Each is refused
(400, or 403 where the one value MLflow reads is A's), and A's objects read back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.tracking.conftest import AJAX, API, API3, ARTIFACTS, Mlflow


@dataclass
class World:
    """A's objects, which B attacks, and B's own, which B names as a decoy."""

    e_a: str
    r_a: str
    m_a: str
    lm_a: str
    t_a: str
    e_b: str
    r_b: str
    m_b: str
    lm_b: str
    t_b: str


@pytest.fixture
def world(as_alice: Mlflow, as_bob: Mlflow) -> World:
    e_a = as_alice.experiment("alice-exp")
    r_a = as_alice.run(e_a)
    as_alice.ok("POST", f"{API}/runs/set-tag", json={"run_id": r_a, "key": "k", "value": "alice"})
    as_alice.upload(e_a, r_a, "a.txt", b"alice's weights")
    m_a = as_alice.registered_model("alice-model")
    as_alice.model_version(m_a, e_a, r_a)
    as_alice.ok(
        "POST", f"{API}/registered-models/alias", json={"name": m_a, "alias": "champion", "version": "1"}
    )
    as_alice.ok("POST", f"{API}/registered-models/set-tag", json={"name": m_a, "key": "k", "value": "alice"})
    as_alice.ok(
        "POST", f"{API}/model-versions/set-tag", json={"name": m_a, "version": "1", "key": "k", "value": "a"}
    )
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


def snapshot(a: Mlflow, w: World) -> dict[str, Any]:
    """Everything of A's that B tries to change, as A reads it."""
    artifact = a.call("GET", f"{ARTIFACTS}/{w.e_a}/{w.r_a}/artifacts/a.txt")
    state = {
        "experiment": a.ok("GET", f"{API}/experiments/get", query={"experiment_id": w.e_a}),
        "run": a.ok("GET", f"{API}/runs/get", query={"run_id": w.r_a}),
        "model": a.ok("GET", f"{API}/registered-models/get", query={"name": w.m_a}),
        "version": a.ok("GET", f"{API}/model-versions/get", query={"name": w.m_a, "version": "1"}),
        "logged_model": a.ok("GET", f"{API}/logged-models/{w.lm_a}"),
        "trace": a.ok("GET", f"{API3}/traces/{w.t_a}"),
        "artifacts": a.ok("GET", ARTIFACTS, query={"path": f"{w.e_a}/{w.r_a}/artifacts"}),
        "artifact": (artifact.status_code, artifact.get_data()),
    }
    artifact.close()
    return state


def _plain(body: str) -> dict[str, Any]:
    """A JSON body sent as text/plain: MLflow parses it all the same."""
    return {"data": body, "content_type": "text/plain"}


def _json(**fields: Any) -> str:
    import json

    return json.dumps(fields)


# (object kind, form, method, path, request) with {placeholders} filled from the World.
CASES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    # -- experiment --------------------------------------------------------------------------
    (
        "experiment",
        "query vs body",
        "POST",
        f"{API}/experiments/update",
        {"query": {"experiment_id": "{e_b}"}, "json": {"experiment_id": "{e_a}", "new_name": "pwned"}},
    ),
    (
        "experiment",
        "snake vs camel",
        "POST",
        f"{API}/experiments/update",
        {"json": {"experiment_id": "{e_b}", "experimentId": "{e_a}", "new_name": "pwned"}},
    ),
    (
        "experiment",
        "query snake vs body camel",
        "POST",
        f"{API}/runs/create",
        {"query": {"experiment_id": "{e_b}"}, "json": {"experimentId": "{e_a}"}},
    ),
    (
        "experiment",
        "query snake vs body camel",
        "POST",
        f"{API}/experiments/set-experiment-tag",
        {"query": {"experiment_id": "{e_b}"}, "json": {"experimentId": "{e_a}", "key": "k", "value": "v"}},
    ),
    ("experiment", "text/plain", "POST", f"{API}/experiments/delete", _plain('{"experiment_id": "{e_a}"}')),
    ("experiment", "camel only", "POST", f"{API}/experiments/delete", {"json": {"experimentId": "{e_a}"}}),
    ("experiment", "query only", "POST", f"{API}/experiments/delete", {"query": {"experiment_id": "{e_a}"}}),
    # -- run -----------------------------------------------------------------------------------
    (
        "run",
        "run_id vs run_uuid",
        "POST",
        f"{API}/runs/log-metric",
        {
            "json": {
                "run_id": "{r_b}",
                "run_uuid": "{r_a}",
                "key": "loss",
                "value": 1,
                "timestamp": 1,
                "step": 0,
            }
        },
    ),
    (
        "run",
        "run_id vs run_uuid",
        "POST",
        f"{API}/runs/update",
        {"json": {"run_id": "{r_b}", "run_uuid": "{r_a}", "status": "KILLED"}},
    ),
    (
        "run",
        "query vs body",
        "POST",
        f"{API}/runs/set-tag",
        {"query": {"run_id": "{r_b}"}, "json": {"run_id": "{r_a}", "key": "k", "value": "bob"}},
    ),
    (
        "run",
        "snake vs camel",
        "POST",
        f"{API}/runs/set-tag",
        {"json": {"run_id": "{r_b}", "runId": "{r_a}", "key": "k", "value": "bob"}},
    ),
    (
        "run",
        "query snake vs body camel",
        "POST",
        f"{API}/runs/log-batch",
        {"query": {"run_id": "{r_b}"}, "json": {"runId": "{r_a}", "tags": [{"key": "k", "value": "bob"}]}},
    ),
    ("run", "text/plain", "POST", f"{API}/runs/delete", _plain('{"run_id": "{r_a}"}')),
    ("run", "camel only", "POST", f"{API}/runs/delete", {"json": {"runId": "{r_a}"}}),
    (
        "run",
        "run_uuid only",
        "POST",
        f"{API}/runs/set-tag",
        {"json": {"run_uuid": "{r_a}", "key": "k", "value": "b"}},
    ),
    # -- registered model ----------------------------------------------------------------------
    (
        "registered model",
        "query vs body",
        "DELETE",
        f"{API}/registered-models/delete",
        {"query": {"name": "{m_b}"}, "json": {"name": "{m_a}"}},
    ),
    (
        "registered model",
        "query only",
        "DELETE",
        f"{API}/registered-models/delete",
        {"query": {"name": "{m_a}"}},
    ),
    (
        "registered model",
        "text/plain PATCH",
        "PATCH",
        f"{API}/registered-models/update",
        _plain('{"name": "{m_a}", "description": "pwned"}'),
    ),
    (
        "registered model",
        "query vs body",
        "POST",
        f"{API}/registered-models/rename",
        {"query": {"name": "{m_b}"}, "json": {"name": "{m_a}", "new_name": "stolen"}},
    ),
    (
        "registered model",
        "NUL in name",
        "POST",
        f"{API}/registered-models/create",
        {"json": {"name": "{m_a}\x00"}},
    ),
    # -- model version -------------------------------------------------------------------------
    (
        "model version",
        "text/plain PATCH",
        "PATCH",
        f"{API}/model-versions/update",
        _plain('{"name": "{m_a}", "version": "1", "description": "pwned"}'),
    ),
    (
        "model version",
        "query vs body",
        "DELETE",
        f"{API}/model-versions/delete",
        {"query": {"name": "{m_b}", "version": "1"}, "json": {"name": "{m_a}", "version": "1"}},
    ),
    (
        "model version",
        "query vs body",
        "POST",
        f"{API}/model-versions/transition-stage",
        {"query": {"name": "{m_b}"}, "json": {"name": "{m_a}", "version": "1", "stage": "Archived"}},
    ),
    (
        "model version",
        "text/plain DELETE",
        "DELETE",
        f"{API}/model-versions/delete",
        _plain('{"name": "{m_a}", "version": "1"}'),
    ),
    (
        "model version",
        "source in another's run",
        "POST",
        f"{API}/model-versions/create",
        {"json": {"name": "{m_b}", "source": "mlflow-artifacts:/{e_a}/{r_a}/artifacts"}},
    ),
    (
        "model version",
        "source run of another",
        "POST",
        f"{API}/model-versions/create",
        {"json": {"name": "{m_b}", "source": "runs:/{r_a}/model"}},
    ),
    # -- alias ---------------------------------------------------------------------------------
    (
        "alias",
        "query vs body",
        "POST",
        f"{API}/registered-models/alias",
        {"query": {"name": "{m_b}"}, "json": {"name": "{m_a}", "alias": "champion", "version": "1"}},
    ),
    (
        "alias",
        "query vs body",
        "DELETE",
        f"{API}/registered-models/alias",
        {"query": {"name": "{m_b}", "alias": "champion"}, "json": {"name": "{m_a}", "alias": "champion"}},
    ),
    (
        "alias",
        "text/plain DELETE",
        "DELETE",
        f"{API}/registered-models/alias",
        _plain('{"name": "{m_a}", "alias": "champion"}'),
    ),
    # -- tags ----------------------------------------------------------------------------------
    (
        "tag",
        "query vs body",
        "POST",
        f"{API}/registered-models/set-tag",
        {"query": {"name": "{m_b}"}, "json": {"name": "{m_a}", "key": "k", "value": "bob"}},
    ),
    (
        "tag",
        "text/plain DELETE",
        "DELETE",
        f"{API}/registered-models/delete-tag",
        _plain('{"name": "{m_a}", "key": "k"}'),
    ),
    (
        "tag",
        "query vs body",
        "DELETE",
        f"{API}/model-versions/delete-tag",
        {"query": {"name": "{m_b}"}, "json": {"name": "{m_a}", "version": "1", "key": "k"}},
    ),
    (
        "tag",
        "query vs body",
        "POST",
        f"{API}/model-versions/set-tag",
        {
            "query": {"name": "{m_b}", "version": "1"},
            "json": {"name": "{m_a}", "version": "1", "key": "k", "value": "b"},
        },
    ),
    (
        "tag",
        "run_id vs run_uuid",
        "POST",
        f"{API}/runs/set-tag",
        {"json": {"run_id": "{r_b}", "run_uuid": "{r_a}", "key": "k", "value": "bob"}},
    ),
    # -- logged model --------------------------------------------------------------------------
    (
        "logged model",
        "path vs body",
        "PATCH",
        f"{API}/logged-models/{{lm_b}}",
        {"json": {"model_id": "{lm_a}", "status": "LOGGED_MODEL_UPLOAD_FAILED"}},
    ),
    (
        "logged model",
        "path vs body camel",
        "PATCH",
        f"{API}/logged-models/{{lm_b}}",
        {"json": {"modelId": "{lm_a}", "status": "LOGGED_MODEL_UPLOAD_FAILED"}},
    ),
    (
        "logged model",
        "path vs body",
        "PATCH",
        f"{API}/logged-models/{{lm_b}}/tags",
        {"json": {"model_id": "{lm_a}", "tags": [{"key": "k", "value": "bob"}]}},
    ),
    (
        "logged model",
        "path vs body",
        "POST",
        f"{API}/logged-models/{{lm_b}}/params",
        {"json": {"model_id": "{lm_a}", "params": [{"key": "k", "value": "bob"}]}},
    ),
    ("logged model", "direct", "DELETE", f"{API}/logged-models/{{lm_a}}", {}),
    (
        "logged model",
        "another's source run",
        "POST",
        f"{API}/logged-models",
        {"json": {"experiment_id": "{e_b}", "source_run_id": "{r_a}"}, "expect": (200, 400, 403, 404)},
    ),
    # -- trace ---------------------------------------------------------------------------------
    (
        "trace",
        "path vs body",
        "PATCH",
        f"{API}/traces/{{t_b}}/tags",
        {"json": {"request_id": "{t_a}", "key": "owner", "value": "bob"}},
    ),
    (
        "trace",
        "path vs body",
        "PATCH",
        f"{API3}/traces/{{t_b}}/tags",
        {"json": {"trace_id": "{t_a}", "key": "owner", "value": "bob"}},
    ),
    (
        "trace",
        "path vs body camel",
        "PATCH",
        f"{API3}/traces/{{t_b}}/tags",
        {"json": {"traceId": "{t_a}", "key": "owner", "value": "bob"}},
    ),
    ("trace", "text/plain DELETE", "DELETE", f"{API3}/traces/{{t_a}}/tags", _plain('{"key": "owner"}')),
    (
        "trace",
        "another experiment's trace",
        "POST",
        f"{API3}/traces/delete-traces",
        {"json": {"experiment_id": "{e_b}", "request_ids": ["{t_a}"]}},
    ),
    (
        "trace",
        "path vs body",
        "POST",
        f"{API3}/traces/{{t_b}}/assessments",
        {"json": {"assessment": {"trace_id": "{t_a}", "assessment_name": "x", "feedback": {"value": 1}}}},
    ),
    (
        "trace",
        "link another's trace",
        "POST",
        f"{API}/traces/link-to-run",
        {"json": {"run_id": "{r_b}", "trace_ids": ["{t_a}"]}},
    ),
    # -- artifact ------------------------------------------------------------------------------
    (
        "artifact",
        "run_id vs run_uuid",
        "POST",
        f"{AJAX}/upload-artifact",
        {"query": {"run_id": "{r_b}", "run_uuid": "{r_a}", "path": "a.txt"}, "data": b"bob"},
    ),
    (
        "artifact",
        "repeated key",
        "POST",
        f"{AJAX}/upload-artifact",
        {"query": [("run_uuid", "{r_b}"), ("run_uuid", "{r_a}"), ("path", "a.txt")], "data": b"bob"},
    ),
    (
        "artifact",
        "direct",
        "POST",
        f"{AJAX}/upload-artifact",
        {"query": {"run_uuid": "{r_a}", "path": "a.txt"}, "data": b"b"},
    ),
    ("artifact", "proxy direct", "PUT", f"{ARTIFACTS}/{{e_a}}/{{r_a}}/artifacts/a.txt", {"data": b"bob"}),
    (
        "artifact",
        "run in another experiment",
        "PUT",
        f"{ARTIFACTS}/{{e_b}}/{{r_a}}/artifacts/a.txt",
        {"data": b"bob"},
    ),
    (
        "artifact",
        "dot-dot",
        "PUT",
        f"{ARTIFACTS}/{{e_b}}/{{r_b}}/artifacts/../../../{{e_a}}/{{r_a}}/artifacts/a.txt",
        {"data": b"bob"},
    ),
    ("artifact", "proxy delete", "DELETE", f"{ARTIFACTS}/{{e_a}}/{{r_a}}/artifacts/a.txt", {}),
    (
        "artifact",
        "multipart",
        "POST",
        "/api/2.0/mlflow-artifacts/mpu/create/{e_a}/{r_a}/artifacts/a.txt",
        {"json": {"path": "a.txt", "num_parts": 1}},
    ),
]


def _fill(value: Any, w: World) -> Any:
    if isinstance(value, str):
        for name, key in vars(w).items():
            value = value.replace("{" + name + "}", key)
        return value
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        return {_fill(k, w): _fill(v, w) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_fill(v, w) for v in value)
    return value


KINDS = sorted({case[0] for case in CASES})


@pytest.mark.parametrize("kind", KINDS)
def test_aliased_requests_leave_the_other_users_object_untouched(as_alice, as_bob, world, kind):
    before = snapshot(as_alice, world)
    for case_kind, form, method, path, request in CASES:
        if case_kind != kind:
            continue
        request = _fill(dict(request), world)
        expect = request.pop("expect", (400, 403, 404))
        response = as_bob.call(method, _fill(path, world), **request)
        assert response.status_code in expect, (form, method, path, response.get_data(True))
        if response.status_code >= 400:
            body = response.get_json()
            assert body["error"]["code"] and body["error_code"], (form, body)
        assert snapshot(as_alice, world) == before, (form, method, path)
