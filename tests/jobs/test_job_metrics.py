"""GET /jobs/metrics: many metrics of many jobs in one answer, sampled (the compare page's read).

Run against SQLite and PostgreSQL (the ``database_url`` fixture); the short history is logged
and read back with the official mlflow client over real HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TestUser
from tests.records import running_job
from tests.tracking.conftest import Mlflow
from tests.tracking.test_official_client import run_client

URL = "/ajax-api/2.0/mlflow/train/jobs/metrics"
LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"


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


def job_with_run(app: Any, client: Any, user: TestUser, name: str = "exp") -> tuple[int, str]:
    as_user = Mlflow(client, user.basic)
    run_id = as_user.run(as_user.experiment(f"{user.username}-{name}"))
    job = running_job(app, user.id, run_id=run_id)
    return job.id, run_id


def log(client: Any, user: TestUser, run_id: str, metrics: list[dict[str, Any]]) -> None:
    for start in range(0, len(metrics), 1000):
        body = json.dumps({"run_id": run_id, "metrics": metrics[start : start + 1000]})
        response = client.post(LOG_BATCH, data=body, content_type="application/json", headers=user.basic)
        assert response.status_code == 200, response.get_data(True)


def read(client: Any, user: TestUser, **query: Any) -> Any:
    return client.get(URL, query_string=query, headers=user.basic)


LOGGED = """
    import json
    from mlflow import MlflowClient
    client = MlflowClient()
    run_id = "{run_id}"
    for step in range(30):
        client.log_metric(run_id, "loss", 1 / (step + 1), step=step)
        client.log_metric(run_id, "acc", step / 30, step=step, timestamp=1_700_000_000_000 + step)
    out = {{
        key: [[m.step, m.value, m.timestamp] for m in client.get_metric_history(run_id, key)]
        for key in ("loss", "acc")
    }}
    print(json.dumps(out))
"""


def test_values_equal_what_the_official_client_reads(app, client, live_url, alice):
    job_id, run_id = job_with_run(app, client, alice)
    official = run_client(
        live_url,
        LOGGED.format(run_id=run_id),
        MLFLOW_TRACKING_USERNAME=alice.username,
        MLFLOW_TRACKING_PASSWORD=alice.password,
    )
    response = read(client, alice, jobs=str(job_id))
    assert response.status_code == 200, response.get_data(True)
    body = response.get_json()
    assert body["missing"] == []
    [answer] = body["jobs"]
    assert answer["job"] == job_id and answer["run_id"] == run_id
    assert sorted(answer["metrics"]) == ["acc", "loss"]
    for key, points in official.items():
        history = answer["metrics"][key]
        ours = [list(p) for p in zip(history["steps"], history["values"], history["timestamps"], strict=True)]
        assert ours == sorted(points), key
    # keys= picks metrics; one not logged is simply absent.
    only = read(client, alice, jobs=str(job_id), keys="acc,nope").get_json()
    assert list(only["jobs"][0]["metrics"]) == ["acc"]


def test_a_long_history_is_sampled_keeping_first_and_last_in_step_order(app, client, alice):
    job_id, run_id = job_with_run(app, client, alice)
    steps = 10_000
    log(
        client,
        alice,
        run_id,
        [{"key": "loss", "value": s / 7, "step": s, "timestamp": 1000 + s} for s in range(steps)],
    )
    # A step logged twice: its most recent value counts (MLflow's (timestamp, value) order).
    log(client, alice, run_id, [{"key": "loss", "value": -1.0, "step": steps - 1, "timestamp": 10**12}])
    history = read(client, alice, jobs=str(job_id), points=500).get_json()["jobs"][0]["metrics"]["loss"]
    assert len(history["steps"]) == len(history["values"]) == len(history["timestamps"]) == 500
    assert history["steps"][0] == 0 and history["steps"][-1] == steps - 1
    assert all(a < b for a, b in zip(history["steps"], history["steps"][1:], strict=False))
    assert history["values"][0] == 0.0 and history["values"][-1] == -1.0
    assert history["timestamps"][-1] == 10**12
    gaps = {b - a for a, b in zip(history["steps"], history["steps"][1:], strict=False)}
    assert gaps <= {20, 21}, gaps  # evenly spaced
    assert all(v == s / 7 for s, v in zip(history["steps"][:-1], history["values"][:-1], strict=True))
    # Fewer steps than points: every step.
    whole = read(client, alice, jobs=str(job_id), points=5000).get_json()["jobs"][0]["metrics"]["loss"]
    assert len(whole["steps"]) == 5000 and whole["steps"][-1] == steps - 1


ODD = """
    import json
    from mlflow import MlflowClient
    client = MlflowClient()
    run_id = "{run_id}"
    for step, value in enumerate([0.5, float("nan"), float("inf"), float("-inf"), 1e308]):
        client.log_metric(run_id, "odd", value, step=step)
    print(json.dumps([m.value for m in client.get_metric_history(run_id, "odd")], allow_nan=True))
"""


def test_nan_and_infinities_survive_json(app, client, live_url, alice):
    job_id, run_id = job_with_run(app, client, alice)
    official = run_client(
        live_url,
        ODD.format(run_id=run_id),
        MLFLOW_TRACKING_USERNAME=alice.username,
        MLFLOW_TRACKING_PASSWORD=alice.password,
    )
    # MLflow stores infinities as the largest doubles, and its client reads them back so.
    assert official[2:] == [1.7976931348623157e308, -1.7976931348623157e308, 1e308]
    text = read(client, alice, jobs=str(job_id)).get_data(True)

    def refuse(name: str) -> None:
        pytest.fail(f"{name} is not JSON")

    history = json.loads(text, parse_constant=refuse)["jobs"][0]["metrics"]["odd"]
    assert history["values"] == [0.5, "NaN", "Infinity", "-Infinity", 1e308]
    assert history["steps"] == [0, 1, 2, 3, 4]


def test_another_users_job_is_listed_missing_and_an_admin_reads_all(app, client, alice, bob, admin):
    mine, _ = job_with_run(app, client, alice, "a")
    theirs, their_run = job_with_run(app, client, bob, "b")
    log(client, bob, their_run, [{"key": "secret", "value": 1.0, "step": 0, "timestamp": 1}])
    body = read(client, alice, jobs=f"{mine},{theirs},999999").get_json()
    assert [job["job"] for job in body["jobs"]] == [mine]
    assert body["missing"] == [theirs, 999999]
    assert "secret" not in json.dumps(body) and their_run not in json.dumps(body)
    everyone = read(client, admin, jobs=f"{theirs},{mine}").get_json()
    assert [job["job"] for job in everyone["jobs"]] == [theirs, mine]
    assert everyone["jobs"][0]["metrics"]["secret"]["values"] == [1.0]
    assert client.get(URL, query_string={"jobs": str(mine)}).status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({}, "jobs"),
        ({"jobs": ""}, "jobs"),
        ({"jobs": "1,x"}, "jobs"),
        ({"jobs": "0"}, "jobs"),
        ({"jobs": "-3"}, "jobs"),
        ({"jobs": "9" * 40}, "jobs"),
        ({"jobs": ",".join(str(i) for i in range(1, 22))}, "jobs"),
        ({"jobs": "1", "keys": ",".join(f"k{i}" for i in range(201))}, "keys"),
        ({"jobs": "1", "keys": ","}, "keys"),
        ({"jobs": "1", "keys": "x" * 251}, "keys"),
        ({"jobs": "1", "points": "9"}, "points"),
        ({"jobs": "1", "points": "5001"}, "points"),
        ({"jobs": "1", "points": "many"}, "points"),
        ({"jobs": "1", "step": "3"}, "step"),
    ],
)
def test_caps_and_bad_input_are_400s_naming_the_field(client, alice, query, field):
    response = read(client, alice, **query)
    assert response.status_code == 400, response.get_data(True)
    error = response.get_json()["error"]
    assert error["code"] == "invalid_fields"
    assert field in error["message"]


def test_the_caps_themselves_are_allowed(app, client, alice):
    job_id, run_id = job_with_run(app, client, alice)
    log(client, alice, run_id, [{"key": "k0", "value": 1.0, "step": 0, "timestamp": 1}])
    jobs = ",".join([str(job_id)] + [str(10_000 + i) for i in range(19)])
    keys = ",".join(f"k{i}" for i in range(200))
    response = read(client, alice, jobs=jobs, keys=keys, points=10)
    assert response.status_code == 200, response.get_data(True)
    body = response.get_json()
    assert body["jobs"][0]["metrics"] == {"k0": {"steps": [0], "values": [1.0], "timestamps": [1]}}
    assert len(body["missing"]) == 19
