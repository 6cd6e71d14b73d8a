"""The all-jobs stream's sequence of status changes: numbered, replayed, private (issue 11)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.scripts.test_upload import TRAIN_PY, post_file
from trainflow.db import db
from trainflow.events.changes import ChangeLog, ChangeReader
from trainflow.events.hub import hub_of
from trainflow.events.models import JobChange
from trainflow.events.record import add_change
from trainflow.settings import Settings

EVENTS = "/ajax-api/2.0/mlflow/train/events"
JOBS = "/ajax-api/2.0/mlflow/train/jobs"


@pytest.fixture
def heartbeat() -> float:
    return 0.2


@pytest.fixture
def settings(tmp_path: Path, database_url: str, heartbeat: float) -> Settings:
    # No scheduler runs in the test app: jobs stay QUEUED until cancelled, so every change is
    # the test's own.
    return Settings(data_dir=tmp_path / "data", database_url=database_url, stream_heartbeat_seconds=heartbeat)


class Stream:
    """An open all-jobs stream of the test client, read a line at a time."""

    def __init__(self, response) -> None:
        self.response = response
        self.chunks: Iterator[bytes] = iter(response.response)
        self.pending = b""

    def line(self) -> bytes:
        while b"\n" not in self.pending:
            self.pending += next(self.chunks)
        line, self.pending = self.pending.split(b"\n", 1)
        return line

    def events(self, count: int, seconds: float = 10) -> list[dict]:
        """The next ``count`` events that are not heartbeats."""
        got: list[dict] = []
        deadline = time.monotonic() + seconds
        while len(got) < count:
            assert time.monotonic() < deadline, f"only {got}"
            event = json.loads(self.line())
            if event["type"] != "heartbeat":
                got.append(event)
        return got

    def heartbeat(self) -> dict:
        event = json.loads(self.line())
        assert event["type"] == "heartbeat"
        return event

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def open_stream(client):
    streams: list[Stream] = []

    def open_(user, **params) -> Stream:
        headers = params.pop("headers", {})
        response = client.get(EVENTS, query_string=params, headers={**user.basic, **headers}, buffered=False)
        assert response.status_code == 200, response.data
        streams.append(Stream(response))
        return streams[-1]

    yield open_
    for stream in streams:
        stream.close()


def submit(client, user, script: int | None = None) -> int:
    if script is None:
        script = post_file(client, user, "train.py", TRAIN_PY).json["script"]
    response = client.post(JOBS, json={"script_id": script}, headers=user.basic)
    assert response.status_code == 201, response.json
    return response.json["job"]


def cancel(client, user, job: int) -> None:
    assert client.post(f"{JOBS}/{job}/cancel", headers=user.basic).status_code == 200


def delete(client, user, job: int) -> None:
    assert client.delete(f"{JOBS}/{job}", headers=user.basic).status_code == 204


def changes(app) -> list[tuple[int, int, str, str | None]]:
    with app.app_context():
        rows = db.session.execute(select(JobChange).order_by(JobChange.id)).scalars().all()
        return [(row.id, row.job_id, row.kind, row.status) for row in rows]


def test_each_status_change_and_deletion_is_stored_with_a_rising_seq(app, client, alice):
    job = submit(client, alice)
    cancel(client, alice, job)
    delete(client, alice, job)
    rows = changes(app)
    assert [(job_id, kind, status) for _, job_id, kind, status in rows] == [
        (job, "status", "QUEUED"),
        (job, "status", "CANCELLED"),
        (job, "deleted", None),
    ]
    assert [seq for seq, *_ in rows] == sorted({seq for seq, *_ in rows})


def test_a_cancel_that_changes_nothing_stores_nothing(app, client, alice):
    job = submit(client, alice)
    cancel(client, alice, job)
    cancel(client, alice, job)
    assert len(changes(app)) == 2


def test_after_zero_replays_every_change_in_order_then_follows_live(client, alice, open_stream):
    first = submit(client, alice)
    cancel(client, alice, first)
    stream = open_stream(alice, after=0)
    assert stream.heartbeat()["seq"] == 0  # where it starts
    replayed = stream.events(2)
    assert [(e["type"], e["seq"], e["job_id"], e["status"]) for e in replayed] == [
        ("status", 1, first, "QUEUED"),
        ("status", 2, first, "CANCELLED"),
    ]
    assert replayed[1]["reason"] == "Cancelled while queued."
    second = submit(client, alice)
    delete(client, alice, first)
    live = stream.events(2)
    assert [(e["type"], e["seq"], e["job_id"]) for e in live] == [
        ("status", 3, second),
        ("deleted", 4, first),
    ]


def test_a_new_stream_starts_at_the_newest_change_and_says_which(client, alice, open_stream):
    cancel(client, alice, submit(client, alice))
    stream = open_stream(alice)
    assert stream.heartbeat()["seq"] == 2
    job = submit(client, alice)
    assert [(e["seq"], e["job_id"], e["status"]) for e in stream.events(1)] == [(3, job, "QUEUED")]


def test_resuming_with_after_gets_exactly_the_rest(client, alice, open_stream):
    job = submit(client, alice)
    cancel(client, alice, job)
    delete(client, alice, job)
    stream = open_stream(alice, after=1)
    assert stream.heartbeat()["seq"] == 1
    assert [e["seq"] for e in stream.events(2)] == [2, 3]
    stream = open_stream(alice, after=3)
    job = submit(client, alice)
    assert [(e["seq"], e["job_id"]) for e in stream.events(1)] == [(4, job)]


def test_an_after_beyond_the_newest_change_starts_at_the_newest(client, alice, open_stream):
    job = submit(client, alice)
    stream = open_stream(alice, after=1000)
    assert stream.heartbeat()["seq"] == 1
    cancel(client, alice, job)
    assert [e["seq"] for e in stream.events(1)] == [2]


def test_server_sent_events_carry_the_seq_as_id_and_resume_from_last_event_id(client, alice, open_stream):
    job = submit(client, alice)
    cancel(client, alice, job)
    stream = open_stream(alice, headers={"Accept": "text/event-stream", "Last-Event-ID": "1"})
    assert stream.response.headers["Content-Type"].startswith("text/event-stream")
    assert stream.line() == b"retry: 1000"
    stream.line()
    assert stream.line() == b"id: 1"
    assert json.loads(stream.line().removeprefix(b"data: "))["seq"] == 1  # the heartbeat says where
    stream.line()
    assert stream.line() == b"id: 2"
    event = json.loads(stream.line().removeprefix(b"data: "))
    assert (event["seq"], event["status"]) == (2, "CANCELLED")


def test_a_user_sees_only_their_jobs_changes_and_an_admin_sees_all(client, alice, bob, admin, open_stream):
    mine, theirs = submit(client, alice), submit(client, bob)
    cancel(client, bob, theirs)
    cancel(client, alice, mine)
    streams = {who.username: open_stream(who, after=0) for who in (alice, bob, admin)}
    assert [(e["seq"], e["job_id"]) for e in streams["alice"].events(2)] == [(1, mine), (4, mine)]
    assert [(e["seq"], e["job_id"]) for e in streams["bob"].events(2)] == [(2, theirs), (3, theirs)]
    assert [e["seq"] for e in streams["root-admin"].events(4)] == [1, 2, 3, 4]
    delete(client, bob, theirs)
    submit(client, alice)
    assert [(e["type"], e["seq"]) for e in streams["alice"].events(1)] == [("status", 6)]
    assert [(e["type"], e["seq"]) for e in streams["bob"].events(1)] == [("deleted", 5)]


def test_a_stream_behind_the_window_reads_the_rest_from_the_database(app, client, alice, bob, open_stream):
    hub_of(app).changes.size = 2  # the process keeps only the last two changes in memory
    jobs = [submit(client, alice) for _ in range(3)] + [submit(client, bob) for _ in range(3)]
    for job in jobs[:3]:
        cancel(client, alice, job)
    first = open_stream(alice)  # the window follows the database from now on
    first.heartbeat()
    for job in jobs[3:]:
        cancel(client, bob, job)
    submit(client, alice)
    assert [e["seq"] for e in first.events(1)] == [13]
    stream = open_stream(alice, after=0)
    assert [e["seq"] for e in stream.events(7)] == [1, 2, 3, 7, 8, 9, 13]


@pytest.mark.parametrize("heartbeat", [30.0])  # no look for missed notices meanwhile
def test_many_streams_cost_one_database_read_per_change(app, client, alice, open_stream):
    streams = [open_stream(alice) for _ in range(20)]
    for stream in streams:
        stream.heartbeat()
    log = hub_of(app).changes
    reads = log.reads
    job = submit(client, alice)
    for stream in streams:
        assert [e["job_id"] for e in stream.events(1)] == [job]
    assert log.reads - reads <= 2  # the notice's read, and perhaps a stale check's


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("params", "headers"),
    [({"after": "-1"}, {}), ({"after": "x"}, {}), ({"after": str(2**63)}, {}), ({}, {"Last-Event-ID": "x"})],
)
def test_a_bad_resume_point_is_a_400(client, alice, params, headers):
    response = client.get(EVENTS, query_string=params, headers={**alice.basic, **headers})
    assert response.status_code == 400
    assert response.json["error"]["message"]


def test_changes_become_visible_in_seq_order_whatever_the_concurrency(app):
    """A reader that reads past the last seq it saw never skips one that commits later (issue 11).

    On PostgreSQL, ids come from a sequence when a row is inserted but become visible when its
    transaction commits; without the lock that orders commits, 8 writers that pause between
    the two make a reader skip changes.
    """
    reader = ChangeReader(lambda: engine)
    with app.app_context():
        engine = db.engine
    stop = threading.Event()
    seen: list[int] = []

    def read() -> None:
        while True:
            is_last = stop.is_set()
            seen.extend(change.seq for change in reader.read(seen[-1] if seen else 0))
            if is_last:
                return

    def write(writer: int) -> None:
        with app.app_context():
            for _ in range(15):
                add_change(db.session, job_id=writer, owner_id=1, status="RUNNING")
                time.sleep(0.005)
                db.session.commit()

    reading = threading.Thread(target=read)
    reading.start()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reading.join()
    assert len(seen) == 120
    assert [seq for seq, *_ in changes(app)] == seen


def test_the_refresher_outlives_a_database_that_fails_a_read(app, tmp_path):
    """A failed read (a database restarting, no connection free) is tried again, not fatal.

    Before, the exception ended the refresher thread, and every all-jobs stream of the process
    heard nothing more: the soak on PostgreSQL lost 428 status changes so.
    """
    from sqlalchemy import create_engine

    with app.app_context():
        engine = db.engine
    unreachable = create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'trainflow.db'}")
    current = [engine]
    log = ChangeLog(ChangeReader(lambda: current[0]))
    log.watchers = 1
    log.refresh()  # started at the head
    stopped = threading.Event()
    refresher = threading.Thread(target=log.run, args=(stopped,), daemon=True)
    refresher.start()
    try:
        current[0] = unreachable
        log.want()
        time.sleep(0.5)  # the read fails
        assert refresher.is_alive()
        with app.app_context():
            add_change(db.session, job_id=7, owner_id=1, status="RUNNING")
            db.session.commit()
        current[0] = engine
        deadline = time.monotonic() + 10
        while not log.window.changes and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [json.loads(change.line)["job_id"] for change in log.window.changes] == [7]
    finally:
        stopped.set()
        refresher.join(5)
        unreachable.dispose()
