"""What submitting a job leaves in MLflow before the job starts (no scheduler runs here)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.scripts.test_upload import TRAIN_PY, post_file

JOBS = "/ajax-api/2.0/mlflow/train/jobs"


def test_a_queued_jobs_run_is_scheduled_and_names_its_job(client, alice):
    script = post_file(client, alice, "train.py", TRAIN_PY).json["script"]
    submitted = client.post(
        JOBS, json={"script_id": script, "run_name": "first-try", "params": {"lr": 0.1}}, headers=alice.basic
    )
    assert submitted.status_code == 201, submitted.json
    job = submitted.json
    response = client.get(
        "/api/2.0/mlflow/runs/get", query_string={"run_id": job["run_id"]}, headers=alice.basic
    )
    assert response.status_code == 200, response.json
    run = response.json["run"]
    assert run["info"]["status"] == "SCHEDULED"
    assert run["info"]["run_name"] == "first-try"
    tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
    assert tags["trainflow.job_id"] == str(job["job"])
    assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.user"] == "alice"
    assert run["data"]["params"] == [{"key": "lr", "value": "0.1"}]


def test_two_jobs_of_one_script_get_runs_of_their_own(client, alice):
    script = post_file(client, alice, "train.py", TRAIN_PY).json["script"]
    jobs = [client.post(JOBS, json={"script_id": script}, headers=alice.basic).json for _ in range(2)]
    assert jobs[0]["run_id"] != jobs[1]["run_id"]
    for job in jobs:
        run = client.get(
            "/api/2.0/mlflow/runs/get", query_string={"run_id": job["run_id"]}, headers=alice.basic
        )
        tags = {tag["key"]: tag["value"] for tag in run.json["run"]["data"]["tags"]}
        assert tags["trainflow.job_id"] == str(job["job"])


def test_a_script_a_job_uses_is_kept(client, alice):
    script = post_file(client, alice, "train.py", TRAIN_PY).json["script"]
    assert client.post(JOBS, json={"script_id": script}, headers=alice.basic).status_code == 201
    refused = client.delete(f"/ajax-api/2.0/mlflow/train/scripts/{script}", headers=alice.basic)
    assert refused.status_code == 409, refused.json
    assert "delete those jobs first" in refused.json["error"]["message"]
    kept = client.get(f"/ajax-api/2.0/mlflow/train/scripts/{script}", headers=alice.basic)
    assert kept.status_code == 200


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_first_jobs_of_a_script_submitted_at_once_share_one_experiment(app, alice):
    """The first submit makes the experiment; those racing it find it (one used to get MLflow's
    unique-name error as a 400 with SQL in it), and its owner may add runs to it at once."""
    first = app.test_client()
    script = post_file(first, alice, "train.py", TRAIN_PY).json["script"]
    barrier = threading.Barrier(8)

    def submit(_: int) -> tuple[int, Any]:
        client = app.test_client()
        barrier.wait()
        answer = client.post(JOBS, json={"script_id": script}, headers=alice.basic)
        return answer.status_code, answer.json

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, range(8)))
    assert [status for status, _ in answers] == [201] * 8, answers
    assert len({body["experiment_id"] for _, body in answers}) == 1
