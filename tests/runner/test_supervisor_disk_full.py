"""The supervisor on a full disk: it holds the job's output, never dies, says why a job ended (#11)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.filesystems import fill, small_tmpfs
from tests.processes import wait_for
from tests.runner.supervision import read_status, supervisor_command, write_job
from trainflow.runner.eventlog import fragment
from trainflow.runner.supervisor import EventSink

pytestmark = pytest.mark.skipif(os.name != "posix", reason="tmpfs and process groups are POSIX")

# Prints numbered lines, ten every 10 ms, until it has printed `count` or is stopped.
PRINTER = """
import sys, time
for n in range(1, {count} + 1):
    print(f"line {{n}}")
    if n % 10 == 0:
        time.sleep(0.01)
"""


@pytest.fixture
def job_dir(tmp_path):
    with small_tmpfs(tmp_path / "disk", 4) as disk:
        folder = disk / "jobs" / "1"
        (folder / "work").mkdir(parents=True)
        yield folder
        for process in STARTED:
            if process.poll() is None:
                process.kill()
                process.wait()
        STARTED.clear()


STARTED: list[subprocess.Popen] = []


def start(folder: Path, source: str, disk_full_s: float) -> subprocess.Popen:
    prepare(folder, source, disk_full_s)
    return launch(folder)


def prepare(folder: Path, source: str, disk_full_s: float) -> None:
    write_job(folder, source, grace_s=1, disk_full_s=disk_full_s)


def launch(folder: Path) -> subprocess.Popen:
    process = subprocess.Popen(supervisor_command(folder))
    STARTED.append(process)
    return process


def log_lines(folder: Path) -> list[str]:
    path = folder / "logs.ndjson"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line)["line"] for line in text.splitlines() if line.endswith("}")]


def event_lines(folder: Path) -> list[str]:
    records = [json.loads(line) for line in (folder / "events.ndjson").read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    return [r["line"] for r in records if r["type"] == "log"]


def test_output_held_while_the_disk_is_full_is_written_once_room_returns(job_dir):
    supervisor = start(job_dir, PRINTER.format(count=3000), disk_full_s=60)
    wait_for(lambda: len(log_lines(job_dir)) >= 200)
    filler = job_dir.parent.parent / "filler"
    fill(filler)
    time.sleep(1.5)  # the job keeps printing; nothing of it has room
    filler.unlink()
    assert supervisor.wait(timeout=60) == 0
    status = read_status(job_dir)
    assert status["exit_code"] == 0
    assert status["reason"] is None
    expected = [f"line {n}" for n in range(1, 3001)]
    assert log_lines(job_dir) == expected
    assert event_lines(job_dir) == expected  # each once, in order, numbered without a gap


def test_a_disk_that_stays_full_ends_the_job_with_a_reason_naming_it(job_dir):
    supervisor = start(job_dir, PRINTER.format(count=10**9), disk_full_s=2)
    wait_for(lambda: len(log_lines(job_dir)) >= 200)
    before = log_lines(job_dir)
    fill(job_dir.parent.parent / "filler")
    assert supervisor.wait(timeout=60) == 0
    status = read_status(job_dir)
    assert status["state"] == "exited"
    assert status["reason"] == "disk_full"
    assert status["message"].startswith("The disk holding the data directory is full")
    kept = log_lines(job_dir)
    assert kept[: len(before)] == before  # what was stored stays
    assert kept == [f"line {n}" for n in range(1, len(kept) + 1)]
    assert not (job_dir / ".reserve").exists()  # given up to record the end


def test_events_a_torn_append_stored_are_not_sent_twice(tmp_path):
    with small_tmpfs(tmp_path / "disk", 1) as disk:
        folder = disk / "job"
        folder.mkdir()
        sink = EventSink(folder, 1, None)
        sink.add(fragment("log", 1.0, line="first"))
        assert sink.flush()
        room = disk / "room"
        room.write_bytes(b"x" * 8192)  # two pages, given back below: the room left for the batch
        filler = disk / "filler"
        fill(filler)
        room.unlink()
        for n in range(1000):
            sink.add(fragment("log", 1.0, line=f"event {n:04d}"))
        assert not sink.flush()
        assert 0 < len(sink.pending) < 1000  # some went in whole before the disk was full
        filler.unlink()
        assert sink.flush()
        sink.close()
        records = [json.loads(line) for line in (folder / "events.ndjson").read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 1002))
    assert [r["line"] for r in records] == ["first"] + [f"event {n:04d}" for n in range(1000)]


def test_with_no_room_even_for_its_end_the_supervisor_waits_to_record_it(job_dir):
    filler = job_dir.parent.parent / "filler"
    prepare(job_dir, "print('hello')\n", disk_full_s=1)
    fill(filler)  # before it starts: no room for its reserve either
    supervisor = launch(job_dir)
    time.sleep(5)  # the job has long ended; its supervisor still lives to say how
    assert supervisor.poll() is None
    assert not (job_dir / "status.json").exists() or "exited" not in (job_dir / "status.json").read_text()
    filler.unlink()
    assert supervisor.wait(timeout=30) == 0
    status = read_status(job_dir)
    assert status["state"] == "exited"
    assert status["reason"] == "disk_full"
