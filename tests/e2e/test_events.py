"""The live event stream on the real server (issue 5): order, resume, push, progress, bus."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.test_jobs import ADMIN, PASSWORD, TRAIN, Api
from trainflow.client import Client, CredentialStore

pytestmark = pytest.mark.e2e
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def open_stream(api: Api, job_id: int, after: int | None = None, **headers: str) -> requests.Response:
    params = {"after": after} if after is not None else {}
    response = requests.get(
        f"{api.url}{TRAIN}/jobs/{job_id}/events",
        params=params,
        auth=api.auth,
        headers=headers,
        stream=True,
        timeout=(10, 60),
    )
    assert response.status_code == 200, response.text
    return response


def lines_of(response: requests.Response):
    pending = b""
    for chunk in response.iter_content(chunk_size=None):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line:
                yield json.loads(line)


def events(api: Api, job_id: int, after: int | None = None) -> list[dict]:
    with open_stream(api, job_id, after) as response:
        return [e for e in lines_of(response) if e["type"] != "heartbeat"]


def follow_all(api: Api, job_id: int) -> tuple[list[dict], int]:
    """Every event until the end, resuming after each resync; also how many resyncs there were."""
    got: list[dict] = []
    resyncs = 0
    while not got or got[-1]["type"] != "end":
        with open_stream(api, job_id, got[-1]["seq"] if got else 0) as response:
            for event in lines_of(response):
                if event["type"] == "resync":
                    assert event["seq"] == (got[-1]["seq"] if got else 0)
                    resyncs += 1
                elif event["type"] != "heartbeat":
                    got.append(event)
    return got, resyncs


def assert_in_order(got: list[dict], first: int = 1) -> None:
    assert [e["seq"] for e in got] == list(range(first, first + len(got)))


@pytest.fixture
def start(server_factory, tmp_path, database_url):
    def start_server(**env: str):
        return server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1], **env)

    return start_server


@pytest.fixture
def api(start):
    return Api(start().url, ADMIN)


TRAINING = """
    import sys, time
    import mlflow
    from mlflow.entities import Metric
    from tqdm import tqdm

    print("starting", flush=True)
    for step in range(3):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        print(f"logged {step}", flush=True)
    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(mlflow.active_run().info.run_id, metrics=[
        Metric("acc", 0.5, now, 10), Metric("acc", 0.75, now, 11)])
    print("batch logged", flush=True)
    for _ in tqdm(range(300), desc="epoch", mininterval=0):
        time.sleep(0.002)
    print('trainflow:progress {"current": 7, "total": 8, "desc": "manual"}', flush=True)
    print("to stderr", file=sys.stderr, flush=True)
"""


def test_a_jobs_stream_carries_status_logs_metrics_progress_and_its_end(api):
    job = api.submit(TRAINING)
    with open_stream(api, job["job"]) as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        assert response.headers["Cache-Control"] == "no-cache, no-transform"
        assert response.headers["X-Accel-Buffering"] == "no"
        got = [e for e in lines_of(response) if e["type"] != "heartbeat"]  # ends by itself
    assert_in_order(got)
    assert [e["status"] for e in got if e["type"] == "status"] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert got[-1] == {**got[-1], "type": "end", "status": "SUCCEEDED", "exit_code": 0}
    assert all(isinstance(e["ts"], float) for e in got)

    logs = [e["line"] for e in got if e["type"] == "log" and not e["line"].startswith(("🏃", "🧪"))]
    bars = [line for line in logs if "epoch:" in line]
    assert logs[:5] == ["starting", "logged 0", "logged 1", "logged 2", "batch logged"]
    assert len(bars) == 1 and "300/300" in bars[0]  # 300 redraws, one log line
    assert logs[-1] == "to stderr"
    assert next(e for e in got if e.get("line") == "to stderr")["stream"] == "stderr"

    metrics = [(e["key"], e["value"], e["step"]) for e in got if e["type"] == "metric"]
    assert metrics == [
        ("loss", 1.0, 0),
        ("loss", 0.5, 1),
        ("loss", 1 / 3, 2),
        ("acc", 0.5, 10),
        ("acc", 0.75, 11),
    ]
    # Pushed when logged: each metric comes before the line the job printed after logging it.
    seq_of = {e.get("line"): e["seq"] for e in got if e["type"] == "log"}
    loss_seqs = [e["seq"] for e in got if e["type"] == "metric" and e["key"] == "loss"]
    assert all(loss_seqs[i] < seq_of[f"logged {i}"] for i in range(3))

    progress = [e for e in got if e["type"] == "progress"]
    bar_progress = [p for p in progress if p.get("desc") == "epoch"]
    assert 2 <= len(bar_progress) <= 40  # at most ten a second, not one per redraw
    assert [p["current"] for p in bar_progress] == sorted(p["current"] for p in bar_progress)
    assert bar_progress[-1]["current"] == 300 and bar_progress[-1]["total"] == 300
    assert {"current": 7, "total": 8, "desc": "manual"}.items() <= progress[-1].items()
    assert "trainflow:progress" not in " ".join(logs)


@sqlite_only
def test_a_late_follower_gets_the_same_events_and_resumes_exactly(api):
    job = api.submit("for i in range(2500): print('line', i)\n")
    live = events(api, job["job"])
    assert live[-1]["type"] == "end"
    replayed = events(api, job["job"])  # the job has ended: a replay that closes
    assert replayed == live
    for after in (1, 999, 1000, 1001, len(live) - 1):
        assert events(api, job["job"], after) == live[after:]
    for after in (len(live), len(live) + 100):  # nothing will ever come after the end
        response = requests.get(
            f"{api.url}{TRAIN}/jobs/{job['job']}/events", params={"after": after}, auth=api.auth, timeout=30
        )
        assert response.status_code == 204 and response.content == b""


@sqlite_only
def test_100000_lines_arrive_once_and_in_order(api):
    job = api.submit("for i in range(100000): print(i)\n")
    got, _ = follow_all(api, job["job"])
    assert_in_order(got)
    numbers = [int(e["line"]) for e in got if e["type"] == "log" and e["line"].isdigit()]
    assert numbers == list(range(100000))


@sqlite_only
def test_resume_after_1000_random_disconnects_loses_and_repeats_nothing(api):
    job = api.submit("""
        import time
        for i in range(20000):
            print(i)
            if i % 200 == 0:
                time.sleep(0.05)
    """)
    rng = random.Random(5)
    got: list[dict] = []
    disconnects = 0
    while not got or got[-1]["type"] != "end":
        with open_stream(api, job["job"], got[-1]["seq"] if got else 0) as response:
            wanted = rng.randint(1, 30)
            for event in lines_of(response):
                if event["type"] in ("heartbeat", "resync"):
                    continue
                got.append(event)
                wanted -= 1
                if wanted == 0 or event["type"] == "end":
                    break
        disconnects += 1
    assert disconnects >= 1000
    assert_in_order(got)
    assert [int(e["line"]) for e in got if e["type"] == "log" and e["line"].isdigit()] == list(range(20000))


@sqlite_only
def test_server_sent_events_and_last_event_id(api):
    job = api.submit("print('a')\nprint('b')\n")
    api.wait(job["job"], "SUCCEEDED")

    def sse(**headers: str) -> list[tuple[str | None, dict]]:
        with open_stream(api, job["job"], Accept="text/event-stream", **headers) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            text = response.text
        assert text.startswith("retry: ")
        out = []
        for block in text.split("\n\n")[1:]:
            if block:
                fields = dict(line.split(": ", 1) for line in block.split("\n"))
                out.append((fields.get("id"), json.loads(fields["data"])))
        return out

    every = sse()
    assert [int(i) for i, _ in every] == [e["seq"] for _, e in every] == list(range(1, len(every) + 1))
    assert every[-1][1]["type"] == "end"
    assert sse(**{"Last-Event-ID": "3"}) == every[3:]


@sqlite_only
def test_an_idle_stream_gets_heartbeats(start):
    api = Api(start(TRAINFLOW_STREAM_HEARTBEAT_SECONDS="0.3").url, ADMIN)
    job = api.submit("import time\nprint('a', flush=True)\ntime.sleep(2)\nprint('b')\n")
    with open_stream(api, job["job"]) as response:
        got = list(lines_of(response))
    beats = [e for e in got if e["type"] == "heartbeat"]
    assert len(beats) >= 3
    assert all("seq" not in e for e in beats)
    assert_in_order([e for e in got if e["type"] != "heartbeat"])


@sqlite_only
def test_a_slow_reader_is_told_to_resync_and_does_not_slow_the_job(start):
    server = start(TRAINFLOW_STREAM_BUFFER_KB="64")
    api = Api(server.url, ADMIN)
    job = api.submit("""
        import time
        print("ready", flush=True)
        time.sleep(1.5)
        for i in range(200000):
            print(i, "x" * 40)
    """)
    got: list[dict] = []
    with open_stream(api, job["job"]) as response:
        stream = lines_of(response)
        for event in stream:
            if event["type"] != "heartbeat":
                got.append(event)
            if event.get("line") == "ready":
                break
        rss_before = _rss_kb(server.process.pid)
        api.wait(job["job"], "SUCCEEDED", seconds=60)  # it runs to its end while we read nothing
        rss_after = _rss_kb(server.process.pid)
        rest = [e for e in stream if e["type"] != "heartbeat"]
    assert rest[-1]["type"] == "resync"
    got += rest[:-1]
    assert rest[-1]["seq"] == got[-1]["seq"]
    assert rss_after - rss_before < 50_000  # KB: the server did not keep what the reader missed
    after, _ = follow_all(api, job["job"])
    everything = events(api, job["job"])
    assert got + after[got[-1]["seq"] :] == everything
    assert everything[-1]["status"] == "SUCCEEDED"


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@sqlite_only
def test_the_all_jobs_stream_shows_the_status_changes_one_may_see(start):
    server = start()
    for name in ("alice", "bob"):
        requests.post(f"{server.url}/api/register", json={"username": name, "password": PASSWORD}, timeout=10)
    alice, bob, admin = (
        Api(server.url, ("alice", PASSWORD)),
        Api(server.url, ("bob", PASSWORD)),
        Api(server.url, ADMIN),
    )
    seen: dict[str, list[dict]] = {"alice": [], "admin": []}
    streams = {
        name: requests.get(f"{server.url}{TRAIN}/events", auth=who.auth, stream=True, timeout=(10, 60))
        for name, who in (("alice", alice), ("admin", admin))
    }

    def collect(name: str) -> None:
        for event in lines_of(streams[name]):
            if event["type"] != "heartbeat":
                seen[name].append(event)
            if sum(e.get("status") == "SUCCEEDED" for e in seen[name]) == (1 if name == "alice" else 2):
                return

    readers = [threading.Thread(target=collect, args=(name,)) for name in streams]
    for reader in readers:
        reader.start()
    time.sleep(0.5)  # both streams are open
    mine, theirs = alice.submit("print('a')\n"), bob.submit("print('b')\n")
    for reader in readers:
        reader.join(60)
    for response in streams.values():
        response.close()
    assert {e["job_id"] for e in seen["alice"]} == {mine["job"]}
    assert [e["status"] for e in seen["alice"]] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert {e["job_id"] for e in seen["admin"]} == {mine["job"], theirs["job"]}
    bob.call("DELETE", f"{TRAIN}/jobs/{theirs['job']}")


def test_streams_are_private_validated_and_never_take_a_token_from_the_url(start):
    server = start()
    requests.post(f"{server.url}/api/register", json={"username": "bob", "password": PASSWORD}, timeout=10)
    admin, bob = Api(server.url, ADMIN), Api(server.url, ("bob", PASSWORD))
    job = admin.submit("print('secret')\n")
    url = f"{server.url}{TRAIN}/jobs/{job['job']}/events"
    assert bob.call("GET", f"{TRAIN}/jobs/{job['job']}/events").status_code == 404
    assert requests.get(url, timeout=10).status_code == 401
    token = requests.post(
        f"{server.url}/api/login", json={"username": "admin", "password": ADMIN[1]}, timeout=10
    )
    access = token.json()["access_token"]
    assert requests.get(url, params={"access_token": access}, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": f"Bearer {access}"}, timeout=30).status_code == 200
    for bad in ("-1", "abc", "1.5"):
        response = admin.call("GET", f"{TRAIN}/jobs/{job['job']}/events", params={"after": bad})
        assert response.status_code == 400 and "after" in response.json()["error"]["message"]
    response = admin.call("GET", f"{TRAIN}/jobs/{job['job']}/events", headers={"Last-Event-ID": "x"})
    assert response.status_code == 400 and response.json()["error"]["code"]
    assert admin.call("GET", f"{TRAIN}/jobs/999999/events").status_code == 404


@sqlite_only
def test_a_job_deleted_while_followed_ends_the_stream_with_a_clear_event(api):
    job = api.submit("for i in range(300000): print(i)\n")
    api.wait(job["job"], "SUCCEEDED", seconds=60)
    with open_stream(api, job["job"]) as response:
        stream = lines_of(response)
        first = next(stream)
        assert first["seq"] == 1
        assert api.call("DELETE", f"{TRAIN}/jobs/{job['job']}").status_code == 204
        last = list(stream)[-1]
    assert last["type"] == "deleted" and last["job_id"] == job["job"]


@sqlite_only
def test_the_python_client_follows_through_a_server_restart(start, server_factory, tmp_path, database_url):
    server = start()
    port = server.url.rsplit(":", 1)[1]
    api = Api(server.url, ADMIN)
    job = api.submit("""
        import time
        for i in range(60):
            print("line", i, flush=True)
            time.sleep(0.1)
    """)
    client = Client(server.url, CredentialStore(tmp_path / "credentials.json"), basic=ADMIN)
    got: list[dict] = []
    follower = threading.Thread(target=lambda: got.extend(client.follow_events(job["job"])))
    follower.start()
    time.sleep(2)
    server.process.send_signal(signal.SIGKILL)
    server.stop()
    time.sleep(1)
    server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1], TRAINFLOW_PORT=port)
    follower.join(60)
    assert not follower.is_alive()
    assert_in_order(got)
    assert [e["line"] for e in got if e["type"] == "log" and e["line"].startswith("line")] == [
        f"line {i}" for i in range(60)
    ]
    assert got[-1]["type"] == "end" and got[-1]["status"] == "SUCCEEDED"


@sqlite_only
def test_the_redis_bus_wakes_a_follower_on_another_server(server_factory, tmp_path, database_url, redis_url):
    common = {"TRAINFLOW_ADMIN_PASSWORD": ADMIN[1], "TRAINFLOW_REDIS_URL": redis_url}
    runner = server_factory(tmp_path / "data", database_url, **common)
    # The second server runs no jobs and would only hear of them at a heartbeat (an hour) without the bus.
    other = server_factory(
        tmp_path / "data",
        database_url,
        TRAINFLOW_RUN_JOBS="false",
        TRAINFLOW_STREAM_HEARTBEAT_SECONDS="3600",
        **common,
    )
    api = Api(other.url, ADMIN)
    statuses = requests.get(f"{other.url}{TRAIN}/events", auth=ADMIN, stream=True, timeout=(10, 60))
    seen: list[dict] = []

    def collect() -> None:
        for event in lines_of(statuses):
            seen.append(event)
            if event.get("status") == "SUCCEEDED":
                return

    watcher = threading.Thread(target=collect)
    watcher.start()
    time.sleep(0.5)
    job = api.submit("""
        import time, mlflow
        for i in range(20):
            print("line", i, flush=True)
            mlflow.log_metric("m", i, step=i)
            time.sleep(0.05)
    """)
    got = events(api, job["job"])
    watcher.join(30)
    statuses.close()
    assert_in_order(got)
    assert [e["line"] for e in got if e["type"] == "log" and e["line"].startswith("line")] == [
        f"line {i}" for i in range(20)
    ]
    assert [e["value"] for e in got if e["type"] == "metric"] == [float(i) for i in range(20)]
    assert got[-1]["status"] == "SUCCEEDED"
    assert [e["status"] for e in seen if e["type"] == "status"] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert "started" in runner.text  # the first server ran it
