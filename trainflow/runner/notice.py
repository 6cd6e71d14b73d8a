"""Publishing notices on the bus: "job 7 has events up to seq 120", "job 7 is now RUNNING".

Standard library only: the job supervisor publishes with these too. A notice only wakes
followers; the events themselves are in the job's event log (status changes also in the
database, numbered), so a notice that is lost delays a follower until its next heartbeat and
loses nothing. Each notice carries the seq it announces, so a receiver that gets a later one
catches up on what the lost one said.

Two transports, chosen by settings (see :mod:`trainflow.events.bus` for the receiving side):

- local (the default): every server process on this machine binds a datagram socket in one
  folder; a notice is one datagram to each. Nothing to install. A receiver's queue is short
  (``net.unix.max_dgram_qlen``, 10 by default): a notice it has no room for is kept, replacing
  any older notice of the same job and kind (the newer one says more), and sent again shortly
  after and with the next publish, never dropped unless the receiver is gone.
- Redis (``TRAINFLOW_REDIS_URL``): ``PUBLISH`` on one channel, so server processes on other
  hosts hear it too. Spoken here in a few lines of RESP, so the supervisor needs no client
  library.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

RETRY_S = 1.0
WAIT_S = 0.05  # how long one publish may wait for a full queue to drain, before keeping the rest
MAX_PENDING = 4096  # notices kept per receiver that does not read; beyond, the oldest go


class LocalPublisher:
    """Sends each notice to every listening server process's socket in ``folder``.

    A notice a receiver's full queue did not take waits in ``pending`` (one per job and kind:
    a newer notice replaces an older one, since it announces more); :meth:`flush` sends what
    waits, and every publish flushes first, so notices reach a receiver in order. A publish
    waits at most ``WAIT_S`` for a receiver, and not at all for one that did not drain within
    that time last time (a stopped process must not slow a job's supervisor).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._targets: list[str] = []
        self._listed: int | None = None  # the folder's mtime when it was listed
        self.pending: dict[str, dict[tuple[Any, Any], bytes]] = {}  # per target, oldest first
        self._stuck: set[str] = set()  # receivers that did not drain within WAIT_S

    def publish(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        key = (message.get("kind"), message.get("job"))
        self._list()
        for target in self._targets:
            queue = self.pending.setdefault(target, {})
            queue.pop(key, None)  # the newer notice goes last, in place of the older one
            queue[key] = data
            while len(queue) > MAX_PENDING:
                del queue[next(iter(queue))]
        self.flush(WAIT_S)

    @property
    def has_pending(self) -> bool:
        return any(self.pending.values())

    def flush(self, wait_s: float = 0.0) -> None:
        """Send what waits, waiting up to ``wait_s`` for a receiver whose queue is full."""
        deadline = time.monotonic() + wait_s
        for target in list(self.pending):
            queue = self.pending[target]
            pause = 0.001
            while queue:
                key, data = next(iter(queue.items()))
                try:
                    self._socket.sendto(data, target)
                except BlockingIOError:  # its queue is full
                    if target in self._stuck or time.monotonic() + pause > deadline:
                        self._stuck.add(target)
                        break
                    time.sleep(pause)  # cooperative under gevent
                    pause = min(pause * 2, 0.01)
                    continue
                except OSError as e:
                    if e.errno in (errno.ECONNREFUSED, errno.ENOENT):  # that process is gone
                        self._forget(target)
                    else:
                        queue.clear()  # cannot be sent at all (too big?): not worth keeping
                    break
                del queue[key]
                self._stuck.discard(target)
            if not queue:
                self.pending.pop(target, None)

    def _forget(self, target: str) -> None:
        if target in self._targets:
            self._targets.remove(target)
        self.pending.pop(target, None)
        self._stuck.discard(target)
        with contextlib.suppress(OSError):
            os.unlink(target)

    def _list(self) -> None:
        """List the sockets again when a process came or went (the folder's mtime changed)."""
        try:
            changed = os.stat(self.folder).st_mtime_ns
            if changed == self._listed:
                return
            self._targets = [entry.path for entry in os.scandir(self.folder) if entry.name.endswith(".sock")]
            self._listed = changed
        except FileNotFoundError:
            self._targets = []
        for target in set(self.pending) - set(self._targets):
            self.pending.pop(target, None)

    def close(self) -> None:
        self._stuck.clear()
        self.flush(WAIT_S)  # a last chance for what waits
        self._socket.close()


class RedisPublisher:
    """``PUBLISH channel message`` over one connection, reconnecting when it breaks.

    While Redis is unreachable it tries again at most once a second, so a supervisor never
    spends its time waiting on Redis instead of reading its job's output.
    """

    def __init__(self, url: str, channel: str, timeout: float = 0.5) -> None:
        self.url = url
        self.channel = channel.encode()
        self.timeout = timeout
        self._socket: socket.socket | None = None
        self._retry_at = 0.0

    def publish(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message, separators=(",", ":")).encode()
        for attempt in range(2):
            if self._socket is None and time.monotonic() < self._retry_at:
                return  # Redis is down: followers catch up at their next heartbeat
            try:
                if self._socket is None:
                    self._socket = self._connect()
                self._command(b"PUBLISH", self.channel, payload)
                return
            except OSError:
                self.close()
                if attempt:
                    self._retry_at = time.monotonic() + RETRY_S

    def _connect(self) -> socket.socket:
        parts = urlsplit(self.url)
        sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if parts.scheme == "rediss":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        self._socket = sock
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else "default"
            self._command(b"AUTH", user.encode(), unquote(parts.password).encode())
        return sock

    def _command(self, *args: bytes) -> bytes:
        assert self._socket is not None
        out = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        self._socket.sendall(out)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = self._socket.recv(4096)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            reply += chunk
        if reply.startswith(b"-"):
            raise ConnectionError(reply[1:].strip().decode(errors="replace"))
        return reply

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None


def publisher_for(config: dict[str, Any]) -> LocalPublisher | RedisPublisher | None:
    """The publisher a bus description (:func:`trainflow.events.bus.describe`) asks for."""
    if config.get("redis_url"):
        return RedisPublisher(config["redis_url"], config["channel"])
    if config.get("folder") and hasattr(socket, "AF_UNIX"):
        return LocalPublisher(Path(config["folder"]))
    return None
