"""System samples through the ingest: a supervisor elsewhere sends them like its lines (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import shared_mode
from tests.jobs.test_ingest_endpoint import TRAIN, job, post, stream_to_the_end, supervisor  # noqa: F401
from trainflow.runner.eventlog import fragment
from trainflow.settings import Settings

GPU = {
    "device": 0,
    "id": "3",
    "utilization_percent": 42.0,
    "memory_used_mb": 1234.0,
    "memory_total_mb": 16384.0,
}


def system_event(**fields: Any) -> dict[str, Any]:
    """A system event exactly as the supervisor sends it: ``fragment``'s JSON object."""
    values = {"cpu_percent": 97.5, "rss_mb": 210.2, "processes": 2, "gpus": [GPU], **fields}
    return json.loads(b"{" + fragment("system", 1_700_000_002.0, **values))


def test_a_sample_reaches_the_jobs_stream(app, client, alice, job, supervisor):  # noqa: F811
    assert post(client, job.id, {"first": 1, "events": [system_event()]}, supervisor).status_code == 200
    (sample,) = [e for e in stream_to_the_end(app, client, alice, job.id) if e["type"] == "system"]
    assert sample["cpu_percent"] == 97.5
    assert sample["rss_mb"] == 210.2
    assert sample["gpus"] == [GPU]


def test_another_user_does_not_see_the_samples(app, client, bob, job, supervisor):  # noqa: F811
    assert post(client, job.id, {"first": 1, "events": [system_event()]}, supervisor).status_code == 200
    assert client.get(f"{TRAIN}/jobs/{job.id}/events", headers=bob.basic).status_code == 404


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cpu_percent": "lots"}, "events.0.cpu_percent"),
        ({"rss_mb": None}, "events.0.rss_mb"),
        ({"gpus": {"0": GPU}}, "events.0.gpus"),
        ({"gpus": [{**GPU, "utilization_percent": "x"}]}, "events.0.gpus.0.utilization_percent"),
        ({"gpus": [{**GPU, "power": 1}]}, "events.0.gpus.0.power"),
        ({"gpus": [7]}, "events.0.gpus.0"),
        ({"load": 1}, "events.0.load"),
    ],
)
def test_a_malformed_sample_is_refused_naming_the_field(client, job, supervisor, fields, field):  # noqa: F811
    event = system_event()
    event.update(fields)
    if event.get("rss_mb") is None:
        del event["rss_mb"]
    response = post(client, job.id, {"first": 1, "events": [event]}, supervisor)
    assert response.status_code == 400
    assert field in response.json["error"]["message"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
class TestSharedMode:
    @pytest.fixture
    def settings(self, settings: Settings, redis_url: str, tmp_path: Path) -> Settings:
        return settings.replace(**shared_mode(redis_url, tmp_path))

    def test_a_sample_is_kept_in_postgresql(self, app, client, alice, job, supervisor):  # noqa: F811
        assert post(client, job.id, {"first": 1, "events": [system_event()]}, supervisor).status_code == 200
        (sample,) = [e for e in stream_to_the_end(app, client, alice, job.id) if e["type"] == "system"]
        assert sample["gpus"] == [GPU]
