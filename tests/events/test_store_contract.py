"""One contract, two event stores: the job folders (one machine) and PostgreSQL (shared mode) (#13).

Every test runs against :class:`FileEventStore` in a temporary jobs folder and against
:class:`PostgresEventStore` on a fresh copy of the migrated PostgreSQL database. What a
follower relies on is checked as it would see it: ``read`` after a seq, batch after batch.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from tests.conftest import Templates, _admin_execute, _with_database
from trainflow.errors import BadRequest
from trainflow.events.store import EventStore, FileEventStore, IngestGap, PostgresEventStore
from trainflow.events.types import EventType
from trainflow.runner.eventlog import fragment
from trainflow.runner.supervisor import EventSink, LogWriter

JOB = 7
Spec = tuple[str, str]  # ("file", jobs folder) or ("postgresql", database URL): a store anywhere


def open_store(spec: Spec) -> tuple[EventStore, Callable[[], None]]:
    """The store a spec names, and what closes it (each process opens its own)."""
    kind, where = spec
    if kind == "file":
        return FileEventStore(Path(where)), lambda: None
    engine = create_engine(where, pool_size=8, max_overflow=8)
    return PostgresEventStore(lambda: engine), engine.dispose


@pytest.fixture(params=["file", "postgresql"])
def spec(request: pytest.FixtureRequest, tmp_path: Path, templates: Templates) -> Iterator[Spec]:
    if request.param == "file":
        yield ("file", str(tmp_path / "jobs"))
        return
    admin_url = request.getfixturevalue("postgres_url")
    template = templates.postgres_template(admin_url)
    name = f"tf_store_{uuid.uuid4().hex[:12]}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield ("postgresql", _with_database(admin_url, name))
    _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(spec: Spec) -> Iterator[EventStore]:
    opened, close = open_store(spec)
    yield opened
    close()


def log(text: str) -> bytes:
    return fragment(EventType.LOG, line=text, stream="stdout")


def read_all(store: EventStore, after: int = 0, max_bytes: int = 256 * 1024) -> list[tuple[int, bytes]]:
    records: list[tuple[int, bytes]] = []
    while batch := store.read(JOB, after, max_bytes):
        records += batch
        after = batch[-1][0]
    return records


def events(store: EventStore, after: int = 0) -> list[dict[str, Any]]:
    return [json.loads(record) for _, record in read_all(store, after)]


def lines_of(store: EventStore) -> list[str]:
    return [event["line"] for event in events(store) if event["type"] == EventType.LOG]


# -- numbering --------------------------------------------------------------------------------


def test_append_numbers_from_1_and_returns_the_last_seq(store: EventStore) -> None:
    assert store.append(JOB, [log("a"), log("b")]) == 2
    assert store.append(JOB, [log("c")]) == 3


def test_the_records_are_the_fragments_behind_their_seq(store: EventStore) -> None:
    fragments = [log("a"), fragment(EventType.METRIC, key="loss", value=0.5, step=1)]
    store.append(JOB, fragments)
    assert read_all(store) == [
        (1, b'{"seq":1,' + fragments[0] + b"\n"),
        (2, b'{"seq":2,' + fragments[1] + b"\n"),
    ]


def test_last_seq_is_0_for_a_job_with_no_events(store: EventStore) -> None:
    assert store.last_seq(JOB) == 0


def test_last_seq_follows_the_appends(store: EventStore) -> None:
    store.append(JOB, [log("a"), log("b"), log("c")])
    assert store.last_seq(JOB) == 3


def test_jobs_have_sequences_of_their_own(store: EventStore) -> None:
    store.append(JOB, [log("a"), log("b")])
    assert store.append(JOB + 1, [log("c")]) == 1


def test_an_empty_append_stores_nothing_and_says_where_the_log_is(store: EventStore) -> None:
    store.append(JOB, [log("a")])
    assert store.append(JOB, []) == 1
    assert store.last_seq(JOB) == 1


def _append_batches(spec: Spec, writer: int, batches: int) -> None:
    store, close = open_store(spec)
    try:
        for batch in range(batches):
            store.append(JOB, [log(f"{writer}:{batch}:{part}") for part in range(3)])
    finally:
        close()


def _assert_one_sequence(store: EventStore, writers: int, batches: int) -> None:
    """Seqs 1..N once each; each writer's lines in its order, each batch in one piece."""
    records = events(store)
    assert [event["seq"] for event in records] == list(range(1, writers * batches * 3 + 1))
    for writer in range(writers):
        mine = [event["line"] for event in records if event["line"].startswith(f"{writer}:")]
        assert mine == [f"{writer}:{batch}:{part}" for batch in range(batches) for part in range(3)]
    for at in range(0, len(records), 3):
        assert len({event["line"].rsplit(":", 1)[0] for event in records[at : at + 3]}) == 1


def test_concurrent_threads_make_one_sequence_with_no_gap_or_repeat(spec: Spec, store: EventStore) -> None:
    threads = [threading.Thread(target=_append_batches, args=(spec, writer, 40)) for writer in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _assert_one_sequence(store, 4, 40)


def test_concurrent_processes_make_one_sequence_with_no_gap_or_repeat(spec: Spec, store: EventStore) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_batches, args=(spec, writer, 40)) for writer in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    _assert_one_sequence(store, 3, 40)


def test_a_reader_never_sees_a_seq_before_the_ones_below_it(spec: Spec, store: EventStore) -> None:
    """Commit order is seq order: polling ``read`` after the last seq seen never skips one.

    Writer 0 ingests (as the supervisors' records arrive), the others append.
    """
    stop = threading.Event()

    def write(writer: int) -> None:
        opened, close = open_store(spec)
        try:
            batch = 0
            ingested = 0
            while not stop.is_set():
                fragments = [log(f"{writer}:{batch}:{part}") for part in range(1 + batch % 4)]
                if writer == 0:
                    ingested = opened.ingest(JOB, ingested + 1, fragments)
                else:
                    opened.append(JOB, fragments)
                batch += 1
        finally:
            close()

    writers = [threading.Thread(target=write, args=(writer,)) for writer in range(4)]
    for thread in writers:
        thread.start()
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            seen += [seq for seq, _ in store.read(JOB, seen[-1] if seen else 0)]
    finally:
        stop.set()
        for thread in writers:
            thread.join()
    seen += [seq for seq, _ in read_all(store, seen[-1] if seen else 0)]
    assert len(seen) > 100  # the writers did run while the reader looked
    assert seen == list(range(1, len(seen) + 1))
    assert seen[-1] == store.last_seq(JOB)


# -- the end ----------------------------------------------------------------------------------


def end() -> bytes:
    return fragment(EventType.END, status="SUCCEEDED", exit_code=0)


def test_unless_ended_appends_to_a_log_with_no_end(store: EventStore) -> None:
    store.append(JOB, [log("a")])
    assert store.append(JOB, [end()], unless_ended=True) == 2


def test_unless_ended_appends_nothing_once_the_log_has_its_end(store: EventStore) -> None:
    store.append(JOB, [log("a"), end()])
    assert store.append(JOB, [log("b"), end()], unless_ended=True) is None
    assert store.last_seq(JOB) == 2


def test_the_end_is_written_once_when_two_writers_race_to_record_it(spec: Spec, store: EventStore) -> None:
    results: list[int | None] = []

    def record_end() -> None:
        opened, close = open_store(spec)
        try:
            results.append(
                opened.append(JOB, [fragment(EventType.STATUS, status="SUCCEEDED"), end()], unless_ended=True)
            )
        finally:
            close()

    threads = [threading.Thread(target=record_end) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=lambda seq: seq or 0) == [None] * 5 + [2]
    assert [event["type"] for event in events(store)] == [EventType.STATUS, EventType.END]


# -- ingest -----------------------------------------------------------------------------------


def batch(first: int, count: int) -> list[bytes]:
    return [log(f"record {ordinal}") for ordinal in range(first, first + count)]


def test_ingest_stores_a_batch_and_returns_the_highest_ordinal(store: EventStore) -> None:
    assert store.ingest(JOB, 1, batch(1, 5)) == 5
    assert lines_of(store) == [f"record {n}" for n in range(1, 6)]


def test_a_batch_ingested_again_stores_nothing_twice(store: EventStore) -> None:
    store.ingest(JOB, 1, batch(1, 5))
    assert store.ingest(JOB, 1, batch(1, 5)) == 5
    assert store.last_seq(JOB) == 5


def test_an_overlapping_batch_stores_only_its_new_records(store: EventStore) -> None:
    store.ingest(JOB, 1, batch(1, 5))
    assert store.ingest(JOB, 3, batch(3, 6)) == 8
    assert lines_of(store) == [f"record {n}" for n in range(1, 9)]


def test_a_batch_after_a_gap_is_refused_and_says_where_to_resume(store: EventStore) -> None:
    store.ingest(JOB, 1, batch(1, 5))
    with pytest.raises(IngestGap) as refused:
        store.ingest(JOB, 7, batch(7, 2))
    assert refused.value.stored == 5


def test_a_refused_batch_stores_nothing(store: EventStore) -> None:
    store.ingest(JOB, 1, batch(1, 5))
    with pytest.raises(IngestGap):
        store.ingest(JOB, 7, batch(7, 2))
    assert store.last_seq(JOB) == 5


def test_a_first_batch_must_start_at_1(store: EventStore) -> None:
    with pytest.raises(IngestGap) as refused:
        store.ingest(JOB, 2, batch(2, 2))
    assert refused.value.stored == 0


def test_a_batch_numbered_from_0_is_refused(store: EventStore) -> None:
    with pytest.raises(BadRequest):
        store.ingest(JOB, 0, batch(0, 2))


@pytest.mark.parametrize("record", [b'"type":"log","line":"a\nb"}', b'{"type":"log"}', b'"type":"log"'])
def test_a_record_that_is_not_one_event_on_one_line_is_refused(store: EventStore, record: bytes) -> None:
    with pytest.raises(BadRequest):
        store.ingest(JOB, 1, [log("fine"), record])


def test_a_refused_record_refuses_its_whole_batch(store: EventStore) -> None:
    with pytest.raises(BadRequest):
        store.ingest(JOB, 1, [log("fine"), b"nonsense"])
    assert store.last_seq(JOB) == 0


def test_ingested_records_share_the_sequence_with_other_writers(store: EventStore) -> None:
    store.append(JOB, [fragment(EventType.STATUS, status="RUNNING")])
    store.ingest(JOB, 1, batch(1, 2))
    store.append(JOB, [fragment(EventType.METRIC, key="loss", value=1.0, step=0)])
    store.ingest(JOB, 2, batch(2, 3))
    assert [(event["seq"], event["type"]) for event in events(store)] == [
        (1, EventType.STATUS),
        (2, EventType.LOG),
        (3, EventType.LOG),
        (4, EventType.METRIC),
        (5, EventType.LOG),
        (6, EventType.LOG),
    ]


def test_the_same_batch_sent_by_racing_retries_is_stored_once(spec: Spec, store: EventStore) -> None:
    def send(first: int) -> None:
        opened, close = open_store(spec)
        try:
            for start in range(first, 200, 10):
                opened.ingest(JOB, start, batch(start, 10))
        finally:
            close()

    threads = [threading.Thread(target=send, args=(1,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert lines_of(store) == [f"record {n}" for n in range(1, 201)]


# -- reading ----------------------------------------------------------------------------------


def test_read_starts_after_any_seq_across_many_batches(store: EventStore) -> None:
    sizes = [1, 7, 2, 300, 1, 999, 3, 1500, 5]
    for index, size in enumerate(sizes):
        store.append(JOB, [log(f"{index}:{n}") for n in range(size)])
    total = sum(sizes)
    for after in [0, 1, 2, 8, 10, 309, 310, 999, 1000, 1001, 1311, 2000, 2811, total - 1, total]:
        assert [seq for seq, _ in read_all(store, after)] == list(range(after + 1, total + 1)), after


def test_read_past_the_last_seq_is_empty(store: EventStore) -> None:
    store.append(JOB, [log("a")])
    assert store.read(JOB, 1) == []


def test_a_read_holds_whole_records_within_max_bytes(store: EventStore) -> None:
    store.append(JOB, [log("x" * 1000) for _ in range(20)])
    records = store.read(JOB, 0, max_bytes=4500)
    assert 3 <= len(records) <= 4
    assert sum(len(record) for _, record in records) <= 4500


def test_a_record_longer_than_max_bytes_comes_alone(store: EventStore) -> None:
    store.append(JOB, [log("x" * 5000), log("y")])
    assert [seq for seq, _ in store.read(JOB, 0, max_bytes=1000)] == [1]


def test_a_cursor_keeps_its_place_and_sees_new_records(store: EventStore) -> None:
    store.append(JOB, [log("a"), log("b")])
    cursor = store.cursor(JOB, 1)
    assert [seq for seq, _ in cursor.read()] == [2]
    store.append(JOB, [log("c")])
    assert [seq for seq, _ in cursor.read()] == [3]
    assert cursor.seq == 3


def test_a_cursor_at_the_last_seq_reads_what_comes_next(store: EventStore) -> None:
    store.append(JOB, [log("a"), log("b")])
    cursor = store.cursor(JOB, store.last_seq(JOB))
    assert cursor.read() == []
    store.append(JOB, [log("c")])
    assert [seq for seq, _ in cursor.read()] == [3]


# -- log lines --------------------------------------------------------------------------------


class _Captured(EventSink):
    """The supervisor's event sink, keeping what it would append: the batches it sends away."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"), JOB, None)
        self.sent: list[bytes] = []

    def flush(self) -> bool:
        self.sent += self.pending
        self.pending = []
        return True


def write_output(spec: Spec, store: EventStore, tmp_path: Path, count: int) -> list[dict[str, Any]]:
    """``count`` lines as the supervisor writes them, stored as each store gets them; the log records.

    The file store's are in the job's folder, written there by the supervisor; PostgreSQL gets the
    supervisor's events through ``ingest``, as the servers do from supervisors anywhere.
    """
    if isinstance(store, FileEventStore):
        folder = store.job_dir(JOB)
        folder.mkdir(parents=True, exist_ok=True)
        sink: EventSink = EventSink(folder, JOB, None)
    else:
        folder = tmp_path / "producer"
        folder.mkdir()
        sink = _Captured()
    writer = LogWriter(folder / "logs.ndjson", sink)
    for n in range(count):
        writer.write(
            "stderr" if n % 7 == 0 else "stdout", f'line {n} "quoted" ,"n":{n + 5},', is_partial=n % 11 == 0
        )
        if n % 100 == 99:
            writer.flush()
            if n % 300 == 299:
                store.append(JOB, [fragment(EventType.PROGRESS, n=n, total=count)])  # interleaved
    writer.close()
    if isinstance(sink, _Captured):
        store.ingest(JOB, 1, sink.sent)
    return [json.loads(line) for line in (folder / "logs.ndjson").read_bytes().splitlines()]


def log_records(store: EventStore, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    records = [json.loads(raw) for raw in store.log_lines(JOB, offset, limit)]
    for record in records:
        record.pop("type", None)
    return records


def test_log_lines_are_the_records_the_supervisor_wrote(
    spec: Spec, store: EventStore, tmp_path: Path
) -> None:
    written = write_output(spec, store, tmp_path, 2500)
    assert log_records(store) == written


def test_log_lines_start_at_any_offset(spec: Spec, store: EventStore, tmp_path: Path) -> None:
    written = write_output(spec, store, tmp_path, 2500)
    for offset in [0, 1, 999, 1000, 1001, 1234, 2499]:
        assert log_records(store, offset, 10) == written[offset : offset + 10], offset


def test_log_lines_past_the_end_are_none(spec: Spec, store: EventStore, tmp_path: Path) -> None:
    write_output(spec, store, tmp_path, 20)
    assert log_records(store, 20) == []


def test_log_lines_of_a_job_with_no_output_are_none(store: EventStore) -> None:
    assert log_records(store) == []


# -- deletion ---------------------------------------------------------------------------------


def test_a_deleted_job_has_no_events(store: EventStore) -> None:
    store.append(JOB, [log("a"), end()])
    store.delete(JOB)
    assert store.read(JOB, 0) == []


def test_a_deleted_job_has_no_last_seq(store: EventStore) -> None:
    store.append(JOB, [log("a"), end()])
    store.delete(JOB)
    assert store.last_seq(JOB) == 0


def test_deleting_a_job_leaves_the_others(store: EventStore) -> None:
    store.append(JOB, [log("a")])
    store.append(JOB + 1, [log("b")])
    store.delete(JOB)
    assert store.last_seq(JOB + 1) == 1


def test_deleting_a_job_with_no_events_is_no_error(store: EventStore) -> None:
    store.delete(JOB)
    assert store.last_seq(JOB) == 0
