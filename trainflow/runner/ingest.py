"""The supervisor's way to the servers: a job's events and status, posted to the ingest endpoint.

Standard library only: the supervisor imports it. Used instead of the job's event log when the
spec has ``"ingest": {"url": ..., "token": ...}`` (shared mode, a cluster): the servers store the
events (``trainflow/jobs/ingest.py``), whichever host the job runs on.

One thread sends; the supervisor's read loop only adds. Every event gets the supervisor's own
ordinal (1, 2, 3 ... for the whole job); a request carries the oldest events not yet
acknowledged (at most ``BATCH_EVENTS`` or ``BATCH_BYTES``: whatever gathered while the previous
request was out, and for at least ``GATHER_S`` after its start, so a quiet job's line leaves at
once and a job printing all the time makes 100 requests a second at most) and the ordinal of the
first, and the answer's ``through`` says which the server holds. So an answer lost on the way
makes the same events go again and the server keeps them once; a server that lost some (a gap)
says where to resume. One request is out at a time, each with a timeout, and a failure is
retried with a growing pause (up to ``MAX_PAUSE_S``).

Memory stays bounded: what is not acknowledged counts in :attr:`IngestSink.pending_bytes`, which
the supervisor adds to its backlog: past its bound it stops reading the job's pipes, and the job
waits on its prints, as on a full disk. Nothing is dropped while the servers may still take it.

A job silent for ``KEEPALIVE_S`` still makes a request (with no event), so the servers know its
supervisor lives (a survivor does not take it for a dead host's job) and a cancel reaches it.
The answer's ``cancel`` is a cancel asked on any host: the supervisor ends the job as on SIGTERM.
Servers that say the job has ended or is gone (409 ``job_finished``, 404) take nothing more: the
supervisor ends the job. A batch the servers refuse as malformed, too large or not this job's
(400, 413, 415, 403), and failures that last ``give_up_s`` (servers unreachable, busy, refusing
the token), make the sink give up (:attr:`IngestSink.failure`): the supervisor ends the job, and
says on stderr how much it could not deliver.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

BATCH_EVENTS = 500
BATCH_BYTES = 256 * 1024
TIMEOUT_S = 10.0  # each request: connecting, sending, and each wait for the answer
GIVE_UP_S = 600.0  # failures for this long (servers unreachable, refusing): the sink gives up
KEEPALIVE_S = 5.0  # a job silent this long still reports (it lives; a cancel reaches it)
GATHER_S = 0.01  # the least time between two requests' starts, unless a batch is full
FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 5.0
MAX_ANSWER = 1024 * 1024
# Answers that the same request would get again: the sink gives up at once. (A 401 is retried:
# hosts being given a new signing key one after the other refuse a token for a while.)
REFUSED = (400, 403, 413, 415)
OVERHEAD = 16  # bytes counted per held event besides its own, as the event log's sink counts


class IngestSink:
    """Sends one job's events and status to the ingest endpoint, from a thread of its own."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = TIMEOUT_S,
        give_up_s: float = GIVE_UP_S,
        keepalive_s: float = KEEPALIVE_S,
        batch_events: int = BATCH_EVENTS,
        batch_bytes: int = BATCH_BYTES,
        resume: bool = False,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the ingest URL must be http:// or https://, not {url!r}")
        self.parts = parts
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.token = token
        self.timeout_s = timeout_s
        self.give_up_s = give_up_s
        self.keepalive_s = keepalive_s
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self._cond = threading.Condition()
        self._sending = threading.Lock()  # held around each request; see :meth:`paused`
        self._held: collections.deque[bytes] = collections.deque()  # not acknowledged, in order
        self._first = 1  # the ordinal of _held[0]
        self.pending_bytes = 0
        self._status: dict[str, Any] | None = None
        self._status_version = 0
        self._status_acked = 0
        self._stop = False
        self._failing_since: float | None = None
        self.last_error: str | None = None
        self.cancel_requested = False  # the servers answered that a cancel was asked
        self.has_ended = False  # the servers have recorded the job's end (or it was deleted)
        self.failure: str | None = None  # why the sink gave up; nothing more is sent
        self.delivered = 0  # the highest ordinal the servers hold
        self._sent = 0  # the highest ordinal ever sent
        self._connection: http.client.HTTPConnection | None = None
        # A retried job's later attempt: the servers hold the earlier attempts' records, numbered
        # 1 to N by their supervisors; this one asks for N first and numbers on from N + 1.
        self.resume = resume
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    # -- what the supervisor calls ------------------------------------------------------------

    def add(self, data: bytes) -> None:
        """One event (a fragment, as :func:`trainflow.runner.eventlog.fragment` makes it)."""
        with self._cond:
            if self.is_closed:
                return
            self._held.append(data)
            self.pending_bytes += len(data) + OVERHEAD

    def flush(self) -> bool:
        """Wake the sender for what was added; it never waits (True: nothing is refused here)."""
        with self._cond:
            self._cond.notify_all()
        return True

    def report(self, status: dict[str, Any]) -> None:
        """The supervisor's status (``status.json``'s fields); sent with the next request."""
        with self._cond:
            self._status = dict(status)
            self._status_version += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Wait until every event added is delivered, or the sink gave up (the sender goes on)."""
        self.wait(lambda: not self._held)

    def finish(self, status: dict[str, Any]) -> bool:
        """Send the final status, then stop; False if it could not be delivered."""
        self.report(status)
        self.wait(lambda: self._status_acked == self._status_version)
        with self._cond:
            is_sent = self._status_acked == self._status_version or self.has_ended
            self._stop = True
            self._cond.notify_all()
        self._thread.join(self.timeout_s + 1)
        return is_sent

    def wait(self, is_done: Any) -> None:
        with self._cond:
            while not is_done() and not self.is_closed and self._thread.is_alive():
                self._cond.wait(1.0)

    @property
    def is_closed(self) -> bool:
        """Whether the servers will take nothing more (the job ended there, or the sink gave up)."""
        return self.has_ended or self.failure is not None

    @property
    def undelivered(self) -> int:
        """Events added that the servers do not hold."""
        with self._cond:
            return len(self._held)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No request in progress while the block runs (the supervisor forks a job in it).

        A child forked while the sender holds a lock (in ``ssl``, in ``http.client``) could
        deadlock in ``preexec_fn``; the sender waits between requests instead.
        """
        with self._sending:
            yield

    # -- the sender ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.resume:
                self._resume()
            self._send_all()
        except BaseException as e:  # a bug here must not leave the supervisor waiting forever
            with self._cond:
                self.failure = f"its sender failed: {e!r}"
                self._cond.notify_all()
            raise
        finally:
            self._close_connection()

    def _send_all(self) -> None:
        pause = 0.0
        last_start = 0.0
        while True:
            with self._cond:
                while not self._stop and not self.is_closed and not self._has_work():
                    silent_for = time.monotonic() - last_start
                    if silent_for >= self.keepalive_s:
                        break  # an empty batch: the job lives, and the answer may say cancel
                    self._cond.wait(self.keepalive_s - silent_for)
                # A job printing a line every few ms would make a request of each: one soon after
                # the last waits a moment for more (unless a full batch is there already).
                gather_until = last_start + GATHER_S
                while not self._stop and not self._is_full() and time.monotonic() < gather_until:
                    self._cond.wait(gather_until - time.monotonic())
                if self._stop or self.is_closed:
                    break
                last_start = time.monotonic()
                first, batch = self._first, self._batch()
                self._sent = max(self._sent, first + len(batch) - 1)
                version = self._status_version
                status = self._status if version != self._status_acked else None
            try:
                with self._sending:
                    code, answer = self._post(first, batch, status)
            except (OSError, http.client.HTTPException, ValueError) as e:
                code, answer = 0, {"error": {"message": str(e) or type(e).__name__}}
            with self._cond:
                self._take(code, answer, first, len(batch), version)
                is_failing = self._failing_since is not None
                self._cond.notify_all()
            if is_failing:
                pause = min(MAX_PAUSE_S, max(FIRST_PAUSE_S, pause * 2))
                with self._cond:
                    self._cond.wait_for(lambda: self._stop, pause * random.uniform(0.5, 1.0))  # noqa: S311
            else:
                pause = 0.0

    def _resume(self) -> None:
        """Ask (an empty batch) which ordinal the servers hold through; number this sink's on from it."""
        pause = 0.0
        while True:
            with self._cond:
                if self._stop or self.is_closed:
                    return
            try:
                with self._sending:
                    code, answer = self._post(1, [], None)
            except (OSError, http.client.HTTPException, ValueError) as e:
                code, answer = 0, {"error": {"message": str(e) or type(e).__name__}}
            with self._cond:
                if code == 200 and isinstance(answer.get("through"), int) and answer["through"] >= 0:
                    through = answer["through"]
                    self._first += through  # nothing of this sink was sent: its first is through + 1
                    self._sent = self.delivered = through
                    self.cancel_requested = answer.get("cancel") is True
                    self._failing_since = None
                    self._cond.notify_all()
                    return
                self._take(code, answer, 1, 0, self._status_acked)
                self._cond.notify_all()
            pause = min(MAX_PAUSE_S, max(FIRST_PAUSE_S, pause * 2))
            with self._cond:
                self._cond.wait_for(lambda: self._stop, pause * random.uniform(0.5, 1.0))  # noqa: S311

    def _is_full(self) -> bool:
        return len(self._held) >= self.batch_events or self.pending_bytes >= self.batch_bytes

    def _has_work(self) -> bool:
        return bool(self._held) or self._status_version != self._status_acked

    def _batch(self) -> list[bytes]:
        batch: list[bytes] = []
        size = 0
        for data in self._held:
            if batch and (len(batch) >= self.batch_events or size + len(data) > self.batch_bytes):
                break
            batch.append(data)
            size += len(data) + 2
        return batch

    def _take(self, code: int, answer: dict[str, Any], first: int, count: int, version: int) -> None:
        """What an answer means for what is held; under the lock."""
        error: dict[str, Any] = answer["error"] if isinstance(answer.get("error"), dict) else {}
        if code == 200 and isinstance(answer.get("through"), int):
            self._acknowledge(answer["through"])
            self._status_acked = max(self._status_acked, version)
            if answer.get("cancel") is True:
                self.cancel_requested = True
            self._failing_since = None
            self.last_error = None
            return
        if code == 409 and error.get("code") == "ingest_gap" and isinstance(error.get("through"), int):
            through = error["through"]
            if through + 1 >= self._first:
                self._acknowledge(through)  # it holds more than we thought: resume after it
                return
            self.failure = f"the servers lost events {through + 1} to {self._first - 1} of this job"
            return
        if code == 404 or (code == 409 and error.get("code") == "job_finished"):
            self.has_ended = True  # deleted, or its end recorded (LOST, by another host)
            return
        self.last_error = f"HTTP {code}: {error.get('message')}" if code else str(error.get("message"))
        if code in REFUSED:
            self.failure = f"the servers refused its records ({self.last_error})"
            return
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= self.give_up_s:
            self.failure = f"the servers took nothing for {self.give_up_s:.0f} s ({self.last_error})"

    def _acknowledge(self, through: int) -> None:
        # A server cannot hold what was never sent: a wrong answer must not make us forget events.
        through = min(through, self._sent)
        self.delivered = max(self.delivered, through)
        while self._held and self._first <= through:
            self.pending_bytes -= len(self._held.popleft()) + OVERHEAD
            self._first += 1

    def _post(
        self, first: int, batch: list[bytes], status: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        body = b'{"first":%d,"events":[%s]' % (first, b",".join(b"{" + data for data in batch))
        if status is not None:
            body += b',"status":' + json.dumps(status).encode()
        body += b"}"
        connection = self._connection or self._connect()
        try:
            connection.request(
                "POST",
                self.path,
                body,
                {
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {self.token}",
                },
            )
            response = connection.getresponse()
            raw = response.read(MAX_ANSWER)
        except BaseException:
            self._close_connection()  # a half-read answer: this connection is of no more use
            raise
        if response.will_close:
            self._close_connection()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self.parts.hostname or "", self.parts.port
        if self.parts.scheme == "https":
            self._connection = http.client.HTTPSConnection(host, port, timeout=self.timeout_s)
        else:
            self._connection = http.client.HTTPConnection(host, port, timeout=self.timeout_s)
        return self._connection

    def _close_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError):
                self._connection.close()
            self._connection = None


def sink_for(spec: dict[str, Any]) -> IngestSink | None:
    """The sink a supervisor's spec asks for (``"ingest": {"url", "token", ...}``), if any."""
    ingest = spec.get("ingest")
    if not ingest:
        return None
    return IngestSink(
        ingest["url"],
        ingest["token"],
        timeout_s=float(ingest.get("timeout_s") or TIMEOUT_S),
        give_up_s=float(ingest.get("give_up_s") or GIVE_UP_S),
        keepalive_s=float(ingest.get("keepalive_s") or KEEPALIVE_S),
        resume=bool(ingest.get("resume")),
    )
