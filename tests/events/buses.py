"""Helpers of the bus and hub tests: bounded waits, and a Redis that can go away for a while."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis

WAIT_S = 5.0  # the longest any test waits for something that should take milliseconds


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.005)


def subscribers(redis_url: str, channel: str) -> int:
    """How many connections Redis has subscribed to ``channel``."""
    with redis.Redis.from_url(redis_url) as client:
        return int(dict(client.pubsub_numsub(channel))[channel.encode()])


class RedisRelay:
    """A TCP relay to Redis that can drop every connection and refuse new ones, then come back.

    A listener that connects through it loses Redis on :meth:`drop`; a publisher that goes to
    Redis directly meanwhile publishes notices that listener never hears, as when the network
    between a server and Redis fails for a while.
    """

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        self.url = urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self._server.getsockname()[1]}"))
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._sockets: list[socket.socket] = []  # every one made, to close at the end
        self._threads: list[threading.Thread] = []
        self._is_down = False
        self._is_closed = False
        self.delay_s = 0.0  # how long what a client sends takes to reach Redis
        self._acceptor = threading.Thread(target=self._accept, name="redis-relay", daemon=True)
        self._acceptor.start()

    def drop(self) -> None:
        """Redis is gone: every connection through the relay breaks, and new ones are closed at once."""
        with self._lock:
            self._is_down = True
            dropped, self._open = self._open, []
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        with self._lock:
            self._is_down = False

    def close(self) -> None:
        self._is_closed = True
        self.drop()
        self._acceptor.join(WAIT_S)
        for thread in self._threads:
            thread.join(WAIT_S)
        for sock in [*self._sockets, self._server]:
            sock.close()

    def _accept(self) -> None:
        while not self._is_closed:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            self._sockets.append(client)
            with self._lock:
                is_down = self._is_down
            if is_down:
                client.shutdown(socket.SHUT_RDWR)
                continue
            upstream = socket.create_connection(self._target, timeout=WAIT_S)
            upstream.settimeout(None)
            self._sockets.append(upstream)
            with self._lock:
                self._open += [client, upstream]
            for source, sink, is_to_redis in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(source, sink, is_to_redis), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, is_to_redis: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if is_to_redis and self.delay_s:
                    time.sleep(self.delay_s)
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
