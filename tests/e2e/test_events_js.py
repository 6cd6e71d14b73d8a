"""The browser's event-stream client (trainflow/static/js/events.js), run in headless Chromium.

The pages are tests/e2e/js/*_page.js. They run on the server's own origin (answered inside the
browser, see tests/e2e/browser.py), so the module's fetch needs no CORS; the parser and scripted
tests need no server at all.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import requests

from tests.e2e.browser import Chromium, PageRun, chromium

pytestmark = pytest.mark.e2e
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
TRAIN = "/ajax-api/2.0/mlflow/train"
NOWHERE = "http://127.0.0.1:9"  # an origin no server answers: every request is answered in the browser
PASSWORD = "a-users-password"


@pytest.fixture
def browser(tmp_path: Path) -> Chromium:
    return chromium(tmp_path)


def result_of(run: PageRun, expected_errors: tuple[str, ...] = ()) -> dict:
    assert not run.timed_out, f"the page did not finish:\n{run.describe()}"
    unexpected = [e for e in run.errors if not any(text in e for text in expected_errors)]
    assert not unexpected, run.describe()
    assert len(run.errors) == len(expected_errors), run.describe()
    assert "error" not in run.result, run.result["error"]
    return run.result


# --- no server ---------------------------------------------------------------------------------


def test_ndjson_lines_survive_any_chunk_boundary(browser):
    result = result_of(browser.run(NOWHERE, "ndjson_page.js", serve_events_js=True))
    assert result["failures"] == [], result["failures"][:3]
    assert result["checks"] > 200
    assert result["splitEmoji"][0].endswith('"line":"训练 started 🚀","n":1}')
    seqs = [e.get("seq") for e in result["events"]]
    assert seqs == [1, 2, 3, None, 4]  # "not json", 7 and the cut-short last line were skipped
    assert result["events"][1]["line"] == 'a\nb \\ "quoted" ✓ 🎉'
    assert result["events"][2]["key"] == "损失"


def test_reconnects_resume_after_the_last_seq_and_deliver_each_event_once(browser):
    run = browser.run(NOWHERE, "scripted_page.js", serve_events_js=True)
    result = result_of(run, expected_errors=("a listener's bug at seq 2",))
    resume = result["resume"]
    assert [e["seq"] for e in resume["events"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert resume["done"] == {"state": "ended", "event": resume["events"][-1]}
    assert resume["events"][-1]["type"] == "end" and resume["lastSeq"] == 8
    calls = resume["calls"]
    assert [c["query"].get("after") for c in calls] == [None, "3", "4", "4", "4", "4", "6"]
    assert all(c["query"]["view"] == "full" for c in calls), "other query parameters are kept"
    assert {c["authorization"] for c in calls} == {"Bearer t0ken"}
    assert {c["accept"] for c in calls} == {"application/x-ndjson"}
    assert calls[5]["at"] - calls[4]["at"] >= 950, "Retry-After: 1 of the 429 was not honoured"
    assert calls[5]["aborted"], "after a resync the old response is let go"
    states = resume["states"]
    assert states[0] == "connecting" and states[-1] == "ended"
    assert [s for s in states if isinstance(s, str)].count("open") == 4  # 3 ndjson responses + the last
    reconnects = [s for s in states if isinstance(s, dict)]
    assert len(reconnects) == 6
    assert "scripted 503" in reconnects[3]["error"]
    assert reconnects[4]["delayMs"] == 1000
    assert reconnects[5] == {"state": "reconnecting", "delayMs": 0, "error": ""}  # the resync

    for status, fatal in result["fatal"].items():
        assert len(fatal["calls"]) == 1, f"{status} must not be retried"
        assert fatal["done"]["state"] == "error"
        assert fatal["done"]["error"] == {
            "status": int(status),
            "code": f"E{status}",
            "message": f"scripted {status}",
        }
        assert fatal["states"] == ["connecting", "error"]

    assert [e["seq"] for e in result["retried408"]["events"]] == [1]

    deleted = result["deleted"]
    assert deleted["done"]["state"] == "ended" and deleted["done"]["event"]["type"] == "deleted"
    assert len(deleted["calls"]) == 1 and [e["type"] for e in deleted["events"]] == ["log", "deleted"]
    cut = result["deletedCut"]
    assert len(cut["calls"]) == 2 and cut["done"]["error"]["status"] == 404
    assert cut["calls"][1]["query"] == {"after": "1"}

    for name in ("closed", "aborted"):
        stopped = result[name]
        assert stopped["done"] == {"state": "closed"} and stopped["states"][-1] == "closed"
        assert len(stopped["calls"]) == 1 and (name == "aborted" or stopped["calls"][0]["aborted"])
    assert result["aborted"]["calls"][0]["at"] < 1000

    idle = result["idle"]
    assert len(idle["calls"]) == 2 and idle["calls"][0]["aborted"] and idle["calls"][1]["at"] >= 200
    assert idle["done"]["state"] == "ended"

    throws = result["listenerThrows"]  # reported as an uncaught error; the stream goes on
    assert [e["seq"] for e in throws["events"]] == [1, 2, 3] and len(throws["calls"]) == 1

    no_content = result["noContent"]  # nothing after a finished job's end: no retry
    assert len(no_content["calls"]) == 1 and no_content["done"]["state"] == "ended"

    after = result["after"]
    assert after["calls"][0]["query"] == {"after": "10"} and [e["seq"] for e in after["events"]] == [11, 12]

    all_jobs = result["allJobs"]  # resumed after the last seq seen, a heartbeat's included (issue 11)
    assert [c["query"] for c in all_jobs["calls"]] == [{}, {"after": "7"}, {"after": "8"}, {"after": "9"}]
    assert [(e["type"], e["seq"], e["job_id"], e.get("status")) for e in all_jobs["events"]] == [
        ("status", 5, 1, "RUNNING"),
        ("status", 8, 2, "QUEUED"),
        ("deleted", 9, 2, None),
        ("status", 10, 1, "SUCCEEDED"),
    ]
    assert all_jobs["done"] == {"state": "closed"}, "a job's deletion does not end the all-jobs stream"

    delays = [s["delayMs"] for s in result["backoff"]["states"] if isinstance(s, dict)]
    assert len(delays) == 6
    bounds = [(10, 20), (20, 40), (40, 80), (40, 80), (10, 20), (20, 40)]  # doubles, caps, resets
    assert all(low <= d <= high for d, (low, high) in zip(delays, bounds, strict=True)), delays
    assert [e["seq"] for e in result["backoff"]["events"]] == [1, 2]


# --- a real server and job ---------------------------------------------------------------------

LINES = 400
JOB = f"""
    import time, mlflow
    with mlflow.start_run():
        for i in range({LINES}):
            print(f"line {{i:04d}} 训练 🚀", flush=True)
            if i % 100 == 0:
                mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
            time.sleep(0.005)
"""


@pytest.fixture
def server(server_factory, tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    return server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass")


def bearer(url: str) -> dict[str, str]:
    user = {"username": "alice", "password": PASSWORD}
    assert requests.post(f"{url}/api/register", json=user, timeout=10).status_code == 201
    token = requests.post(f"{url}/api/login", json=user, timeout=10).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def submit(url: str, headers: dict[str, str], source: str) -> int:
    upload = requests.post(
        f"{url}{TRAIN}/upload",
        headers=headers,
        files={"file": ("train.py", textwrap.dedent(source))},
        timeout=30,
    )
    assert upload.status_code == 201, upload.text
    job = requests.post(
        f"{url}{TRAIN}/jobs", headers=headers, json={"script_id": upload.json()["script"]}, timeout=30
    )
    assert job.status_code == 201, job.text
    return job.json()["job"]


def follow(
    browser: Chromium, url: str, headers: dict[str, str], job_id: int, cuts: int = 0, timeout: int = 100
) -> dict:
    init = {
        "url": f"{TRAIN}/jobs/{job_id}/events",
        "headers": headers,
        "cuts": cuts,
        "timeoutMs": timeout * 1000,
    }
    return result_of(browser.run(url, "follow_page.js", init, timeout=timeout + 20))


def assert_whole_stream(result: dict) -> None:
    events = result["events"]
    assert result["done"]["state"] == "ended", result["states"]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), "seq runs 1, 2, 3... with no gap or repeat"
    assert all(e["type"] in {"status", "log", "metric", "progress", "system", "end"} for e in events), events
    stdout = [e["line"] for e in events if e["type"] == "log" and e["line"].startswith("line ")]
    assert stdout == [f"line {i:04d} 训练 🚀" for i in range(LINES)]
    metrics = [(e["key"], e["step"]) for e in events if e["type"] == "metric"]
    assert metrics == [("loss", step) for step in range(0, LINES, 100)]
    end = events[-1]
    assert end["type"] == "end" and end["status"] == "SUCCEEDED" and end["exit_code"] == 0
    assert [e for e in events if e["type"] == "end"] == [end]
    assert result["lastSeq"] == end["seq"]


# The browser and the stream are what these exercise; the database variants of the stream
# run in tests/e2e/test_events.py.
@sqlite_only
def test_a_job_is_followed_to_its_end_in_the_browser(browser, server):
    headers = bearer(server.url)
    job_id = submit(server.url, headers, JOB)
    result = follow(browser, server.url, headers, job_id)
    assert_whole_stream(result)
    assert result["states"] == ["connecting", "open", "ended"]
    assert "RUNNING" in [e["status"] for e in result["events"] if e["type"] == "status"]


@sqlite_only
def test_a_stream_cut_again_and_again_loses_and_repeats_nothing(browser, server):
    headers = bearer(server.url)
    job_id = submit(server.url, headers, JOB)
    result = follow(browser, server.url, headers, job_id, cuts=6)
    assert_whole_stream(result)
    assert len(result["calls"]) >= 7
    afters = [int(call.split("after=")[1]) if "after=" in call else 0 for call in result["calls"]]
    assert afters[0] == 0 and afters == sorted(afters) and afters[-1] > 0, result["calls"]
    assert sum(1 for s in result["states"] if s.startswith("reconnecting")) >= 6


@sqlite_only
def test_a_stranger_gets_an_error_and_no_retry(browser, server):
    job_id = submit(server.url, bearer(server.url), "print('mine')\n")
    bob = {"username": "bob", "password": PASSWORD}
    assert requests.post(f"{server.url}/api/register", json=bob, timeout=10).status_code == 201
    token = requests.post(f"{server.url}/api/login", json=bob, timeout=10).json()["access_token"]
    for headers, status in (
        ({"Authorization": f"Bearer {token}"}, 404),  # bob may not see alice's job
        ({"Authorization": "Bearer not-a-token"}, 401),
    ):
        result = follow(browser, server.url, headers, job_id, timeout=20)
        assert result["done"]["state"] == "error", result
        assert result["done"]["error"]["status"] == status and result["done"]["error"]["code"]
        assert result["states"] == ["connecting", "error"] and len(result["calls"]) == 1
