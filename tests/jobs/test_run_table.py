"""The job list as a run table: search, sort, filter and page over trainflow's jobs and MLflow's
runs; a job's tags and note; deleting a job with its run. SQLite and PostgreSQL alike.

Jobs are submitted through the API (each gets a real MLflow run) and their metrics logged
through MLflow's own REST API; no scheduler runs, so a test sets a job's times and status in
the database where it needs them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from tests.scripts.test_upload import TRAIN_PY, post_file
from trainflow.db import db
from trainflow.jobs.models import Job

JOBS = "/ajax-api/2.0/mlflow/train/jobs"
API = "/api/2.0/mlflow"


def submit(client, user, **fields: Any) -> dict[str, Any]:
    script_name = fields.pop("script_name", "train.py")
    script = post_file(client, user, script_name, TRAIN_PY).json["script"]
    answer = client.post(JOBS, json={"script_id": script, **fields}, headers=user.basic)
    assert answer.status_code == 201, answer.json
    return answer.json  # type: ignore[no-any-return]


def log_metrics(client, user, run_id: str, **values: float) -> None:
    now = int(time.time() * 1000)
    metrics = [{"key": k, "value": v, "timestamp": now, "step": 0} for k, v in values.items()]
    answer = client.post(
        f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}, headers=user.basic
    )
    assert answer.status_code == 200, answer.json


def set_job(app, job_id: int, **values: Any) -> None:
    with app.app_context():
        db.session.execute(update(Job).where(Job.id == job_id).values(**values))
        db.session.commit()


def listed(client, user, **query: Any) -> dict[str, Any]:
    answer = client.get(JOBS, query_string=query, headers=user.basic)
    assert answer.status_code == 200, answer.json
    return answer.json  # type: ignore[no-any-return]


def ids(page: dict[str, Any]) -> list[int]:
    return [job["job"] for job in page["list"]]


# --- search ---------------------------------------------------------------------------------


def test_search_finds_a_job_by_each_field_ignoring_case(app, client, alice, bob, admin):
    a = submit(client, alice, run_name="Sunny-Baseline", params={"learning_rate": 0.25})
    b = submit(client, alice, script_name="resnet_Trainer.py", params={"optimizer": "AdamW"})
    c = submit(client, bob, run_name="bobs-run")
    set_job(app, b["job"], status="FAILED", finished_at=datetime.now(UTC))
    assert (
        client.patch(f"{JOBS}/{a['job']}", json={"tags": {"team": "Vision"}}, headers=alice.basic).status_code
        == 200
    )
    assert (
        client.patch(
            f"{JOBS}/{b['job']}", json={"note": "Diverged after Warmup"}, headers=alice.basic
        ).status_code
        == 200
    )
    cases = {
        "sunny-base": [a],  # run name
        "RESNET": [b],  # script name
        "learning_r": [a],  # a param's key
        "adamw": [b],  # a param's value
        "failed": [b],  # status
        "vision": [a],  # a tag's value
        "TEAM": [a],  # a tag's key
        "warmup": [b],  # the note
        "no-such-thing": [],
    }
    for q, expected in cases.items():
        page = listed(client, alice, q=q)
        assert ids(page) == [job["job"] for job in expected], q
        assert page["total"] == len(expected), q
    # A username: admins see everyone's jobs, so a search for a user finds that user's.
    assert ids(listed(client, admin, q="BOB")) == [c["job"]]
    assert set(ids(listed(client, admin, q="alice"))) == {a["job"], b["job"]}


def test_search_finds_a_run_renamed_in_mlflow_and_the_list_shows_the_new_name(client, alice):
    job = submit(client, alice, run_name="before")
    answer = client.post(
        f"{API}/runs/update", json={"run_id": job["run_id"], "run_name": "After-Rename"}, headers=alice.basic
    )
    assert answer.status_code == 200, answer.json
    page = listed(client, alice, q="after-ren")
    assert ids(page) == [job["job"]]
    assert page["list"][0]["run_name"] == "After-Rename"
    assert page["list"][0]["experiment_name"] == "alice/train"
    assert listed(client, alice, q="before")["total"] == 0


def test_search_finds_tags_written_in_any_script(client, alice):
    job = submit(client, alice)
    answer = client.patch(
        f"{JOBS}/{job['job']}", json={"tags": {"data": "中文标签"}, "note": "学习率太高"}, headers=alice.basic
    )
    assert answer.status_code == 200, answer.json
    assert ids(listed(client, alice, q="中文")) == [job["job"]]
    assert ids(listed(client, alice, q="学习率")) == [job["job"]]


def test_a_search_term_with_like_wildcards_is_taken_literally(client, alice):
    literal = submit(client, alice, run_name="100%_done")
    submit(client, alice, run_name="100 and done")
    assert ids(listed(client, alice, q="100%_")) == [literal["job"]]
    assert listed(client, alice, q="%")["total"] == 1


def test_another_users_jobs_never_appear_in_results_or_totals(client, alice, bob):
    mine = submit(client, alice, run_name="shared-word", params={"lr": 1})
    theirs = [submit(client, bob, run_name="shared-word", params={"lr": 2}) for _ in range(2)]
    for run in [mine, *theirs]:
        log_metrics(client, alice if run is mine else bob, run["run_id"], loss=1.0)
    for query in (
        {},
        {"q": "shared"},
        {"sort": "metrics.loss"},
        {"sort": "params.lr", "order": "asc"},
        {"sort": "user"},
        {"experiment_id": theirs[0]["experiment_id"]},
        {"q": "bob"},
    ):
        page = listed(client, alice, **query)
        assert all(job["user"] == "alice" for job in page["list"]), query
        assert page["total"] == (0 if "experiment_id" in query or query.get("q") == "bob" else 1), query
    assert client.get(f"{JOBS}/{theirs[0]['job']}", headers=alice.basic).status_code == 404


# --- sorting --------------------------------------------------------------------------------


def test_metrics_sort_as_numbers_with_missing_values_last_in_both_orders(client, alice):
    values = {"a": 10.0, "b": 9.5, "c": -2.0, "d": None, "e": 100.0}
    jobs = {}
    for name, value in values.items():
        jobs[name] = submit(client, alice, run_name=name)
        if value is not None:
            log_metrics(client, alice, jobs[name]["run_id"], loss=value, acc=0.5)
        else:
            log_metrics(client, alice, jobs[name]["run_id"], acc=0.5)  # logged others, not this one
    asc = listed(client, alice, sort="metrics.loss", order="asc", metrics="loss,acc")
    assert [job["run_name"] for job in asc["list"]] == ["c", "b", "a", "e", "d"]
    assert asc["list"][0]["metrics"] == {"loss": -2.0, "acc": 0.5}
    assert asc["list"][-1]["metrics"] == {"acc": 0.5}
    assert asc["metric_keys"] == ["acc", "loss"]
    desc = listed(client, alice, sort="metrics.loss", order="desc")
    assert [job["run_name"] for job in desc["list"]] == ["e", "a", "b", "c", "d"]
    assert desc["list"][0]["metrics"] == {}  # none asked for


def test_params_sort_numbers_as_numbers_then_text_then_missing(client, alice):
    values: dict[str, Any] = {
        "p1": 0.1,
        "p2": "1e-3",
        "p3": 10,
        "p4": "adam",
        "p5": None,
        "p6": 9,
        "p7": "sgd",
    }
    for name, value in values.items():
        submit(client, alice, run_name=name, params={} if value is None else {"lr": value})
    asc = listed(client, alice, sort="params.lr", order="asc")
    assert [job["run_name"] for job in asc["list"]] == ["p2", "p1", "p6", "p3", "p4", "p7", "p5"]
    desc = listed(client, alice, sort="params.lr", order="desc")
    assert [job["run_name"] for job in desc["list"]] == ["p3", "p6", "p1", "p2", "p7", "p4", "p5"]
    assert asc["param_keys"] == ["lr"]


def test_job_columns_sort_both_ways_with_missing_last(app, client, alice, admin):
    now = datetime.now(UTC)
    first = submit(client, alice, run_name="bravo", script_name="zeta.py")
    second = submit(client, alice, run_name="alpha", script_name="alpha.py")
    third = submit(client, admin, run_name="charlie")  # never started
    set_job(
        app,
        first["job"],
        status="SUCCEEDED",
        started_at=now - timedelta(seconds=100),
        finished_at=now - timedelta(seconds=40),
    )
    set_job(app, second["job"], status="RUNNING", started_at=now - timedelta(seconds=30))
    f, s, t = first["job"], second["job"], third["job"]
    expected = {
        "job": ([f, s, t], [t, s, f]),
        "created_at": ([f, s, t], [t, s, f]),
        "run_name": ([s, f, t], [t, f, s]),
        "script": ([s, t, f], [f, t, s]),  # alpha.py, train.py, zeta.py
        "status": ([t, s, f], [f, s, t]),  # QUEUED, RUNNING, SUCCEEDED
        "user": ([f, s, t], [t, s, f]),  # alice (ties by id), root-admin
        "experiment": ([s, f, t], [t, f, s]),  # alice/alpha, alice/zeta, root-admin/train
        "started_at": ([f, s, t], [s, f, t]),
        "finished_at": ([f, s, t], [f, t, s]),  # only one has finished: the rest by id, last
        "duration_s": ([s, f, t], [f, s, t]),  # 30 s (and counting), 60 s, never started
    }
    for column, (ascending, descending) in expected.items():
        assert ids(listed(client, admin, sort=column, order="asc")) == ascending, column
        assert ids(listed(client, admin, sort=column, order="desc")) == descending, column
    assert ids(listed(client, admin)) == [t, s, f]  # the default: newest first


def test_paging_through_ties_shows_every_job_once(client, alice):
    """Equal values, and jobs without the value, across page boundaries: each job once, in the
    same order as one big page, the ones without a value last."""
    jobs = [submit(client, alice)["job"] for _ in range(8)]
    for index, job_id in enumerate(jobs):
        run_id = client.get(f"{JOBS}/{job_id}", headers=alice.basic).json["run_id"]
        if index % 4 == 3:
            log_metrics(client, alice, run_id, other=1.0)  # no loss: sorts last
        else:
            log_metrics(client, alice, run_id, loss=1.0 if index % 2 else 2.0)
    missing = [jobs[3], jobs[7]]
    for order in ("asc", "desc"):
        for sort in ("metrics.loss", "params.none", "finished_at"):
            seen: list[int] = []
            for page in (1, 2, 3, 4):
                answer = listed(client, alice, sort=sort, order=order, size=3, page=page)
                assert answer["total"] == 8, (sort, page)
                seen += ids(answer)
            assert sorted(seen) == sorted(jobs), (sort, order)
            full = ids(listed(client, alice, sort=sort, order=order, size=100))
            assert seen == full, (sort, order)
        loss_order = ids(listed(client, alice, sort="metrics.loss", order=order, size=100))
        assert sorted(loss_order[-2:]) == sorted(missing), order


def test_the_experiment_filter_keeps_one_experiments_jobs(client, alice):
    a = submit(client, alice, experiment_name="alice/vision")
    submit(client, alice, experiment_name="alice/text")
    page = listed(client, alice, experiment_id=a["experiment_id"])
    assert ids(page) == [a["job"]] and page["total"] == 1
    assert page["list"][0]["experiment_name"] == "alice/vision"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"sort": "colour"}, "sort"),
        ({"sort": "metrics."}, "sort"),
        ({"order": "sideways"}, "order"),
        ({"experiment_id": "abc"}, "experiment_id"),
        ({"metrics": ",".join(f"m{i}" for i in range(21))}, "metrics"),
        ({"q": "x" * 201}, "q"),
        ({"page": "0"}, "page"),
    ],
)
def test_bad_list_queries_are_400s_naming_the_field(client, alice, query, field):
    answer = client.get(JOBS, query_string=query, headers=alice.basic)
    assert answer.status_code == 400, answer.json
    assert field in answer.json["error"]["message"]
    assert [f["field"] for f in answer.json["error"]["fields"]] == [field]


# --- tags and note --------------------------------------------------------------------------


def test_the_owner_tags_and_annotates_a_job_and_others_cannot(client, alice, bob, admin):
    job = submit(client, alice)
    url = f"{JOBS}/{job['job']}"
    answer = client.patch(
        url,
        json={"tags": {"team": "vision", "stage": "ablation"}, "note": "lr too high?"},
        headers=alice.basic,
    )
    assert answer.status_code == 200, answer.json
    assert (
        answer.json["tags"] == {"stage": "ablation", "team": "vision"}
        and answer.json["note"] == "lr too high?"
    )
    # A field left out stays; tags replace the old ones; an empty note removes it.
    assert client.patch(url, json={"note": ""}, headers=alice.basic).json["tags"] == {
        "stage": "ablation",
        "team": "vision",
    }
    shown = client.get(url, headers=alice.basic).json
    assert shown["note"] == "" and shown["tags"] == {"stage": "ablation", "team": "vision"}
    assert client.patch(url, json={"tags": {"only": "one"}}, headers=alice.basic).json["tags"] == {
        "only": "one"
    }
    refused = client.patch(url, json={"note": "mine now"}, headers=bob.basic)
    assert refused.status_code == 404, refused.json
    assert client.get(url, headers=alice.basic).json["note"] == ""
    assert client.patch(url, json={"note": "checked by an admin"}, headers=admin.basic).status_code == 200
    assert client.get(url, headers=alice.basic).json["note"] == "checked by an admin"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tags": {f"t{i}": "v" for i in range(21)}}, "tags"),
        ({"tags": {"bad key!": "v"}}, "tags"),
        ({"tags": {"k": "v" * 251}}, "tags"),
        ({"tags": {"k": 1}}, "tags.k"),
        ({"tags": ["k"]}, "tags"),
        ({"note": "n" * 10_001}, "note"),
        ({"note": 5}, "note"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_housekeeping_is_a_400_naming_the_field_and_changes_nothing(client, alice, body, field):
    job = submit(client, alice)
    url = f"{JOBS}/{job['job']}"
    client.patch(url, json={"tags": {"keep": "me"}}, headers=alice.basic)
    answer = client.patch(url, json=body, headers=alice.basic)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["fields"][0]["field"] == field, answer.json
    assert client.get(url, headers=alice.basic).json["tags"] == {"keep": "me"}


def test_twenty_tags_and_a_ten_thousand_character_note_are_kept(client, alice):
    job = submit(client, alice)
    tags = {f"tag_{i}": "v" * 250 for i in range(20)}
    answer = client.patch(
        f"{JOBS}/{job['job']}", json={"tags": tags, "note": "n" * 10_000}, headers=alice.basic
    )
    assert answer.status_code == 200, answer.json
    shown = client.get(f"{JOBS}/{job['job']}", headers=alice.basic).json
    assert shown["tags"] == tags and len(shown["note"]) == 10_000


# --- deleting a job with its run ------------------------------------------------------------


def run_stage(client, user, run_id: str) -> str:
    answer = client.get(f"{API}/runs/get", query_string={"run_id": run_id}, headers=user.basic)
    assert answer.status_code == 200, answer.json
    return answer.json["run"]["info"]["lifecycle_stage"]  # type: ignore[no-any-return]


def test_deleting_a_job_keeps_its_run_unless_asked_to_delete_it_too(app, client, alice):
    kept, dropped = submit(client, alice), submit(client, alice)
    for job in (kept, dropped):
        set_job(app, job["job"], status="SUCCEEDED", finished_at=datetime.now(UTC))
    assert client.delete(f"{JOBS}/{kept['job']}", headers=alice.basic).status_code == 204
    assert run_stage(client, alice, kept["run_id"]) == "active"
    assert client.delete(f"{JOBS}/{dropped['job']}?delete_run=true", headers=alice.basic).status_code == 204
    assert run_stage(client, alice, dropped["run_id"]) == "deleted"
    assert listed(client, alice)["total"] == 0


def test_delete_run_needs_mlflows_own_permission_and_refusing_deletes_nothing(app, client, alice, bob, admin):
    from trainflow.tracking.permissions import Permission

    shared = submit(client, admin, experiment_name="team-shared")
    with app.app_context():
        app.extensions["trainflow.mlflow_authorizer"].grant(
            alice.id, "experiment", shared["experiment_id"], Permission.EDIT
        )
        db.session.commit()
    job = submit(client, alice, experiment_name="team-shared")  # EDIT: may add runs, not delete them
    set_job(app, job["job"], status="FAILED", finished_at=datetime.now(UTC))
    refused = client.delete(f"{JOBS}/{job['job']}?delete_run=true", headers=alice.basic)
    assert refused.status_code == 403, refused.json
    assert client.get(f"{JOBS}/{job['job']}", headers=alice.basic).status_code == 200
    assert run_stage(client, alice, job["run_id"]) == "active"
    # Someone else's job is not found, whatever is asked; an admin may delete both.
    assert client.delete(f"{JOBS}/{job['job']}?delete_run=true", headers=bob.basic).status_code == 404
    assert client.delete(f"{JOBS}/{job['job']}?delete_run=maybe", headers=alice.basic).status_code == 400
    assert client.delete(f"{JOBS}/{job['job']}?delete_run=true", headers=admin.basic).status_code == 204
    assert run_stage(client, admin, job["run_id"]) == "deleted"


def test_a_running_job_is_not_deleted_nor_its_run(app, client, alice):
    job = submit(client, alice)
    set_job(app, job["job"], status="RUNNING", started_at=datetime.now(UTC))
    answer = client.delete(f"{JOBS}/{job['job']}?delete_run=true", headers=alice.basic)
    assert answer.status_code == 409, answer.json
    assert run_stage(client, alice, job["run_id"]) == "active"
