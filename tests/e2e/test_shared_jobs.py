"""Many jobs across two hosts of one deployment (#13): each runs once, within the global limit.

Both hosts run schedulers on one PostgreSQL database; jobs are submitted through either, and the
script was uploaded to host A only (host B fetches it from the shared artifact store).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.shared_hosts import TRAIN, Api, Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]
JOBS = 200
SLOTS = 3  # TRAINFLOW_MAX_CONCURRENT_JOBS on every host: one limit for the deployment
FINISHED = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"}


def all_jobs(api: Api) -> list[dict[str, Any]]:
    jobs, page = [], 1
    while True:
        answer = api.call("GET", f"{TRAIN}/jobs", params={"page": page, "size": 100}).json()
        jobs += answer["list"]
        if page * 100 >= answer["total"]:
            return jobs
        page += 1


def most_at_once(jobs: list[dict[str, Any]]) -> int:
    """The most jobs whose stored [start, end] overlap (an end before a start at the same instant)."""
    edges = []
    for job in jobs:
        edges.append((datetime.fromisoformat(job["started_at"]), 1))
        edges.append((datetime.fromisoformat(job["finished_at"]), -1))
    running = peak = 0
    for _, step in sorted(edges):
        running += step
        peak = max(peak, running)
    return peak


def test_two_hundred_jobs_through_two_hosts_each_run_once_within_the_global_limit(
    server_factory, database_url, redis_url, tmp_path
):
    deployment = Deployment(database_url, redis_url, tmp_path)
    limits = {"TRAINFLOW_MAX_CONCURRENT_JOBS": str(SLOTS), "TRAINFLOW_MAX_JOBS_PER_USER": str(SLOTS)}
    a = Api(deployment.start(server_factory, "a", **limits).url)
    b = Api(deployment.start(server_factory, "b", **limits).url)
    script = a.upload("print(1)\n", "tiny.py")
    with ThreadPoolExecutor(4) as pool:
        submitted = list(pool.map(lambda i: (a, b)[i % 2].submit(script)["job"], range(JOBS)))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        jobs = {job["job"]: job for job in all_jobs(b) if job["job"] in submitted}
        if all(job["status"] in FINISHED for job in jobs.values()):
            break
        time.sleep(1)
    assert sorted(jobs) == sorted(submitted)
    assert {job["status"] for job in jobs.values()} == {"SUCCEEDED"}, [
        (job["job"], job["status"], job["reason"]) for job in jobs.values() if job["status"] != "SUCCEEDED"
    ]
    assert most_at_once(list(jobs.values())) <= SLOTS
    once = [job_id for job_id in submitted if a.lines(job_id) == ["1"]]
    assert len(once) == JOBS, "each job printed its one line once: none ran twice"
    runners = {a.job(job_id)["runner"] for job_id in submitted[:40]}
    assert len(runners) == 2, f"both hosts ran jobs: {runners}"
