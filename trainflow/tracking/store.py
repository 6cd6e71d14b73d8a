"""MLflow's SQL tracking store with metric writes done in a few SQL statements.

``log_metric`` and ``log_batch`` are most of what a training script sends. MLflow's store
builds an ORM object per metric and reads the run's latest values back before updating them
(about 1.5 ms per metric call, 100 ms per 1,000-metric batch on SQLite). This subclass writes
the same rows with Core statements: insert the metrics ignoring exact duplicates, insert the
per-key latest values ignoring existing keys, then move each existing latest value forward
with one conditional UPDATE whose row-value comparison ``(step, timestamp, value) < (...)``
is MLflow's own rule for "more recent". The result in the database is the same as MLflow's
(``tests/tracking/test_store.py`` checks both side by side), and the conditional UPDATE keeps
concurrent writers correct without reading rows first.

Dialects without an insert-ignore here fall back to MLflow's implementation.

A write that fails for lack of space raises :class:`DiskFull`, which MLflow's handlers answer
as 507 with a plain message (MLflow's own store would answer 503 with the SQL statement); a
pool with no connection free in time is a 503, where MLflow's handlers would answer 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mlflow.entities import LifecycleStage, Metric, Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    RESOURCE_EXHAUSTED,
    TEMPORARILY_UNAVAILABLE,
)
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.search_utils import SearchUtils
from mlflow.utils.validation import _validate_metric
from sqlalchemy import Table, and_, bindparam, select, tuple_, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from trainflow.errors import DISK_FULL_MESSAGE, is_disk_full, is_pool_timeout
from trainflow.tracking import store_reads

_METRICS: Table = SqlMetric.__table__
_LATEST: Table = SqlLatestMetric.__table__
_RUNS: Table = SqlRun.__table__
_TAGS: Table = SqlTag.__table__

_INSERT_IGNORING_DUPLICATES: dict[str, Callable[[Table], Insert]] = {
    "sqlite": lambda table: sqlite.insert(table).on_conflict_do_nothing(),
    "postgresql": lambda table: postgresql.insert(table).on_conflict_do_nothing(),
    "mysql": lambda table: mysql.insert(table).prefix_with("IGNORE"),
}

# Move a latest value forward only if the new one is more recent, MLflow's ordering.
_ADVANCE_LATEST = (
    update(_LATEST)
    .where(
        and_(
            _LATEST.c.run_uuid == bindparam("b_run_uuid"),
            _LATEST.c.key == bindparam("b_key"),
            tuple_(_LATEST.c.step, _LATEST.c.timestamp, _LATEST.c.value)
            < tuple_(bindparam("b_step"), bindparam("b_timestamp"), bindparam("b_value")),
        )
    )
    .values(
        step=bindparam("b_step"),
        timestamp=bindparam("b_timestamp"),
        value=bindparam("b_value"),
        is_nan=bindparam("b_is_nan"),
    )
)


class DiskFull(MlflowException):
    """A write failed for lack of space: 507 from MLflow's handlers, without the SQL text."""

    def __init__(self) -> None:
        super().__init__(DISK_FULL_MESSAGE, RESOURCE_EXHAUSTED)

    def get_http_status_code(self) -> int:
        return 507


@contextmanager
def _storage_errors() -> Iterator[None]:
    """A write refused for lack of space is 507; no pool connection free in time is 503.

    MLflow's handlers answer an MlflowException with its own status; anything else they turn
    into a 500 with the database's text.
    """
    try:
        yield
    except Exception as e:
        if is_disk_full(e):
            raise DiskFull() from e
        if is_pool_timeout(e):  # MLflow's managed session wraps it as an internal error
            raise MlflowException(
                "The server is busy (no database connection came free in time); try again in a moment.",
                TEMPORARILY_UNAVAILABLE,
            ) from e
        raise


class TrainflowTrackingStore(SqlAlchemyStore):
    """MLflow's ``SqlAlchemyStore`` with a faster ``_log_metrics_once``, and disk-full as 507."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # MLflow's, unannotated
        managed = self.ManagedSessionMaker

        @contextmanager
        def managed_session(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with _storage_errors(), managed(*args, **kwargs) as session:
                yield session

        self.ManagedSessionMaker = managed_session

    # Submitting a job is the costliest request a user sends, and the server's one event loop
    # pays for it: these two write what ``update_run_info`` and ``set_tag`` would in one
    # statement each, where MLflow's read the whole run back and check it first. Only for a
    # run trainflow has just made with ``create_run``.

    def mark_scheduled(self, run_id: str) -> None:
        """The run waits for its job: SCHEDULED (the job's own client makes it RUNNING)."""
        with _storage_errors(), self.engine.begin() as connection:
            connection.execute(
                update(_RUNS)
                .where(_RUNS.c.run_uuid == run_id)
                .values(status=RunStatus.to_string(RunStatus.SCHEDULED))
            )

    def add_new_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Tags the run does not have yet (trainflow's own, such as ``trainflow.job_id``)."""
        with _storage_errors(), self.engine.begin() as connection:
            connection.execute(
                _TAGS.insert(), [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()]
            )

    # Reads: run search and metric history as Core selects (trainflow/tracking/store_reads.py),
    # the same answers as MLflow's, which builds ORM objects for every run, metric, param and tag.

    def _search_runs(
        self,
        experiment_ids: Sequence[str | int],
        filter_string: str | None,
        run_view_type: int,
        max_results: int | None,
        order_by: Sequence[str] | None,
        page_token: str | None,
    ) -> tuple[list[Run], str | None]:
        self._validate_max_results_param(max_results, allow_null=True)  # type: ignore[arg-type]  # None is allowed
        parsed_filters = SearchUtils.parse_search_filter(filter_string)
        if not store_reads.handles(parsed_filters):
            return super()._search_runs(  # type: ignore[no-untyped-call, no-any-return]  # MLflow's, unannotated
                experiment_ids, filter_string, run_view_type, max_results, order_by, page_token
            )
        with _storage_errors(), self.ManagedSessionMaker() as session:
            return store_reads.search_runs(
                self,
                session,
                experiment_ids,
                parsed_filters,
                run_view_type,
                max_results,
                order_by,
                page_token,
            )

    def get_metric_history(
        self, run_id: str, metric_key: str, max_results: int | None = None, page_token: str | None = None
    ) -> PagedList[Metric]:
        with _storage_errors(), self.ManagedSessionMaker() as session:
            self._validate_run_accessible(session, run_id)
            return store_reads.metric_history(session, run_id, metric_key, max_results, page_token)

    def metric_history_rows(
        self, run_id: str, metric_key: str, max_results: int | None, page_token: str | None
    ) -> tuple[list[Any], str | None]:
        """``get_metric_history`` as ``(value, timestamp, step, is_nan)`` rows, for the JSON view."""
        with _storage_errors(), self.ManagedSessionMaker() as session:
            self._validate_run_accessible(session, run_id)
            return store_reads.metric_history_rows(session, run_id, metric_key, max_results, page_token)

    def _log_metrics_once(self, run_id: str, metrics: Sequence[Metric]) -> None:
        with _storage_errors():
            self._write_metrics(run_id, metrics)

    def _write_metrics(self, run_id: str, metrics: Sequence[Metric]) -> None:
        insert_ignoring = _INSERT_IGNORING_DUPLICATES.get(self.engine.dialect.name)
        if insert_ignoring is None:
            super()._log_metrics_once(run_id, metrics)  # type: ignore[no-untyped-call]  # MLflow's, unannotated
            return
        rows = self._metric_rows(run_id, metrics)
        with self.engine.begin() as connection:
            stage = connection.execute(
                select(_RUNS.c.lifecycle_stage).where(_RUNS.c.run_uuid == run_id)
            ).scalar_one_or_none()
            if stage is None:
                raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
            if stage != LifecycleStage.ACTIVE:
                raise MlflowException(
                    f"The run {run_id} must be in the 'active' state. Current state is {stage}.",
                    INVALID_PARAMETER_VALUE,
                )
            if not rows:
                return
            connection.execute(insert_ignoring(_METRICS), rows)
            latest = _most_recent_per_key(rows)
            connection.execute(insert_ignoring(_LATEST), latest)
            connection.execute(_ADVANCE_LATEST, [{f"b_{k}": v for k, v in row.items()} for row in latest])

    def _metric_rows(self, run_id: str, metrics: Sequence[Metric]) -> list[dict[str, Any]]:
        """Validate, drop repeats and sanitise NaN and infinities, as MLflow's store does."""
        rows: list[dict[str, Any]] = []
        seen: set[Metric] = set()
        is_single_metric = len(metrics) == 1
        for index, metric in enumerate(metrics):
            _validate_metric(
                metric.key,
                metric.value,
                metric.timestamp,
                metric.step,
                path="" if is_single_metric else f"metrics[{index}]",
            )
            if metric not in seen:
                is_nan, value = self.sanitize_metric_value(metric.value)
                rows.append(
                    {
                        "run_uuid": run_id,
                        "key": metric.key,
                        "value": value,
                        "timestamp": metric.timestamp,
                        "step": metric.step,
                        "is_nan": is_nan,
                    }
                )
            seen.add(metric)
        return rows


def _recency(row: dict[str, Any]) -> tuple[int, int, float]:
    return row["step"], row["timestamp"], row["value"]


def _most_recent_per_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The most recent row of each key, in key order (so concurrent writers lock alike)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        current = latest.get(row["key"])
        if current is None or _recency(row) > _recency(current):
            latest[row["key"]] = row
    return [latest[key] for key in sorted(latest)]
