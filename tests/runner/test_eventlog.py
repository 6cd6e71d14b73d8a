"""The job event log: one gap-free sequence from several writers, found again from any seq."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from tests.filesystems import fill, small_tmpfs
from trainflow.runner.eventlog import EVENTS, INDEX, EventCursor, EventWriter, fragment, last_seq


def _read_all(job_dir: Path, after: int = 0) -> list[dict]:
    cursor = EventCursor(job_dir, after)
    out = []
    while batch := cursor.read(4096):
        out += [json.loads(record) for _, record in batch]
    return out


def _append_many(job_dir: str, writer_id: int, batches: int) -> None:
    with EventWriter(Path(job_dir)) as writer:
        for i in range(batches):
            writer.append([fragment("log", line=f"{writer_id}:{i}:{j}") for j in range(7)])


def test_writers_in_several_processes_share_one_sequence(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_many, args=(str(tmp_path), w, 200)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0

    events = _read_all(tmp_path)
    assert [e["seq"] for e in events] == list(range(1, 4 * 200 * 7 + 1))
    # Each writer's batch stays together and in its own order.
    for w in range(4):
        mine = [e["line"] for e in events if e["line"].startswith(f"{w}:")]
        assert mine == [f"{w}:{i}:{j}" for i in range(200) for j in range(7)]
    assert last_seq(tmp_path) == (5600, (tmp_path / EVENTS).stat().st_size)


def test_a_cursor_starts_after_any_seq(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as writer:
        for start in range(0, 5000, 250):
            writer.append(
                [
                    fragment("log", 1.0, stream="stdout", n=n, line=f"line {n}")
                    for n in range(start + 1, start + 251)
                ]
            )
    for after in (0, 1, 999, 1000, 1001, 2500, 4999, 5000, 7000):
        events = _read_all(tmp_path, after)
        assert [e["seq"] for e in events] == list(range(after + 1, 5001)), after
        if events:
            assert events[0]["line"] == f"line {after + 1}"


def test_a_cursor_waits_for_events_not_written_yet(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as writer:
        writer.append([fragment("status", status="QUEUED")])
        cursor = EventCursor(tmp_path, 3)
        assert cursor.read() == []
        writer.append([fragment("log", line=str(n)) for n in range(5)])
        assert [seq for seq, _ in cursor.read()] == [4, 5, 6]
        assert cursor.read() == []
        writer.append([fragment("log", line="more")])
        assert [seq for seq, _ in cursor.read()] == [7]


def test_a_torn_last_line_is_cut_and_numbering_goes_on(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as writer:
        writer.append([fragment("log", line=str(n)) for n in range(1500)])
    with open(tmp_path / EVENTS, "ab") as f:  # a writer killed half-way through a record
        f.write(b'{"seq":1501,"type":"log","li')
    with EventWriter(tmp_path) as writer:
        assert writer.append([fragment("log", line="after the crash")]) == 1501
    events = _read_all(tmp_path)
    assert [e["seq"] for e in events] == list(range(1, 1502))
    assert events[-1]["line"] == "after the crash"
    assert _read_all(tmp_path, 1000)[0]["seq"] == 1001  # the index still finds its place


def test_unless_ended_appends_nothing_after_an_end(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as writer:
        assert writer.append([fragment("end", status="SUCCEEDED", exit_code=0)], unless_ended=True) == 1
        assert writer.append([fragment("end", status="SUCCEEDED", exit_code=0)], unless_ended=True) is None
    assert [e["type"] for e in _read_all(tmp_path)] == ["end"]


def test_events_are_json_even_for_odd_values(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as writer:
        writer.append(
            [
                fragment("metric", key="loss", value=float("nan"), step=1),
                fragment("metric", key="loss", value=float("inf"), step=2),
                fragment("metric", key='quote " backslash \\ tab \t 训练 \udcff', value=1.0, step=0),
            ]
        )
    events = _read_all(tmp_path)
    assert [e.get("value") for e in events[:2]] == ["NaN", "Infinity"]
    assert events[2]["key"] == 'quote " backslash \\ tab \t 训练 \udcff'
    assert os.stat(tmp_path / EVENTS).st_mode & 0o777 == 0o600


def test_events_whose_index_entry_the_full_disk_refused_are_found_again(tmp_path: Path) -> None:
    """The events went in, their index entry did not: the next append writes the entry again."""
    with small_tmpfs(tmp_path / "disk", 1) as disk:
        job_dir = disk / "job"
        job_dir.mkdir()
        filler = disk / "filler"
        with EventWriter(job_dir) as writer:
            written = fill(filler)
            os.truncate(filler, written - 4096)  # one page free: the events take it, not the index
            with pytest.raises(OSError) as refused:
                writer.append([fragment("log", line=f"before {n}") for n in range(10)])
            assert refused.value.errno == errno.ENOSPC
            assert (job_dir / EVENTS).stat().st_size > 0 and (job_dir / INDEX).stat().st_size == 0
            filler.unlink()
            for start in range(0, 1200, 100):
                writer.append([fragment("log", line=f"after {n}") for n in range(start, start + 100)])
        events = _read_all(job_dir)
        assert [e["seq"] for e in events] == list(range(1, 1211))
        assert [e["line"] for e in events[:10]] == [f"before {n}" for n in range(10)]
        assert [e["seq"] for e in _read_all(job_dir, 1000)][:2] == [1001, 1002]
