"""Deleting a job's MLflow run along with the job, as MLflow's own API would let that user."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainflow.tracking.permissions import MlflowAuthorizer
from trainflow.tracking.permissions.rules import Target

if TYPE_CHECKING:
    from trainflow.accounts.credentials import Principal


def check_may_delete_run(principal: Principal, run_id: str, authorizer: MlflowAuthorizer) -> None:
    """Raise PermissionDenied unless ``POST /api/2.0/mlflow/runs/delete`` of this run would be
    allowed to the principal (MANAGE on its experiment, or an admin).

    Asked before the job is deleted, so a refusal leaves both the job and its run in place.
    """
    if principal.is_admin:
        return
    authorizer._check(principal, Target("run", run_id, "delete"))


def delete_run(run_id: str) -> None:
    """Mark the run deleted, as MLflow's ``runs/delete`` does (its garbage collection removes it
    for good later); a run already deleted, or gone, is left as it is."""
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_tracking_store

    store = _get_tracking_store()
    try:
        if store.get_run(run_id).info.lifecycle_stage == LifecycleStage.DELETED:
            return
    except MlflowException:
        return
    store.delete_run(run_id)
