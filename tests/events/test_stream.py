"""A job's stream in-process: replay from the log, live from the feed, resync, deleted, heartbeats (#12).

The generator runs here against a real event log and :class:`JobFeed`, with a hub that holds
one feed: no server, no bus.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainflow.events.framing import RETRY, Framing, chunk
from trainflow.events.hub import JobFeed, Pushed
from trainflow.events.store import FileEventStore
from trainflow.events.stream import job_events
from trainflow.events.types import EventType
from trainflow.runner.eventlog import EVENTS, EventWriter, fragment

JOB_ID = 7
HEARTBEAT_S = 0.01


class OneFeedHub:
    """The part of :class:`~trainflow.events.hub.Hub` a job's stream uses, for one feed."""

    def __init__(self, feed: JobFeed) -> None:
        self.feed = feed
        self.followers = 0

    def follow(self, job_id: int) -> JobFeed:
        self.followers += 1
        return self.feed

    def unfollow(self, job_id: int, feed: JobFeed) -> None:
        self.followers -= 1


def _append(job_dir: Path, *fragments: bytes) -> None:
    with EventWriter(job_dir) as writer:
        writer.append(list(fragments))


def _logs(count: int) -> list[bytes]:
    return [fragment(EventType.LOG, line=f"line {n}", stream="stdout") for n in range(count)]


def _end() -> bytes:
    return fragment(EventType.END, status="SUCCEEDED", exit_code=0)


def _types(data: bytes) -> list[str]:
    return [json.loads(line)["type"] for line in data.splitlines()]


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    folder = tmp_path / str(JOB_ID)
    folder.mkdir()
    return folder


def _feed(job_dir: Path, max_bytes: int) -> JobFeed:
    return JobFeed(FileEventStore(job_dir.parent), JOB_ID, max_bytes)


def _stream(
    job_dir: Path, after: int = 0, *, is_sse: bool = False, max_bytes: int = 1 << 20
) -> tuple[OneFeedHub, Iterator[bytes]]:
    hub = OneFeedHub(_feed(job_dir, max_bytes))
    stream = job_events(hub, JOB_ID, after, Framing.of(is_sse), HEARTBEAT_S)  # type: ignore[arg-type]
    return hub, stream


def test_a_finished_job_is_replayed_from_its_log_as_stored(job_dir: Path) -> None:
    _append(job_dir, *_logs(3), _end())
    _, stream = _stream(job_dir)
    assert b"".join(stream) == (job_dir / EVENTS).read_bytes()


def test_replay_starts_after_the_seq_asked_for(job_dir: Path) -> None:
    _append(job_dir, *_logs(3), _end())
    _, stream = _stream(job_dir, after=2)
    assert [json.loads(line)["seq"] for line in b"".join(stream).splitlines()] == [3, 4]


def test_the_stream_stops_following_when_it_ends(job_dir: Path) -> None:
    _append(job_dir, _end())
    hub, stream = _stream(job_dir)
    list(stream)
    assert hub.followers == 0


def test_server_sent_events_start_with_the_retry_and_carry_the_seq_as_id(job_dir: Path) -> None:
    _append(job_dir, *_logs(1), _end())
    _, stream = _stream(job_dir, is_sse=True)
    data = b"".join(stream)
    records = (job_dir / EVENTS).read_bytes().splitlines(keepends=True)
    assert data == RETRY + b"id: 1\ndata: " + records[0] + b"\nid: 2\ndata: " + records[1] + b"\n"


def test_a_caught_up_follower_first_gets_a_heartbeat_that_sends_the_headers(job_dir: Path) -> None:
    _, stream = _stream(job_dir)
    assert _types(next(stream)) == ["heartbeat"]


def test_a_silent_job_gets_a_heartbeat_each_period(job_dir: Path) -> None:
    _, stream = _stream(job_dir)
    next(stream)
    assert _types(next(stream)) == ["heartbeat"]


def test_events_written_after_the_follower_caught_up_come_live_from_the_feed(job_dir: Path) -> None:
    hub, stream = _stream(job_dir)
    next(stream)
    _append(job_dir, *_logs(2))
    hub.feed.refresh()
    assert _types(next(stream)) == ["log", "log"]


def test_a_live_follower_the_feed_left_behind_gets_resync_with_its_last_seq(job_dir: Path) -> None:
    hub, stream = _stream(job_dir, max_bytes=1)  # the feed keeps one event
    next(stream)
    _append(job_dir, *_logs(5))
    hub.feed.refresh()
    assert [json.loads(line) for line in stream] == [{"type": "resync", "seq": 0}]


def test_a_follower_catching_up_from_the_log_is_not_resynced(job_dir: Path) -> None:
    _append(job_dir, *_logs(5), _end())
    _, stream = _stream(job_dir, max_bytes=1)  # the feed holds none of them
    assert _types(b"".join(stream)) == ["log"] * 5 + ["end"]


def test_a_deleted_job_ends_the_stream_with_deleted(job_dir: Path) -> None:
    hub, stream = _stream(job_dir)
    next(stream)
    hub.feed.is_deleted = True
    hub.feed.wake()
    assert [json.loads(line) for line in stream] == [
        {"type": "deleted", "job_id": JOB_ID, "message": f"Job {JOB_ID} was deleted."}
    ]


@pytest.mark.parametrize("is_sse", [False, True])
@pytest.mark.parametrize("is_chunked", [False, True])
def test_the_feed_writes_a_pushed_follower_the_bytes_the_stream_would(
    job_dir: Path, is_sse: bool, is_chunked: bool
) -> None:
    feed = _feed(job_dir, 1 << 20)
    read_end, write_end = os.pipe()
    try:
        pushed = Pushed(write_end, is_chunked, is_sse, sent=0)
        assert feed.push_to(pushed)
        _append(job_dir, *_logs(2))
        feed.refresh()
        records = feed.since(0)
        assert records is not None
        assert os.read(read_end, 1 << 16) == chunk(Framing.of(is_sse).events(records), is_chunked)
    finally:
        os.close(read_end)
        os.close(write_end)
