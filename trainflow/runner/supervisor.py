"""The job supervisor: runs one job's process and records everything it prints and how it ends.

Started by the web process as ``python -m trainflow.runner.supervisor JOB_DIR`` in a session of
its own, so it outlives a restart (or a SIGKILL) of the web process. It uses the standard
library only: it starts in tens of milliseconds and holds a few MB per job.

``JOB_DIR/spec.json`` (written by the web process) says what to run. The supervisor writes:

- ``logs.ndjson``: one JSON record per output line: ``{"n", "ts", "stream", "line"}``, plus
  ``"partial": true`` when the line was cut (over 64 KB, or no newline for a second). A
  progress bar redrawn with ``\\r`` is kept as the line a terminal would finally show.
- the job's event log (:mod:`trainflow.runner.eventlog`): a ``log`` event per line, and a
  ``progress`` event (at most ten a second) each time a tqdm-style bar is redrawn or the job
  prints a ``trainflow:progress {...}`` line. After each batch it publishes a notice on the
  bus (``spec["bus"]``) so that followers are woken.
- Before the job, the optional ``setup`` steps (argv lists) run the same way; one that fails
  ends the job with reason ``setup_failed``.
- ``status.json``, replaced atomically on each change: ``starting`` → ``running`` (with the
  job's pid) → ``exited`` (with ``exit_code``, ``signal`` and ``reason``: ``cancelled``,
  ``timed_out``, a limit's (``memory_limit``, ``process_limit``, ``disk_limit``,
  ``open_files_limit``, with its ``message``), a full disk's (``disk_full``, or
  ``storage_failed`` for another write error, with its ``message``) or null).

``spec["limits"]`` (:class:`trainflow.runner.limits.Limits`) bounds the job and its setup steps:
the supervisor makes the job's cgroup where it can, hands the launcher the rlimits, measures
what no cgroup counts, and SIGKILLs the job (no grace) when it exceeds one. ``status.json``
says which mechanism held each limit (``"limits"``).

With ``spec["sandbox"]`` (a policy, see :mod:`trainflow.runner.sandbox`) the job runs in a
sandbox, and with ``spec["setup_sandbox"]`` so do the setup steps; ``status.json`` then holds
what the sandbox applied (``"sandbox"``). After the setup steps succeed, each
``spec["setup_publish"]`` pair ``[built, place]`` moves a folder they built into place.
A sandboxed job has a PID namespace of its own: when its first process exits, whatever it
left running is killed at once, and an exit code above 128 from bubblewrap is recorded as the
signal that killed the job.

A full disk never ends the supervisor: what it could not write (log records, events, its status)
stays in memory, up to ``MAX_BACKLOG`` bytes (past that it stops reading the job's output, so
the job waits on its own prints), and is written once there is room again. If the disk stays
full for ``spec["disk_full_s"]`` seconds, the job is ended with reason ``disk_full`` (or
``storage_failed`` for another write error) and a message naming the disk. At start the
supervisor sets ``RESERVE_BYTES`` aside in ``JOB_DIR/.reserve`` and deletes it when the job
ends, so that its final status (and the server's record of the end) has room on a full disk.

SIGTERM to the supervisor cancels the job; so does ``JOB_DIR/cancel-requested`` found at
start. The job runs in its own process group; ending it
sends SIGTERM to the whole group and SIGKILL after the grace period, children included.
A datagram to ``spec["notify"]`` (if that socket exists) tells the web process a state changed.

With ``spec["ingest"]`` (``{"url", "token"}``: shared mode, a cluster) the events and every
status go to the servers' ingest endpoint instead (:mod:`trainflow.runner.ingest`), and neither
``logs.ndjson`` nor the event log is written here; ``status.json`` still is. What the servers
have not acknowledged counts in the same ``MAX_BACKLOG``, so a slow or unreachable server holds
the job on its prints as a full disk does. A ``cancel`` in an answer acts as SIGTERM; servers
that refuse everything for the sink's give-up time end the job with ``storage_failed``. The final
status goes through the ingest last, after ``status.json``.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import errno
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from trainflow.runner import sandbox
from trainflow.runner.catalogue import EventType
from trainflow.runner.enforcement import JobLimits, cgroup_name
from trainflow.runner.eventlog import EVENTS, LOG_TYPE, PREFIX, EventWriter, fragment, last_seq
from trainflow.runner.ingest import IngestSink, sink_for
from trainflow.runner.limits import REASONS, Limits, apply_rlimits, message
from trainflow.runner.notice import publisher_for
from trainflow.runner.progress import parse_bar, parse_marker
from trainflow.runner.runlog import RunLog
from trainflow.runner.sysmetrics import SystemSampler
from trainflow.runner.tracebacks import TAIL_LINES, missing_module

MAX_LINE = 64 * 1024
IDLE_FLUSH_S = 1.0
PROGRESS_EVERY_S = 0.1  # a bar redrawn faster than this still makes ten events a second at most
DRAIN_S = 2.0  # how long a job's leftover children may keep its pipes open after it exits
MAX_BACKLOG = 8 * 1024 * 1024  # bytes of records and events held in memory while the disk is full
RETRY_S = 0.5  # how often writes are tried again while the disk is full
RESERVE = ".reserve"
CANCEL_MARKER = "cancel-requested"  # written in JOB_DIR by the server before it sends SIGTERM
CHECKPOINT_DIR = "checkpoint"  # in JOB_DIR: the job's own, kept across a retried job's attempts
RESERVE_BYTES = 1024 * 1024  # room for the final status, and for the server to record the end
DISK_FULL = "disk_full"
STORAGE_FAILED = "storage_failed"
STORAGE_REASONS = (DISK_FULL, STORAGE_FAILED)
DISK_FULL_S = 120.0  # how long a job waits for room when the spec does not say


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # half written on a full disk: the old status stands
        raise


def say(text: str) -> None:
    """A line in supervisor.log; lost, not raised, when the disk holding it is full."""
    with contextlib.suppress(OSError, ValueError):
        print(text, flush=True)


class StorageTrouble:
    """Whether the job's folder is refusing writes, since when, and why."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.since: float | None = None  # monotonic time of the first failure of this spell
        self.error: OSError | None = None
        self.retry_at = 0.0

    def failed(self, error: OSError) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            say(f"job {self.job}: cannot write to the data directory ({error.strerror}); holding output")
        self.error = error
        self.retry_at = now + RETRY_S

    def recovered(self) -> None:
        if self.since is not None:
            say(f"job {self.job}: writing again after {time.monotonic() - self.since:.1f} s")
        self.since = None
        self.error = None

    @property
    def is_waiting(self) -> bool:
        """Whether the last write failed and it is too soon to try again."""
        return self.since is not None and time.monotonic() < self.retry_at

    @property
    def reason(self) -> str:
        return DISK_FULL if self.is_disk_full else STORAGE_FAILED

    @property
    def is_disk_full(self) -> bool:
        return self.error is not None and self.error.errno in (errno.ENOSPC, errno.EDQUOT)

    def message(self, waited: float | None, exit_code: int | None, lost: int) -> str:
        if self.is_disk_full:
            text = "The disk holding the data directory is full"
        else:
            strerror = self.error.strerror if self.error is not None else "an error"
            text = f"The data directory could not be written ({strerror})"
        if waited is not None:
            text += f"; the job was ended after {waited:.0f} s without room for its output"
        elif exit_code:
            text += f"; the job exited with code {exit_code}"
        if lost:
            text += f"; the last {lost} bytes of its output could not be stored"
        return text + "."


INDEX_EVERY = 1000  # logs.idx holds the byte offset of every 1000th record


class EventSink:
    """Collects the events of one pass of the read loop, then appends and announces them."""

    def __init__(
        self, job_dir: Path, job_id: Any, bus: dict[str, Any] | None, trouble: StorageTrouble | None = None
    ) -> None:
        self.job_dir = job_dir
        self.writer: EventWriter | None = None  # opened on the first write (it creates files)
        self.job_id = job_id
        self.publisher = publisher_for(bus or {})
        self.trouble = trouble or StorageTrouble(job_id)
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def add(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_bytes += len(data) + 16

    def flush(self) -> bool:
        """Append what is pending; False if some of it is still waiting for room."""
        if not self.pending:
            return True
        start = 0
        try:
            if self.writer is None:
                self.writer = EventWriter(self.job_dir)
            start = last_seq(self.job_dir)[1]
            seq = self.writer.append(self.pending)
        except OSError as e:
            self.trouble.failed(e)
            self._forget_stored(start)
            return False
        self.pending = []
        self.pending_bytes = 0
        if self.publisher is not None:
            self.publisher.publish({"kind": "events", "job": self.job_id, "seq": seq})
        return True

    def _forget_stored(self, start: int) -> None:
        """After a failed append, drop from ``pending`` the events that were stored all the same.

        A write cut short by a full disk can leave whole events in the file before the torn one.
        The next writer keeps those (it cuts only the torn tail), so sending them again would
        repeat them. They are the first of ``pending``, in a row, after byte ``start``.
        """
        if self.writer is None:
            return
        try:
            self.writer.append([])  # cuts the torn tail, the writers' usual repair
            with open(self.job_dir / EVENTS, "rb") as f:
                f.seek(start)
                written = f.read()
        except OSError:
            return  # cannot tell: write them again later (a repeat rather than a loss)
        kept = 0
        for record in written.split(b"\n"):
            if kept == len(self.pending):
                break
            body = record[record.find(b",", len(PREFIX)) + 1 :] if record.startswith(PREFIX) else b""
            if body == self.pending[kept]:
                kept += 1
            elif kept:
                break  # one batch is written in one piece: they follow each other
        if kept:
            self.pending_bytes -= sum(len(data) + 16 for data in self.pending[:kept])
            del self.pending[:kept]

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()
        if self.publisher is not None:
            self.publisher.close()


class LogWriter:
    """Numbers records and appends them to the log file, with a sparse index of offsets.

    Records are formatted by hand with the C string escaper: ``json.dumps`` per line costs
    about five times as much, and a job printing 100,000 lines a second pays for it. Each
    line also goes to the job's event log through ``events``.
    """

    def __init__(
        self,
        path: Path | None,
        events: EventSink | IngestSink | None = None,
        trouble: StorageTrouble | None = None,
        first_line: int = 0,
    ) -> None:
        self.path = path  # None: no log file (the events go to the servers' ingest)
        self.events = events
        self.trouble = trouble or (events.trouble if isinstance(events, EventSink) else StorageTrouble(None))
        # Lines are numbered across a retried job's attempts: on from those in the file, or (with
        # no file) from those the spec says earlier attempts wrote.
        self.count = _count_lines(path) if path is not None else first_line
        self._position = path.stat().st_size if path is not None and path.exists() else 0
        # Written with os.write from buffers of our own: what a full disk refused stays here,
        # in order, and goes out on the next try (a buffered file would lose track of it).
        self._data = bytearray()
        self._index_data = bytearray()
        self._fds: dict[str, int] = {}
        if path is not None:
            with contextlib.suppress(OSError):  # made now, so the job has a log from its start
                self._fd("log")
                self._fd("index")
        self.now = time.time()  # one timestamp per chunk read, set by the reader
        # The job's last lines on stderr: what a traceback ended with (trainflow.runner.tracebacks).
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def write(self, stream: str, line: str, is_partial: bool = False) -> None:
        if self.count % INDEX_EVERY == 0 and self.path is not None:
            self._index_data += self._position.to_bytes(8, "little")
        self.count += 1
        # The log record and the log event share everything after their first field: escape
        # and encode the line once for both.
        flag = ',"partial":true' if is_partial else ""
        body = (
            f'"ts":{self.now:.6f},"stream":"{stream}","n":{self.count},"line":{encode_basestring(line)}{flag}}}'
        ).encode("utf-8", "surrogatepass")
        if self.path is not None:
            data = b"{" + body + b"\n"
            self._data += data
            self._position += len(data)
        if self.events is not None:
            self.events.add(LOG_TYPE + body)
        if stream == "stderr":
            self.stderr_tail.append(line)
        if len(self._data) >= 1 << 16 and not self.trouble.is_waiting:
            self._write_out()

    def progress(self, fields: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.add(fragment(EventType.PROGRESS, self.now, **fields))

    def system(self, fields: dict[str, Any], ts: float) -> None:
        if self.events is not None:
            self.events.add(fragment(EventType.SYSTEM, ts, **fields))

    @property
    def backlog(self) -> int:
        """Bytes waiting to be written (all of them only while the disk refuses them)."""
        return len(self._data) + len(self._index_data) + (self.events.pending_bytes if self.events else 0)

    def flush(self, force: bool = False) -> bool:
        """Write out what is waiting; False if the disk refused some of it (it is kept)."""
        if self.trouble.is_waiting and not force:
            return False
        is_done = self._write_out()
        if self.events is not None:
            is_done = self.events.flush() and is_done
        if is_done:
            self.trouble.recovered()
        return is_done

    def _write_out(self) -> bool:
        if self.path is None:
            return True
        # The log first: an index entry never points past what the log holds.
        for name, buffer in (("log", self._data), ("index", self._index_data)):
            try:
                fd = self._fd(name)
                while buffer:
                    del buffer[: os.write(fd, buffer)]
            except OSError as e:
                self.trouble.failed(e)
                return False
        return True

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            assert self.path is not None
            path = self.path if name == "log" else self.path.with_suffix(".idx")
            fd = self._fds[name] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        return fd

    def close(self) -> None:
        self.flush(force=True)
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = {}
        if self.events is not None:
            self.events.close()


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


_BREAKS = re.compile(r"[\r\n]")


class LineSplitter:
    """Turns one stream's bytes into lines, the way a terminal would show them."""

    def __init__(self, stream: str, log: LogWriter) -> None:
        self.stream = stream
        self.log = log
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""
        self.is_overwriting = False  # a \r was seen: the next text replaces the line
        self.has_carriage = False  # the pending line is a redrawn one (a progress bar)
        self.last_data = time.monotonic()
        self.last_bar = ""  # the last redrawn text read as a progress bar
        self.bar_progress: dict[str, Any] | None = None  # progress not yet sent (throttled)
        self.progress_at = 0.0

    def feed(self, data: bytes) -> None:
        self.last_data = time.monotonic()
        text = self.decoder.decode(data)
        start = 0
        for match in _BREAKS.finditer(text):
            self._append(text[start : match.start()])
            if match.group() == "\n":
                self._emit()
            else:
                if self.pending and not self.is_overwriting:
                    self._bar(self.pending)
                self.is_overwriting = True
                self.has_carriage = True
            start = match.end()
        self._append(text[start:])
        if self.has_carriage and self.pending and not self.is_overwriting:
            self._bar(self.pending)

    def _bar(self, text: str) -> None:
        """A redrawn line: if it reads as a progress bar, its state becomes a progress event."""
        if text == self.last_bar:
            return
        self.last_bar = text
        progress = parse_bar(text)
        if progress is not None:
            self.bar_progress = progress
            self._send_progress(time.monotonic())

    def _send_progress(self, now: float, force: bool = False) -> None:
        if self.bar_progress is not None and (force or now - self.progress_at >= PROGRESS_EVERY_S):
            self.log.progress(self.bar_progress)
            self.bar_progress = None
            self.progress_at = now

    def _append(self, text: str) -> None:
        if not text:
            return
        if self.is_overwriting:
            self.pending = ""
            self.is_overwriting = False
        self.pending += text
        while len(self.pending) > MAX_LINE:
            self.log.write(self.stream, self.pending[:MAX_LINE], is_partial=True)
            self.pending = self.pending[MAX_LINE:]

    def _emit(self) -> None:
        if self.has_carriage:
            self._bar(self.pending)
            self._send_progress(time.monotonic(), force=True)  # the bar's final state
        marked = parse_marker(self.pending) if self.pending.startswith("trainflow:") else None
        if marked is not None:
            self.log.progress(marked)
        else:
            self.log.write(self.stream, self.pending)
        self.pending = ""
        self.is_overwriting = False
        self.has_carriage = False

    def flush_idle(self, now: float) -> None:
        """Write out text that has waited a second for its newline (not a bar being redrawn)."""
        self._send_progress(now)
        if self.pending and not self.has_carriage and now - self.last_data >= IDLE_FLUSH_S:
            self.log.write(self.stream, self.pending, is_partial=True)
            self.pending = ""

    def close(self) -> None:
        self._append(self.decoder.decode(b"", final=True))
        if self.pending:
            self._emit()


class Supervisor:
    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        self.spec: dict[str, Any] = json.loads((job_dir / "spec.json").read_text(encoding="utf-8"))
        self.status_path = job_dir / "status.json"
        self.reason: str | None = None
        self.kill_at: float | None = None  # when SIGKILL follows the SIGTERM already sent
        self.process: subprocess.Popen[bytes] | None = None
        # The job's limits (trainflow.runner.enforcement): its cgroup is named after the job and
        # this supervisor, so jobs of other servers on the machine never share one.
        name = cgroup_name(job_dir.parent, self.spec.get("job"), os.getpid())
        self.limits = JobLimits(Limits.from_json(self.spec.get("limits")), job_dir, name)
        self.trouble = StorageTrouble(self.spec.get("job"))
        self.disk_full_s = float(self.spec.get("disk_full_s") or DISK_FULL_S)
        self.is_status_pending = False  # a status the disk refused, written on the next try
        self.status: dict[str, Any] = {}
        self.ingest: IngestSink | None = None  # the servers' ingest, when the spec names one
        # The job's CPU, memory and GPU use (trainflow.runner.sysmetrics), sampled once it runs,
        # and its MLflow run, where the samples go too (trainflow.runner.runlog).
        self.system = SystemSampler.from_spec(self.spec)
        self.runlog: RunLog | None = None
        self.log: LogWriter | None = None  # its final status says the number of the last line

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_cancel)
        signal.signal(signal.SIGINT, self._on_cancel)
        if (self.job_dir / CANCEL_MARKER).exists():  # cancelled before this process could hear it
            self.reason = "cancelled"
        self._reserve()
        self.ingest = sink_for(self.spec)
        self._set_status(state="starting", supervisor_pid=os.getpid())
        if self.ingest is not None:
            log = LogWriter(None, self.ingest, self.trouble, first_line=int(self.spec.get("log_from") or 0))
        else:
            events = EventSink(self.job_dir, self.spec.get("job"), self.spec.get("bus"), self.trouble)
            log = LogWriter(self.job_dir / "logs.ndjson", events)
        self.log = log
        self.limits.start()
        say(f"job {self.spec.get('job')}: {self.limits.describe()}")  # supervisor.log
        if self.reason == "cancelled":  # cancelled before it started
            self.limits.close()
            self._close_log(log)
            self._final_status(
                state="exited", exit_code=None, signal=None, reason="cancelled", finished_at=time.time()
            )
            return 0
        for step in self.spec.get("setup", []):
            code = self._run_step(step, log)
            if code != 0 or self.reason == "cancelled":
                self.limits.close()
                lost = self._close_log(log)
                reason: str | None = self.reason or "setup_failed"
                self._final_status(
                    state="exited",
                    exit_code=code,
                    signal=None,
                    reason=reason,
                    finished_at=time.time(),
                    **self._limit_status(reason, code, lost),
                )
                return 0
        self._publish()
        policy = self.spec.get("sandbox")
        try:
            self.process, applied = self._start(self.spec["argv"], self.spec["env"], policy)
        except (OSError, sandbox.SandboxError) as e:
            log.write("stderr", f"trainflow: could not start the job: {e}")
            self.limits.close()
            self._close_log(log)
            self._final_status(
                state="exited", exit_code=127, signal=None, reason="start_failed", finished_at=time.time()
            )
            return 0
        started = time.time()
        self._set_status(
            state="running",
            supervisor_pid=os.getpid(),
            pid=self.process.pid,
            started_at=started,
            sandbox=applied,
            limits=self.limits.mechanisms(),
        )
        if self.reason == "cancelled":
            self._terminate()
        log.stderr_tail.clear()  # what the setup steps said is not the job's
        if self.system is not None:
            self.system.start(self.process.pid, also=self._cgroup_pids())
            self.runlog = RunLog.from_env(self.spec["env"])
        timeout = self.spec.get("timeout_s")
        deadline = started + timeout if timeout else None
        self._pump(log, deadline)
        code = self.process.wait()
        self._stop_system()
        lost = self._close_log(log)
        exit_code, signum = sandbox.exit_status(code) if policy else (code, None)
        if not policy and code < 0:
            exit_code, signum = None, -code
        reason = self.reason
        if policy and applied is None and reason is None:
            reason = "start_failed"  # the sandbox did not come up; the launcher said why in the log
        if reason is None and (exit_code or signum):
            reason = self.limits.final_reason(exit_code, signum)  # an OOM kill, SIGXFSZ, ...
        if reason is None and (exit_code or signum or lost) and self.trouble.since is not None:
            reason = self.trouble.reason  # it failed while the disk was full: that is the news
        if reason is None and lost and self.ingest is not None:
            reason = STORAGE_FAILED  # the servers did not take all it printed
        self.limits.close()  # whatever the job left in its cgroup goes with it
        # A job that died of a missing import: the server says how to declare the package.
        missing = missing_module(log.stderr_tail) if reason is None and exit_code else None
        self._final_status(
            state="exited",
            exit_code=exit_code,
            signal=signum,
            reason=reason,
            started_at=started,
            finished_at=time.time(),
            pid=self.process.pid,
            sandbox=applied,
            **self._limit_status(reason, exit_code, lost),
            **({"missing_module": missing} if missing else {}),
        )
        return 0

    def _limit_status(
        self, reason: str | None, exit_code: int | None = None, lost: int = 0
    ) -> dict[str, Any]:
        """What status.json says of the limits: which mechanism held each, and the one exceeded."""
        status: dict[str, Any] = {"limits": self.limits.mechanisms()}
        if reason in REASONS:
            status["message"] = message(reason, self.limits.limits)
        elif reason in STORAGE_REASONS and self.ingest is not None and self.trouble.since is None:
            status["message"] = (
                f"The servers did not take the job's output: {self.ingest.failure or self.ingest.last_error}"
                + (f"; the last {self.ingest.undelivered} events of it are lost." if lost else ".")
            )
        elif reason in STORAGE_REASONS:
            waited = self.disk_full_s if self.storage_ended else None
            status["message"] = self.trouble.message(waited, exit_code, lost)
        return status

    # -- a full disk --------------------------------------------------------------------------

    def _reserve(self) -> None:
        """Set room aside for the end: the final status, and the server's record of it."""
        path = self.job_dir / RESERVE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                chunk = bytes(64 * 1024)  # written, not sparse: the blocks must be taken now
                for _ in range(RESERVE_BYTES // len(chunk)):
                    os.write(fd, chunk)
            finally:
                os.close(fd)
        except OSError as e:
            say(f"job {self.spec.get('job')}: no room set aside for its end ({e.strerror})")
            self._release_reserve()

    def _release_reserve(self) -> bool:
        try:
            os.unlink(self.job_dir / RESERVE)
        except OSError:
            return False
        return True

    def _close_log(self, log: LogWriter) -> int:
        """Write out what the job printed, waiting for room while the disk is full (bounded);
        return the bytes given up."""
        if self.ingest is not None:
            log.close()  # waits until the servers hold every event, or the sink gave up
            lost = self.ingest.pending_bytes
            if lost:
                print(
                    f"job {self.spec.get('job')}: {self.ingest.undelivered} events could not be "
                    f"delivered: {self.ingest.failure or self.ingest.last_error}",
                    file=sys.stderr,
                    flush=True,
                )
            return lost
        while not log.flush(force=True) and not self._has_waited_enough():
            time.sleep(RETRY_S)
        lost = log.backlog
        log.close()
        if lost:
            say(f"job {self.spec.get('job')}: {lost} bytes of output could not be stored")
        return lost

    def _has_waited_enough(self) -> bool:
        since = self.trouble.since
        return since is None or time.monotonic() - since >= self.disk_full_s

    @property
    def storage_ended(self) -> bool:
        """Whether the supervisor ended the job because the disk stayed full."""
        return self.reason in STORAGE_REASONS

    def _preexec(self) -> None:
        """In a job's (or setup step's) first process, unsandboxed: its cgroup and rlimits."""
        self.limits.preexec()
        apply_rlimits(self.limits.rlimits())

    def _start(
        self, argv: list[str], env: dict[str, str], policy: dict[str, Any] | None
    ) -> tuple[subprocess.Popen[bytes], dict[str, Any] | None]:
        """Start a job or setup step, in the policy's sandbox if there is one.

        Returns the process and what the sandbox applied (None without a policy, or if the
        sandbox failed to come up: the process then exits 126 having said why on stderr).
        """
        with self.ingest.paused() if self.ingest is not None else contextlib.nullcontext():
            return self._spawn(argv, env, policy)

    def _spawn(
        self, argv: list[str], env: dict[str, str], policy: dict[str, Any] | None
    ) -> tuple[subprocess.Popen[bytes], dict[str, Any] | None]:
        if not policy:
            process = subprocess.Popen(
                argv,
                cwd=self.spec["cwd"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                bufsize=0,
                # Safe: the ingest's sender, the one other thread, is between requests (paused).
                preexec_fn=self._preexec,
            )
            return process, None
        return sandbox.spawn(
            argv,
            policy,
            self.spec["cwd"],
            limits=self.limits.rlimits(),
            preexec_fn=self.limits.preexec,  # its cgroup; the launcher applies the rlimits
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )

    def _run_step(self, argv: list[str], log: LogWriter) -> int:
        """A setup step (such as building the job's environment), captured like the job itself."""
        policy = self.spec.get("setup_sandbox")
        try:
            self.process, _ = self._start(argv, self.spec.get("setup_env", self.spec["env"]), policy)
        except (OSError, sandbox.SandboxError) as e:
            log.write("stderr", f"trainflow: could not run a setup step: {e}")
            return 127
        self._pump(log, None)
        code = self.process.wait()
        self.process = None
        return code

    def _publish(self) -> None:
        """Move what the setup steps built (a venv, in a folder of this job's) into place."""
        identity = (self.spec.get("setup_sandbox") or {}).get("identity")
        for built, place in self.spec.get("setup_publish", []):
            # Built as the job's uid: the server's user takes it back, so jobs only read it.
            owner = (os.getuid(), os.getgid()) if identity else (None, None)
            if sandbox.publish(built, place, *owner):
                # The build froze what the folder holds (trainflow.jobs.venv); now the folder too.
                os.chmod(place, os.stat(place).st_mode & 0o7555)

    def _pump(self, log: LogWriter, deadline: float | None) -> None:
        assert self.process is not None and self.process.stdout and self.process.stderr
        selector = selectors.DefaultSelector()
        splitters = {}
        for name, pipe in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            os.set_blocking(pipe.fileno(), False)
            selector.register(pipe, selectors.EVENT_READ, name)
            splitters[name] = LineSplitter(name, log)
        drain_until: float | None = None
        while selector.get_map():
            now = time.monotonic()
            wall = time.time()
            if deadline is not None and wall >= deadline and self.reason is None:
                self.reason = "timed_out"
                self._terminate()
            if self.reason is None and drain_until is None:
                exceeded = self.limits.check(self.process.pid)
                if exceeded is not None:  # no grace: a fork bomb or a disk filler is not asked twice
                    self.reason = exceeded
                    self._killpg(signal.SIGKILL)
                    self.limits.kill_all()
            if self.kill_at is not None and now >= self.kill_at:
                self._killpg(signal.SIGKILL)
                self.kill_at = None
            if drain_until is None and self.process.poll() is not None:
                drain_until = now + DRAIN_S
            if drain_until is not None and now >= drain_until:
                self._killpg(signal.SIGKILL)  # leftover children holding the pipes
                break
            if self.reason is None and self.trouble.since is not None and self._has_waited_enough():
                self.reason = self.trouble.reason  # the disk stayed full: end the job, say why
                self._terminate()
            if self.is_status_pending and not self.trouble.is_waiting:
                self._write_status()
            self._heed_ingest()
            if drain_until is None:
                self._sample_system(log, now)
            if log.backlog > MAX_BACKLOG:
                # Held in memory as much as it may: the job waits on its prints until there is
                # room (or until it is ended for the full disk).
                time.sleep(0.2)
                log.flush()
                continue
            for key, _ in selector.select(timeout=0.2):
                try:
                    data = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if data:
                    log.now = time.time()
                    splitters[key.data].feed(data)
                else:
                    selector.unregister(key.fileobj)
            log.now = time.time()
            for splitter in splitters.values():
                splitter.flush_idle(time.monotonic())
            log.flush()
        for splitter in splitters.values():
            splitter.close()
        selector.close()

    def _sample_system(self, log: LogWriter, now: float) -> None:
        """Every few seconds while the job runs: its use of CPU, memory and GPUs, as an event and
        to its MLflow run (which never waits on the server)."""
        if self.system is None or self.process is None or not self.system.is_due(now):
            return
        sample = self.system.sample(self.process.pid, now, also=self._cgroup_pids())
        log.system(sample.fields(), sample.ts)
        if self.runlog is not None:
            self.runlog.add(sample)

    def _cgroup_pids(self) -> list[int]:
        """The processes in the job's cgroup, where it has one (those that left its tree too)."""
        cgroup = self.limits.cgroup
        return cgroup.pids_inside() if cgroup is not None else []

    def _stop_system(self) -> None:
        if self.system is not None:
            self.system.close()
        if self.runlog is not None:
            self.runlog.close()  # a couple of seconds at most: then the end is recorded

    def _heed_ingest(self) -> None:
        """A cancel asked on any host, or servers that take no more, end the job."""
        if self.ingest is None or self.reason is not None:
            return
        if self.ingest.cancel_requested or self.ingest.has_ended:
            self.reason = "cancelled"
            self._terminate()
        elif self.ingest.failure is not None:
            self.reason = STORAGE_FAILED
            self._terminate()

    def _on_cancel(self, signum: int, frame: object) -> None:
        if self.reason is None:
            self.reason = "cancelled"
        self._terminate()

    def _terminate(self) -> None:
        if self.kill_at is None:
            self._killpg(signal.SIGTERM)
            self.kill_at = time.monotonic() + float(self.spec.get("grace_s", 10))

    def _killpg(self, signum: int) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)

    def _set_status(self, **status: Any) -> None:
        """Record a state on the way (starting, running); on a full disk, on a later try."""
        status["job"] = self.spec.get("job")
        status["attempt"] = self.spec.get("attempt", 1)
        self.status = status
        self._write_status()
        if self.ingest is not None:
            self.ingest.report(status)

    def _write_status(self) -> None:
        try:
            write_json_atomic(self.status_path, self.status)
        except OSError as e:
            self.trouble.failed(e)
            self.is_status_pending = True
            return
        self.is_status_pending = False
        notify(self.spec.get("notify"), {"job": self.spec.get("job"), "state": self.status["state"]})

    def _final_status(self, **status: Any) -> None:
        """Record how the job ended, on a full disk too: the reserve makes room for it.

        If even that room was taken, the supervisor waits (the job has ended; it only waits to
        say so) for as long as the disk stays full: while it lives the scheduler does not take
        the job for LOST. Any other write error ends the wait after a while, and a job folder
        that was deleted ends it at once.
        """
        status["job"] = self.spec.get("job")
        status["attempt"] = self.spec.get("attempt", 1)
        if self.log is not None:
            status["lines"] = self.log.count  # the last line's number: where a retry's lines start
        self.status = status
        deadline = time.monotonic() + max(self.disk_full_s, 2.0)
        while True:
            self._write_status()
            if not self.is_status_pending:
                break
            if self._release_reserve():
                continue
            if time.monotonic() >= deadline and not self.trouble.is_disk_full:
                say(f"job {self.spec.get('job')}: could not record how it ended: {self.trouble.error}")
                break
            if not self.job_dir.is_dir():  # the job was deleted: nobody will read its status
                say(f"job {self.spec.get('job')}: its folder is gone; its end is not recorded")
                break
            time.sleep(RETRY_S)
        # The server records the end in the database and the event log: the room is theirs now.
        self._release_reserve()
        if self.ingest is not None and not self.ingest.finish(status):
            print(
                f"job {self.spec.get('job')}: could not report how it ended to the servers: "
                f"{self.ingest.failure or self.ingest.last_error}",
                file=sys.stderr,
                flush=True,
            )


def notify(path: str | None, message: dict[str, Any]) -> None:
    """Best effort: a web process that is not listening learns it on its next reconcile."""
    if not path or not hasattr(socket, "AF_UNIX"):
        return
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(json.dumps(message).encode(), path)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m trainflow.runner.supervisor JOB_DIR", file=sys.stderr)
        return 2
    return Supervisor(Path(argv[1])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
