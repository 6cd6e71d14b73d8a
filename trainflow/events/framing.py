"""How events go on the wire: NDJSON or Server-Sent Events, and HTTP/1.1 chunks.

One place for the bytes of every stream: a job's stream (:mod:`trainflow.events.stream`)
frames what its own greenlet writes, and the hub (:mod:`trainflow.events.hub`) frames the
batches and heartbeats it writes straight to pushed followers' sockets; both with
:class:`Framing`, so the two paths cannot disagree.

- NDJSON (``application/x-ndjson``): one JSON object per line.
- SSE (``text/event-stream``): ``data:`` per event, ``id:`` = its seq where it has one, so
  ``Last-Event-ID`` resumes; a job's heartbeat, resync and deleted carry no ``id:``, while on
  the all-jobs stream every line has one (its heartbeats say how far it has come).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from trainflow.events.types import EventType

if TYPE_CHECKING:
    from trainflow.events.changes import Change

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
RETRY = b"retry: 1000\n\n"  # SSE: an EventSource reconnects after a second
HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer this response
    "X-Content-Type-Options": "nosniff",
}


def json_line(event: dict[str, Any]) -> bytes:
    """One event as a compact JSON line."""
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def chunk(payload: bytes, is_chunked: bool) -> bytes:
    """The bytes on the wire for one write of a response body (HTTP/1.1 chunked or not)."""
    return b"%x\r\n%s\r\n" % (len(payload), payload) if is_chunked else payload


class Framing:
    """The framing one response uses: NDJSON, or SSE when ``is_sse``."""

    def __init__(self, is_sse: bool) -> None:
        self.is_sse = is_sse
        self.mimetype = SSE if is_sse else NDJSON

    @staticmethod
    def of(is_sse: bool) -> Framing:
        """The shared instance for one framing (it holds no state)."""
        return _SSE if is_sse else _NDJSON

    def events(self, records: list[tuple[int, bytes]]) -> bytes:
        """Events from a job's log, each ``(seq, line)`` as stored."""
        if not self.is_sse:
            return b"".join(record for _, record in records)
        return b"".join(b"id: %d\ndata: %s\n" % (seq, record) for seq, record in records)

    def other(self, event: dict[str, Any]) -> bytes:
        """An event without a seq of its own (no ``id:``)."""
        line = json_line(event)
        return b"data: " + line + b"\n" if self.is_sse else line

    def heartbeat(self) -> bytes:
        return self.other({"type": EventType.HEARTBEAT.value, "ts": round(time.time(), 3)})

    def resync(self, seq: int) -> bytes:
        return self.other({"type": EventType.RESYNC.value, "seq": seq})

    def deleted(self, job_id: int) -> bytes:
        return self.other(
            {"type": EventType.DELETED.value, "job_id": job_id, "message": f"Job {job_id} was deleted."}
        )

    def position(self, seq: int) -> bytes:
        """The all-jobs stream's heartbeat: how far it has come (SSE: as the id to resume from)."""
        line = json_line({"type": EventType.HEARTBEAT.value, "seq": seq, "ts": round(time.time(), 3)})
        return b"id: %d\ndata: %s\n" % (seq, line) if self.is_sse else line

    def changes(self, changes: list[Change]) -> bytes:
        """The all-jobs stream's changes, each a line made once per process."""
        if not self.is_sse:
            return b"".join(change.line for change in changes)
        return b"".join(b"id: %d\ndata: %s\n" % (change.seq, change.line) for change in changes)


_NDJSON = Framing(is_sse=False)
_SSE = Framing(is_sse=True)
