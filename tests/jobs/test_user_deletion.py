"""Deleting a user takes their scripts and jobs with them, whatever the database (issue 3/4)."""

from __future__ import annotations

from tests.scripts.test_upload import TRAIN_PY, post_file
from trainflow.db import db
from trainflow.jobs.models import Job, JobStatus


def test_deleting_a_user_with_scripts_and_jobs(app, client, alice, admin, settings):
    script = post_file(client, alice, "train.py", TRAIN_PY).json["script"]
    with app.app_context():
        db.session.add(
            Job(
                owner_id=alice.id,
                script_id=script,
                experiment_id="0",
                run_id="r" * 32,
                status=JobStatus.SUCCEEDED.value,
                params={},
                args=[],
                env={},
            )
        )
        db.session.commit()
    job_dir = settings.jobs_dir / "1"
    job_dir.mkdir(parents=True)
    response = client.delete(f"/api/users/{alice.id}", headers=admin.basic)
    assert response.status_code == 204, response.json
    with app.app_context():
        assert db.session.query(Job).count() == 0
    assert not job_dir.exists()
    assert not any(p.is_dir() and p.name != ".incoming" for p in settings.uploads_dir.iterdir())
