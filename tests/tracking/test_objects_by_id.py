"""Objects MLflow knows by an id of their own are decided by their experiment (issue 10).

Issues, label schemas, review queues, evaluation datasets: their owner manages them, another
user reads them (the default READ) but cannot change or delete them.
"""

from __future__ import annotations

from tests.tracking.conftest import API3, Mlflow


def _create(as_alice: Mlflow) -> dict[str, str]:
    e = as_alice.experiment("alice-exp")
    queue = as_alice.ok(
        "POST", f"{API3}/review-queues/create", json={"experiment_id": e, "name": "q", "queue_type": "CUSTOM"}
    )
    schema = as_alice.ok(
        "POST",
        f"{API3}/label-schemas/create",
        json={"experiment_id": e, "name": "s", "type": "FEEDBACK", "input": {"text": {}}},
    )
    issue = as_alice.ok(
        "POST", f"{API3}/issues", json={"experiment_id": e, "name": "bug", "description": "d"}
    )
    dataset = as_alice.ok("POST", f"{API3}/datasets/create", json={"name": "d", "experiment_ids": [e]})
    return {
        "queue": queue["review_queue"]["queue_id"],
        "schema": schema["label_schema"]["schema_id"],
        "issue": issue["issue"]["issue_id"],
        "dataset": dataset["dataset"]["dataset_id"],
    }


def test_another_user_reads_but_cannot_change_them(as_alice, as_bob):
    ids = _create(as_alice)
    reads = [
        ("GET", f"{API3}/review-queues/get", {"query": {"queue_id": ids["queue"]}}),
        ("GET", f"{API3}/review-queues/items/list", {"query": {"queue_id": ids["queue"]}}),
        ("GET", f"{API3}/label-schemas/get", {"query": {"schema_id": ids["schema"]}}),
        ("GET", f"{API3}/issues/{ids['issue']}", {}),
        ("GET", f"{API3}/datasets/{ids['dataset']}", {}),
    ]
    writes = [
        ("POST", f"{API3}/review-queues/update", {"json": {"queue_id": ids["queue"], "name": "mine"}}),
        ("POST", f"{API3}/review-queues/delete", {"json": {"queue_id": ids["queue"]}}),
        ("PATCH", f"{API3}/label-schemas/update", {"json": {"schema_id": ids["schema"], "name": "mine"}}),
        ("DELETE", f"{API3}/label-schemas/delete", {"json": {"schema_id": ids["schema"]}}),
        ("PATCH", f"{API3}/issues/{ids['issue']}", {"json": {"name": "mine"}}),
        ("PATCH", f"{API3}/issues/{ids['issue']}", {"json": {"issue_id": "iss-other", "name": "mine"}}),
        ("DELETE", f"{API3}/datasets/{ids['dataset']}", {}),
        ("PATCH", f"{API3}/datasets/{ids['dataset']}/tags", {"json": {"tags": '{"k": "v"}'}}),
    ]
    for method, path, request in reads:
        response = as_bob.call(method, path, **request)
        assert response.status_code == 200, (method, path, response.get_data(True)[:300])
    for method, path, request in writes:
        response = as_bob.call(method, path, **request)
        expected = 400 if "issue_id" in request.get("json", {}) else 403  # the URL and body disagree
        assert response.status_code == expected, (method, path, response.get_data(True)[:300])
    for method, path, request in reads:
        assert as_alice.call(method, path, **request).status_code == 200
    assert (
        as_alice.ok("GET", f"{API3}/review-queues/get", query={"queue_id": ids["queue"]})["review_queue"][
            "name"
        ]
        == "q"
    )
