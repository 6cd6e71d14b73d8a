"""Rows the tests put straight into the database, for what no request can make on its own."""

from __future__ import annotations

import uuid
from typing import Any

from trainflow.db import db
from trainflow.jobs.models import Job, JobStatus
from trainflow.scripts.models import Script


def running_job(
    app: Any, owner_id: int, *, run_id: str, experiment_id: str = "0", job_id: int | None = None
) -> Job:
    """A RUNNING job of ``owner_id`` on ``run_id`` (its script a row only), detached from the session."""
    with app.app_context():
        script = Script(
            owner_id=owner_id,
            filename="train.py",
            kind="py",
            entrypoint="train.py",
            has_requirements=False,
            size=1,
            sha256="0" * 64,
            storage_key=f"key-{uuid.uuid4().hex}",
        )
        db.session.add(script)
        db.session.flush()
        job = Job(
            id=job_id,
            owner_id=owner_id,
            script_id=script.id,
            experiment_id=experiment_id,
            run_id=run_id,
            status=JobStatus.RUNNING.value,
            params={},
            args=[],
            env={},
        )
        db.session.add(job)
        db.session.commit()
        db.session.refresh(job)
        db.session.expunge(job)
        return job
