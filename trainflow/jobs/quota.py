"""The job folders quota: what a user's kept job folders take, checked when they submit one more."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainflow.accounts.credentials import Principal
from trainflow.jobs.models import Job, JobStatus
from trainflow.scripts import service as scripts
from trainflow.scripts.models import Script
from trainflow.settings import Settings

JOBS_PATH = "/ajax-api/2.0/mlflow/train/jobs"


def jobs_used(session: Session, settings: Settings, owner_id: int) -> int:
    """Bytes the owner's job folders take: finished ones measured once, the others each time."""
    total = 0
    jobs_dir = settings.jobs_dir  # resolved once: a user may keep thousands of jobs
    for job_id, status in session.execute(select(Job.id, Job.status).where(Job.owner_id == owner_id)):
        folder = jobs_dir / str(job_id)
        if JobStatus(status).is_finished:
            total += scripts.frozen_bytes(folder)
        else:
            total += scripts.tree_bytes(folder)
    return total


def check_jobs_quota(session: Session, settings: Settings, principal: Principal, script: Script) -> None:
    """Refuse (409) a job whose copy of its script would take the owner's job folders over quota."""
    if principal.is_admin or not settings.user_jobs_mb:
        return
    quota = settings.user_jobs_mb * scripts.MB
    used = jobs_used(session, settings, principal.user_id)
    needs = scripts.script_bytes(settings, script)
    if used + needs <= quota:
        return
    mb = scripts.megabytes
    raise scripts.JobsQuotaExceeded(
        f"Your job folders use {mb(used)} of your {mb(quota)}, and this job's copy of its script "
        f"needs {mb(needs)}; delete finished jobs with DELETE {JOBS_PATH}/<id> (GET {JOBS_PATH} lists "
        "them; their MLflow runs and artifacts stay), or ask an admin to raise TRAINFLOW_USER_JOBS_MB."
    )
