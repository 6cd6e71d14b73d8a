"""The hub: one per server process, between the bus and the streams that process serves.

For each job someone follows, a :class:`JobFeed` keeps the job's most recent events in
memory (a bounded window, ``TRAINFLOW_STREAM_BUFFER_KB``), read once from the event store
(:mod:`trainflow.events.store`: the job's folder, or PostgreSQL in shared mode) when a notice
says there are new ones. Ten thousand followers of one job then cost one read per batch and a
slice of a list each, not ten thousand reads.

A follower that is catching up waits on its feed's ``changed`` event, which the feed replaces
and sets on every batch, so a wake-up cannot fall between a follower's check and its wait.

A follower that has caught up, served by gevent's pywsgi, hands its socket to the feed
(:class:`Pushed`): the feed frames each new batch once and writes it to every such socket
itself, without a wait, a greenlet switch or the WSGI write path per follower, and sends
their heartbeats, framed as the streams frame theirs (:mod:`trainflow.events.framing`). That
is what lets one process keep 10,000 followers of a job current. A socket that would block
(a slow reader), fails (a gone one), or is sent the ``end`` goes back to its own greenlet,
which finishes the write and carries on as before.

The all-jobs stream (every job's status changes) reads a :class:`~trainflow.events.changes.ChangeLog`
instead: a window of the numbered changes stored in the database, one per process.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from trainflow.events.bus import Listener, Publisher, listener_for
from trainflow.events.changes import ChangeLog, ChangeReader
from trainflow.events.framing import Framing, chunk
from trainflow.events.store import EventStore, store_for
from trainflow.runner.eventlog import END_MARK

if TYPE_CHECKING:
    from flask import Flask

    from trainflow.settings import Settings

log = logging.getLogger(__name__)
EXTENSION = "trainflow.events"
REFRESH_EVERY_S = 1.0  # at most this often does a heartbeat look at the log for a missed notice
REFRESH_BYTES = 1 << 20  # what a feed reads from the store at a time


class Pushed:
    """A caught-up follower whose socket the feed writes to directly, until it hands it back."""

    __slots__ = ("fd", "is_chunked", "is_dead", "is_ended", "is_sse", "pending", "sent", "wake", "written_at")

    def __init__(self, fd: int, is_chunked: bool, is_sse: bool, sent: int) -> None:
        self.fd = fd
        self.is_chunked = is_chunked
        self.is_sse = is_sse
        self.sent = sent  # the last seq written to the socket (whole or in part)
        self.wake = threading.Event()  # set when the follower's greenlet must take over again
        self.pending = b""  # framed bytes the socket did not take: the greenlet writes them
        self.is_dead = False
        self.is_ended = False
        self.written_at = time.monotonic()

    def write(self, frame: bytes) -> bool:
        """Write without waiting; False (and the rest in ``pending``) if the socket did not take it all."""
        try:
            written = os.write(self.fd, frame)
        except BlockingIOError:
            written = 0
        except OSError:
            self.is_dead = True
            return False
        if written < len(frame):
            self.pending = frame[written:]
            return False
        return True


class JobFeed:
    """The recent events of one job, shared by every follower in this process."""

    def __init__(self, store: EventStore, job_id: int, max_bytes: int) -> None:
        self.store = store
        self.job_id = job_id
        self.max_bytes = max_bytes
        seq = store.last_seq(job_id)
        self._cursor = store.cursor(job_id, seq)
        self._window: list[tuple[int, bytes]] = []  # contiguous seqs; _head is the first kept
        self._head = 0
        self._bytes = 0
        self.first = seq + 1  # the seq of the first event kept (or the next one, if none is)
        self.changed = threading.Event()
        self.is_deleted = False
        self.followers = 0
        self.pushed: set[Pushed] = set()
        self._refreshed_at = time.monotonic()
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self.first + len(self._window) - self._head - 1

    def since(self, seq: int, max_bytes: int = 256 * 1024) -> list[tuple[int, bytes]] | None:
        """Events after ``seq`` from memory; None if they are no longer (or not yet) kept."""
        if seq + 1 < self.first:
            return None
        start = self._head + (seq + 1 - self.first)
        end = start
        size = 0
        while end < len(self._window) and (size < max_bytes or end == start):
            size += len(self._window[end][1])
            end += 1
        return self._window[start:end]

    def refresh(self) -> None:
        """Read what the store has beyond what is kept, and wake the followers if there was any."""
        with self._lock:  # the listener and a heartbeat may both ask
            self._refreshed_at = time.monotonic()
            added = False
            while True:
                records = self._cursor.read(REFRESH_BYTES)
                if not records:
                    break
                added = True
                size = sum(len(record) for _, record in records)
                self._window.extend(records)
                self._bytes += size
                self._trim()
                self._push(records)
                if size < REFRESH_BYTES // 2:
                    break  # that was all there was: another read would find nothing (or be announced)
        if added:
            self.wake()

    def push_to(self, pushed: Pushed) -> bool:
        """Take over a caught-up follower's socket; False if it is not caught up after all."""
        if pushed.sent != self.last or self.is_deleted:
            return False
        pushed.wake.clear()
        pushed.written_at = time.monotonic()
        self.pushed.add(pushed)
        return True

    def hand_back(self, pushed: Pushed) -> None:
        self.pushed.discard(pushed)
        pushed.wake.set()

    def _push(self, records: list[tuple[int, bytes]]) -> None:
        """Write a new batch to every pushed follower, framed once per kind of response.

        The loop is the hot path of a fan-out (10,000 followers: 10,000 turns per batch), so
        it writes with ``os.write`` inline rather than through :meth:`Pushed.write`.
        """
        if not self.pushed:
            return
        first, last = records[0][0], records[-1][0]
        is_end = END_MARK in records[-1][1]
        frames: dict[tuple[bool, bool], bytes] = {}
        now = time.monotonic()
        write = os.write
        for pushed in list(self.pushed):
            if pushed.sent != first - 1:
                self.hand_back(pushed)  # cannot happen while the log is one sequence; be safe
                continue
            kind = (pushed.is_sse, pushed.is_chunked)
            data = frames.get(kind)
            if data is None:
                data = frames[kind] = chunk(Framing.of(pushed.is_sse).events(records), pushed.is_chunked)
            try:
                written = write(pushed.fd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                pushed.is_dead = True
                self.hand_back(pushed)
                continue
            pushed.sent = last
            if written == len(data):
                pushed.written_at = now
                if is_end:
                    pushed.is_ended = True
                    self.hand_back(pushed)
            else:  # a slow reader: its greenlet writes the rest and carries on
                pushed.pending = data[written:]
                pushed.is_ended = is_end
                self.hand_back(pushed)

    def beat(self, now: float, idle_s: float) -> None:
        """A heartbeat to every pushed follower that has been sent nothing for ``idle_s``."""
        frames: dict[tuple[bool, bool], bytes] = {}
        for pushed in list(self.pushed):
            if now - pushed.written_at < idle_s:
                continue
            kind = (pushed.is_sse, pushed.is_chunked)
            data = frames.get(kind)
            if data is None:
                data = frames[kind] = chunk(Framing.of(pushed.is_sse).heartbeat(), pushed.is_chunked)
            if pushed.write(data):
                pushed.written_at = now
            else:
                self.hand_back(pushed)

    def release_all(self) -> None:
        for pushed in list(self.pushed):
            self.hand_back(pushed)

    def refresh_if_stale(self) -> None:
        if time.monotonic() - self._refreshed_at >= REFRESH_EVERY_S:
            self.refresh()

    def _trim(self) -> None:
        while self._bytes > self.max_bytes and len(self._window) - self._head > 1:
            self._bytes -= len(self._window[self._head][1])
            self._head += 1
            self.first += 1
        if self._head > 4096 and self._head * 2 > len(self._window):
            del self._window[: self._head]
            self._head = 0

    def wake(self) -> None:
        changed, self.changed = self.changed, threading.Event()
        changed.set()


class Hub:
    def __init__(self, settings: Settings, app: Flask | None = None, store: EventStore | None = None) -> None:
        self.settings = settings
        self.app = app
        self._db_engine: Any = None
        self.feeds: dict[int, JobFeed] = {}
        self.changes = ChangeLog(ChangeReader(self._engine))
        self.publisher = Publisher(settings)
        # The process's event store: it announces what it stored with this process's publisher.
        self.store = store if store is not None else store_for(settings, self._engine, self.publisher)
        self._listener: Listener | None = None
        self._started = threading.Lock()
        self._stopped = threading.Event()
        # Caches' epochs other hosts bump (see share_epochs), by name; and who this process is
        # on the bus, so that it does not bump its own again.
        self.peer_epochs: dict[str, Callable[[], None]] = {}
        self.origin = secrets.token_hex(8)

    def start(self) -> None:
        """Start listening (once, in the process that serves: after a pre-fork, in each worker)."""
        with self._started:
            if self._listener is None:
                self._listener = listener_for(self.settings, self.on_notice, self.refresh_all)
                self._listener.start()
                threading.Thread(target=self._beat, name="stream-heartbeats", daemon=True).start()
                threading.Thread(
                    target=self.changes.run, args=(self._stopped,), name="job-changes", daemon=True
                ).start()

    def _engine(self) -> Any:
        """The app's engine: each read takes a connection from its pool and gives it back."""
        if self._db_engine is None:
            from trainflow.db import db

            assert self.app is not None, "the all-jobs stream needs the app's database"
            with self.app.app_context():
                self._db_engine = db.engine
        return self._db_engine

    def _beat(self) -> None:
        """Heartbeats for pushed followers; also a look at each log, in case a notice was lost."""
        idle_s = self.settings.stream_heartbeat_seconds
        while not self._stopped.wait(min(idle_s / 3, 1.0)):
            self.changes.refresh_if_stale(idle_s)
            now = time.monotonic()
            for feed in list(self.feeds.values()):
                if feed.pushed:
                    if now - feed._refreshed_at >= idle_s:
                        feed.refresh()
                    feed.beat(now, idle_s)

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.stop()
        self.publisher.close()

    # -- the bus side -----------------------------------------------------------------------

    def on_notice(self, notice: dict[str, Any]) -> None:
        kind = notice.get("kind")
        job_id = notice.get("job")
        feed = self.feeds.get(job_id) if isinstance(job_id, int) else None
        if kind == "events" and feed is not None:
            if not isinstance(notice.get("seq"), int) or notice["seq"] > feed.last:
                feed.refresh()
        elif kind == "epoch":
            name = notice.get("name")
            bump = self.peer_epochs.get(name) if isinstance(name, str) else None
            if bump is not None and notice.get("from") != self.origin:
                bump()
        elif kind in ("status", "deleted"):
            seq = notice.get("seq")
            self.changes.want(seq if isinstance(seq, int) else None)
            if kind == "deleted" and feed is not None and not self.store.last_seq(feed.job_id):
                feed.is_deleted = True
                feed.wake()
                feed.release_all()

    def refresh_all(self) -> None:
        """After the bus was down: notices may have been missed, so look at everything again."""
        for bump in list(self.peer_epochs.values()):
            bump()  # a grant or a password change elsewhere may have gone unheard: drop the caches
        self.changes.want()
        for feed in list(self.feeds.values()):
            feed.refresh()

    # -- the stream side --------------------------------------------------------------------

    def follow(self, job_id: int) -> JobFeed:
        self.start()
        feed = self.feeds.get(job_id)
        if feed is None or feed.is_deleted:
            feed = self.feeds[job_id] = JobFeed(self.store, job_id, self.settings.stream_buffer_kb * 1024)
        feed.followers += 1
        return feed

    def unfollow(self, job_id: int, feed: JobFeed) -> None:
        feed.followers -= 1
        if feed.followers <= 0 and self.feeds.get(job_id) is feed:
            del self.feeds[job_id]

    def watch(self) -> ChangeLog:
        """For an all-jobs stream: the change log, current (read now unless it was just read)."""
        self.start()
        self.changes.watchers += 1
        try:
            if not self.changes.is_started or time.monotonic() - self.changes.refreshed_at > REFRESH_EVERY_S:
                self.changes.refresh()
        except BaseException:
            self.unwatch()
            raise
        return self.changes

    def unwatch(self) -> None:
        self.changes.watchers -= 1
        if not self.changes.watchers:
            self.changes.stop_following()


def share_epochs(hub: Hub, epochs: Iterable[Any]) -> None:
    """Keep cache epochs (``AuthEpoch``: ``name``, ``on_bump``, ``bump_quietly``) in step
    across hosts: a bump here is announced on the bus, a bump announced elsewhere is made here."""
    for epoch in epochs:
        notice = {"kind": "epoch", "name": epoch.name, "from": hub.origin}
        epoch.on_bump = functools.partial(hub.publisher.publish, notice)
        hub.peer_epochs[epoch.name] = epoch.bump_quietly


def hub_of(app: Flask) -> Hub:
    hub: Hub | None = app.extensions.get(EXTENSION)
    if hub is None:
        real = app._get_current_object() if hasattr(app, "_get_current_object") else app  # not the proxy
        hub = app.extensions[EXTENSION] = Hub(app.config["TRAINFLOW"], real)
    return hub
