"""MLflow's own objects follow MLflow basic-auth's permission model (issue 3)."""

from __future__ import annotations

import pytest

from trainflow.errors import ConfigError

API = "/api/2.0/mlflow"


def _create_experiment(client, user, name="exp"):
    response = client.post(f"{API}/experiments/create", json={"name": name}, headers=user.basic)
    assert response.status_code == 200, response.json
    return response.json["experiment_id"]


def _create_run(client, user, experiment_id):
    response = client.post(f"{API}/runs/create", json={"experiment_id": experiment_id}, headers=user.basic)
    assert response.status_code == 200, response.json
    return response.json["run"]["info"]["run_id"]


def _log_metric(client, user, run_id):
    return client.post(
        f"{API}/runs/log-metric",
        headers=user.basic,
        json={"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0},
    )


def test_mlflow_api_needs_credentials(client):
    response = client.get(f"{API}/experiments/search?max_results=5")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json["error_code"] == "UNAUTHENTICATED"


def test_the_ui_prompts_for_sign_in_but_its_static_files_are_public(client):
    assert client.get("/").status_code == 401
    assert client.get("/").headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/health").status_code == 200
    assert client.get("/static-files/no-such-file.js").status_code == 404  # served without auth


def test_the_creator_manages_their_experiment(client, alice):
    experiment_id = _create_experiment(client, alice)
    run_id = _create_run(client, alice, experiment_id)
    assert _log_metric(client, alice, run_id).status_code == 200
    response = client.post(
        f"{API}/experiments/update",
        headers=alice.basic,
        json={"experiment_id": experiment_id, "new_name": "renamed"},
    )
    assert response.status_code == 200
    assert client.post(f"{API}/runs/delete", json={"run_id": run_id}, headers=alice.basic).status_code == 200


def test_another_user_can_read_but_not_change(client, alice, bob):
    experiment_id = _create_experiment(client, alice)
    run_id = _create_run(client, alice, experiment_id)
    # READ by default: looking is fine.
    assert (
        client.get(f"{API}/experiments/get?experiment_id={experiment_id}", headers=bob.basic).status_code
        == 200
    )
    assert client.get(f"{API}/runs/get?run_id={run_id}", headers=bob.basic).status_code == 200
    response = client.post(f"{API}/runs/search", json={"experiment_ids": [experiment_id]}, headers=bob.basic)
    assert response.status_code == 200
    # Changing is not.
    denied = [
        _log_metric(client, bob, run_id),
        client.post(f"{API}/runs/create", json={"experiment_id": experiment_id}, headers=bob.basic),
        client.post(f"{API}/runs/update", json={"run_id": run_id, "status": "KILLED"}, headers=bob.basic),
        client.post(f"{API}/runs/delete", json={"run_id": run_id}, headers=bob.basic),
        client.post(
            f"{API}/runs/set-tag", json={"run_id": run_id, "key": "k", "value": "v"}, headers=bob.basic
        ),
        client.post(f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": []}, headers=bob.basic),
        client.post(f"{API}/experiments/delete", json={"experiment_id": experiment_id}, headers=bob.basic),
        client.post(
            f"{API}/experiments/update",
            json={"experiment_id": experiment_id, "new_name": "mine"},
            headers=bob.basic,
        ),
    ]
    for response in denied:
        assert response.status_code == 403, response.request.path
        assert response.json["error_code"] == "PERMISSION_DENIED"
    run = client.get(f"{API}/runs/get?run_id={run_id}", headers=alice.basic).json["run"]
    assert run["info"]["lifecycle_stage"] == "active" and "metrics" not in run["data"]


def test_admins_may_change_anything(client, alice, admin):
    experiment_id = _create_experiment(client, alice)
    run_id = _create_run(client, alice, experiment_id)
    assert _log_metric(client, admin, run_id).status_code == 200
    assert (
        client.post(
            f"{API}/experiments/delete", json={"experiment_id": experiment_id}, headers=admin.basic
        ).status_code
        == 200
    )


def test_the_default_experiment_is_read_only_for_users(client, alice):
    response = client.post(f"{API}/runs/create", json={"experiment_id": "0"}, headers=alice.basic)
    assert response.status_code == 403


def test_no_permissions_by_default_hides_others_experiments(app, client, alice, bob):
    app.extensions["trainflow.mlflow_authorizer"].default = type(
        app.extensions["trainflow.mlflow_authorizer"].default
    )("NO_PERMISSIONS")
    experiment_id = _create_experiment(client, alice)
    assert (
        client.get(f"{API}/experiments/get?experiment_id={experiment_id}", headers=alice.basic).status_code
        == 200
    )
    assert (
        client.get(f"{API}/experiments/get?experiment_id={experiment_id}", headers=bob.basic).status_code
        == 403
    )
    response = client.get(f"{API}/experiments/get-by-name?experiment_name=exp", headers=bob.basic)
    assert response.status_code == 403


def test_a_bad_default_permission_is_a_clear_config_error(settings):
    from trainflow.app import create_app

    with pytest.raises(ConfigError, match="TRAINFLOW_DEFAULT_PERMISSION"):
        create_app(settings.replace(default_permission="SUPERUSER"))


def test_registered_models_belong_to_their_creator(client, alice, bob):
    response = client.post(f"{API}/registered-models/create", json={"name": "model-a"}, headers=alice.basic)
    assert response.status_code == 200
    assert client.get(f"{API}/registered-models/get?name=model-a", headers=bob.basic).status_code == 200
    response = client.post(
        f"{API}/registered-models/rename", json={"name": "model-a", "new_name": "model-b"}, headers=bob.basic
    )
    assert response.status_code == 403
    response = client.post(
        f"{API}/registered-models/rename",
        json={"name": "model-a", "new_name": "model-b"},
        headers=alice.basic,
    )
    assert response.status_code == 200
    # The permission followed the rename.
    response = client.delete(f"{API}/registered-models/delete", json={"name": "model-b"}, headers=bob.basic)
    assert response.status_code == 403
    response = client.delete(f"{API}/registered-models/delete", json={"name": "model-b"}, headers=alice.basic)
    assert response.status_code == 200


def test_artifact_uploads_follow_the_experiment(client, alice, bob):
    experiment_id = _create_experiment(client, alice)
    run_id = _create_run(client, alice, experiment_id)
    path = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/model.txt"
    assert client.put(path, data=b"weights", headers=bob.basic).status_code == 403
    assert client.put(path, data=b"weights", headers=alice.basic).status_code == 200
    response = client.get(path, headers=bob.basic)
    assert response.status_code == 200 and response.get_data() == b"weights"
    response.close()


def test_unknown_mlflow_writes_are_for_admins_only(client, alice, admin):
    # Webhooks are not in the permission table: a user may not create one.
    body = {
        "name": "hook",
        "url": "https://example.com/hook",
        "events": [{"entity": "registered_model", "action": "created"}],
    }
    response = client.post(f"{API}/webhooks", json=body, headers=alice.basic)
    assert response.status_code == 403
    assert client.post(f"{API}/webhooks", json=body, headers=admin.basic).status_code != 403


def test_missing_ids_are_a_400_not_a_bypass(client, alice):
    response = client.post(f"{API}/runs/log-metric", json={"key": "loss", "value": 1}, headers=alice.basic)
    assert response.status_code == 400


def test_cached_permissions_follow_new_grants_in_every_process(app, settings, client, alice):
    """A second app on the same data directory stands in for a second server process."""
    from trainflow.app import create_app

    other = create_app(settings).test_client()
    next_id = str(int(_create_experiment(client, alice, "first")) + 1)
    # Both processes now remember alice's default READ on the experiment that does not exist yet.
    for c in (client, other):
        response = c.post(f"{API}/runs/create", json={"experiment_id": next_id}, headers=alice.basic)
        assert response.status_code == 403
    assert _create_experiment(client, alice, "second") == next_id
    for c in (client, other):
        assert _create_run(c, alice, next_id)


def test_the_uis_post_searches_are_reads(client, alice):
    experiment_id = _create_experiment(client, alice)
    response = client.post(
        "/ajax-api/3.0/mlflow/traces/search",
        headers=alice.basic,
        json={
            "locations": [
                {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}
            ]
        },
    )
    assert response.status_code == 200, response.json


# -- issue 11: bad input is a 400, never a 500, and changes nothing ------------------------------


def test_a_registered_model_named_with_a_nul_is_refused_and_not_created(client, alice):
    response = client.post(f"{API}/registered-models/create", json={"name": "model\x00"}, headers=alice.basic)
    assert response.status_code == 400
    assert response.json["error_code"] == "INVALID_PARAMETER_VALUE"
    search = client.get(f"{API}/registered-models/search", headers=alice.basic)
    assert search.json.get("registered_models", []) == []


def _create_issue(client, user, **fields):
    body = {"experiment_id": "0", "name": "slow", "description": "it is slow", **fields}
    return client.post("/api/3.0/mlflow/issues", json=body, headers=user.basic)


def test_an_issue_with_an_unknown_status_is_a_400_naming_the_choices(client, admin):
    response = _create_issue(client, admin, status="bogus")
    assert response.status_code == 400
    assert response.json["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "pending, rejected, resolved" in response.json["message"]


def test_an_issue_with_an_unknown_severity_is_a_400(client, admin):
    response = _create_issue(client, admin, severity="dire")
    assert response.status_code == 400
    assert "not_an_issue, low, medium, high" in response.json["message"]


def test_an_issue_with_a_known_status_is_created(client, admin):
    response = _create_issue(client, admin, status="pending", severity="low")
    assert response.status_code == 200, response.json


def test_dataset_records_that_are_no_json_array_are_a_400(client, admin):
    response = client.post("/api/3.0/mlflow/datasets/d-1/records", json={"records": "0"}, headers=admin.basic)
    assert response.status_code == 400
    assert "must be a JSON array" in response.json["message"]


@pytest.mark.parametrize("token", ["\U00014a34", "WzFd", "/w=="])
def test_a_page_token_the_server_never_gave_out_is_a_400(client, alice, token):
    # Non-ASCII, base64 of a JSON array, base64 of bytes that are no UTF-8: MLflow's stores
    # raised on each (a 500) while decoding it.
    body = {"experiment_ids": ["0"], "page_token": token}
    response = client.post(f"{API}/logged-models/search", json=body, headers=alice.basic)
    assert response.status_code == 400
    assert response.json["error_code"] == "INVALID_PARAMETER_VALUE"


def test_a_page_token_the_server_gave_out_leads_on(client, alice):
    for name in ("first", "second"):
        _create_experiment(client, alice, name)
    first = client.get(f"{API}/experiments/search?max_results=1", headers=alice.basic)
    token = first.json["next_page_token"]
    query = {"max_results": 1, "page_token": token}
    second = client.get(f"{API}/experiments/search", query_string=query, headers=alice.basic)
    assert second.status_code == 200, second.json
    assert second.json["experiments"] != first.json["experiments"]


def test_an_experiment_id_that_is_no_number_is_a_400(client, alice):
    # MLflow's trace search turned it into a number unguarded: a 500.
    response = client.get(f"{API}/traces", query_string={"experiment_ids": "檫"}, headers=alice.basic)
    assert response.status_code == 400
    assert "whole number" in response.json["message"]


def test_mlflow_s_own_validation_is_a_400_where_its_handler_does_not_catch_it(client, admin):
    # The dataset records handler lets MLflow's MlflowException for a bad max_results escape.
    url = "/api/3.0/mlflow/datasets/d-1/records"
    response = client.get(url, query_string={"max_results": ""}, headers=admin.basic)
    assert response.status_code == 400
    assert response.json["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "max_results" in response.json["message"]
