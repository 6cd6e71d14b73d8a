"""A job's event log: one append-only file of numbered events, shared by several writers.

Standard library only: the job supervisor imports it. Files in the job's folder:

- ``events.ndjson``: one JSON object per line, each starting ``{"seq":N,`` (1, 2, 3 ...).
- ``events.idx``: the byte offset of every 1000th event (seq 1, 1001, 2001 ...), 8 bytes each,
  so a reader finds any seq by reading at most 1000 lines.
- ``events.seq``: the last seq and the file's size after it (16 bytes), which is also the lock
  the writers take (``flock``) while they number and append a batch.

The supervisor (log lines, progress), the scheduler (status changes) and the web process that
receives the job's MLflow metrics all append here; the lock makes their sequence one, with no
gap and no repeat. A writer that died half-way is repaired by the next one: a torn last line
is cut off and the count is taken from the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from trainflow.runner.catalogue import EventType

EVENTS = "events.ndjson"
INDEX = "events.idx"
COUNTER = "events.seq"
INGESTED = "events.ingested"  # the highest producer ordinal ingested (8 bytes), see EventWriter.ingest
INDEX_EVERY = 1000
PREFIX = b'{"seq":'


def type_mark(kind: EventType) -> bytes:
    """The ``"type":"..."`` field as :func:`fragment` writes it: what a scan of raw records looks for."""
    return b'"type":"%s"' % kind.encode()


END_MARK = type_mark(EventType.END)


def fragment(kind: str, ts: float | None = None, **fields: Any) -> bytes:
    """An event without its seq: the rest of the JSON object, as the writer appends it."""
    body = {"type": kind, "ts": round(time.time() if ts is None else ts, 6)}
    body.update({k: json_safe(v) for k, v in fields.items() if v is not None})
    # A lone surrogate (a metric key sent as "\\udcff") becomes that escape again: valid JSON.
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)[1:]
    return text.encode("utf-8", "backslashreplace")


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity; a metric can be either, so they travel as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


class OrdinalGap(Exception):
    """A producer's batch starts past the ordinal after the highest one stored (``stored``)."""

    def __init__(self, stored: int) -> None:
        super().__init__(f"records after {stored} are missing")
        self.stored = stored


def seq_of(record: bytes) -> int:
    return int(record[7 : record.index(b",", 7)])


class EventWriter:
    """Appends batches of events to one job's log; safe to use from several processes at once."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        self._events = os.open(job_dir / EVENTS, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._index = os.open(job_dir / INDEX, os.O_RDWR | os.O_CREAT, 0o600)
        self._counter = os.open(job_dir / COUNTER, os.O_RDWR | os.O_CREAT, 0o600)

    def append(self, fragments: list[bytes], *, unless_ended: bool = False) -> int | None:
        """Number and append the events; return the last seq (unchanged if there were none).

        With ``unless_ended``, append nothing and return None if the last event is an ``end``.
        """
        fcntl.flock(self._counter, fcntl.LOCK_EX)
        try:
            return self._append_locked(fragments, unless_ended=unless_ended)
        finally:
            fcntl.flock(self._counter, fcntl.LOCK_UN)

    def ingest(self, first: int, fragments: list[bytes]) -> tuple[int, int]:
        """Append a producer's records numbered ``first``, ``first + 1`` ... unless stored already.

        Records at or below the highest ordinal ingested so far are skipped, so a batch sent
        again stores nothing twice. Returns that highest ordinal and the last seq after the
        append. Raises :class:`OrdinalGap` if ``first`` is past the ordinal after it.
        The ordinal is written after the events: a writer killed between the two leaves a
        batch that would be stored again if resent (one repeat, never a loss).
        """
        fcntl.flock(self._counter, fcntl.LOCK_EX)
        try:
            ordinals = os.open(self.job_dir / INGESTED, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                raw = os.pread(ordinals, 8, 0)
                stored = int.from_bytes(raw, "little") if len(raw) == 8 else 0
                if first > stored + 1:
                    raise OrdinalGap(stored)
                fresh = fragments[max(0, stored + 1 - first) :]
                seq = self._append_locked(fresh)
                assert seq is not None
                if fresh:
                    stored = first + len(fragments) - 1
                    os.pwrite(ordinals, stored.to_bytes(8, "little"), 0)
                return stored, seq
            finally:
                os.close(ordinals)
        finally:
            fcntl.flock(self._counter, fcntl.LOCK_UN)

    def _append_locked(self, fragments: list[bytes], *, unless_ended: bool = False) -> int | None:
        seq, size = self._position()
        if unless_ended and self._ends(size):
            return None
        if not fragments:
            return seq
        offsets = bytearray()
        parts = []
        for data in fragments:
            seq += 1
            if (seq - 1) % INDEX_EVERY == 0:
                offsets += size.to_bytes(8, "little")
            record = b"%s%d,%s\n" % (PREFIX, seq, data)
            parts.append(record)
            size += len(record)
        _write_all(self._events, b"".join(parts))
        if offsets:
            os.lseek(self._index, 0, os.SEEK_END)
            _write_all(self._index, bytes(offsets))
        os.pwrite(self._counter, seq.to_bytes(8, "little") + size.to_bytes(8, "little"), 0)
        return seq

    def _ends(self, size: int) -> bool:
        tail = os.pread(self._events, 512, max(0, size - 512))
        return END_MARK in tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]

    def _position(self) -> tuple[int, int]:
        raw = os.pread(self._counter, 16, 0)
        seq, size = (
            (int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little"))
            if len(raw) == 16
            else (0, 0)
        )
        if os.fstat(self._events).st_size != size:
            seq, size = self._repair()
        return seq, size

    def _repair(self) -> tuple[int, int]:
        """Count the events in the file after an append failed midway; cut a torn last line.

        The append may have died (or met a full disk) after the events and before all of
        their index entries: the entries from the last one kept are written again from the
        events themselves, since a missing entry would shift every later one by a block.
        """
        path = self.job_dir / EVENTS
        entries = _read_index(self.job_dir / INDEX)
        actual = os.fstat(self._events).st_size
        entries = [offset for offset in entries if offset < actual]
        start = entries[-1] if entries else 0
        seq = (len(entries) - 1) * INDEX_EVERY if entries else 0  # the seq before ``start``
        with open(path, "rb") as f:
            f.seek(start)
            tail = f.read()
        complete = tail.rfind(b"\n") + 1
        size = start + complete
        if size < actual:
            os.truncate(path, size)
        rebuilt = bytearray()
        offset = start
        for line in tail[:complete].split(b"\n")[:-1]:  # one record a line, as appended
            seq += 1
            if (seq - 1) % INDEX_EVERY == 0:
                rebuilt += offset.to_bytes(8, "little")
            offset += len(line) + 1
        kept = max(0, len(entries) - 1)  # the last entry is among those written again
        os.ftruncate(self._index, kept * 8)
        os.pwrite(self._index, bytes(rebuilt), kept * 8)
        os.pwrite(self._counter, seq.to_bytes(8, "little") + size.to_bytes(8, "little"), 0)
        return seq, size

    def close(self) -> None:
        for fd in (self._events, self._index, self._counter):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_index(path: Path) -> list[int]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    return [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw) - len(raw) % 8, 8)]


def last_seq(job_dir: Path) -> tuple[int, int]:
    """The last seq written and the file size after it; (0, 0) for a job with no events."""
    try:
        raw = (job_dir / COUNTER).read_bytes()
    except FileNotFoundError:
        return 0, 0
    if len(raw) != 16:
        return 0, 0
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


class EventCursor:
    """Reads a job's events in order from a given seq, remembering where it is in the file."""

    def __init__(self, job_dir: Path, after: int) -> None:
        self.path = job_dir / EVENTS
        self.job_dir = job_dir
        self.seq = after  # the last seq read
        self.offset: int | None = None  # where the event after ``seq`` starts, once known

    def read(self, max_bytes: int = 256 * 1024) -> list[tuple[int, bytes]]:
        """The next events (at least one if there is one), about ``max_bytes`` at most."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return []
        with f:
            if self.offset is None:
                self.offset = self._locate(f)
                if self.offset is None:
                    return []
            f.seek(self.offset)
            data = f.read(max_bytes)
            end = data.rfind(b"\n") + 1
            if end == 0 and len(data) == max_bytes:  # one event longer than max_bytes
                data += f.readline()
                end = data.rfind(b"\n") + 1
            records = []
            for record in data[:end].splitlines(keepends=True):
                seq = seq_of(record)
                if seq > self.seq:
                    records.append((seq, record))
                    self.seq = seq
            self.offset += end
            return records

    def _locate(self, f: Any) -> int | None:
        """The offset of the event after ``self.seq``, through the index; None if not written yet."""
        block = self.seq // INDEX_EVERY
        entries = _read_index(self.job_dir / INDEX)
        if block >= len(entries):
            if not entries:
                return 0 if self.seq == 0 else self._scan(f, 0, 0)
            block = len(entries) - 1
        offset = entries[block]
        return self._scan(f, offset, block * INDEX_EVERY)

    def _scan(self, f: Any, offset: int, seq_before: int) -> int | None:
        f.seek(offset)
        skip = self.seq - seq_before
        for _ in range(skip):
            line = f.readline()
            if not line.endswith(b"\n"):
                return None
            offset += len(line)
        return offset
