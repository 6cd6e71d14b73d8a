"""The job page of a retried job in Chromium: its attempts, and each attempt's lines (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_dashboard import PASSWORD, XSS, run_flow, sqlite_only
from tests.e2e.test_jobs import Api

pytestmark = pytest.mark.e2e

# Attempt 1 prints two lines (one on stderr, one of markup) and fails; attempt 2 succeeds.
FLAKY = f"""
    import os, sys
    if os.environ["TRAINFLOW_ATTEMPT"] == "1":
        print("first try", flush=True)
        print({XSS!r}, flush=True)
        print("it broke", file=sys.stderr, flush=True)
        sys.exit(2)
    print("second try", flush=True)
"""


@sqlite_only
def test_the_job_page_lists_attempts_and_each_attempts_lines(server_factory, tmp_path: Path, database_url):
    server = server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass")
    api = Api(server.url, ("dora", PASSWORD))
    api.call("POST", "/api/register", json={"username": "dora", "password": PASSWORD})
    job = api.submit(FLAKY, max_retries=2)
    assert api.wait(job["job"], "SUCCEEDED", "FAILED", seconds=90)["status"] == "SUCCEEDED"
    result = run_flow(
        tmp_path, server.url, "retries.mjs", {"username": "dora", "password": PASSWORD, "jobId": job["job"]}
    )
    assert result["attemptOf"] == "attempt 2 of at most 3"
    assert result["attempts"] == [
        ["1", "Failed", "2", "Exited with code 2."],
        ["2", "Succeeded", "0", ""],
    ]
    assert result["console"] == ["first try", XSS, "it broke", "second try"]
    assert result["lines1"] == ["first try", XSS, "it broke"]
    assert result["stderr1"] == ["it broke"]
    assert result["lines2"] == ["second try"]
    assert result["stderr2"] == []
