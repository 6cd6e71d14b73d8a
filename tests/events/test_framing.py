"""The bytes of every stream: NDJSON and Server-Sent Events, and HTTP/1.1 chunks (#12)."""

from __future__ import annotations

import json

import pytest

from trainflow.events.changes import Change
from trainflow.events.framing import NDJSON, SSE, Framing, chunk

RECORDS = [(1, b'{"seq":1,"type":"log","line":"a"}\n'), (2, b'{"seq":2,"type":"end"}\n')]
NDJSON_FRAMING = Framing.of(is_sse=False)
SSE_FRAMING = Framing.of(is_sse=True)


def test_ndjson_events_are_the_stored_lines() -> None:
    assert NDJSON_FRAMING.events(RECORDS) == RECORDS[0][1] + RECORDS[1][1]


def test_sse_events_carry_their_seq_as_id() -> None:
    assert SSE_FRAMING.events(RECORDS) == (
        b'id: 1\ndata: {"seq":1,"type":"log","line":"a"}\n\nid: 2\ndata: {"seq":2,"type":"end"}\n\n'
    )


@pytest.mark.parametrize(("is_sse", "mimetype"), [(False, NDJSON), (True, SSE)])
def test_each_framing_names_its_media_type(is_sse: bool, mimetype: str) -> None:
    assert Framing.of(is_sse).mimetype == mimetype


def test_an_ndjson_heartbeat_is_one_line_without_a_seq() -> None:
    event = json.loads(NDJSON_FRAMING.heartbeat())
    assert set(event) == {"type", "ts"}


def test_an_sse_heartbeat_has_no_id() -> None:
    assert SSE_FRAMING.heartbeat().startswith(b'data: {"type":"heartbeat","ts":')


def test_an_sse_heartbeat_ends_its_message() -> None:
    assert SSE_FRAMING.heartbeat().endswith(b"}\n\n")


def test_resync_says_the_last_seq_sent() -> None:
    assert NDJSON_FRAMING.resync(41) == b'{"type":"resync","seq":41}\n'


def test_deleted_names_the_job() -> None:
    assert NDJSON_FRAMING.deleted(7) == b'{"type":"deleted","job_id":7,"message":"Job 7 was deleted."}\n'


def test_an_sse_position_carries_its_seq_as_id() -> None:
    assert SSE_FRAMING.position(9).startswith(b'id: 9\ndata: {"type":"heartbeat","seq":9,"ts":')


def test_an_ndjson_position_is_one_line() -> None:
    assert json.loads(NDJSON_FRAMING.position(9))["seq"] == 9


def test_sse_changes_carry_their_seq_as_id() -> None:
    change = Change(5, 1, b'{"type":"status","seq":5}\n')
    assert SSE_FRAMING.changes([change]) == b'id: 5\ndata: {"type":"status","seq":5}\n\n'


def test_a_chunk_is_its_length_in_hex_then_the_payload() -> None:
    assert chunk(b"x" * 26, is_chunked=True) == b"1a\r\n" + b"x" * 26 + b"\r\n"


def test_an_unchunked_write_is_the_payload() -> None:
    assert chunk(b"abc", is_chunked=False) == b"abc"
