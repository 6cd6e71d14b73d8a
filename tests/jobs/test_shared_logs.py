"""The logs API in shared mode: a job's lines from the event store in PostgreSQL, on any host (#13).

The lines arrive as the supervisors' records do in shared mode, through the store's ``ingest``;
nothing is in this host's job folder, so what the API answers came from the database.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import shared_mode
from tests.records import running_job
from trainflow.events.store import store_of
from trainflow.runner.supervisor import EventSink, LogWriter
from trainflow.settings import Settings

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
TRAIN = "/ajax-api/2.0/mlflow/train"
LINES = ["starting", 'a "quoted" line, with \\ and é', "epoch 1/3", "partial line without its end"]


@pytest.fixture
def settings(settings: Settings, redis_url: str, tmp_path: Path) -> Settings:
    return settings.replace(
        **shared_mode(redis_url, tmp_path),
    )


class _Sent(EventSink):
    """The supervisor's event sink, keeping the records it would send instead of writing them."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"), 0, None)
        self.sent: list[bytes] = []

    def flush(self) -> bool:
        self.sent += self.pending
        self.pending = []
        return True


@pytest.fixture
def job_id(app, alice, tmp_path: Path) -> int:  # type: ignore[no-untyped-def]
    job = running_job(app, alice.id, run_id=uuid.uuid4().hex)
    sink = _Sent()
    writer = LogWriter(tmp_path / "producer.ndjson", sink)
    for line in LINES:
        writer.write("stdout", line, is_partial=line.startswith("partial"))
    writer.close()
    store_of(app).ingest(job.id, 1, sink.sent)
    return job.id


def test_a_page_of_lines_comes_from_the_database(client, alice, job_id: int) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"{TRAIN}/jobs/{job_id}/logs?offset=1&limit=2", headers=alice.basic)
    assert response.status_code == 200
    assert [(line["n"], line["line"]) for line in response.json["lines"]] == [(2, LINES[1]), (3, LINES[2])]


def test_the_next_offset_follows_the_page(client, alice, job_id: int) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"{TRAIN}/jobs/{job_id}/logs?offset=1&limit=2", headers=alice.basic)
    assert response.json["next_offset"] == 3


def test_a_cut_line_says_so(client, alice, job_id: int) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"{TRAIN}/jobs/{job_id}/logs", headers=alice.basic)
    assert [line["partial"] for line in response.json["lines"]] == [False, False, False, True]


def test_the_download_is_the_whole_output(client, alice, job_id: int) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"{TRAIN}/jobs/{job_id}/logs/download", headers=alice.basic)
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "\n".join(LINES[:3]) + "\n" + LINES[3]
