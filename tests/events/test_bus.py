"""The bus in-process: notices from a publisher to a listener, locally and through Redis (#12).

Each test runs the real transport: datagram sockets in a temporary data directory, or the
Redis of the ``redis_url`` fixture on a channel of its own. Where Redis must go away, a relay
between the listener and Redis (:class:`~tests.events.buses.RedisRelay`) drops it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.events.buses import RedisRelay, subscribers, wait_until
from trainflow.events.bus import Listener, LocalListener, Publisher, describe, listener_for, run_folder
from trainflow.runner.notice import publisher_for
from trainflow.settings import Settings

GARBAGE = [
    b"",
    b"not json",
    b"\xff\xfe\x00 not utf-8",
    b'{"kind": "events", "job": 1',  # cut short
    b"[1, 2, 3]",  # JSON, but not an object
    b'"events"',
    b"null",
    b"[" * 60_000,  # nested deeper than the decoder recurses
]


class Inbox:
    """A listener's handler: every notice it is handed, in order; it fails on ``fail_on``'s job."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.notices: list[dict[str, Any]] = []
        self.fail_on = fail_on

    def __call__(self, notice: dict[str, Any]) -> None:
        self.notices.append(notice)
        if notice.get("job") == self.fail_on:
            raise RuntimeError(f"cannot handle job {self.fail_on}")

    def wait_for(self, notice: dict[str, Any]) -> list[dict[str, Any]]:
        """Everything handed over up to ``notice`` (which must come)."""
        wait_until(lambda: notice in self.notices, f"{notice} arrives")
        return self.notices[: self.notices.index(notice) + 1]


@contextlib.contextmanager
def listening(
    settings: Settings,
    handler: Callable[[dict[str, Any]], None],
    on_reconnect: Callable[[], None] = lambda: None,
) -> Iterator[Listener]:
    """The listener a server process runs, started, and subscribed when the bus is Redis."""
    listener = listener_for(settings, handler, on_reconnect)
    listener.start()
    try:
        if settings.redis_url:
            wait_until(
                lambda: subscribers(settings.redis_url, settings.bus_channel) == 1, "the listener subscribes"
            )
        yield listener
    finally:
        listener.stop()


def send_raw(settings: Settings, listener: Listener, data: bytes) -> None:
    """Bytes on the bus as they are, as a broken or hostile publisher would send them."""
    if settings.redis_url:
        with redis.Redis.from_url(settings.redis_url) as client:
            client.publish(settings.bus_channel, data)
    else:
        assert isinstance(listener, LocalListener)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, str(listener.path))


def notice(job: int, seq: int = 1, kind: str = "events") -> dict[str, Any]:
    return {"kind": kind, "job": job, "seq": seq}


def test_notices_reach_the_listener_once_and_in_order(bus_settings: Settings) -> None:
    inbox = Inbox()
    # One per job: a notice a full queue kept gives way to a newer one of its job (it says more).
    sent = [notice(job, seq=job) for job in range(1, 61)]
    last = notice(999)
    with listening(bus_settings, inbox), contextlib.closing(Publisher(bus_settings)) as publisher:
        for message in [*sent, last]:
            publisher.publish(message)
        assert inbox.wait_for(last) == [*sent, last]


def test_garbage_on_the_bus_is_ignored_and_the_listener_keeps_working(bus_settings: Settings) -> None:
    inbox = Inbox()
    with listening(bus_settings, inbox) as listener, contextlib.closing(Publisher(bus_settings)) as publisher:
        for data in GARBAGE:
            send_raw(bus_settings, listener, data)
        publisher.publish(notice(1))
        assert inbox.wait_for(notice(1)) == [notice(1)]


def test_a_notice_the_server_fails_to_handle_is_logged_and_the_next_one_still_arrives(
    bus_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox(fail_on=1)
    with listening(bus_settings, inbox), contextlib.closing(Publisher(bus_settings)) as publisher:
        with caplog.at_level(logging.ERROR, logger="trainflow.events.bus"):
            publisher.publish(notice(1))
            publisher.publish(notice(2))
            assert inbox.wait_for(notice(2)) == [notice(1), notice(2)]
    assert "A bus notice could not be handled" in caplog.text


def test_what_a_job_supervisor_is_given_is_enough_to_reach_the_server(bus_settings: Settings) -> None:
    """The supervisor's spec carries describe() as JSON; it publishes with the runner's publisher."""
    spec = json.loads(json.dumps(describe(bus_settings)))
    assert ("redis_url" in spec) == bool(bus_settings.redis_url)
    inbox = Inbox()
    with listening(bus_settings, inbox):
        supervisor = publisher_for(spec)
        assert supervisor is not None
        try:
            supervisor.publish(notice(3, seq=120))
        finally:
            supervisor.close()
        assert inbox.wait_for(notice(3, seq=120)) == [notice(3, seq=120)]


def test_a_stopped_listener_lets_go_of_its_socket_and_thread(bus_settings: Settings) -> None:
    def bus_threads() -> int:
        return sum(thread.name in ("bus-local", "bus-redis") for thread in threading.enumerate())

    before = bus_threads()
    inbox = Inbox()
    with listening(bus_settings, inbox) as listener, contextlib.closing(Publisher(bus_settings)) as publisher:
        publisher.publish(notice(1))
        inbox.wait_for(notice(1))  # its thread waits for the next one now
    if bus_settings.redis_url:
        wait_until(
            lambda: subscribers(bus_settings.redis_url, bus_settings.bus_channel) == 0, "it unsubscribes"
        )
    else:
        assert isinstance(listener, LocalListener)
        assert not listener.path.exists()  # publishers stop sending to it
    wait_until(lambda: bus_threads() <= before, "its thread ends")


def test_a_busy_server_process_still_gets_every_notice_without_another_publish(
    local_settings: Settings,
) -> None:
    """A receiver's queue holds ~10 datagrams: the publisher's flusher sends the rest later (issue 11)."""
    folder = Path(describe(local_settings)["folder"])
    folder.mkdir(parents=True, mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:  # reads nothing for now
        receiver.bind(str(folder / "1.sock"))
        receiver.settimeout(2)
        sent = [notice(job, kind="status") for job in range(1, 41)]
        with contextlib.closing(Publisher(local_settings)) as publisher:
            for message in sent:
                publisher.publish(message)
            # The last status change of a quiet server must not wait for its next one.
            assert [json.loads(receiver.recv(1000)) for _ in sent] == sent


def test_a_long_data_directory_keeps_the_sockets_in_a_private_folder_of_their_own(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / ("d" * 100))
    other = Settings(data_dir=tmp_path / ("e" * 100))
    folder = Path(describe(settings)["folder"])
    try:
        assert not folder.is_relative_to(settings.resolved_data_dir)  # AF_UNIX paths are short
        assert folder != Path(describe(other)["folder"])
        inbox = Inbox()
        with listening(settings, inbox), contextlib.closing(Publisher(settings)) as publisher:
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
            publisher.publish(notice(1))
            assert inbox.wait_for(notice(1)) == [notice(1)]
    finally:
        shutil.rmtree(run_folder(settings), ignore_errors=True)  # in the temp dir, outside tmp_path


def test_a_sockets_folder_that_others_may_enter_is_refused(local_settings: Settings) -> None:
    folder = Path(describe(local_settings)["folder"])
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    listener = listener_for(local_settings, Inbox(), lambda: None)
    with pytest.raises(RuntimeError, match="mode 0700"):
        listener.start()
    assert not any(folder.iterdir())


def test_deployments_that_share_one_redis_do_not_hear_each_other(tmp_path: Path, redis_url: str) -> None:
    """The default channel is named after the database, so two deployments keep apart."""
    ours = Settings(data_dir=tmp_path / "ours", redis_url=redis_url)
    theirs = Settings(data_dir=tmp_path / "theirs", redis_url=redis_url)
    inbox = Inbox()
    with (
        listening(ours, inbox),
        contextlib.closing(Publisher(theirs)) as their_publisher,
        contextlib.closing(Publisher(ours)) as our_publisher,
    ):
        their_publisher.publish(notice(1))
        our_publisher.publish(notice(2))
        assert inbox.wait_for(notice(2)) == [notice(2)]


def test_after_redis_drops_and_returns_the_listener_subscribes_again_and_says_so(
    redis_settings: Settings, redis_relay: RedisRelay
) -> None:
    through_relay = redis_settings.replace(redis_url=redis_relay.url)
    inbox = Inbox()
    reconnected = threading.Event()
    with (
        listening(through_relay, inbox, reconnected.set),
        contextlib.closing(Publisher(redis_settings)) as publisher,  # straight to Redis
    ):
        publisher.publish(notice(1))
        inbox.wait_for(notice(1))

        redis_relay.drop()
        wait_until(
            lambda: subscribers(redis_settings.redis_url, redis_settings.bus_channel) == 0, "Redis drops it"
        )
        publisher.publish(notice(2))  # nobody hears this one: the hub must look again
        redis_relay.delay_s = 0.05  # the way back is slow: the subscription takes a while
        redis_relay.restore()

        assert reconnected.wait(5), "the listener did not say that it reconnected"
        publisher.publish(notice(3))  # once it says so, it hears what comes next
        assert inbox.wait_for(notice(3)) == [notice(1), notice(3)]
