"""A sweep's runs in MLflow: a parent run for the sweep, a child run per trial.

The child runs carry MLflow's ``mlflow.parentRunId`` tag, which is how MLflow's UI nests them
under the parent and how ``search_runs(filter_string="tags.mlflow.parentRunId = '...'")``
finds them. The parent holds the sweep's spec as params and follows its trials' outcome.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from trainflow.tracking.runs import _store

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value


def create_parent_run(
    experiment_id: str, username: str, entrypoint: str, name: str | None, spec: dict[str, Any]
) -> tuple[str, str]:
    """The sweep's run, RUNNING from now, with the sweep's spec as its params; its id and name
    (MLflow's generated one when ``name`` is None)."""
    from mlflow.entities import Param

    store = _store()
    run = _create(experiment_id, username, entrypoint, name, {"trainflow.sweep": "parent"})
    params = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in spec.items() if value is not None]
    store.log_batch(run.info.run_id, metrics=[], params=params, tags=[])
    return str(run.info.run_id), str(run.info.run_name)


def create_trial_runs(
    experiment_id: str,
    username: str,
    entrypoint: str,
    parent_run_id: str,
    trials: list[tuple[str, dict[str, Any]]],
) -> list[str]:
    """A run per trial (its name and params): a child of the sweep's, SCHEDULED until its job
    starts; their ids, in order.

    All in one transaction, as MLflow's ``create_run`` and ``log_batch`` would leave each (the
    same rows): through the store one trial took ~85 ms, so a sweep of 1,000 over a minute.
    """
    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
    from mlflow.utils.uri import append_to_uri_path

    store = _store()
    experiment = store.get_experiment(experiment_id)
    store._check_experiment_is_active(experiment)
    start = now_ms()
    run_ids: list[str] = []
    runs: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    params: list[dict[str, Any]] = []
    for name, values in trials:
        run_id = uuid.uuid4().hex
        run_ids.append(run_id)
        runs.append(
            {
                "run_uuid": run_id,
                "name": name,
                "source_type": SourceType.to_string(SourceType.UNKNOWN),
                "source_name": "",
                "entry_point_name": "",
                "user_id": username,
                "status": RunStatus.to_string(RunStatus.SCHEDULED),
                "start_time": start,
                "end_time": None,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE,
                "artifact_uri": append_to_uri_path(
                    experiment.artifact_location, run_id, store.ARTIFACTS_FOLDER_NAME
                ),
                "experiment_id": int(experiment_id),
            }
        )
        run_tags = {
            "mlflow.source.name": entrypoint,
            "mlflow.source.type": "JOB",
            "mlflow.user": username,
            MLFLOW_RUN_NAME: name,
            PARENT_TAG: parent_run_id,
        }
        tags += [{"run_uuid": run_id, "key": k, "value": v} for k, v in run_tags.items()]
        params += [{"run_uuid": run_id, "key": k, "value": str(v)} for k, v in values.items()]
    with store.engine.begin() as connection:  # Core statements, many rows each
        connection.execute(SqlRun.__table__.insert(), runs)
        connection.execute(SqlTag.__table__.insert(), tags)
        if params:
            connection.execute(SqlParam.__table__.insert(), params)
    return run_ids


def tag_runs(tags: dict[str, dict[str, str]]) -> None:
    """New tags on many runs ({run id: {key: value}}) in one statement."""
    from mlflow.store.tracking.dbmodels.models import SqlTag

    rows = [
        {"run_uuid": run_id, "key": k, "value": v} for run_id, pairs in tags.items() for k, v in pairs.items()
    ]
    if rows:
        with _store().engine.begin() as connection:
            connection.execute(SqlTag.__table__.insert(), rows)


def _create(
    experiment_id: str, username: str, entrypoint: str, name: str | None, tags: dict[str, str]
) -> Any:
    """A run tagged as :func:`trainflow.tracking.runs.create_job_run` tags a job's, and with ``tags``."""
    from mlflow.entities import RunTag

    return _store().create_run(
        experiment_id=experiment_id,
        user_id=username,
        start_time=now_ms(),
        tags=[
            RunTag("mlflow.source.name", entrypoint),
            RunTag("mlflow.source.type", "JOB"),
            RunTag("mlflow.user", username),
            *(RunTag(key, value) for key, value in tags.items()),
        ],
        run_name=name,
    )


def tag_run(run_id: str, tags: dict[str, str]) -> None:
    _store().add_new_tags(run_id, tags)


def set_running(run_id: str) -> None:
    """Back to RUNNING (a rerun of the sweep's failed trials), its end time cleared."""
    from mlflow.entities import RunStatus

    store = _store()
    store.update_run_info(run_id, RunStatus.from_string("RUNNING"), end_time=None, run_name=None)
    # update_run_info keeps an end time it is not given: clear it so the run shows as running.
    from mlflow.store.tracking.dbmodels.models import SqlRun

    with store.ManagedSessionMaker() as session:
        session.query(SqlRun).filter(SqlRun.run_uuid == run_id).update({"end_time": None})


def now_ms() -> int:
    return int(time.time() * 1000)


def latest_values(run_ids: list[str], key: str) -> dict[str, float]:
    """The latest value of metric ``key`` of each run that logged it (NaN left out), in one query."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric

    values: dict[str, float] = {}
    if not run_ids:
        return values
    store = _store()
    with store.ManagedSessionMaker() as session:
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            rows = (
                session.query(SqlLatestMetric.run_uuid, SqlLatestMetric.value, SqlLatestMetric.is_nan)
                .filter(SqlLatestMetric.run_uuid.in_(chunk), SqlLatestMetric.key == key)
                .all()
            )
            for run_id, value, is_nan in rows:
                if not is_nan and value is not None and math.isfinite(value):
                    values[run_id] = float(value)
    return values
