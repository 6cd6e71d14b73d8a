"""The streaming responses: a job's events, and every visible job's status changes.

Each is a generator the WSGI server writes out as it yields (chunked). Between batches a
stream sleeps on its feed's ``changed`` event; after ``heartbeat_s`` of silence it sends a
heartbeat, which is also when a write to a vanished client fails and the stream is closed.
How each is framed (NDJSON or Server-Sent Events) is :mod:`trainflow.events.framing`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainflow.events.changes import PAGE
from trainflow.events.framing import RETRY, Framing
from trainflow.events.hub import Hub, Pushed
from trainflow.runner.eventlog import END_MARK, EventCursor


def job_events(
    hub: Hub,
    job_id: int,
    job_dir: Path,
    after: int,
    framing: Framing,
    heartbeat_s: float,
    handler: Any = None,
) -> Iterator[bytes]:
    """Every event after ``after``: first from the log, then live, until the ``end`` event.

    A follower is "live" once it has caught up with the feed. A live follower that falls so far
    behind that the feed no longer holds its next event gets ``resync`` (with the last seq it
    was sent) and the response ends: the client resumes with ``after``. Catching up from the
    log is not limited, since it reads at the client's pace and holds one batch at a time.

    ``handler`` is gevent pywsgi's connection handler, when there is one: a caught-up follower
    then hands its socket to the feed (see :mod:`trainflow.events.hub`) until it is needed here.
    """
    feed = hub.follow(job_id, job_dir)
    try:
        if framing.is_sse:
            yield RETRY
        sent = after
        is_live = False
        cursor: EventCursor | None = None
        wrote_any = framing.is_sse
        while True:
            changed = feed.changed
            if feed.is_deleted:
                yield framing.deleted(job_id)
                return
            batch = feed.since(sent)
            if batch is None:
                if is_live:
                    yield framing.resync(sent)
                    return
                if cursor is None or cursor.seq != sent:
                    cursor = EventCursor(job_dir, sent)
                batch = cursor.read()
                if not batch:
                    feed.refresh()  # the log has nothing beyond the feed: the feed is behind
                    batch = feed.since(sent) or []
            else:
                is_live = True
            if batch:
                yield framing.events(batch)
                wrote_any = True
                sent = batch[-1][0]
                if END_MARK in batch[-1][1]:
                    return
                continue
            is_live = True
            if feed.is_deleted:
                yield framing.deleted(job_id)
                return
            if not wrote_any:
                yield framing.heartbeat()  # the headers go out with the first bytes
                wrote_any = True
                continue
            if handler is not None and handler.headers_sent:
                pushed = Pushed(handler.socket.fileno(), handler.response_use_chunked, framing.is_sse, sent)
                if feed.push_to(pushed):
                    try:
                        pushed.wake.wait()
                    finally:
                        feed.hand_back(pushed)
                    if pushed.is_dead:
                        return
                    if pushed.pending:
                        handler.socket.sendall(pushed.pending)  # framed already: straight to the socket
                    sent = pushed.sent
                    if pushed.is_ended:
                        return
                    continue
            if not changed.wait(heartbeat_s):
                feed.refresh_if_stale()  # in case a notice was lost
                yield framing.heartbeat()
    finally:
        hub.unfollow(job_id, feed)


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
