"""Where a job's events are kept: one interface, a store of files and a store in PostgreSQL.

Every writer and reader of a job's events goes through an :class:`EventStore`: the scheduler's
status changes and ends, the metrics the web process receives, the supervisors' records sent
to the ingest endpoint, the streams, the hub's feeds, the logs API. Each job has one sequence
``seq`` 1, 2, 3 ... with no gap and no repeat whoever writes, and a record is stored before the
notice that announces it goes out on the bus (the store publishes it, after the write).

- :class:`FileEventStore` (the one-machine default): the job's folder under the data directory
  (:mod:`trainflow.runner.eventlog`), which the supervisor appends to as well; its log lines
  come from the supervisor's ``logs.ndjson``.
- :class:`PostgresEventStore` (shared mode): ``tf_job_event_heads`` holds each job's last seq,
  the highest producer ordinal ingested and whether the ``end`` was written;
  ``tf_job_events`` holds the records. A writer bumps the head row and inserts its batch in
  one transaction, so the row's lock orders a job's writers: seqs commit in their order, and
  a reader that sees seq k+1 has seen k. Log events carry their line number (``line_no``),
  so the logs API pages through them as it does through ``logs.ndjson``. Each call takes a
  connection from the app's pool and gives it back before returning: nothing waits on a
  client while holding one.

:func:`store_of` gives the app's store (made once per process, by the hub).
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from trainflow.db import TABLE_PREFIX, db
from trainflow.errors import BadRequest, Conflict
from trainflow.runner.catalogue import EventType
from trainflow.runner.eventlog import (
    COUNTER,
    EVENTS,
    INDEX,
    INGESTED,
    EventCursor,
    EventWriter,
    OrdinalGap,
    last_seq,
)

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.engine import Engine

    from trainflow.settings import Settings

Records = list[tuple[int, bytes]]
READ_BYTES = 256 * 1024  # a batch read for a stream
LOG_FILE = "logs.ndjson"
LOG_INDEX_EVERY = 1000  # logs.idx: the byte offset of every 1000th record (the supervisor's INDEX_EVERY)
LOG_PAGE = 1000  # log lines per database read


class IngestGap(Conflict):
    """A producer's batch starts past the record after the last one stored: send from ``stored + 1``."""

    code = "ingest_gap"

    def __init__(self, job_id: int, stored: int, first: int) -> None:
        super().__init__(
            f"Job {job_id}: records {stored + 1} to {first - 1} were never stored; "
            f"send again from record {stored + 1}."
        )
        self.stored = stored


class Cursor(Protocol):
    """Reads one job's records in order, remembering where it is."""

    seq: int  # the last seq read

    def read(self, max_bytes: int = READ_BYTES) -> Records: ...


class Announcer(Protocol):
    def publish(self, message: dict[str, Any]) -> None: ...


class EventStore(Protocol):
    """One ordered sequence of records per job: ``{"seq":N,"type":...,"ts":...,...}`` lines."""

    def append(self, job_id: int, fragments: Sequence[bytes], *, unless_ended: bool = False) -> int | None:
        """Number and store the events (as :func:`~trainflow.runner.eventlog.fragment` makes
        them); the last seq. With ``unless_ended``: nothing, and None, if the log has an end."""

    def ingest(self, job_id: int, first: int, fragments: Sequence[bytes]) -> int:
        """Store a producer's records numbered ``first``, ``first + 1`` ... except those stored
        already; the highest producer ordinal stored. A batch sent again stores nothing twice;
        one that starts past the next record raises :class:`IngestGap`."""

    def read(self, job_id: int, after: int, max_bytes: int = READ_BYTES) -> Records:
        """The records after seq ``after``, in order: at least one if there is one, whole
        records within about ``max_bytes``."""

    def cursor(self, job_id: int, after: int) -> Cursor:
        """A reader of the records after ``after`` that keeps its place between reads."""

    def last_seq(self, job_id: int) -> int:
        """The last seq stored; 0 for a job with none (or deleted)."""

    def log_lines(self, job_id: int, offset: int = 0, limit: int | None = None) -> Iterator[bytes]:
        """The job's output lines from the ``offset``-th on (0: the first), each a JSON object
        with ``n``, ``ts``, ``stream``, ``line`` and ``partial`` when the line was cut."""

    def delete(self, job_id: int) -> None:
        """Forget every record of the job."""


def store_for(settings: Settings, engine: Callable[[], Engine], announcer: Announcer | None) -> EventStore:
    """PostgreSQL in shared mode (every host sees one sequence per job), else the job folders."""
    if settings.shared:
        return PostgresEventStore(engine, announcer)
    return FileEventStore(settings.jobs_dir, announcer)


def store_of(app: Flask) -> EventStore:
    """The app's event store (one per process, made from its settings)."""
    from trainflow.events.hub import hub_of  # the hub makes the store and imports this module

    return hub_of(app).store


def _check_batch(first: int, fragments: Sequence[bytes]) -> None:
    """What a record from outside must be for the logs to stay one JSON object a line."""
    if first < 1:
        raise BadRequest("first: a producer numbers its records from 1.")
    for data in fragments:
        if not (data.startswith(b'"type":"') and data.endswith(b"}")) or b"\n" in data:
            raise BadRequest(
                'records: each is an event as the supervisor writes it, `"type":"..."` to `}`, one line.'
            )


def _announce(announcer: Announcer | None, job_id: int, seq: int) -> None:
    if announcer is not None:
        announcer.publish({"kind": "events", "job": job_id, "seq": seq})


# -- the job folders ------------------------------------------------------------------------


class FileEventStore:
    """Each job's events in ``<jobs dir>/<id>/events.ndjson`` (:mod:`trainflow.runner.eventlog`)."""

    def __init__(self, jobs_dir: Path, announcer: Announcer | None = None) -> None:
        self.jobs_dir = jobs_dir
        self.announcer = announcer

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    def _writer(self, job_id: int) -> EventWriter:
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return EventWriter(folder)

    def append(self, job_id: int, fragments: Sequence[bytes], *, unless_ended: bool = False) -> int | None:
        with self._writer(job_id) as writer:
            seq = writer.append(list(fragments), unless_ended=unless_ended)
        if seq is not None and fragments:
            _announce(self.announcer, job_id, seq)
        return seq

    def ingest(self, job_id: int, first: int, fragments: Sequence[bytes]) -> int:
        _check_batch(first, fragments)
        before = self.last_seq(job_id)
        with self._writer(job_id) as writer:
            try:
                stored, seq = writer.ingest(first, list(fragments))
            except OrdinalGap as e:
                raise IngestGap(job_id, e.stored, first) from None
        if seq != before:
            _announce(self.announcer, job_id, seq)
        return stored

    def read(self, job_id: int, after: int, max_bytes: int = READ_BYTES) -> Records:
        return EventCursor(self.job_dir(job_id), after).read(max_bytes)

    def cursor(self, job_id: int, after: int) -> Cursor:
        folder = self.job_dir(job_id)
        cursor = EventCursor(folder, after)
        seq, size = last_seq(folder)
        if seq == after and seq:
            cursor.offset = size  # the next record goes there: no need to look for it
        return cursor

    def last_seq(self, job_id: int) -> int:
        return last_seq(self.job_dir(job_id))[0]

    def log_lines(self, job_id: int, offset: int = 0, limit: int | None = None) -> Iterator[bytes]:
        return itertools.islice(complete_lines(self.job_dir(job_id) / LOG_FILE, offset), limit)

    def delete(self, job_id: int) -> None:
        folder = self.job_dir(job_id)
        for name in (EVENTS, INDEX, COUNTER, INGESTED):
            try:
                os.unlink(folder / name)
            except FileNotFoundError:
                pass


def complete_lines(path: Path, offset: int = 0) -> Iterator[bytes]:
    """A log file's records from the ``offset``-th on, skipping a last one still being written.

    ``logs.idx`` beside ``logs.ndjson`` holds the byte offset of every 1000th record (8 bytes,
    little-endian), so a page deep into a long log starts with a seek, not a scan.
    """
    start_record, position = _nearest_indexed(path, offset)
    try:
        with open(path, "rb") as f:
            f.seek(position)
            for index, raw in enumerate(f, start=start_record):
                if not raw.endswith(b"\n"):
                    return
                if index >= offset:
                    yield raw
    except FileNotFoundError:
        return


def _nearest_indexed(path: Path, offset: int) -> tuple[int, int]:
    """(record number, byte offset) of the last indexed record at or before ``offset``."""
    try:
        with open(path.with_suffix(".idx"), "rb") as f:
            entries = f.seek(0, 2) // 8
            if entries == 0:
                return 0, 0
            # Not indexed that far (yet): the last entry there is. Never seek past the file:
            # a far offset would ask the file system for a position it refuses (EINVAL).
            slot = min(offset // LOG_INDEX_EVERY, entries - 1)
            f.seek(slot * 8)
            entry = f.read(8)
    except FileNotFoundError:
        return 0, 0
    return slot * LOG_INDEX_EVERY, int.from_bytes(entry, "little")


# -- PostgreSQL ------------------------------------------------------------------------------

heads = Table(
    f"{TABLE_PREFIX}job_event_heads",
    db.metadata,
    Column("job_id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("ingested", BigInteger, nullable=False),  # the highest producer ordinal stored
    Column("ended", Boolean, nullable=False),
)
events = Table(
    f"{TABLE_PREFIX}job_events",
    db.metadata,
    Column("job_id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(32), nullable=False),
    Column("line_no", BigInteger),  # a log event's ``n``
    Column("body", Text, nullable=False),  # the fragment: the record after ``{"seq":N,``
    Index(None, "job_id", "line_no"),
)

# Every statement of the store waits at most this long (a lock, a busy server): sent with it, so
# it costs no round trip. In autocommit a string of statements is one transaction, SET LOCAL included.
HEAD = """SET LOCAL statement_timeout = '30s';
SELECT last_seq, ended FROM tf_job_event_heads WHERE job_id = %(job)s
"""
DELETE = """SET LOCAL statement_timeout = '30s';
DELETE FROM tf_job_events WHERE job_id = %(job)s;
DELETE FROM tf_job_event_heads WHERE job_id = %(job)s
"""

_TYPE = re.compile(rb'^"type":"([^"\\]{1,32})"')
_LINE_NO = re.compile(rb',"n":(\d{1,18})[,}]')  # before the line's text: quotes in it are escaped
_LOG = EventType.LOG.value
_END = EventType.END.value

# The head row is made or bumped, and the batch numbered from it, in one statement: one round
# trip, and the row's lock (held to the commit) orders the job's writers.
_APPEND = """SET LOCAL statement_timeout = '30s';
WITH head AS (
    INSERT INTO tf_job_event_heads AS h (job_id, last_seq, ingested, ended)
    VALUES (%(job)s, %(count)s, 0, %(ends)s)
    ON CONFLICT (job_id) DO UPDATE SET last_seq = h.last_seq + %(count)s, ended = h.ended OR %(ends)s
    {condition}
    RETURNING last_seq
), added AS (
    INSERT INTO tf_job_events (job_id, seq, type, line_no, body)
    SELECT %(job)s, head.last_seq - %(count)s + x.o, x.t, x.n, x.b
    FROM head, unnest(%(types)s::varchar[], %(lines)s::bigint[], %(bodies)s::text[])
        WITH ORDINALITY AS x(t, n, b, o)
)
SELECT last_seq FROM head
"""
APPEND = _APPEND.format(condition="")
APPEND_UNLESS_ENDED = _APPEND.format(condition="WHERE NOT h.ended")
# For an ingest: the head row, made if missing and locked until the commit.
LOCK_HEAD = """SET LOCAL statement_timeout = '30s';
INSERT INTO tf_job_event_heads (job_id, last_seq, ingested, ended) VALUES (%(job)s, 0, 0, false)
ON CONFLICT (job_id) DO NOTHING;
SELECT last_seq, ingested FROM tf_job_event_heads WHERE job_id = %(job)s FOR UPDATE
"""
INGEST = """
INSERT INTO tf_job_events (job_id, seq, type, line_no, body)
SELECT %(job)s, %(base)s + x.o, x.t, x.n, x.b
FROM unnest(%(types)s::varchar[], %(lines)s::bigint[], %(bodies)s::text[]) WITH ORDINALITY AS x(t, n, b, o);
UPDATE tf_job_event_heads SET last_seq = %(last)s, ingested = %(top)s, ended = ended OR %(ends)s
WHERE job_id = %(job)s
"""
# Whole records within max_bytes (at least one), in one read: the running total stops the scan.
# Seqs have no gap, so the rows wanted are a range of keys: whatever plan the database picks (one
# with no statistics yet sorts every row it finds), it never reads the rest of a long log.
READ = """SET LOCAL statement_timeout = '30s';
SELECT seq, body FROM (
    SELECT seq, body, sum(octet_length(body) + 24) OVER (ORDER BY seq) AS total
    FROM tf_job_events
    WHERE job_id = %(job)s AND seq > %(after)s AND seq <= %(after)s + %(rows)s
    ORDER BY seq
) AS page
WHERE total <= %(max)s OR total = octet_length(body) + 24
ORDER BY seq
"""
# A page of lines, a range of line numbers (the supervisor numbers them without a gap), for the
# same reason.
LOG_LINES = """SET LOCAL statement_timeout = '30s';
SELECT line_no, body FROM tf_job_events
WHERE job_id = %(job)s AND line_no > %(offset)s AND line_no <= %(offset)s + %(rows)s
ORDER BY line_no
"""


def _columns(fragments: Sequence[bytes]) -> dict[str, Any]:
    """The batch as the three arrays the statements unnest, and whether it holds an ``end``."""
    types: list[str] = []
    lines: list[int | None] = []
    ends = False
    for data in fragments:
        found = _TYPE.match(data)
        kind = found.group(1).decode() if found else ""
        types.append(kind)
        line = _LINE_NO.search(data) if kind == _LOG else None
        lines.append(int(line.group(1)) if line else None)
        ends = ends or kind == _END
    # Text, not bytea: psycopg2 reads text several times faster (hex-encoded bytea cost ~4 µs a
    # row). A record is JSON, UTF-8 already; anything else is replaced rather than refused.
    bodies = [data.decode("utf-8", "replace") for data in fragments]
    return {"types": types, "lines": lines, "bodies": bodies, "ends": ends}


class PostgresEventStore:
    """Each job's events in ``tf_job_events``, numbered by its row of ``tf_job_event_heads``."""

    def __init__(self, engine: Callable[[], Engine], announcer: Announcer | None = None) -> None:
        self._engine = engine
        self._autocommit: Engine | None = None
        self.announcer = announcer

    def _single(self) -> Engine:
        """The app's engine, each statement its own transaction (an append is one statement)."""
        if self._autocommit is None:
            self._autocommit = self._engine().execution_options(isolation_level="AUTOCOMMIT")
        return self._autocommit

    def append(self, job_id: int, fragments: Sequence[bytes], *, unless_ended: bool = False) -> int | None:
        if not fragments:
            with self._single().connect() as connection:
                row = connection.exec_driver_sql(HEAD, {"job": job_id}).first()
            if row is None:
                return 0
            return None if unless_ended and row.ended else int(row.last_seq)
        params = {"job": job_id, "count": len(fragments), **_columns(fragments)}
        with self._single().connect() as connection:
            seq = connection.exec_driver_sql(APPEND_UNLESS_ENDED if unless_ended else APPEND, params).scalar()
        if seq is None:
            return None
        _announce(self.announcer, job_id, seq)
        return int(seq)

    def ingest(self, job_id: int, first: int, fragments: Sequence[bytes]) -> int:
        _check_batch(first, fragments)
        with self._engine().begin() as connection:
            head = connection.exec_driver_sql(LOCK_HEAD, {"job": job_id}).one()
            stored = int(head.ingested)
            if first > stored + 1:
                raise IngestGap(job_id, stored, first)
            fresh = fragments[max(0, stored + 1 - first) :]
            if not fresh:
                return stored
            base = int(head.last_seq)
            top = first + len(fragments) - 1
            columns = _columns(fresh)
            last = base + len(fresh)
            connection.exec_driver_sql(
                INGEST, {"job": job_id, "base": base, "last": last, "top": top, **columns}
            )
        _announce(self.announcer, job_id, last)
        return top

    def read(self, job_id: int, after: int, max_bytes: int = READ_BYTES) -> Records:
        # A record is 30 bytes at the very least, so the row cap never stops a read short of half
        # of max_bytes while there is more (the hub's feed stops reading at a read below half).
        params = {"job": job_id, "after": after, "max": max_bytes, "rows": max(1, max_bytes // 32)}
        with self._engine().connect() as connection:
            rows = connection.exec_driver_sql(READ, params).all()
        return [(seq, b'{"seq":%d,%s\n' % (seq, body.encode())) for seq, body in rows]

    def cursor(self, job_id: int, after: int) -> Cursor:
        return _TableCursor(self, job_id, after)

    def last_seq(self, job_id: int) -> int:
        with self._engine().connect() as connection:
            row = connection.exec_driver_sql(HEAD, {"job": job_id}).first()
        return 0 if row is None else int(row.last_seq)

    def log_lines(self, job_id: int, offset: int = 0, limit: int | None = None) -> Iterator[bytes]:
        """A page at a time, each read on a connection given back before the page is yielded."""
        left = limit
        while left is None or left > 0:
            rows = LOG_PAGE if left is None else min(left, LOG_PAGE)
            with self._engine().connect() as connection:
                page = connection.exec_driver_sql(
                    LOG_LINES, {"job": job_id, "offset": offset, "rows": rows}
                ).all()
            for _, body in page:
                yield b"{" + body.encode()
            if len(page) < rows:
                return
            offset = int(page[-1][0])
            if left is not None:
                left -= len(page)

    def delete(self, job_id: int) -> None:
        with self._engine().begin() as connection:
            connection.exec_driver_sql(DELETE, {"job": job_id})


class _TableCursor:
    def __init__(self, store: PostgresEventStore, job_id: int, after: int) -> None:
        self.store = store
        self.job_id = job_id
        self.seq = after

    def read(self, max_bytes: int = READ_BYTES) -> Records:
        records = self.store.read(self.job_id, self.seq, max_bytes)
        if records:
            self.seq = records[-1][0]
        return records
