"""Parameter sweeps: trials as ordinary jobs, a parent run that follows them, ranking, rerun,
cancel and privacy. The scheduler runs on the fake executor (nothing runs: each trial ends when
the test says), so what is checked is what a user sees through the API and in MLflow."""

from __future__ import annotations

import io
import itertools
import json
import math
import threading

import pytest

from tests.conftest import dispose
from tests.jobs.test_scheduler_rules import Queue
from tests.tracking.test_official_client import run_client
from trainflow.app import create_app
from trainflow.jobs.models import JobStatus

TRAIN = "/ajax-api/2.0/mlflow/train"
SWEEPS = f"{TRAIN}/sweeps"


@pytest.fixture
def make_queue(settings, make_user):  # type: ignore[no-untyped-def]
    """make_queue(max_concurrent_jobs=2) -> a Queue (fake executor) on an app with those settings."""
    apps = []

    def make(**changes) -> Queue:  # type: ignore[no-untyped-def]
        app = create_app(settings.replace(**changes))
        apps.append(app)
        return Queue(app, app.test_client())

    yield make
    for app in apps:
        dispose(app)


@pytest.fixture
def queue(make_queue) -> Queue:  # type: ignore[no-untyped-def]
    return make_queue(max_concurrent_jobs=10)


def upload(queue: Queue, user) -> int:  # type: ignore[no-untyped-def]
    answer = queue.client.post(
        f"{TRAIN}/upload",
        data={"file": (io.BytesIO(b"print('hi')\n"), "train.py")},
        headers=user.basic,
        content_type="multipart/form-data",
    )
    assert answer.status_code == 201, answer.json
    return int(answer.json["script"])


def sweep(queue: Queue, user, status: int = 201, **body):  # type: ignore[no-untyped-def]
    body.setdefault("script_id", upload(queue, user))
    answer = queue.client.post(SWEEPS, json=body, headers=user.basic)
    assert answer.status_code == status, answer.json
    return answer.json


def grid(queue: Queue, user, **body):  # type: ignore[no-untyped-def]
    return sweep(queue, user, strategy="grid", params={"lr": [0.1, 0.01], "batch": [32, 64]}, **body)


def show(queue: Queue, user, sweep_id: int):  # type: ignore[no-untyped-def]
    answer = queue.client.get(f"{SWEEPS}/{sweep_id}", headers=user.basic)
    assert answer.status_code == 200, answer.json
    return answer.json


def run_of(queue: Queue, user, run_id: str):  # type: ignore[no-untyped-def]
    answer = queue.client.get("/api/2.0/mlflow/runs/get", query_string={"run_id": run_id}, headers=user.basic)
    assert answer.status_code == 200, answer.json
    return answer.json["run"]


def children(queue: Queue, user, created):  # type: ignore[no-untyped-def]
    answer = queue.client.post(
        "/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [created["experiment_id"]],
            "filter": f"tags.mlflow.parentRunId = '{created['run_id']}'",
        },
        headers=user.basic,
    )
    assert answer.status_code == 200, answer.json
    return answer.json.get("runs", [])


def log_metric(queue: Queue, user, run_id: str, key: str, value: float, step: int = 0) -> None:  # type: ignore[no-untyped-def]
    answer = queue.client.post(
        "/api/2.0/mlflow/runs/log-metric",
        json={"run_id": run_id, "key": key, "value": value, "timestamp": 1 + step, "step": step},
        headers=user.basic,
    )
    assert answer.status_code == 200, answer.json


def finish_all(queue: Queue, trials, exit_code: int = 0) -> None:  # type: ignore[no-untyped-def]
    queue.tick()
    for trial in trials:
        queue.executor.exit(trial["job"]["job"], exit_code)
    queue.tick()


def test_a_grid_sweep_runs_every_combination_as_child_runs_and_ends_finished(queue, alice):
    created = grid(queue, alice, name="lr-batch", metric="val_loss")
    trials = created["list"]
    assert created["status"] == "RUNNING" and created["trials"] == 4 and created["done"] == 0
    assert created["counts"] == {"QUEUED": 4}
    assert sorted((t["job"]["params"]["lr"], t["job"]["params"]["batch"]) for t in trials) == sorted(
        itertools.product([0.1, 0.01], [32, 64])
    )
    assert {t["job"]["sweep_id"] for t in trials} == {created["sweep"]}
    listed = queue.client.get(f"{TRAIN}/jobs", headers=alice.basic).json
    assert sorted(j["sweep_id"] for j in listed["list"]) == [created["sweep"]] * 4  # ordinary jobs
    parent = run_of(queue, alice, created["run_id"])
    assert parent["info"]["status"] == "RUNNING" and parent["info"]["run_name"] == "lr-batch"
    spec = {p["key"]: p["value"] for p in parent["data"]["params"]}
    assert spec["sweep.strategy"] == "grid" and spec["sweep.trials"] == "4"
    assert spec["sweep.space.lr"] == "[0.1, 0.01]" and spec["sweep.metric"] == "val_loss"
    found = children(queue, alice, created)
    assert sorted(r["info"]["run_id"] for r in found) == sorted(t["job"]["run_id"] for t in trials)

    finish_all(queue, trials)
    done = show(queue, alice, created["sweep"])
    assert done["status"] == "FINISHED" and done["done"] == 4 and done["counts"] == {"SUCCEEDED": 4}
    assert done["finished_at"]
    assert run_of(queue, alice, created["run_id"])["info"]["status"] == "FINISHED"


def test_a_random_sweep_with_a_seed_draws_the_same_trials_within_bounds(queue, alice):
    space = {
        "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-1},
        "batch": {"distribution": "choice", "values": [32, 64]},
        "dropout": {"distribution": "uniform", "low": 0, "high": 0.5},
        "layers": {"distribution": "int", "low": 2, "high": 8},
    }
    script = upload(queue, alice)

    def draw(**extra):  # type: ignore[no-untyped-def]
        made = sweep(queue, alice, script_id=script, strategy="random", params=space, trials=20, **extra)
        return made, sorted((t["job"]["job"], t["job"]["params"]) for t in made["list"])

    first, first_params = draw(seed=7)
    _, again_params = draw(seed=7)
    _, other_params = draw(seed=8)
    assert first["seed"] == 7 and first["trials"] == 20
    as_drawn = [p for _, p in first_params]
    assert as_drawn == [p for _, p in again_params]
    assert as_drawn != [p for _, p in other_params]
    for params in as_drawn:
        assert 1e-4 <= params["lr"] <= 1e-1 and params["batch"] in (32, 64)
        assert (
            0 <= params["dropout"] <= 0.5 and isinstance(params["layers"], int) and 2 <= params["layers"] <= 8
        )
    assert len({p["lr"] for p in as_drawn}) > 10
    # loguniform: about as many draws below 10^-2.5 as above
    assert 4 <= sum(math.log10(p["lr"]) < -2.5 for p in as_drawn) <= 16

    unseeded, unseeded_params = draw()
    assert unseeded["seed"] is not None  # chosen and recorded, so it can be drawn again
    _, replay_params = draw(seed=unseeded["seed"])
    assert [p for _, p in unseeded_params] == [p for _, p in replay_params]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"strategy": "grid", "params": {}}, "params"),
        ({"strategy": "grid", "params": {"lr": []}}, "params.lr"),
        ({"strategy": "grid", "params": {"lr": 0.1}}, "params.lr"),
        ({"strategy": "grid", "params": {"bad name": [1]}}, "params.bad name"),
        ({"strategy": "grid", "params": {"lr": [[1]]}}, "params.lr.0"),
        ({"strategy": "grid", "params": {"lr": [1]}, "trials": 3}, "trials"),
        ({"strategy": "grid", "params": {"lr": [1]}, "seed": 3}, "seed"),
        (
            {
                "strategy": "grid",
                "params": {"a": list(range(11)), "b": list(range(11)), "c": list(range(11))},
            },
            "params",
        ),
        (
            {"strategy": "random", "params": {"lr": {"distribution": "uniform", "low": 0, "high": 1}}},
            "trials",
        ),
        ({"strategy": "random", "params": {"lr": [1, 2]}, "trials": 3}, "params.lr"),
        (
            {
                "strategy": "random",
                "params": {"lr": {"distribution": "uniform", "low": 0, "high": 1}},
                "trials": 1001,
            },
            "trials",
        ),
        (
            {
                "strategy": "random",
                "params": {"lr": {"distribution": "uniform", "low": 1, "high": 0}},
                "trials": 3,
            },
            "params.lr",
        ),
        (
            {
                "strategy": "random",
                "params": {"lr": {"distribution": "loguniform", "low": 0, "high": 1}},
                "trials": 3,
            },
            "params.lr",
        ),
        (
            {
                "strategy": "random",
                "params": {"n": {"distribution": "int", "low": 1.5, "high": 4}},
                "trials": 3,
            },
            "params.n",
        ),
        ({"strategy": "random", "params": {"c": {"distribution": "choice"}}, "trials": 3}, "params.c"),
        (
            {
                "strategy": "random",
                "params": {"c": {"distribution": "normal", "low": 0, "high": 1}},
                "trials": 3,
            },
            "params.c.distribution",
        ),
        (
            {
                "strategy": "random",
                "params": {"c": {"distribution": "uniform", "low": 0, "high": 1, "mu": 2}},
                "trials": 3,
            },
            "params.c.mu",
        ),
        ({"strategy": "bayes", "params": {"lr": [1]}}, "strategy"),
        ({"strategy": "grid", "params": {"lr": [1]}, "goal": "lowest"}, "goal"),
        ({"strategy": "grid", "params": {"lr": [1]}, "metric": "bad\nmetric"}, "metric"),
        ({"strategy": "grid", "params": {"lr": [1]}, "env": {"MLFLOW_RUN_ID": "x"}}, "env"),
        ({"strategy": "grid", "params": {"lr": [1]}, "timeout_s": 0}, "timeout_s"),
        ({"strategy": "grid", "params": {"lr": [1]}, "gpus": 1}, "gpus"),
    ],
)
def test_a_bad_sweep_is_refused_with_a_400_naming_the_field(queue, alice, body, field):
    answer = sweep(queue, alice, status=400, **body)
    assert field in answer["error"]["message"], answer
    assert queue.client.get(SWEEPS, headers=alice.basic).json["total"] == 0
    assert queue.client.get(f"{TRAIN}/jobs", headers=alice.basic).json["total"] == 0


def test_a_sweep_of_another_users_script_is_not_found(queue, alice, bob):
    script = upload(queue, alice)
    refused = sweep(queue, bob, status=404, script_id=script, strategy="grid", params={"lr": [1]})
    assert "script" in refused["error"]["message"].lower()


def test_the_cap_is_a_thousand_trials(queue, alice):
    made = sweep(
        queue,
        alice,
        strategy="grid",
        params={"a": list(range(10)), "b": list(range(10)), "c": list(range(10))},
    )
    assert made["trials"] == 1000 and len(made["list"]) == 1000


def test_trials_are_ranked_by_the_metrics_latest_value_missing_last(queue, alice):
    made = grid(queue, alice, metric="val_loss", goal="min")
    by_params = {(t["job"]["params"]["lr"], t["job"]["params"]["batch"]): t["job"] for t in made["list"]}
    values = {(0.1, 32): 0.5, (0.01, 64): 0.2, (0.1, 64): 0.9}  # (0.01, 32) logs nothing
    for key, value in values.items():
        log_metric(queue, alice, by_params[key]["run_id"], "val_loss", value + 1, step=0)  # an earlier value
        log_metric(queue, alice, by_params[key]["run_id"], "val_loss", value, step=1)
    log_metric(queue, alice, by_params[(0.01, 32)]["run_id"], "other", 0.0)

    ranked = show(queue, alice, made["sweep"])["list"]
    assert [t["value"] for t in ranked] == [0.2, 0.5, 0.9, None]
    assert [t["rank"] for t in ranked] == [1, 2, 3, 4]
    assert ranked[-1]["job"]["job"] == by_params[(0.01, 32)]["job"]

    best_high = grid(queue, alice, metric="val_loss", goal="max", script_id=made["script_id"])
    for trial in best_high["list"]:
        log_metric(
            queue,
            alice,
            trial["job"]["run_id"],
            "val_loss",
            trial["job"]["params"]["lr"] * trial["job"]["params"]["batch"],
        )
    ranked = show(queue, alice, best_high["sweep"])["list"]
    assert [t["value"] for t in ranked] == [6.4, 3.2, 0.64, 0.32]


def test_rerun_queues_failed_trials_again_as_new_child_runs_and_keeps_the_old(queue, alice):
    made = sweep(queue, alice, strategy="grid", params={"lr": [0.1, 0.2, 0.3]})
    first, second, third = (t["job"] for t in made["list"])
    queue.tick()
    queue.executor.exit(first["job"], 0)
    queue.executor.exit(second["job"], 3)
    queue.executor.exit(third["job"], None, reason="timed_out")
    queue.tick()
    ended = show(queue, alice, made["sweep"])
    assert ended["status"] == "FAILED" and ended["done"] == 3
    assert ended["counts"] == {"SUCCEEDED": 1, "FAILED": 1, "TIMED_OUT": 1}
    assert run_of(queue, alice, made["run_id"])["info"]["status"] == "FAILED"

    answer = queue.client.post(f"{SWEEPS}/{made['sweep']}/rerun", headers=alice.basic)
    assert answer.status_code == 200, answer.json
    rerun = answer.json
    assert (
        rerun["status"] == "RUNNING"
        and rerun["trials"] == 3
        and rerun["counts"] == {"SUCCEEDED": 1, "QUEUED": 2}
    )
    assert run_of(queue, alice, made["run_id"])["info"]["status"] == "RUNNING"
    old = {t["job"]["job"]: t for t in rerun["list"]}
    assert old[second["job"]]["superseded_by"] and old[third["job"]]["superseded_by"]
    assert old[second["job"]]["rank"] is None and old[first["job"]]["superseded_by"] is None
    new = [old[t]["superseded_by"] for t in (second["job"], third["job"])]
    news = {t["job"]["job"]: t["job"] for t in rerun["list"] if t["job"]["job"] in new}
    assert [news[n]["params"] for n in new] == [second["params"], third["params"]]
    assert {news[n]["run_id"] for n in new}.isdisjoint({second["run_id"], third["run_id"]})
    assert len(children(queue, alice, made)) == 5  # the old runs stay, beside the new
    assert old[second["job"]]["job"]["status"] == "FAILED"  # kept as it ended

    queue.tick()
    for job_id in new:
        queue.executor.exit(job_id, 0)
    queue.tick()
    assert show(queue, alice, made["sweep"])["status"] == "FINISHED"
    assert run_of(queue, alice, made["run_id"])["info"]["status"] == "FINISHED"
    again = queue.client.post(f"{SWEEPS}/{made['sweep']}/rerun", headers=alice.basic)
    assert again.status_code == 409, again.json


def test_cancel_ends_queued_trials_stops_running_ones_and_the_sweep_is_killed(make_queue, alice):
    queue = make_queue(max_concurrent_jobs=1)
    made = sweep(queue, alice, strategy="grid", params={"lr": [0.1, 0.2, 0.3]})
    queue.tick()
    running = queue.executor.running()
    assert len(running) == 1
    answer = queue.client.post(f"{SWEEPS}/{made['sweep']}/cancel", headers=alice.basic)
    assert answer.status_code == 202, answer.json
    assert answer.json["status"] == "RUNNING" and answer.json["counts"] == {"RUNNING": 1, "CANCELLED": 2}
    assert running[0] in queue.executor.cancelled
    queue.executor.exit(running[0], None, reason="cancelled")
    queue.tick()
    ended = show(queue, alice, made["sweep"])
    assert ended["status"] == "KILLED" and ended["counts"] == {"CANCELLED": 3}
    assert run_of(queue, alice, made["run_id"])["info"]["status"] == "KILLED"
    again = queue.client.post(f"{SWEEPS}/{made['sweep']}/cancel", headers=alice.basic)
    assert again.status_code == 200 and again.json["status"] == "KILLED"


def test_a_sweep_is_deleted_only_once_it_has_ended(queue, alice):
    made = grid(queue, alice)
    refused = queue.client.delete(f"{SWEEPS}/{made['sweep']}", headers=alice.basic)
    assert refused.status_code == 409 and "cancel it first" in refused.json["error"]["message"]
    finish_all(queue, made["list"])
    assert queue.client.delete(f"{SWEEPS}/{made['sweep']}", headers=alice.basic).status_code == 204
    assert queue.client.get(f"{SWEEPS}/{made['sweep']}", headers=alice.basic).status_code == 404
    assert queue.client.get(f"{TRAIN}/jobs", headers=alice.basic).json["total"] == 0
    assert run_of(queue, alice, made["run_id"])["info"]["status"] == "FINISHED"  # MLflow keeps it


def test_another_user_gets_404_and_sees_no_sweep_of_alices(queue, alice, bob, admin):
    made = grid(queue, alice)
    path = f"{SWEEPS}/{made['sweep']}"
    for method, url in [
        ("GET", path),
        ("POST", f"{path}/rerun"),
        ("POST", f"{path}/cancel"),
        ("DELETE", path),
    ]:
        answer = queue.client.open(url, method=method, headers=bob.basic)
        assert answer.status_code == 404, (method, url, answer.json)
    assert queue.client.get(SWEEPS, headers=bob.basic).json == {"total": 0, "page": 1, "size": 20, "list": []}
    assert queue.client.get(f"{TRAIN}/jobs", headers=bob.basic).json["total"] == 0
    assert show(queue, alice, made["sweep"])["status"] == "RUNNING"  # bob's cancel changed nothing
    seen = queue.client.get(SWEEPS, headers=admin.basic).json
    assert [s["sweep"] for s in seen["list"]] == [made["sweep"]] and seen["list"][0]["user"] == "alice"
    assert queue.client.get(path, headers=admin.basic).status_code == 200
    assert queue.client.get(SWEEPS, headers=alice.basic).json["total"] == 1
    assert queue.client.get(f"{SWEEPS}/0", headers=alice.basic).status_code == 404


def test_trials_wait_in_the_normal_queue_and_limits(make_queue, alice, bob):
    queue = make_queue(max_concurrent_jobs=2, max_jobs_per_user=1)
    made = grid(queue, alice)
    other = queue.submit(bob)
    queue.tick()
    first = min(t["job"]["job"] for t in made["list"])
    assert queue.executor.running() == [first, other]  # one of alice's at a time, bob's beside it
    counts = show(queue, alice, made["sweep"])["counts"]
    assert counts == {JobStatus.RUNNING.value: 1, JobStatus.QUEUED.value: 3}


OFFICIAL_CLIENT = """
    import json
    from mlflow import MlflowClient
    client = MlflowClient()
    parent = client.get_run("{parent}")
    trials = client.search_runs(["{experiment}"], filter_string="tags.mlflow.parentRunId = '{parent}'")
    print(json.dumps({
        "parent": parent.info.status,
        "params": parent.data.params,
        "trials": sorted(
            (r.info.run_id, r.data.params["lr"], r.data.params["batch"], r.info.status) for r in trials
        ),
    }))
"""


def test_the_official_mlflow_client_finds_the_trials_under_the_parent_run(queue, alice):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, queue.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    made = grid(queue, alice, name="official", metric="val_loss")
    auth = {"MLFLOW_TRACKING_USERNAME": alice.username, "MLFLOW_TRACKING_PASSWORD": alice.password}
    script = OFFICIAL_CLIENT.replace("{parent}", made["run_id"]).replace(
        "{experiment}", made["experiment_id"]
    )
    try:
        running = run_client(url, script, **auth)
        finish_all(queue, made["list"])
        finished = run_client(url, script, **auth)
    finally:
        server.shutdown()
        thread.join()
    assert running["parent"] == "RUNNING" and running["params"]["sweep.strategy"] == "grid"
    expected = sorted(
        (t["job"]["run_id"], str(t["job"]["params"]["lr"]), str(t["job"]["params"]["batch"]))
        for t in made["list"]
    )
    assert [tuple(t[:3]) for t in running["trials"]] == expected
    assert {t[3] for t in running["trials"]} == {"SCHEDULED"}
    assert finished["parent"] == "FINISHED"
    assert len(finished["trials"]) == 4 and {t[3] for t in finished["trials"]} == {"FINISHED"}


def test_deleting_a_user_deletes_their_sweeps_and_leaves_others(queue, alice, bob, admin):
    grid(queue, alice)
    kept = grid(queue, bob)
    queue.tick()  # alice's four trials are running (two running jobs once made this fail)
    answer = queue.client.delete(f"/api/users/{alice.id}", headers=admin.basic)
    assert answer.status_code == 204, answer.json
    listed = queue.client.get(SWEEPS, headers=admin.basic).json
    assert [s["sweep"] for s in listed["list"]] == [kept["sweep"]]
    assert show(queue, bob, kept["sweep"])["trials"] == 4


def test_a_trial_that_ends_while_others_wait_leaves_the_sweep_running(queue, alice):
    made = grid(queue, alice)
    queue.tick()
    queue.executor.exit(made["list"][0]["job"]["job"], 0)
    queue.tick()
    state = show(queue, alice, made["sweep"])
    assert state["status"] == "RUNNING" and state["done"] == 1
    assert run_of(queue, alice, made["run_id"])["info"]["status"] == "RUNNING"


def test_values_that_are_not_finite_numbers_are_refused(queue, alice):
    script = upload(queue, alice)
    for params, strategy, field in [
        ({"lr": [float("nan")]}, "grid", "params.lr.0"),
        ({"lr": {"distribution": "uniform", "low": 0, "high": float("inf")}}, "random", "params.lr.high"),
    ]:
        answer = queue.client.post(
            SWEEPS,
            data=json.dumps({"script_id": script, "strategy": strategy, "params": params, "trials": 2}),
            content_type="application/json",
            headers=alice.basic,
        )
        assert answer.status_code == 400, answer.json
        assert f"{field}: must be a finite number" in answer.json["error"]["message"], answer.json
