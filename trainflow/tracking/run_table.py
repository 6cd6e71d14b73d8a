"""MLflow's run tables as SQLAlchemy Core objects, for the job list to join in SQL.

The job list shows what MLflow holds of each job's run: its name (a user may rename a run in
MLflow's UI, so it is read, never copied), its experiment's name, its params and the latest
value of its metrics. It pages and sorts over them in one query, which the jobs package builds
from the tables given here; those are MLflow's own (its ORM models' ``__table__``), so they
follow MLflow's schema as it migrates. They are looked up on first use: importing MLflow takes
seconds, and parts of trainflow import this package without needing it.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, FromClause, Table, and_, case, cast, inspect, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import Alias


@dataclass(frozen=True)
class RunTables:
    runs: Table  # run_uuid, name, experiment_id, status, start_time, end_time, lifecycle_stage ...
    experiments: Table  # experiment_id, name ...
    params: Table  # run_uuid, key, value (text)
    latest_metrics: Table  # run_uuid, key, value, step, timestamp, is_nan


@functools.cache
def run_tables() -> RunTables:
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlLatestMetric, SqlParam, SqlRun

    return RunTables(
        runs=SqlRun.__table__,
        experiments=SqlExperiment.__table__,
        params=SqlParam.__table__,
        latest_metrics=SqlLatestMetric.__table__,
    )


# trainflow's index on MLflow's latest_metrics (migration 0011): a sort by a metric walks it.
METRIC_VALUE_INDEX = "tf_ix_latest_metrics_key_value"
_has_value_index: dict[str, bool] = {}


class _ByValueIndex(Alias):
    """latest_metrics, to be read through trainflow's (key, value) index on SQLite."""

    inherit_cache = True


@compiles(_ByValueIndex, "sqlite")
def _indexed_by(element: _ByValueIndex, compiler: Any, **kw: Any) -> str:
    text: str = compiler.visit_alias(element, **kw)
    if kw.get("asfrom"):
        text += f" INDEXED BY {METRIC_VALUE_INDEX}"
    return text


def metrics_by_value(session: Session) -> FromClause:
    """latest_metrics (as ``sort_metric``) for sorting jobs by a metric's value.

    SQLite's planner otherwise starts from the jobs (the owner's index looks cheaper), looks each
    job's value up and sorts them all: 10,000 lookups for a page of 20. Read through the
    (key, value) index (``INDEXED BY``) it walks the values in order and stops after the page.
    PostgreSQL's planner finds that plan by itself. Whether the index is there is asked once per
    database: MLflow's own migrations may rebuild the table without it, and ``INDEXED BY`` a
    missing index is an error.
    """
    table = run_tables().latest_metrics
    bind = session.get_bind()
    if bind.dialect.name != "sqlite":
        return table.alias("sort_metric")
    url = str(bind.engine.url)
    if url not in _has_value_index:
        names = {index["name"] for index in inspect(bind).get_indexes("latest_metrics")}
        _has_value_index[url] = METRIC_VALUE_INDEX in names
    if not _has_value_index[url]:
        return table.alias("sort_metric")
    return _ByValueIndex._construct(table, name="sort_metric")


# What PostgreSQL reads as a number and casts to double precision without overflowing: the
# integer part and exponent are bounded, as a researcher's params (lr=3e-4, epochs=10) are.
_PG_NUMBER = r"^\s*[-+]?([0-9]{1,30}(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]{1,2})?\s*$"


def number_or_null(value: ColumnElement[str], dialect: str) -> ColumnElement[float]:
    """``value`` (MLflow keeps params as text) as a number where it reads as one, else NULL.

    Sorting by a param sorts by this first, so ``lr=0.01`` comes before ``lr=0.1`` and ``10``
    after ``9``; text values follow the numbers, sorted as text. SQLite has no regular
    expressions built in: a value made only of digits, signs, points and exponents, starting
    like a number and holding a digit, counts as one there.
    """
    is_number: ColumnElement[bool]
    if dialect == "postgresql":
        is_number = value.op("~")(_PG_NUMBER)
    else:
        is_number = and_(
            value.op("GLOB")("[-+.0-9]*"),
            value.op("GLOB")("*[0-9]*"),
            value.op("NOT GLOB")("*[^-+.0-9eE]*"),
        )
    return case((is_number, cast(value, Float)), else_=None)


def latest_metrics(
    session: Session, run_ids: Collection[str], keys: Collection[str]
) -> dict[str, dict[str, float | None]]:
    """run id → {key: latest value} for these runs and keys (NaN as None: JSON has no NaN)."""
    if not run_ids or not keys:
        return {}
    table = run_tables().latest_metrics
    rows = session.execute(
        select(table.c.run_uuid, table.c.key, table.c.value, table.c.is_nan).where(
            table.c.run_uuid.in_(list(run_ids)), table.c.key.in_(list(keys))
        )
    ).all()
    found: dict[str, dict[str, float | None]] = {}
    for run_id, key, value, is_nan in rows:
        found.setdefault(run_id, {})[key] = None if is_nan else float(value)
    return found


def run_names(session: Session, run_ids: Collection[str]) -> dict[str, tuple[str | None, str | None]]:
    """run id → (run name, experiment name), as MLflow holds them now."""
    if not run_ids:
        return {}
    tables = run_tables()
    runs, experiments = tables.runs, tables.experiments
    rows = session.execute(
        select(runs.c.run_uuid, runs.c.name, experiments.c.name)
        .select_from(runs)
        .outerjoin(experiments, experiments.c.experiment_id == runs.c.experiment_id)
        .where(runs.c.run_uuid.in_(list(run_ids)))
    ).all()
    return {run_id: (run_name, experiment_name) for run_id, run_name, experiment_name in rows}


def metric_keys(session: Session, run_ids: Collection[str]) -> list[str]:
    """The metric keys these runs have logged, sorted (for a column picker).

    Made unique here, not with DISTINCT ... ORDER BY key: SQLite would answer that by walking
    the whole (key, run_uuid) index in key order, a million entries for 10,000 runs.
    """
    if not run_ids:
        return []
    table = run_tables().latest_metrics
    keys = session.scalars(select(table.c.key).where(table.c.run_uuid.in_(list(run_ids)))).all()
    return sorted(set(keys))
