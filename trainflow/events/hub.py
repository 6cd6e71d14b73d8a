"""The hub: one per server process, between the bus and the streams that process serves.

For each job someone follows, a :class:`JobFeed` keeps the job's most recent events in
memory (a bounded window, ``TRAINFLOW_STREAM_BUFFER_KB``), read once from the job's event log
when a notice says there are new ones. Ten thousand followers of one job then cost one file
read per batch and a slice of a list each, not ten thousand file reads.

A follower waits on its feed's ``changed`` event, which the feed replaces and sets on every
batch, so a wake-up cannot fall between a follower's check and its wait. The job-list
stream (every job's status changes) gets a bounded queue per watcher instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainflow.events.bus import Listener, Publisher, listener_for
from trainflow.events.store import EventCursor, last_seq

if TYPE_CHECKING:
    from flask import Flask

    from trainflow.settings import Settings

log = logging.getLogger(__name__)
EXTENSION = "trainflow.events"
REFRESH_EVERY_S = 1.0  # at most this often does a heartbeat look at the log for a missed notice
WATCH_QUEUE = 1000  # status changes a job-list watcher may have unread before it must resync


class JobFeed:
    """The recent events of one job, shared by every follower in this process."""

    def __init__(self, job_dir: Path, max_bytes: int) -> None:
        self.job_dir = job_dir
        self.max_bytes = max_bytes
        seq, size = last_seq(job_dir)
        self._cursor = EventCursor(job_dir, seq)
        self._cursor.offset = size
        self._window: list[tuple[int, bytes]] = []  # contiguous seqs; _head is the first kept
        self._head = 0
        self._bytes = 0
        self.first = seq + 1  # the seq of the first event kept (or the next one, if none is)
        self.changed = threading.Event()
        self.is_deleted = False
        self.followers = 0
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
        """Read what the log has beyond what is kept, and wake the followers if there was any."""
        with self._lock:  # the listener and a heartbeat may both ask
            self._refreshed_at = time.monotonic()
            added = False
            while True:
                records = self._cursor.read(1 << 20)
                if not records:
                    break
                added = True
                self._window.extend(records)
                self._bytes += sum(len(record) for _, record in records)
                self._trim()
        if added:
            self.wake()

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


class StatusWatch:
    """The job-list stream's view of the bus: status changes of the jobs one user may see."""

    def __init__(self, user_id: int, is_admin: bool) -> None:
        self.user_id = user_id
        self.is_admin = is_admin
        self.queue: deque[dict[str, Any]] = deque()
        self.overflowed = False
        self.changed = threading.Event()

    def offer(self, notice: dict[str, Any]) -> None:
        if not (self.is_admin or notice.get("owner") == self.user_id):
            return
        if len(self.queue) >= WATCH_QUEUE:
            self.overflowed = True
        else:
            self.queue.append(notice)
        self.changed.set()


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.feeds: dict[int, JobFeed] = {}
        self.watches: set[StatusWatch] = set()
        self.publisher = Publisher(settings)
        self._listener: Listener | None = None
        self._started = threading.Lock()

    def start(self) -> None:
        """Start listening (once, in the process that serves: after a pre-fork, in each worker)."""
        with self._started:
            if self._listener is None:
                self._listener = listener_for(self.settings, self.on_notice, self.refresh_all)
                self._listener.start()

    def stop(self) -> None:
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
        elif kind == "status":
            for watch in list(self.watches):
                watch.offer(notice)
        elif kind == "deleted":
            if feed is not None and not feed.job_dir.exists():
                feed.is_deleted = True
                feed.wake()
            for watch in list(self.watches):
                watch.offer(notice)

    def refresh_all(self) -> None:
        for feed in list(self.feeds.values()):
            feed.refresh()

    # -- the stream side --------------------------------------------------------------------

    def follow(self, job_id: int, job_dir: Path) -> JobFeed:
        self.start()
        feed = self.feeds.get(job_id)
        if feed is None or feed.is_deleted:
            feed = self.feeds[job_id] = JobFeed(job_dir, self.settings.stream_buffer_kb * 1024)
        feed.followers += 1
        return feed

    def unfollow(self, job_id: int, feed: JobFeed) -> None:
        feed.followers -= 1
        if feed.followers <= 0 and self.feeds.get(job_id) is feed:
            del self.feeds[job_id]

    def watch(self, user_id: int, is_admin: bool) -> StatusWatch:
        self.start()
        watch = StatusWatch(user_id, is_admin)
        self.watches.add(watch)
        return watch

    def unwatch(self, watch: StatusWatch) -> None:
        self.watches.discard(watch)


def hub_of(app: Flask) -> Hub:
    hub: Hub | None = app.extensions.get(EXTENSION)
    if hub is None:
        hub = app.extensions[EXTENSION] = Hub(app.config["TRAINFLOW"])
    return hub
