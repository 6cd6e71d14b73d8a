"""The bus: how notices reach every server process, locally or through Redis.

A notice is a small JSON object (see :mod:`trainflow.runner.notice`). Each server process
runs one listener that hands every notice to its :class:`~trainflow.events.hub.Hub`; the hub
wakes the streams that wait on it. Publishing and receiving go through the same transport:

- local (default): datagram sockets in ``<data>/run/bus/``, one per server process.
- Redis (``TRAINFLOW_REDIS_URL``): one pub/sub channel (``TRAINFLOW_REDIS_CHANNEL``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainflow.runner.notice import LocalPublisher, RedisPublisher, publisher_for

if TYPE_CHECKING:
    from trainflow.settings import Settings

log = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any]], None]
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to about 100 bytes


def run_folder(settings: Settings) -> Path:
    """Where this data directory's sockets live: under it, or in /tmp when that path is too long."""
    folder = settings.resolved_data_dir / "run"
    if len(str(folder)) + 30 < MAX_SOCKET_PATH:
        return folder
    digest = hashlib.sha256(str(settings.resolved_data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"trainflow-{digest}"


def private_folder(folder: Path) -> Path:
    """``folder``, made if needed, refused unless this user alone owns and may enter it.

    A fallback under /tmp has a name others can guess: one made first by another user would
    let them replace the sockets in it, or read what is sent to them.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RuntimeError(
            f"{folder} must belong to this user (uid {os.getuid()}) with mode 0700; remove it, or "
            "choose a shorter TRAINFLOW_DATA_DIR so that the sockets live under it"
        )
    return folder


def describe(settings: Settings) -> dict[str, Any]:
    """The bus as the supervisor's spec carries it: enough to publish, nothing more."""
    if settings.redis_url:
        return {"redis_url": settings.redis_url, "channel": settings.bus_channel}
    return {"folder": str(run_folder(settings) / "bus")}


class Listener(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class LocalListener:
    """Receives datagrams on this process's own socket in the bus folder."""

    def __init__(self, folder: Path, handler: Handler) -> None:
        self.folder = folder
        self.handler = handler
        self.path = folder / f"{os.getpid()}.sock"
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> None:
        # The run folder first, private too: made as a mere parent it would get the umask's
        # mode, and the scheduler (in another worker, or started later) would refuse it.
        private_folder(self.folder.parent)
        private_folder(self.folder)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        # Room for bursts: a notice is about 50 bytes.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._socket = sock
        self._thread = threading.Thread(target=self._run, name="bus-local", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._socket is not None
        while True:
            try:
                data = self._socket.recv(65536)
            except OSError:
                return
            if self._stopped:
                return
            _dispatch(self.handler, data)

    def stop(self) -> None:
        self._stopped = True
        if self._socket is not None:
            with contextlib.suppress(OSError):
                # Closing alone would leave the thread waiting in recv() for good, the socket with it.
                self._socket.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._socket.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


class RedisListener:
    """Subscribes to the channel, and subscribes again (with backoff) when Redis goes away."""

    def __init__(self, url: str, channel: str, handler: Handler, on_reconnect: Callable[[], None]) -> None:
        self.url = url
        self.channel = channel
        self.handler = handler
        self.on_reconnect = on_reconnect  # notices may have been missed: re-read everything
        self._stopped = threading.Event()
        self._pubsub: Any = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="bus-redis", daemon=True).start()

    def _run(self) -> None:
        import redis

        delay = 0.1
        subscribed_before = False
        while not self._stopped.is_set():
            try:
                client = redis.Redis.from_url(self.url, socket_keepalive=True, health_check_interval=30)
                self._pubsub = client.pubsub()
                self._pubsub.subscribe(self.channel)
                delay = 0.1
                for message in self._pubsub.listen():
                    if message.get("type") == "message":
                        _dispatch(self.handler, message["data"])
                    elif message.get("type") == "subscribe":
                        # Subscribed again: only now re-read what notices announced, or one
                        # sent before Redis took the subscription would fall in between.
                        if subscribed_before:
                            self.on_reconnect()
                        subscribed_before = True
            except (redis.RedisError, OSError, ValueError) as e:
                if self._stopped.is_set():
                    return
                log.warning("Lost the Redis bus (%s); reconnecting in %.1f s", e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def stop(self) -> None:
        self._stopped.set()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                self._pubsub.close()


def _dispatch(handler: Handler, data: bytes) -> None:
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
        return
    if isinstance(message, dict):
        try:
            handler(message)
        except Exception:
            log.exception("A bus notice could not be handled: %r", message)


def listener_for(settings: Settings, handler: Handler, on_reconnect: Callable[[], None]) -> Listener:
    if settings.redis_url:
        return RedisListener(settings.redis_url, settings.bus_channel, handler, on_reconnect)
    return LocalListener(run_folder(settings) / "bus", handler)


class Publisher:
    """This process's publisher, shared by its greenlets (one at a time on the connection).

    On the local bus, notices a busy receiver had no room for are sent again from a thread of
    their own (every ``FLUSH_EVERY_S``, for up to ``FLUSH_FOR_S``), not only with the next
    publish: the last status change of a quiet server must not wait for the next one.
    """

    FLUSH_EVERY_S = 0.02
    FLUSH_FOR_S = 30.0

    def __init__(self, settings: Settings) -> None:
        self._publisher: LocalPublisher | RedisPublisher | None = publisher_for(describe(settings))
        self._lock = threading.Lock()
        self._is_flushing = False  # a flusher thread runs (changed under the lock)
        self._closed = False

    def publish(self, message: dict[str, Any]) -> None:
        if self._publisher is None:
            return
        with self._lock:
            if self._closed:
                return
            self._publisher.publish(message)
            if isinstance(self._publisher, LocalPublisher) and self._publisher.has_pending:
                if not self._is_flushing:
                    self._is_flushing = True
                    threading.Thread(target=self._flush, name="bus-flush", daemon=True).start()

    def _flush(self) -> None:
        publisher = self._publisher
        assert isinstance(publisher, LocalPublisher)
        deadline = time.monotonic() + self.FLUSH_FOR_S
        while True:
            time.sleep(self.FLUSH_EVERY_S)
            with self._lock:
                if not self._closed:
                    publisher.flush()
                if self._closed or not publisher.has_pending:
                    self._is_flushing = False
                    return
                if time.monotonic() > deadline:
                    # Its streams catch up from the database at their next heartbeat.
                    log.warning("A server process has not read its bus notices for %.0f s", self.FLUSH_FOR_S)
                    self._is_flushing = False
                    return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._publisher is not None:
                self._publisher.close()
