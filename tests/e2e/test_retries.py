"""Retries on the real server: a job that fails resumes from its checkpoint into the same MLflow
run, read back with the official client; a lost attempt runs again (issue 14)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import requests

from tests.e2e.shared_hosts import Deployment
from tests.e2e.test_cli_client import cli  # noqa: F401  (a fixture)
from tests.e2e.test_jobs import ADMIN, PASSWORD, TRAIN, Api, _supervisor_of
from tests.tracking.test_official_client import run_client

pytestmark = pytest.mark.e2e

# Steps 0-4 and a checkpoint, then exit 3 on attempt 1; attempt 2 resumes from the checkpoint
# and logs steps 5-9. Logged with the official client, as any script would.
RESUMING = """
    import json, os, sys
    from mlflow import MlflowClient
    attempt = int(os.environ["TRAINFLOW_ATTEMPT"])
    state = os.path.join(os.environ["TRAINFLOW_CHECKPOINT_DIR"], "state.json")
    start = json.load(open(state))["next"] if os.path.exists(state) else 0
    print(f"attempt {attempt} from step {start}", flush=True)
    client = MlflowClient()
    for step in range(start, start + 5):
        client.log_metric(os.environ["MLFLOW_RUN_ID"], "loss", 1.0 / (step + 1), step=step)
        print(f"step {step}", flush=True)
    with open(state, "w") as f:
        json.dump({"next": start + 5}, f)
    if attempt == 1:
        sys.exit(3)
"""

READ_RUN = """
    import json, os
    from mlflow import MlflowClient
    client = MlflowClient()
    run = client.get_run(os.environ["RUN_ID"])
    history = client.get_metric_history(os.environ["RUN_ID"], "loss")
    print(json.dumps({
        "status": run.info.status,
        "attempt_tag": run.data.tags.get("trainflow.attempt"),
        "steps": [m.step for m in history],
    }))
"""


@pytest.fixture
def server(server_factory, tmp_path, database_url):  # type: ignore[no-untyped-def]
    server = server_factory(
        tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1], TRAINFLOW_JOB_GRACE_SECONDS="2"
    )
    for name in ("alice", "bob"):
        requests.post(f"{server.url}/api/register", json={"username": name, "password": PASSWORD}, timeout=10)
    return server


def stream(api: Api, job_id: int) -> list[dict]:
    """The job's whole event stream (it has ended, so the response ends with its ``end``)."""
    response = api.call("GET", f"{TRAIN}/jobs/{job_id}/events")
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def attempt_lines(api: Api, job_id: int, attempt: int) -> list[str]:
    answer = api.call("GET", f"{TRAIN}/jobs/{job_id}/logs", params={"attempt": attempt}).json()
    return [line["line"] for line in answer["lines"]]


def test_a_failed_attempt_resumes_from_its_checkpoint_into_the_same_run(server, tmp_path):
    api = Api(server.url, ("alice", PASSWORD))
    job = api.submit(RESUMING, max_retries=2)
    assert_resumed(api, job)
    # Bob sees none of it.
    bob = Api(server.url, ("bob", PASSWORD))
    for path in ("", "/logs?attempt=1", "/events"):
        assert bob.call("GET", f"{TRAIN}/jobs/{job['job']}{path}").status_code == 404
    assert bob.call("GET", f"{TRAIN}/jobs").json()["total"] == 0
    # Deleting the job removes its checkpoint folder with the rest of its folder.
    checkpoint = tmp_path / "data" / "jobs" / str(job["job"]) / "checkpoint" / "state.json"
    assert checkpoint.exists()
    assert api.call("DELETE", f"{TRAIN}/jobs/{job['job']}").status_code == 204
    assert not checkpoint.parent.exists()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_in_shared_mode_a_retrys_supervisor_numbers_on_after_the_first(
    server_factory, database_url, redis_url, tmp_path
):
    """Supervisors send through the ingest here: the second one must number its records and
    lines after the first one's, or the servers would take them for repeats."""
    host = Deployment(database_url, redis_url, tmp_path).start(server_factory, "a")
    api = Api(host.url, ADMIN)
    assert_resumed(api, api.submit(RESUMING, max_retries=1))


def assert_resumed(api: Api, job: dict) -> None:
    """The RESUMING job ran twice into one run: as its API, its log, its stream and MLflow say."""
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", seconds=120)
    assert (done["status"], done["attempt"]) == ("SUCCEEDED", 2), done
    assert [(a["number"], a["status"], a["exit_code"]) for a in done["attempts"]] == [
        (1, "FAILED", 3),
        (2, "SUCCEEDED", 0),
    ]
    username, password = api.auth
    run = run_client(
        api.url,
        READ_RUN,
        MLFLOW_TRACKING_USERNAME=username,
        MLFLOW_TRACKING_PASSWORD=password,
        RUN_ID=job["run_id"],
    )
    assert run == {"status": "FINISHED", "attempt_tag": "2", "steps": list(range(10))}
    first, second = attempt_lines(api, job["job"], 1), attempt_lines(api, job["job"], 2)
    assert first == ["attempt 1 from step 0", *(f"step {i}" for i in range(5))]
    assert second == ["attempt 2 from step 5", *(f"step {i}" for i in range(5, 10))]
    events = [e for e in stream(api, job["job"]) if e["type"] != "heartbeat"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("end") == 1 and events[-1]["type"] == "end"
    assert [(e["status"], e.get("attempt")) for e in events if e["type"] == "status"] == [
        ("QUEUED", 1),
        ("RUNNING", 1),
        ("QUEUED", 2),
        ("RUNNING", 2),
        ("SUCCEEDED", 2),
    ]
    # Every line once, in order, numbered across both attempts.
    logged = [(e["n"], e["line"]) for e in events if e["type"] == "log"]
    assert logged == list(enumerate(first + second, start=1))


LOST_THEN_DONE = """
    import os, time
    attempt = int(os.environ["TRAINFLOW_ATTEMPT"])
    print(f"attempt {attempt}", flush=True)
    if attempt == 1:
        time.sleep(120)
"""


def test_an_attempt_lost_with_its_supervisor_is_run_again(server):
    api = Api(server.url, ADMIN, server.process.pid)
    job = api.submit(LOST_THEN_DONE, max_retries=1)
    os.kill(_supervisor_of(job["job"], server.process.pid), signal.SIGKILL)
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", "CANCELLED", seconds=60)
    assert (done["status"], done["attempt"]) == ("SUCCEEDED", 2)
    assert [a["status"] for a in done["attempts"]] == ["LOST", "SUCCEEDED"]
    assert attempt_lines(api, job["job"], 2) == ["attempt 2"]
    assert api.run(job["run_id"])["info"]["status"] == "FINISHED"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_command_line_submits_retries_and_follows_them(cli, tmp_path):  # noqa: F811
    cli("login", "--username", "alice", "--password", PASSWORD)
    flaky = tmp_path / "flaky.py"
    flaky.write_text(
        "import os, sys\nprint('try', os.environ['TRAINFLOW_ATTEMPT'], flush=True)\n"
        "sys.exit(0 if os.environ['TRAINFLOW_ATTEMPT'] == '2' else 4)\n"
    )
    result = cli("submit", str(flaky), "--max-retries", "1", "--follow")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["try 1", "try 2"]
    assert "Attempt 1 FAILED: Exited with code 4. Retrying: attempt 2 of 2." in result.stderr
    refused = cli("submit", str(flaky), "--max-retries", "11")
    assert refused.exit_code == 2 and "--max-retries" in refused.output


SLOW_FLAKY = """
    import os, sys, time
    attempt = os.environ["TRAINFLOW_ATTEMPT"]
    for i in range(3):
        print(f"attempt {attempt} line {i}", flush=True)
        time.sleep(0.3)
    sys.exit(0 if attempt == "2" else 1)
"""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_follower_that_reconnects_across_a_retry_sees_every_event_once(server):
    api = Api(server.url, ("alice", PASSWORD))
    job = api.submit(SLOW_FLAKY, max_retries=1)
    seen: list[dict] = []
    url = f"{server.url}{TRAIN}/jobs/{job['job']}/events"
    # Live from the start until the retry shows, then the connection drops ...
    with requests.get(url, auth=api.auth, stream=True, timeout=60) as response:
        for raw in response.iter_lines():
            event = json.loads(raw)
            if event["type"] != "heartbeat":
                seen.append(event)
            if event.get("retry"):
                break
    # ... and the follower resumes after the last seq it has, until the end.
    after = seen[-1]["seq"]
    with requests.get(url, params={"after": after}, auth=api.auth, stream=True, timeout=60) as response:
        for raw in response.iter_lines():
            event = json.loads(raw)
            if event["type"] != "heartbeat":
                seen.append(event)
            if event["type"] == "end":
                break
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
    assert [e["line"] for e in seen if e["type"] == "log"] == [
        f"attempt {a} line {i}" for a in (1, 2) for i in range(3)
    ]
    assert [e["type"] for e in seen].count("end") == 1
    assert seen == [e for e in stream(api, job["job"]) if e["type"] != "heartbeat"]
