"""The job supervisor on its own: what it captures and how it ends a job (issue 4)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import alive, wait_for
from tests.runner.supervision import read_status, supervisor_command, write_job, write_spec

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and signals are POSIX")


def start(
    tmp_path: Path, script: str, timeout_s: float | None = None, grace_s: float = 2
) -> subprocess.Popen:
    write_job(tmp_path, script, timeout_s=timeout_s, grace_s=grace_s)
    return subprocess.Popen(supervisor_command(tmp_path))


def run(tmp_path: Path, script: str, **kwargs) -> tuple[dict, list[dict]]:
    assert start(tmp_path, script, **kwargs).wait(timeout=60) == 0
    return read_status(tmp_path), records(tmp_path)


def records(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "logs.ndjson").read_text().splitlines()]


def test_lines_streams_and_exit_code(tmp_path):
    final, lines = run(
        tmp_path,
        """
        import sys
        print("one")
        print("two", file=sys.stderr)
        print("three")
        sys.exit(3)
    """,
    )
    assert final["state"] == "exited" and final["exit_code"] == 3 and final["reason"] is None
    # Two pipes: the order within a stream is kept; across streams it is as the reads came.
    assert [r["line"] for r in lines if r["stream"] == "stdout"] == ["one", "three"]
    assert [r["line"] for r in lines if r["stream"] == "stderr"] == ["two"]
    assert [r["n"] for r in lines] == [1, 2, 3]
    assert all(r["ts"] > 0 for r in lines)


def test_a_progress_bar_becomes_its_final_line(tmp_path):
    _, lines = run(
        tmp_path,
        """
        import sys
        for i in range(1000):
            sys.stdout.write(f"\\r{i / 10:5.1f}% |{'#' * (i // 100):10}|")
        sys.stdout.write("\\n")
        print("after")
    """,
    )
    assert [r["line"] for r in lines] == [" 99.9% |######### |", "after"]


def test_invalid_utf8_long_lines_and_no_final_newline(tmp_path):
    _, lines = run(
        tmp_path,
        """
        import sys
        sys.stdout.buffer.write(b"caf\\xc3\\xa9 \\xff\\xfe end\\n")
        sys.stdout.write("x" * (10 * 1024 * 1024) + "\\n")
        sys.stdout.write("no newline")
    """,
    )
    assert lines[0]["line"] == "café \ufffd\ufffd end"
    big = [r for r in lines if r["line"].startswith("x")]
    assert sum(len(r["line"]) for r in big) == 10 * 1024 * 1024
    assert all(r.get("partial") for r in big[:-1]) and not big[-1].get("partial")
    assert max(len(r["line"]) for r in big) == 64 * 1024
    assert lines[-1]["line"] == "no newline"


def test_text_waiting_for_its_newline_is_written_after_a_second(tmp_path):
    process = start(
        tmp_path,
        """
        import sys, time
        sys.stdout.write("thinking..."); sys.stdout.flush()
        time.sleep(3)
        print(" done")
    """,
    )
    wait_for(
        lambda: (tmp_path / "logs.ndjson").exists() and (tmp_path / "logs.ndjson").read_text().strip(), 10
    )
    assert records(tmp_path)[0] == {**records(tmp_path)[0], "line": "thinking...", "partial": True}
    assert process.wait(timeout=30) == 0
    assert [r["line"] for r in records(tmp_path)] == ["thinking...", " done"]


def test_timeout_kills_the_whole_group(tmp_path):
    final, _ = run(
        tmp_path,
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open("child.pid", "w").write(str(child.pid))
        time.sleep(60)
    """,
        timeout_s=1.5,
        grace_s=1,
    )
    assert final["reason"] == "timed_out" and final["signal"] == signal.SIGTERM
    child = int((tmp_path / "work" / "child.pid").read_text())
    wait_for(lambda: not alive(child), 5)


def test_sigterm_cancels_and_escalates_to_sigkill(tmp_path):
    process = start(
        tmp_path,
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a job that ignores the polite request
        print("ready", flush=True)
        time.sleep(60)
    """,
        grace_s=1,
    )
    wait_for(
        lambda: (tmp_path / "logs.ndjson").exists() and "ready" in (tmp_path / "logs.ndjson").read_text()
    )
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    final = read_status(tmp_path)
    assert final["reason"] == "cancelled" and final["signal"] == signal.SIGKILL
    assert time.monotonic() - started < 10


def test_a_job_that_cannot_start(tmp_path):
    (tmp_path / "work").mkdir()
    write_spec(tmp_path, argv=["/nonexistent/python"], env={})
    assert subprocess.run(supervisor_command(tmp_path), timeout=30).returncode == 0
    assert read_status(tmp_path)["reason"] == "start_failed"
    assert "could not start" in records(tmp_path)[0]["line"]


def test_a_supervisor_whose_job_folder_was_deleted_ends_on_sigterm_without_waiting_to_record(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    process = start(folder, 'import time\nprint("ready", flush=True)\ntime.sleep(60)\n', grace_s=1)
    wait_for(lambda: (folder / "logs.ndjson").exists() and "ready" in (folder / "logs.ndjson").read_text())
    shutil.rmtree(folder)  # the job was deleted while its supervisor ran: nobody will read its end
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert time.monotonic() - started < 10, "it waited to write a status nobody can read"
