"""Reading a job's log: records from any offset, by the sparse index or without it."""

from __future__ import annotations

import json

from trainflow.jobs.logs import complete_lines
from trainflow.runner.supervisor import LogWriter


def write_log(path, count):
    writer = LogWriter(path)
    for i in range(count):
        writer.write("stdout" if i % 3 else "stderr", f'line {i} \u00e9 "quoted" \\ tab\t')
    writer.close()


def test_records_are_json_with_numbers_and_any_text(tmp_path):
    path = tmp_path / "logs.ndjson"
    write_log(path, 3)
    records = [json.loads(raw) for raw in complete_lines(path)]
    assert [r["n"] for r in records] == [1, 2, 3]
    assert records[1]["line"] == 'line 1 \u00e9 "quoted" \\ tab\t' and records[0]["stream"] == "stderr"


def test_any_offset_with_and_without_the_index(tmp_path):
    path = tmp_path / "logs.ndjson"
    write_log(path, 3500)
    assert (tmp_path / "logs.idx").stat().st_size == 4 * 8  # records 1, 1001, 2001, 3001
    for offset in (0, 999, 1000, 2500, 3499, 3500, 9000):
        got = [json.loads(raw)["n"] for raw in complete_lines(path, offset)]
        assert got == list(range(offset + 1, 3501)), offset
    (tmp_path / "logs.idx").unlink()
    assert [json.loads(raw)["n"] for raw in complete_lines(path, 3498)] == [3499, 3500]


def test_a_restarted_writer_continues_numbering_and_indexing(tmp_path):
    path = tmp_path / "logs.ndjson"
    write_log(path, 1500)
    write_log(path, 1000)  # a second writer on the same log (a setup step, then the job)
    got = [json.loads(raw)["n"] for raw in complete_lines(path, 2000)]
    assert got == list(range(2001, 2501))


def test_a_record_still_being_written_is_not_returned(tmp_path):
    path = tmp_path / "logs.ndjson"
    write_log(path, 2)
    with open(path, "ab") as f:
        f.write(b'{"n":3,"ts":1.0,"stream":"stdout","li')
    assert len(list(complete_lines(path))) == 2
    assert list(complete_lines(tmp_path / "missing.ndjson")) == []
