"""The event catalogue, and the JavaScript held to it: no event type or status named only there (#12).

The dashboard (``trainflow/static/dashboard``) and the public ``events.js`` (``trainflow/static/api``)
have no build step that could import the catalogue, so this test reads their sources: every
event type they compare or switch on, every status they compare, list or label, must be one
the server defines in :mod:`trainflow.events.types`.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

import trainflow
from trainflow import cli
from trainflow.events.types import FINISHED, EventType, JobStatus
from trainflow.jobs import models, schemas

PACKAGE = Path(trainflow.__file__).parent
STATIC = PACKAGE / "static"  # the dashboard's assets and the API's, events.js among them
EVENT_TYPES = {event_type.value for event_type in EventType}
STATUSES = {status.value for status in JobStatus}

# `event.type === "log"`, `last?.type !== "deleted"`, and the same the other way round.
TYPE_COMPARED = re.compile(r'\btype\s*[!=]==?\s*"([^"]*)"|"([^"]*)"\s*[!=]==?\s*[\w.?]*\btype\b')
SWITCH_ON_TYPE = re.compile(r"\bswitch\s*\(\s*[\w.?]*\btype\s*\)\s*\{")
CASE = re.compile(r'\bcase\s+"([^"]*)"\s*:')
# `status === "QUEUED"`, `job.status !== "RUNNING"`, and the same the other way round.
STATUS_COMPARED = re.compile(r'\bstatus\s*[!=]==?\s*"([^"]*)"|"([^"]*)"\s*[!=]==?\s*[\w.?]*\bstatus\b')
STATUS_LABEL = re.compile(r'"status\.([^"]*)"\s*:')  # a translation: "status.QUEUED": "Queued"
STATUS_LIST = re.compile(r"\bexport\s+const\s+(STATUSES|FINISHED)\s*=\s*(?:new\s+Set\(\s*)?\[([^\]]*)\]")


def _sources() -> dict[str, str]:
    return {
        str(path.relative_to(PACKAGE)): path.read_text(encoding="utf-8")
        for path in sorted(STATIC.rglob("*.js"))
        if "vendor" not in path.parts
    }


def _line(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1


def _compared(pattern: re.Pattern[str], sources: dict[str, str]) -> dict[str, set[str]]:
    """Each name the pattern finds, and where (``file:line``)."""
    found: dict[str, set[str]] = {}
    for name, text in sources.items():
        for match in pattern.finditer(text):
            value = match.group(1) if match.group(1) is not None else match.group(2)
            found.setdefault(value, set()).add(f"{name}:{_line(text, match.start())}")
    return found


def _switch_body(text: str, start: int) -> str:
    """The block of a ``switch`` from its opening brace (at ``start - 1``) to the matching one."""
    depth = 1
    for at in range(start, len(text)):
        if text[at] == "{":
            depth += 1
        elif text[at] == "}":
            depth -= 1
            if depth == 0:
                return text[start:at]
    raise AssertionError("a switch with no closing brace")


def _cases_on_type(sources: dict[str, str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, text in sources.items():
        for switch in SWITCH_ON_TYPE.finditer(text):
            body = _switch_body(text, switch.end())
            for case in CASE.finditer(body):
                where = f"{name}:{_line(text, switch.end() + case.start())}"
                found.setdefault(case.group(1), set()).add(where)
    return found


def _unknown(found: dict[str, set[str]], known: set[str]) -> list[str]:
    return sorted(f"{value!r} at {', '.join(sorted(found[value]))}" for value in set(found) - known)


def _status_lists(sources: dict[str, str]) -> dict[str, list[str]]:
    lists = {}
    for text in sources.values():
        for match in STATUS_LIST.finditer(text):
            lists[match.group(1)] = re.findall(r'"([^"]*)"', match.group(2))
    return lists


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return _sources()


def test_the_catalogue_names_every_event_type_a_stream_sends() -> None:
    assert EVENT_TYPES == {
        "status",
        "log",
        "metric",
        "progress",
        "system",
        "end",
        "resync",
        "deleted",
        "heartbeat",
    }


def test_finished_statuses_are_those_after_running() -> None:
    assert FINISHED == STATUSES - {"QUEUED", "RUNNING"}


def test_the_job_model_uses_the_catalogues_statuses() -> None:
    assert models.JobStatus is JobStatus


def test_the_api_schema_lists_the_catalogues_statuses() -> None:
    assert list(typing.get_args(schemas.JobStatusName)) == [status.value for status in JobStatus]


def test_the_cli_maps_every_finished_status_to_an_exit_code() -> None:
    assert set(cli.EXIT_CODES) == FINISHED


def test_the_scan_reads_the_dashboard_and_events_js(sources: dict[str, str]) -> None:
    # A scan that found nothing would pass every test below: make sure it reads what it should.
    assert {
        "static/api/js/events.js",
        "static/dashboard/js/pages/job.js",
        "static/dashboard/js/jobs.js",
    } <= set(sources)


def test_js_compares_only_event_types_from_the_catalogue(sources: dict[str, str]) -> None:
    found = _compared(TYPE_COMPARED, sources)
    assert {"heartbeat", "resync", "end", "deleted", "status"} <= set(found)  # the scan works
    assert _unknown(found, EVENT_TYPES) == []


def test_js_switches_only_on_event_types_from_the_catalogue(sources: dict[str, str]) -> None:
    found = _cases_on_type(sources)
    assert {"log", "progress", "metric"} <= set(found)  # the scan works
    assert _unknown(found, EVENT_TYPES) == []


def test_js_compares_only_statuses_from_the_catalogue(sources: dict[str, str]) -> None:
    found = _compared(STATUS_COMPARED, sources)
    assert {"QUEUED", "RUNNING"} <= set(found)  # the scan works
    assert _unknown(found, STATUSES) == []


def test_js_lists_the_catalogues_statuses_in_order(sources: dict[str, str]) -> None:
    assert _status_lists(sources)["STATUSES"] == [status.value for status in JobStatus]


def test_js_finished_statuses_are_the_catalogues(sources: dict[str, str]) -> None:
    assert set(_status_lists(sources)["FINISHED"]) == FINISHED


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_js_labels_exactly_the_catalogues_statuses(sources: dict[str, str], language: str) -> None:
    labels = STATUS_LABEL.findall(sources[f"static/dashboard/js/messages/{language}.js"])
    assert sorted(labels) == sorted(STATUSES)
