"""The hub in-process: a server process's feeds, fed by the real bus, read by real streams (#12).

A :class:`Hub` here listens on the bus as a server process does (local sockets, or Redis on a
channel of its own); events are appended to a job's log as its supervisor appends them and
announced with the publisher the supervisor is given; followers are :func:`job_events`
generators, or pipes standing for the sockets the hub writes to once a follower caught up.
The streams' heartbeat is long (``STREAM_HEARTBEAT_S``), so what a stream sends within it
came from a notice, not from its own look at the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.events.buses import RedisRelay, subscribers, wait_until
from trainflow.events.bus import describe
from trainflow.events.framing import Framing, chunk
from trainflow.events.hub import Hub, JobFeed, Pushed
from trainflow.events.stream import job_events
from trainflow.events.types import EventType
from trainflow.runner.eventlog import EventWriter, fragment
from trainflow.runner.notice import publisher_for
from trainflow.settings import Settings

JOB = 7
STREAM_HEARTBEAT_S = 5.0  # a test that waits this long has failed
NDJSON = Framing.of(False)


@contextlib.contextmanager
def running_hub(settings: Settings) -> Iterator[Hub]:
    """A server process's hub, listening (subscribed, when the bus is Redis)."""
    hub = Hub(settings)
    hub.start()
    try:
        if settings.redis_url:
            wait_until(
                lambda: subscribers(settings.redis_url, settings.bus_channel) == 1, "the hub subscribes"
            )
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def hub(bus_settings: Settings) -> Iterator[Hub]:
    with running_hub(bus_settings) as hub:
        yield hub


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    """The job's folder in the data directory of the hubs' settings: their store's."""
    folder = tmp_path / "data" / "jobs" / str(JOB)
    folder.mkdir(parents=True)
    return folder


class Supervisor:
    """What a job's supervisor does: append to the job's log, then announce it on the bus."""

    def __init__(self, settings: Settings, job_dir: Path) -> None:
        self.job_dir = job_dir
        publisher = publisher_for(json.loads(json.dumps(describe(settings))))
        assert publisher is not None
        self.publisher = publisher

    def write(self, *fragments: bytes, announce: bool = True) -> int:
        with EventWriter(self.job_dir) as writer:
            seq = writer.append(list(fragments))
        assert seq is not None
        if announce:
            self.publisher.publish({"kind": "events", "job": JOB, "seq": seq})
        return seq

    def close(self) -> None:
        self.publisher.close()


@pytest.fixture
def supervisor(hub: Hub, job_dir: Path) -> Iterator[Supervisor]:
    made = Supervisor(hub.settings, job_dir)
    yield made
    made.close()


def logs(count: int, size: int = 10) -> list[bytes]:
    return [fragment(EventType.LOG, line=f"{n:0{size}d}", stream="stdout") for n in range(count)]


def end() -> bytes:
    return fragment(EventType.END, status="SUCCEEDED", exit_code=0)


def follow(hub: Hub, job_dir: Path, after: int = 0) -> Iterator[bytes]:
    return job_events(hub, JOB, after, NDJSON, STREAM_HEARTBEAT_S)


def caught_up(hub: Hub, job_dir: Path, after: int = 0) -> Iterator[bytes]:
    """A follower that has read everything there is: the heartbeat that sends its headers came."""
    stream = follow(hub, job_dir, after)
    assert types(next(stream)) == [EventType.HEARTBEAT]
    return stream


def to_its_end(stream: Iterator[bytes], most: int = 3) -> bytes:
    """What a stream sends until its response ends, which must be within ``most`` writes."""
    sent = [data for data, _ in zip(stream, range(most + 1), strict=False)]
    assert len(sent) <= most, f"the stream goes on: {b''.join(sent)!r}"
    return b"".join(sent)


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def types(data: bytes) -> list[str]:
    return [event["type"] for event in lines(data)]


def seqs(data: bytes) -> list[int]:
    return [event["seq"] for event in lines(data)]


def test_new_events_reach_every_follower_of_the_job_once_and_in_order(
    hub: Hub, job_dir: Path, supervisor: Supervisor
) -> None:
    followers = [caught_up(hub, job_dir) for _ in range(3)]
    supervisor.write(*logs(3))
    assert [seqs(next(stream)) for stream in followers] == [[1, 2, 3]] * 3
    supervisor.write(*logs(2))
    supervisor.write(end())
    for stream in followers:
        rest = to_its_end(stream)  # the end event, where the stream stops
        assert seqs(rest) == [4, 5, 6]
        assert lines(rest)[-1]["type"] == EventType.END
    assert JOB not in hub.feeds  # the last follower gone, its feed goes too


def test_after_redis_drops_and_returns_followers_get_the_events_they_missed(
    redis_settings: Settings, redis_relay: RedisRelay, job_dir: Path
) -> None:
    through_relay = redis_settings.replace(redis_url=redis_relay.url)
    supervisor = Supervisor(redis_settings, job_dir)  # publishes to Redis directly
    with running_hub(through_relay) as hub, contextlib.closing(supervisor):
        stream = caught_up(hub, job_dir)
        redis_relay.drop()
        wait_until(
            lambda: subscribers(redis_settings.redis_url, redis_settings.bus_channel) == 0, "Redis drops it"
        )
        supervisor.write(*logs(3))  # announced while the hub cannot hear
        redis_relay.restore()
        assert seqs(next(stream)) == [1, 2, 3]  # looked at again once the hub is back on the bus
        supervisor.write(*logs(1))
        assert seqs(next(stream)) == [4]


def test_a_follower_left_behind_the_buffer_is_told_to_resync_and_resumes_from_the_log(
    tmp_path: Path, job_dir: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", stream_buffer_kb=64)
    with running_hub(settings) as hub, contextlib.closing(Supervisor(settings, job_dir)) as supervisor:
        slow = caught_up(hub, job_dir)
        supervisor.write(*logs(200, size=1000))  # ~200 KB while it reads nothing
        supervisor.write(*logs(1))
        feed = hub.feeds[JOB]
        wait_until(lambda: feed.last == 201, "the feed has read the log")
        kept = feed.since(feed.first - 1, max_bytes=1 << 30)
        assert kept is not None and sum(len(record) for _, record in kept) <= 64 * 1024  # not 200 KB

        assert lines(to_its_end(slow)) == [{"type": "resync", "seq": 0}]  # and its response ends
        resumed = follow(hub, job_dir, after=0)
        replayed: list[int] = []
        while len(replayed) < 201:
            replayed += seqs(next(resumed))
        assert replayed == list(range(1, 202))


def test_a_deleted_job_ends_the_streams_that_follow_it(hub: Hub, job_dir: Path) -> None:
    stream = caught_up(hub, job_dir)
    shutil.rmtree(job_dir)
    hub.publisher.publish({"kind": "deleted", "job": JOB, "owner": 1, "seq": 1})  # as the web process does
    assert lines(to_its_end(stream)) == [
        {"type": "deleted", "job_id": JOB, "message": f"Job {JOB} was deleted."}
    ]
    assert JOB not in hub.feeds


def test_a_job_id_used_again_after_a_deletion_streams_the_new_job(
    hub: Hub, job_dir: Path, supervisor: Supervisor
) -> None:
    """SQLite gives a deleted job's id to the next job: its followers must not be told 'deleted'."""
    old = caught_up(hub, job_dir)
    shutil.rmtree(job_dir)
    hub.publisher.publish({"kind": "deleted", "job": JOB, "owner": 1, "seq": 1})
    wait_until(lambda: hub.feeds[JOB].is_deleted, "the hub has heard of the deletion")

    job_dir.mkdir()
    supervisor.write(*logs(2), announce=False)
    new = follow(hub, job_dir)
    assert seqs(next(new)) == [1, 2]
    assert lines(to_its_end(old))[0]["type"] == EventType.DELETED  # the old follower lets go...
    supervisor.write(*logs(1))
    assert seqs(next(new)) == [3]  # ...and the new one still hears its job


class Pipe:
    """Stands for a caught-up follower's socket, which the feed writes to itself."""

    def __init__(self, feed: JobFeed, sent: int = 0) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.write_end, False)  # as gevent's sockets are
        self.pushed = Pushed(self.write_end, is_chunked=False, is_sse=False, sent=sent)
        assert feed.push_to(self.pushed)

    def read(self) -> bytes:
        readable, _, _ = select.select([self.read_end], [], [], STREAM_HEARTBEAT_S)
        assert readable, "the follower was sent nothing"
        return os.read(self.read_end, 1 << 20)

    def read_events(self) -> list[dict[str, Any]]:
        """The next events sent, past any heartbeats."""
        deadline = time.monotonic() + STREAM_HEARTBEAT_S
        while time.monotonic() < deadline:
            events = [event for event in lines(self.read()) if event["type"] != EventType.HEARTBEAT]
            if events:
                return events
        raise AssertionError("the follower was sent heartbeats only")

    def fill(self) -> None:
        """The client has not read for a while: its socket takes nothing more."""
        with contextlib.suppress(BlockingIOError):
            for size in (4096, 1):
                while True:
                    os.write(self.write_end, b"x" * size)

    def hang_up(self) -> None:
        """The client went away."""
        os.close(self.read_end)
        self.read_end = -1

    def close(self) -> None:
        for fd in (self.read_end, self.write_end):
            if fd >= 0:
                os.close(fd)


@pytest.fixture
def pipes() -> Iterator[list[Pipe]]:
    made: list[Pipe] = []
    yield made
    for pipe in made:
        pipe.close()


def test_the_hub_sends_caught_up_followers_their_events_and_heartbeats(
    tmp_path: Path, job_dir: Path, pipes: list[Pipe]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", stream_heartbeat_seconds=0.05)
    with running_hub(settings) as hub, contextlib.closing(Supervisor(settings, job_dir)) as supervisor:
        feed = hub.follow(JOB)
        pipes.append(Pipe(feed))
        assert types(pipes[0].read()) == [EventType.HEARTBEAT]
        supervisor.write(*logs(2))
        assert [event["seq"] for event in pipes[0].read_events()] == [1, 2]


def test_a_lost_notice_costs_a_caught_up_follower_one_heartbeat_not_its_events(
    tmp_path: Path, job_dir: Path, pipes: list[Pipe]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", stream_heartbeat_seconds=0.05)
    with running_hub(settings) as hub, contextlib.closing(Supervisor(settings, job_dir)) as supervisor:
        pipes.append(Pipe(hub.follow(JOB)))
        supervisor.write(*logs(2), announce=False)
        assert [event["seq"] for event in pipes[0].read_events()] == [1, 2]


def test_a_slow_or_gone_follower_goes_back_to_its_greenlet_and_the_others_still_get_the_events(
    hub: Hub, job_dir: Path, supervisor: Supervisor, pipes: list[Pipe]
) -> None:
    feed = hub.follow(JOB)
    fast, slow, gone = Pipe(feed), Pipe(feed), Pipe(feed)
    pipes += [fast, slow, gone]
    slow.fill()
    gone.hang_up()

    supervisor.write(*logs(3))
    received = fast.read()
    records = feed.since(0)
    assert records is not None and [seq for seq, _ in records] == [1, 2, 3]
    framed = chunk(NDJSON.events(records), False)
    assert received == framed
    assert slow.pushed.wake.wait(STREAM_HEARTBEAT_S) and gone.pushed.wake.wait(STREAM_HEARTBEAT_S)
    assert slow.pushed.pending == framed  # its greenlet writes what the socket did not take
    assert not slow.pushed.is_dead and gone.pushed.is_dead
    assert feed.pushed == {fast.pushed}


def test_a_deleted_job_takes_its_caught_up_followers_back_from_the_feed(
    hub: Hub, job_dir: Path, pipes: list[Pipe]
) -> None:
    feed = hub.follow(JOB)
    pipes.append(Pipe(feed))
    shutil.rmtree(job_dir)
    hub.publisher.publish({"kind": "deleted", "job": JOB, "owner": 1, "seq": 1})
    assert pipes[0].pushed.wake.wait(STREAM_HEARTBEAT_S)  # its greenlet then sends 'deleted'
    assert feed.is_deleted and not feed.pushed
