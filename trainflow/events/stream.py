"""The streaming responses: a job's events, and every visible job's status changes.

Each is a generator the WSGI server writes out as it yields (chunked). Between batches a
stream sleeps on its feed's ``changed`` event; after ``heartbeat_s`` of silence it sends a
heartbeat, which is also when a write to a vanished client fails and the stream is closed.
How each is framed (NDJSON or Server-Sent Events) is :mod:`trainflow.events.framing`'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

from trainflow.events.changes import PAGE
from trainflow.events.framing import RETRY, Framing
from trainflow.events.hub import Hub, JobFeed, Pushed
from trainflow.events.store import Cursor
from trainflow.runner.eventlog import END_MARK

Records = list[tuple[int, bytes]]


def job_events(
    hub: Hub,
    job_id: int,
    after: int,
    framing: Framing,
    heartbeat_s: float,
    handler: Any = None,
) -> Iterator[bytes]:
    """Every event after ``after``: first from the store, then live, until the ``end`` event.

    A follower is "live" once it has caught up with the feed. A live follower that falls so far
    behind that the feed no longer holds its next event gets ``resync`` (with the last seq it
    was sent) and the response ends: the client resumes with ``after``. Catching up from the
    log is not limited, since it reads at the client's pace and holds one batch at a time.

    ``handler`` is gevent pywsgi's connection handler, when there is one: a caught-up follower
    then hands its socket to the feed (see :mod:`trainflow.events.hub`) until it is needed here.
    """
    feed = hub.follow(job_id)
    try:
        yield from _Follower(feed, job_id, after, framing, heartbeat_s, handler).run()
    finally:
        hub.unfollow(job_id, feed)


class _Follower:
    """One response following one job: the last seq it sent, and whether it has caught up."""

    def __init__(
        self,
        feed: JobFeed,
        job_id: int,
        after: int,
        framing: Framing,
        heartbeat_s: float,
        handler: Any,
    ) -> None:
        self.feed = feed
        self.job_id = job_id
        self.framing = framing
        self.heartbeat_s = heartbeat_s
        self.handler = handler
        self.sent = after
        self.is_live = False
        self.cursor: Cursor | None = None
        self.wrote_any = framing.is_sse  # SSE's retry line sends the headers

    def run(self) -> Iterator[bytes]:
        """Batch after batch until the end; a resync or the job's deletion ends it too."""
        if self.framing.is_sse:
            yield RETRY
        while True:
            changed = self.feed.changed  # before looking, so a batch added meanwhile wakes us
            if self.feed.is_deleted:
                yield self.framing.deleted(self.job_id)
                return
            batch = self._next_batch()
            if batch is None:
                yield self.framing.resync(self.sent)
                return
            if batch:
                yield self.framing.events(batch)
                self.wrote_any = True
                self.sent = batch[-1][0]
                if END_MARK in batch[-1][1]:
                    return
                continue
            self.is_live = True
            is_ended = yield from self._idle(changed)
            if is_ended:
                return

    def _next_batch(self) -> Records | None:
        """The events after ``sent``: live from the feed, else replayed from the log.

        None: the follower is live and the feed no longer holds its next event (resync).
        """
        batch = self.feed.since(self.sent)
        if batch is not None:
            self.is_live = True
            return batch
        if self.is_live:
            return None
        return self._replay()

    def _replay(self) -> Records:
        """The next batch from the job's stored events, at the client's pace; [] if there is none yet."""
        if self.cursor is None or self.cursor.seq != self.sent:
            self.cursor = self.feed.store.cursor(self.job_id, self.sent)
        batch = self.cursor.read()
        if not batch:
            self.feed.refresh()  # the log has nothing beyond the feed: the feed is behind
            batch = self.feed.since(self.sent) or []
        return batch

    def _idle(self, changed: threading.Event) -> Generator[bytes, None, bool]:
        """Caught up: wait for more, pushed by the feed or here; True if the stream ends."""
        if self.feed.is_deleted:
            yield self.framing.deleted(self.job_id)
            return True
        if not self.wrote_any:
            yield self.framing.heartbeat()  # the headers go out with the first bytes
            self.wrote_any = True
            return False
        if self.handler is not None and self.handler.headers_sent:
            is_ended = self._hand_over()
            if is_ended is not None:
                return is_ended
        if not changed.wait(self.heartbeat_s):
            self.feed.refresh_if_stale()  # in case a notice was lost
            yield self.framing.heartbeat()
        return False

    def _hand_over(self) -> bool | None:
        """Let the feed write to the socket until it gives it back; whether the stream ends.

        None: the feed did not take it (the follower is not caught up after all).
        """
        handler = self.handler
        pushed = Pushed(handler.socket.fileno(), handler.response_use_chunked, self.framing.is_sse, self.sent)
        if not self.feed.push_to(pushed):
            return None
        try:
            pushed.wake.wait()
        finally:
            self.feed.hand_back(pushed)
        if pushed.is_dead:
            return True
        if pushed.pending:
            handler.socket.sendall(pushed.pending)  # framed already: straight to the socket
        self.sent = pushed.sent
        return pushed.is_ended


def job_statuses(
    hub: Hub,
    user_id: int,
    is_admin: bool,
    after: int | None,
    framing: Framing,
    heartbeat_s: float,
) -> Iterator[bytes]:
    """Status changes (and deletions) of every job the user may see, after ``after``, as they happen.

    ``after`` None: from the newest change on. The first line, and every heartbeat, says with
    its ``seq`` how far the stream has come (every change up to it the user may see was sent),
    so a client that resumes with ``after`` = the largest seq it was sent misses nothing and
    gets nothing twice, even if none of the changes it was sent were its own.
    """
    log = hub.watch()
    try:
        if after is not None and after > log.window.last:
            # A seq this process has not read yet: another process may have sent it (--workers).
            log.refresh()
        sent = log.window.last if after is None else min(after, log.window.last)
        if framing.is_sse:
            yield RETRY
        yield framing.position(sent)
        written_at = time.monotonic()
        owner_id = None if is_admin else user_id
        while True:
            changed = log.changed
            window = log.window
            batch = window.since(sent)
            if batch is None:
                # Behind the window: from the database, a page at a time, holding no connection
                # while the page is written.
                batch = log.reader.read(sent, below=window.first, owner_id=owner_id)
                reached = batch[-1].seq if len(batch) == PAGE else window.first - 1
            else:
                reached = batch[-1].seq if batch else sent
                if owner_id is not None:
                    batch = [change for change in batch if change.owner_id == owner_id]
            if batch:
                yield framing.changes(batch)
                written_at = time.monotonic()
            if reached != sent:
                sent = reached
                continue
            # Other users' changes wake this stream too: the heartbeat counts from the last write.
            silence = heartbeat_s - (time.monotonic() - written_at)
            if silence <= 0 or not changed.wait(silence):
                yield framing.position(sent)
                written_at = time.monotonic()
    finally:
        hub.unwatch()
