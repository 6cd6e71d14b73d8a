"""Publishing notices: to every local server process's socket, and to Redis in plain RESP."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import redis

from trainflow.runner.notice import LocalPublisher, RedisPublisher


def _bind(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    return sock


def test_a_notice_reaches_every_listener_even_one_that_just_started(tmp_path: Path) -> None:
    publisher = LocalPublisher(tmp_path)
    first = _bind(tmp_path / "1.sock")
    publisher.publish({"kind": "events", "job": 1, "seq": 5})
    second = _bind(tmp_path / "2.sock")  # a server process that started after the last publish
    publisher.publish({"kind": "events", "job": 1, "seq": 6})
    assert [json.loads(first.recv(100))["seq"] for _ in range(2)] == [5, 6]
    assert json.loads(second.recv(100))["seq"] == 6
    second.close()
    publisher.publish({"kind": "events", "job": 1, "seq": 7})  # a listener that is gone
    assert json.loads(first.recv(100))["seq"] == 7
    assert not (tmp_path / "2.sock").exists()  # its socket file is cleaned up
    first.close()
    publisher.close()


def test_publishing_with_resp_and_surviving_a_missing_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("trainflow-test-notices")
    publisher = RedisPublisher(redis_url, "trainflow-test-notices")
    publisher.publish({"kind": "status", "job": 3, "status": "RUNNING"})
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
    assert message is not None and json.loads(message["data"]) == {
        "kind": "status",
        "job": 3,
        "status": "RUNNING",
    }
    pubsub.close()
    client.close()
    publisher.close()

    nowhere = RedisPublisher("redis://127.0.0.1:1/0", "x")
    nowhere.publish({"kind": "events", "job": 1, "seq": 1})  # no error: a notice only wakes
    assert nowhere._retry_at > time.monotonic()  # and the next ones do not try again for a while


def test_a_full_queue_delays_notices_and_never_drops_them(tmp_path: Path) -> None:
    """The receiver's datagram queue holds ~10 (net.unix.max_dgram_qlen): the rest wait (issue 11)."""
    publisher = LocalPublisher(tmp_path)
    receiver = _bind(tmp_path / "1.sock")  # a busy server process: it reads nothing for now
    started = time.monotonic()
    for seq in range(1, 201):
        publisher.publish({"kind": "status", "job": seq % 7, "seq": seq})
        publisher.publish({"kind": "events", "job": seq % 7, "seq": seq})
    assert time.monotonic() - started < 1, "a receiver that does not read must not hold up the publisher"
    assert publisher.has_pending
    got = []
    receiver.settimeout(0.2)
    while publisher.has_pending or got[-1:] != [None]:
        publisher.flush()
        try:
            got.append(json.loads(receiver.recv(100)))
        except TimeoutError:
            got.append(None)
    notices = [notice for notice in got if notice is not None]
    last = {(n["kind"], n["job"]): n["seq"] for n in notices}
    # Of what waited, only the newest notice of each job and kind was kept: it says the most.
    assert last == {
        (kind, job): max(s for s in range(194, 201) if s % 7 == job)
        for kind in ("status", "events")
        for job in range(7)
    }
    for kind in ("status", "events"):
        seqs = [n["seq"] for n in notices if n["kind"] == kind]
        assert seqs == sorted(seqs), "notices arrive in the order they were published"
    receiver.close()
    publisher.close()
