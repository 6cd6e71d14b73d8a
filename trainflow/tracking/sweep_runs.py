"""A sweep's runs in MLflow: a parent run for the sweep, a child run per trial.

The child runs carry MLflow's ``mlflow.parentRunId`` tag, which is how MLflow's UI nests them
under the parent and how ``search_runs(filter_string="tags.mlflow.parentRunId = '...'")``
finds them. The parent holds the sweep's spec as params and follows its trials' outcome.
"""

from __future__ import annotations

import math
import time
from typing import Any

from trainflow.tracking.runs import _store, schedule_run

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


def create_trial_run(
    experiment_id: str, username: str, entrypoint: str, name: str, parent_run_id: str, params: dict[str, Any]
) -> str:
    """A trial's run: a child of the sweep's, with the trial's params, SCHEDULED until it starts."""
    run = _create(experiment_id, username, entrypoint, name, {PARENT_TAG: parent_run_id})
    run_id = str(run.info.run_id)
    schedule_run(run_id, params)
    return run_id


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
