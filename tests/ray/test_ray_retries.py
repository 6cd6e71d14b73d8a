"""A retried job on a real local Ray cluster: each attempt is a Ray job of its own, and the
second attempt's supervisor numbers its records after the first's (issue 14)."""

from __future__ import annotations

import pytest

from tests.ray.test_ray_jobs import TRAIN, Api, server  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.serial, pytest.mark.e2e]

FLAKY = b"""
import os, sys
attempt = os.environ["TRAINFLOW_ATTEMPT"]
print("attempt", attempt, "checkpoint", os.path.isdir(os.environ["TRAINFLOW_CHECKPOINT_DIR"]), flush=True)
sys.exit(0 if attempt == "2" else 5)
"""


def test_a_failed_ray_attempt_runs_again_as_a_ray_job_of_its_own(server):  # noqa: F811
    api = Api(server.url)
    job = api.submit({"train.py": FLAKY}, max_retries=1)
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", "CANCELLED")
    assert (done["status"], done["attempt"]) == ("SUCCEEDED", 2), done
    assert [(a["status"], a["exit_code"]) for a in done["attempts"]] == [("FAILED", 5), ("SUCCEEDED", 0)]
    events = api.events(job["job"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    logged = [(e["n"], e["line"]) for e in events if e["type"] == "log"]
    assert logged[0] == (1, "attempt 1 checkpoint True")
    assert "attempt 2 checkpoint True" in [line for _, line in logged]
    numbers = [n for n, _ in logged]
    assert numbers == list(range(1, len(numbers) + 1))  # numbered on across both supervisors
    second = api.call("GET", f"{TRAIN}/jobs/{job['job']}/logs", params={"attempt": 2}).json()["lines"]
    assert second[0]["line"] == "attempt 2 checkpoint True"
    assert api.run(job["run_id"])["info"]["status"] == "FINISHED"
