"""An app of its own for each fuzzing phase, on a copy of the migrated SQLite template.

Each phase (a user, an admin) gets a fresh database and fresh users, so what one phase's
generated requests delete or change (a user deleting themself, an admin renaming another) never
decides what the next one sees.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from hypothesis import HealthCheck, Phase, settings

from tests.conftest import _copy_sqlite, dispose
from trainflow.app import create_app
from trainflow.settings import Settings

# Generated cases per operation and generation mode (positive, negative). The default keeps the
# whole fuzzing run within a few minutes on two cores; raise it for a longer hunt.
EXAMPLES = int(os.environ.get("TRAINFLOW_FUZZ_PER_ROUTE", "6"))

# The same cases on every run (derandomized, no example database), with no deadline, no shrinking
# and no health checks: the budget is the number of requests, each a real call to a server.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def fuzz_app(tmp_path: Path, templates) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    target = tmp_path / "db" / "trainflow.db"
    target.parent.mkdir()
    _copy_sqlite(templates.sqlite(), target)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{target}",
        # Submitted jobs stay QUEUED: the fuzzer exercises the API, not the sandbox.
        run_jobs=False,
        # Streams say something every 0.1 s, so a fuzzed stream is read for a bounded time.
        stream_heartbeat_seconds=0.1,
        # A fuzzed password change guesses the old password; the failed-login limit would then
        # lock the phase's own user out of the rest of the run (its 429 is declared all the same).
        login_attempts=1000,
    )
    app = create_app(settings)
    yield app
    dispose(app)


def uploaded_script(app: Flask, headers: dict[str, str]) -> int:
    """A script uploaded through the API by whoever ``headers`` sign in; returns its id."""
    response = app.test_client().post(
        "/ajax-api/2.0/mlflow/train/upload",
        data={"file": (io.BytesIO(b"print('hello')\n"), "train.py")},
        headers=headers,
    )
    assert response.status_code == 201, response.json
    return int(response.json["script"])


def finished_job_with_log(app: Flask, owner_id: int, script_id: int, lines: int) -> int:
    """A SUCCEEDED job of ``owner_id`` running ``script_id``, whose log holds ``lines`` lines."""
    from trainflow.db import db, utcnow
    from trainflow.jobs.models import Job, JobStatus
    from trainflow.jobs.scheduler import executor_for
    from trainflow.runner.supervisor import INDEX_EVERY

    with app.app_context():
        job = Job(
            owner_id=owner_id,
            script_id=script_id,
            experiment_id="0",
            run_id="0" * 32,
            status=JobStatus.SUCCEEDED.value,
            exit_code=0,
            params={},
            args=[],
            env={},
            started_at=utcnow(),
            finished_at=utcnow(),
        )
        db.session.add(job)
        db.session.commit()
        job_id = job.id
        folder = executor_for(app).job_dir(job_id)  # type: ignore[arg-type]
        db.session.remove()
    folder.mkdir(parents=True, exist_ok=True)
    index = bytearray()  # logs.idx, as the supervisor writes it: where every 1000th record starts
    with open(folder / "logs.ndjson", "wb") as f:
        for n in range(lines):
            if n % INDEX_EVERY == 0:
                index += f.tell().to_bytes(8, "little")
            record = {"n": n, "ts": 1767225600.0 + n, "stream": "stdout", "line": f"step {n}"}
            f.write(json.dumps(record).encode() + b"\n")
    (folder / "logs.idx").write_bytes(bytes(index))
    return job_id
