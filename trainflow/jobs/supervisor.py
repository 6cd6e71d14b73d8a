"""The job supervisor: runs one job's process and records everything it prints and how it ends.

Started by the web process as ``python -m trainflow.jobs.supervisor JOB_DIR`` in a session of
its own, so it outlives a restart (or a SIGKILL) of the web process. It uses the standard
library only: it starts in tens of milliseconds and holds a few MB per job.

``JOB_DIR/spec.json`` (written by the web process) says what to run. The supervisor writes:

- ``logs.ndjson``: one JSON record per output line: ``{"n", "ts", "stream", "line"}``, plus
  ``"partial": true`` when the line was cut (over 64 KB, or no newline for a second). A
  progress bar redrawn with ``\\r`` is kept as the line a terminal would finally show.
- the job's event log (:mod:`trainflow.events.store`): a ``log`` event per line, and a
  ``progress`` event (at most ten a second) each time a tqdm-style bar is redrawn or the job
  prints a ``trainflow:progress {...}`` line. After each batch it publishes a notice on the
  bus (``spec["bus"]``) so that followers are woken.
- Before the job, the optional ``setup`` steps (argv lists) run the same way; one that fails
  ends the job with reason ``setup_failed``.
- ``status.json``, replaced atomically on each change: ``starting`` → ``running`` (with the
  job's pid) → ``exited`` (with ``exit_code``, ``signal`` and ``reason``: ``cancelled``,
  ``timed_out``, a limit's (``memory_limit``, ``process_limit``, ``disk_limit``,
  ``open_files_limit``, with its ``message``) or null).

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

SIGTERM to the supervisor cancels the job. The job runs in its own process group; ending it
sends SIGTERM to the whole group and SIGKILL after the grace period, children included.
A datagram to ``spec["notify"]`` (if that socket exists) tells the web process a state changed.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, BinaryIO

from trainflow.events.notice import publisher_for
from trainflow.events.progress import parse_bar, parse_marker
from trainflow.events.store import EventWriter, fragment
from trainflow.runner import sandbox
from trainflow.runner.enforcement import JobLimits, cgroup_name
from trainflow.runner.limits import REASONS, Limits, apply_rlimits, message

MAX_LINE = 64 * 1024
IDLE_FLUSH_S = 1.0
LOG_TYPE = b'"type":"log",'  # a log event is this, then the same fields as the log record
PROGRESS_EVERY_S = 0.1  # a bar redrawn faster than this still makes ten events a second at most
DRAIN_S = 2.0  # how long a job's leftover children may keep its pipes open after it exits


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


INDEX_EVERY = 1000  # logs.idx holds the byte offset of every 1000th record


class EventSink:
    """Collects the events of one pass of the read loop, then appends and announces them."""

    def __init__(self, job_dir: Path, job_id: Any, bus: dict[str, Any] | None) -> None:
        self.writer = EventWriter(job_dir)
        self.job_id = job_id
        self.publisher = publisher_for(bus or {})
        self.pending: list[bytes] = []

    def add(self, data: bytes) -> None:
        self.pending.append(data)

    def flush(self) -> None:
        if not self.pending:
            return
        seq = self.writer.append(self.pending)
        self.pending = []
        if self.publisher is not None:
            self.publisher.publish({"kind": "events", "job": self.job_id, "seq": seq})

    def close(self) -> None:
        self.flush()
        self.writer.close()
        if self.publisher is not None:
            self.publisher.close()


class LogWriter:
    """Numbers records and appends them to the log file, with a sparse index of offsets.

    Records are formatted by hand with the C string escaper: ``json.dumps`` per line costs
    about five times as much, and a job printing 100,000 lines a second pays for it. Each
    line also goes to the job's event log through ``events``.
    """

    def __init__(self, path: Path, events: EventSink | None = None) -> None:
        self.events = events
        self.count = _count_lines(path)
        self._file: BinaryIO = open(path, "ab", buffering=1 << 16)
        self._position = self._file.tell()
        self._index: BinaryIO = open(path.with_suffix(".idx"), "ab", buffering=1 << 12)
        self.now = time.time()  # one timestamp per chunk read, set by the reader

    def write(self, stream: str, line: str, is_partial: bool = False) -> None:
        if self.count % INDEX_EVERY == 0:
            self._index.write(self._position.to_bytes(8, "little"))
        self.count += 1
        # The log record and the log event share everything after their first field: escape
        # and encode the line once for both.
        flag = ',"partial":true' if is_partial else ""
        body = (
            f'"ts":{self.now:.6f},"stream":"{stream}","n":{self.count},"line":{encode_basestring(line)}{flag}}}'
        ).encode("utf-8", "surrogatepass")
        data = b"{" + body + b"\n"
        self._file.write(data)
        self._position += len(data)
        if self.events is not None:
            self.events.add(LOG_TYPE + body)

    def progress(self, fields: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.add(fragment("progress", self.now, **fields))

    def flush(self) -> None:
        self._file.flush()
        self._index.flush()
        if self.events is not None:
            self.events.flush()

    def close(self) -> None:
        self._file.close()
        self._index.close()
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

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_cancel)
        signal.signal(signal.SIGINT, self._on_cancel)
        self._set_status(state="starting", supervisor_pid=os.getpid())
        events = EventSink(self.job_dir, self.spec.get("job"), self.spec.get("bus"))
        log = LogWriter(self.job_dir / "logs.ndjson", events)
        self.limits.start()
        print(f"job {self.spec.get('job')}: {self.limits.describe()}", flush=True)  # supervisor.log
        if self.reason == "cancelled":  # cancelled before it started
            self.limits.close()
            log.close()
            self._set_status(
                state="exited", exit_code=None, signal=None, reason="cancelled", finished_at=time.time()
            )
            return 0
        for step in self.spec.get("setup", []):
            code = self._run_step(step, log)
            if code != 0 or self.reason == "cancelled":
                self.limits.close()
                log.close()
                reason = self.reason or "setup_failed"
                self._set_status(
                    state="exited",
                    exit_code=code,
                    signal=None,
                    reason=reason,
                    finished_at=time.time(),
                    **self._limit_status(reason),
                )
                return 0
        self._publish()
        policy = self.spec.get("sandbox")
        try:
            self.process, applied = self._start(self.spec["argv"], self.spec["env"], policy)
        except (OSError, sandbox.SandboxError) as e:
            log.write("stderr", f"trainflow: could not start the job: {e}")
            self.limits.close()
            log.close()
            self._set_status(
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
        timeout = self.spec.get("timeout_s")
        deadline = started + timeout if timeout else None
        self._pump(log, deadline)
        code = self.process.wait()
        log.close()
        exit_code, signum = sandbox.exit_status(code) if policy else (code, None)
        if not policy and code < 0:
            exit_code, signum = None, -code
        reason = self.reason
        if policy and applied is None and reason is None:
            reason = "start_failed"  # the sandbox did not come up; the launcher said why in the log
        if reason is None and (exit_code or signum):
            reason = self.limits.final_reason(exit_code, signum)  # an OOM kill, SIGXFSZ, ...
        self.limits.close()  # whatever the job left in its cgroup goes with it
        self._set_status(
            state="exited",
            exit_code=exit_code,
            signal=signum,
            reason=reason,
            started_at=started,
            finished_at=time.time(),
            pid=self.process.pid,
            sandbox=applied,
            **self._limit_status(reason),
        )
        return 0

    def _limit_status(self, reason: str | None) -> dict[str, Any]:
        """What status.json says of the limits: which mechanism held each, and the one exceeded."""
        status: dict[str, Any] = {"limits": self.limits.mechanisms()}
        if reason in REASONS:
            status["message"] = message(reason, self.limits.limits)  # type: ignore[arg-type]
        return status

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
                preexec_fn=self._preexec,  # safe: the supervisor starts no threads
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
        status["job"] = self.spec.get("job")
        write_json_atomic(self.status_path, status)
        notify(self.spec.get("notify"), {"job": self.spec.get("job"), "state": status["state"]})


def notify(path: str | None, message: dict[str, Any]) -> None:
    """Best effort: a web process that is not listening learns it on its next reconcile."""
    if not path or not hasattr(socket, "AF_UNIX"):
        return
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(json.dumps(message).encode(), path)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m trainflow.jobs.supervisor JOB_DIR", file=sys.stderr)
        return 2
    return Supervisor(Path(argv[1])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
