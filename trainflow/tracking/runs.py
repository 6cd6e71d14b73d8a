"""The MLflow run each job has: made on submission, RUNNING when it starts, ended with its outcome.

Statuses are MLflow's run status names (``"RUNNING"``, ``"FINISHED"``, ``"FAILED"``,
``"KILLED"``); times are milliseconds since the epoch, as MLflow stores them. Everything goes
through MLflow's process-wide tracking store (:func:`trainflow.tracking.mlflow_server.configure_stores`).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import OperationalError

from trainflow.db import db
from trainflow.errors import BadRequest, Conflict, PermissionDenied
from trainflow.tracking.experiment_names import check_experiment_name, may_use_name
from trainflow.tracking.permissions import MlflowAuthorizer, Permission

if TYPE_CHECKING:
    from trainflow.accounts.credentials import Principal


def experiment_for_job(principal: Principal, name: str, authorizer: MlflowAuthorizer) -> str:
    """The id of the experiment ``name``, made (and the principal's to manage) if there is none.

    Raises BadRequest for a deleted experiment or a name MLflow refuses, PermissionDenied for
    one the principal may not add runs to or may not create.
    """
    from mlflow.exceptions import MlflowException

    store = _store()
    experiment = store.get_experiment_by_name(name)
    if experiment is None:
        check_experiment_name(principal, name)  # no one creates a name in another user's namespace
        with _one_creator(name):  # two first jobs of a script at once: one creates, one finds it
            experiment = store.get_experiment_by_name(name)
            if experiment is None:
                try:
                    experiment_id = str(store.create_experiment(name))
                except MlflowException as e:
                    if e.error_code == "RESOURCE_ALREADY_EXISTS":
                        raise Conflict(f"Experiment {name!r} is being created; submit again.") from None
                    raise BadRequest(f"Cannot create experiment {name!r}: {e.message}") from None
                authorizer.grant(principal.user_id, "experiment", experiment_id, Permission.MANAGE)
                return experiment_id
    experiment_id = str(experiment.experiment_id)
    if experiment.lifecycle_stage != "active":
        raise BadRequest(f"Experiment {name!r} is deleted; restore it or choose another name.")
    if not principal.is_admin and not authorizer.permission(
        principal.user_id, "experiment", experiment_id
    ).allows("update"):
        raise PermissionDenied(
            f"You may not add runs to experiment {name!r}; choose another experiment_name"
            + (
                " (someone else created it before names were reserved per user; an admin can rename it)."
                if may_use_name(principal.username, False, name)
                else "."
            )
        )
    return experiment_id


_CREATING = threading.Lock()  # made after gevent patches the server: greenlets wait their turn
_LOCK_WAIT_S = 30


@contextlib.contextmanager
def _one_creator(name: str) -> Iterator[None]:
    """One creator of an experiment name at a time: in this process, and on PostgreSQL across
    processes and hosts (an advisory lock on the name), so the creator's MANAGE grant is
    committed before anyone else looks the name up (a second creator failed with MLflow's
    unique-name error, and a non-admin finding it before the grant was refused)."""
    with _CREATING:
        if db.engine.dialect.name != "postgresql":
            yield  # SQLite: one process writes at a time; several workers may still meet below
            return
        key = int.from_bytes(hashlib.sha256(f"experiment:{name}".encode()).digest()[:8], "big", signed=True)
        with db.engine.connect() as connection:
            connection.exec_driver_sql(f"SET lock_timeout = '{_LOCK_WAIT_S}s'")
            try:
                connection.exec_driver_sql("SELECT pg_advisory_lock(%s)", (key,))
            except OperationalError:
                raise Conflict(f"Experiment {name!r} is still being created; submit again.") from None
            finally:
                connection.exec_driver_sql("RESET lock_timeout")
            try:
                yield
            finally:
                connection.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (key,))
                connection.commit()


def create_job_run(experiment_id: str, username: str, entrypoint: str, run_name: str | None) -> str:
    """A new run for a job, started now and tagged as MLflow tags a job's source; its id."""
    from mlflow.entities import RunTag

    run = _store().create_run(
        experiment_id=experiment_id,
        user_id=username,
        start_time=int(time.time() * 1000),
        tags=[
            RunTag("mlflow.source.name", entrypoint),
            RunTag("mlflow.source.type", "JOB"),
            RunTag("mlflow.user", username),
        ],
        run_name=run_name,
    )
    return str(run.info.run_id)


def schedule_run(run_id: str, params: dict[str, Any]) -> None:
    """Log the job's params on its new run and mark it SCHEDULED until the job starts."""
    from mlflow.entities import Param

    store = _store()
    if params:
        store.log_batch(run_id, metrics=[], params=[Param(k, str(v)) for k, v in params.items()], tags=[])
    store.mark_scheduled(run_id)


def tag_with_job(run_id: str, job_id: int) -> None:
    """Tag the run with the id of the job it belongs to (``trainflow.job_id``)."""
    _store().add_new_tags(run_id, {"trainflow.job_id": str(job_id)})


def tag_run(run_id: str, key: str, value: str) -> None:
    """Set (or replace) one tag of the run: a retried job's ``trainflow.attempt``."""
    from mlflow.entities import RunTag

    _store().set_tag(run_id, RunTag(key, value))


def set_run_status(run_id: str, status: str, end_time_ms: int | None = None) -> None:
    """Set the run's status (an MLflow run status name), and its end time when it has ended."""
    from mlflow.entities import RunStatus

    _store().update_run_info(run_id, RunStatus.from_string(status), end_time=end_time_ms, run_name=None)


def log_artifacts(run_id: str, folder: Path) -> None:
    """Copy a folder into the run's artifacts (through MLflow's artifact store)."""
    from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts

    run = _store().get_run(run_id)
    root = run.info.artifact_uri  # mlflow-artifacts:/<experiment>/<run>/artifacts
    prefix = root.split(":", 1)[1].lstrip("/") if root.startswith("mlflow-artifacts:") else None
    if prefix is None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(root).log_artifacts(str(folder))
        return
    _get_artifact_repo_mlflow_artifacts().log_artifacts(str(folder), artifact_path=prefix)


def _store() -> Any:
    """MLflow's tracking store for this process: a ``TrainflowTrackingStore``."""
    from mlflow.server.handlers import _get_tracking_store

    return _get_tracking_store()
