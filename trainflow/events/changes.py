"""The all-jobs stream's source: the sequence of status changes, and a window of it in memory.

Every status change and deletion of a job is a row of ``tf_job_changes`` whose id is its seq,
added in the transaction that changes the job (:func:`trainflow.events.record.add_change`),
so the sequence has every change once, in commit order. A bus notice only says "there are
changes up to seq N": each server process keeps one :class:`ChangeLog`, the most recent
changes, and reads the rows beyond what it holds once per notice that announces more (one
short read for the whole process, however many streams watch). It also reads when the bus
reconnects and when nothing was heard for a heartbeat period while streams watch, so a notice
that was lost delays a change and never loses it. A stream that is behind the window (it
resumed from long ago, or its client reads slowly) reads the rows it needs itself, a page at
a time, holding no connection while it writes.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from trainflow.events.models import JobChange
from trainflow.events.types import EventType

log = logging.getLogger(__name__)
PAGE = 500  # changes per database read
RETRY_S = 1.0  # after a failed read (the database restarting, no connection free), read again
WINDOW = 4096  # changes each server process keeps in memory

_changes = JobChange.__table__


class Change(NamedTuple):
    seq: int
    owner_id: int
    line: bytes  # the event as one JSON line, made once per process


def event_of(row: Any) -> dict[str, Any]:
    """The stream's event for one row of ``tf_job_changes``."""
    event: dict[str, Any] = {"type": row.kind, "seq": row.id, "job_id": row.job_id}
    if row.kind == EventType.STATUS:
        event["status"] = row.status
        for name in ("reason", "exit_code"):
            if getattr(row, name) is not None:
                event[name] = getattr(row, name)
    event["ts"] = round(row.created_at.timestamp(), 3)
    return event


def _change(row: Any) -> Change:
    line = json.dumps(event_of(row), separators=(",", ":")).encode() + b"\n"
    return Change(row.id, row.owner_id, line)


class ChangeReader:
    """Reads the sequence, each time on a connection of its own, given back at once."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine

    def head(self) -> int:
        """The seq of the newest change (0: none yet)."""
        with self._engine().connect() as connection:
            return int(connection.execute(select(func.max(_changes.c.id))).scalar() or 0)

    def read(
        self, after: int, *, below: int | None = None, owner_id: int | None = None, limit: int = PAGE
    ) -> list[Change]:
        """Up to ``limit`` changes with ``after < seq < below``, in order; only ``owner_id``'s if given."""
        query = select(_changes).where(_changes.c.id > after)
        if below is not None:
            query = query.where(_changes.c.id < below)
        if owner_id is not None:
            query = query.where(_changes.c.owner_id == owner_id)
        with self._engine().connect() as connection:
            rows = connection.execute(query.order_by(_changes.c.id).limit(limit)).all()
        return [_change(row) for row in rows]


@dataclass(frozen=True)
class Window:
    """What a process holds: every change with ``first <= seq <= last``, in order."""

    first: int
    last: int
    seqs: list[int]
    changes: list[Change]

    def since(self, seq: int, limit: int = PAGE) -> list[Change] | None:
        """The changes after ``seq``; None if some of them are older than the window."""
        if seq + 1 < self.first:
            return None
        start = bisect.bisect_right(self.seqs, seq)
        return self.changes[start : start + limit]


class ChangeLog:
    """This process's window of recent changes, shared by every all-jobs stream it serves.

    The window is replaced, never changed in place, so a stream reads it without a lock while
    a refresh reads the database. :meth:`want` (from the bus listener) only asks the refresher
    thread to read: the listener goes back to its socket at once.
    """

    def __init__(self, reader: ChangeReader, size: int = WINDOW) -> None:
        self.reader = reader
        self.size = size
        self.window = Window(1, 0, [], [])
        self.is_started = False  # the window follows the database (while streams watch)
        self.watchers = 0
        self.refreshed_at = 0.0
        self.reads = 0  # database reads so far (a measure for tests and benchmarks)
        self.changed = threading.Event()
        self._due = threading.Event()
        self._lock = threading.Lock()

    def want(self, seq: int | None = None) -> None:
        """A notice: changes up to ``seq`` exist (None: there may be some we never heard of)."""
        if self.watchers and (seq is None or seq > self.window.last):
            self._due.set()

    def run(self, stopped: threading.Event) -> None:
        """The refresher thread: one read per wake-up, however many notices asked for it.

        A read that fails is tried again until one succeeds: the thread must outlive a
        database that restarts or a pool with no connection free, or every all-jobs stream
        of this process would hear nothing more.
        """
        is_failing = False
        while not stopped.is_set():
            self._due.wait(1.0)
            if self._due.is_set():
                self._due.clear()
                if self.watchers:
                    try:
                        self.refresh()
                    except Exception as e:  # noqa: BLE001 - any failure: read again later
                        if not is_failing:
                            first_line = (str(e).splitlines() or [type(e).__name__])[0]
                            log.warning("Reading job changes failed (%s); trying again", first_line)
                        is_failing = True
                        self._due.set()
                        stopped.wait(RETRY_S)
                        continue
                    if is_failing:
                        log.info("Reading job changes works again")
                    is_failing = False

    def refresh(self) -> None:
        """Read the changes beyond the window, and wake the streams if there were any."""
        with self._lock:
            if not self.is_started:
                head = self.reader.head()
                self.reads += 1
                self.window = Window(head + 1, head, [], [])
                self.is_started = True
                self.refreshed_at = time.monotonic()
                return
            window = self.window
            new: list[Change] = []
            while True:
                batch = self.reader.read(new[-1].seq if new else window.last)
                self.reads += 1
                new += batch
                if len(batch) < PAGE:
                    break
            self.refreshed_at = time.monotonic()
            if not new:
                return
            changes = window.changes + new
            first = window.first
            if len(changes) > self.size:
                first = changes[-self.size - 1].seq + 1
                changes = changes[-self.size :]
            self.window = Window(first, new[-1].seq, [c.seq for c in changes], changes)
        self.wake()

    def refresh_if_stale(self, period_s: float) -> None:
        if self.watchers and time.monotonic() - self.refreshed_at >= period_s:
            self.want()

    def stop_following(self) -> None:
        """No stream watches any more: forget the window; the next stream starts from the head."""
        with self._lock:
            if not self.watchers:
                self.is_started = False
                self.window = Window(1, 0, [], [])

    def wake(self) -> None:
        changed, self.changed = self.changed, threading.Event()
        changed.set()
