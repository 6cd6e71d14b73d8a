"""Run search and metric history as Core selects: MLflow's answers, without its ORM costs.

MLflow's ``SqlAlchemyStore._search_runs`` loads each run as an ORM object with its latest
metrics, params and tags eager-loaded as ORM objects too (1,000 runs of 18 values each is
~19,000 objects, most of the time of a page), and joins every filtered or sorted key as a
subquery (``JOIN (SELECT * FROM latest_metrics WHERE key = ?)``). SQLite materialises such a
subquery without an index and scans it once per run, so ordering 10,000 runs by a metric reads
10,000 x 10,000 rows. Here the same WHERE and ORDER BY are built on aliased tables joined
directly on ``(run_uuid, key)``, which both SQLite and PostgreSQL answer from the primary key,
the rows come back as plain tuples, and the entities are built from them.

Everything that decides the answer is MLflow's own: the filter and order-by parsers (so the
same grammar and the same errors), the comparison functions per dialect (LIKE, ILIKE, IN ...),
NaN handling, NULLs-last ordering, the ``start_time DESC, run_uuid`` tie-breaks and the
offset page tokens. So the same runs come back in the same order with the same tokens, and a
client may page through mixing both stores (``tests/tracking/test_store_reads.py`` checks that
side by side on SQLite and PostgreSQL). Dataset filters are left to MLflow's implementation:
:func:`handles` says no to them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy
from mlflow.entities import LifecycleStage, Metric, Param, Run, RunData, RunInfo, RunTag
from mlflow.entities.run_inputs import RunInputs
from mlflow.entities.run_outputs import RunOutputs
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, _get_run_name_from_tags
from mlflow.utils.search_utils import SearchUtils
from mlflow.utils.validation import _parse_experiment_ids
from sqlalchemy import ColumnElement, FromClause, Select, Table, and_, case, exists, select
from sqlalchemy.orm import Session

_RUNS: Table = SqlRun.__table__
_LATEST: Table = SqlLatestMetric.__table__
_PARAMS: Table = SqlParam.__table__
_TAGS: Table = SqlTag.__table__
_METRICS: Table = SqlMetric.__table__

# Run ids per IN list when loading a page's metrics, params and tags (SQLite builds before
# 3.32 allow 999 bound parameters a statement).
_CHUNK = 900

_RUN_COLUMNS = (
    _RUNS.c.run_uuid,
    _RUNS.c.name,
    _RUNS.c.experiment_id,
    _RUNS.c.user_id,
    _RUNS.c.status,
    _RUNS.c.start_time,
    _RUNS.c.end_time,
    _RUNS.c.lifecycle_stage,
    _RUNS.c.artifact_uri,
)
_NAN = float("nan")


def handles(parsed_filters: Iterable[dict[str, Any]]) -> bool:
    """Whether this module answers a search with these parsed filters (datasets: MLflow's)."""
    return all(f.get("type") != "dataset" for f in parsed_filters)


def search_runs(
    store: Any,
    session: Session,
    experiment_ids: Sequence[str | int],
    parsed_filters: Sequence[dict[str, Any]],
    run_view_type: int,
    max_results: int | None,
    order_by: Sequence[str] | None,
    page_token: str | None,
) -> tuple[list[Run], str | None]:
    """MLflow's ``_search_runs`` for filters :func:`handles` accepts, checks done in its order."""
    dialect = store._get_dialect()
    sort_joins, sort_clauses = _order_by_clauses(order_by)  # MLflow checks the order before the filter
    joins, where = _filter_clauses(parsed_filters, dialect)
    offset = SearchUtils.parse_start_offset_from_page_token(page_token)
    ids = store._filter_experiment_ids(session, _parse_experiment_ids(list(experiment_ids)))
    stages = set(LifecycleStage.view_type_to_stages(run_view_type))

    source: FromClause = _RUNS
    for table, on in joins:
        source = source.join(table, on)
    for table, on in sort_joins:
        source = source.outerjoin(table, on)
    # No DISTINCT (MLflow has one): every join matches at most one row per run, as
    # (run_uuid, key) is the primary key of latest_metrics, params and tags.
    statement: Select[Any] = (
        select(*_RUN_COLUMNS)
        .select_from(source)
        .where(_RUNS.c.experiment_id.in_(ids), _RUNS.c.lifecycle_stage.in_(stages), *where)
        .order_by(*sort_clauses)
        .offset(offset)
    )
    if max_results is not None:
        statement = statement.limit(max_results + 1)
    rows = session.execute(statement).all()

    next_token = None
    if max_results is not None and len(rows) == max_results + 1:
        next_token = SearchUtils.create_page_token(offset + max_results)
        rows = rows[:max_results]
    runs = _runs_from_rows(store, session, rows)
    return runs, next_token


def _filter_clauses(
    parsed_filters: Sequence[dict[str, Any]], dialect: str
) -> tuple[list[tuple[FromClause, ColumnElement[bool]]], list[ColumnElement[bool]]]:
    """MLflow's ``_get_sqlalchemy_filter_clauses`` with each key joined as an aliased table."""
    joins: list[tuple[FromClause, ColumnElement[bool]]] = []
    where: list[ColumnElement[bool]] = []
    for parsed in parsed_filters:
        key_type = parsed.get("type")
        key_name = SearchUtils.translate_key_alias(parsed.get("key"))
        value: Any = parsed.get("value")
        comparator = str(parsed.get("comparator")).upper()
        compare = SearchUtils.get_sql_comparison_func(comparator, dialect)
        equals = SearchUtils.get_sql_comparison_func("=", dialect)

        if SearchUtils.is_string_attribute(
            key_type, key_name, comparator
        ) or SearchUtils.is_numeric_attribute(key_type, key_name, comparator):
            if key_name == "run_name":
                # MLflow reads a run's name from its mlflow.runName tag (old runs have no name column).
                tag = _TAGS.alias()
                joins.append(
                    (
                        tag,
                        and_(
                            tag.c.run_uuid == _RUNS.c.run_uuid,
                            equals(tag.c.key, MLFLOW_RUN_NAME),
                            compare(tag.c.value, value),
                        ),
                    )
                )
            else:
                where.append(compare(getattr(SqlRun, SqlRun.get_attribute_name(key_name)), value))
            continue
        if SearchUtils.is_metric(key_type, comparator):
            table = _LATEST
            value = float(value)
        elif SearchUtils.is_param(key_type, comparator):
            table = _PARAMS
        elif SearchUtils.is_tag(key_type, comparator):
            table = _TAGS
        else:
            raise MlflowException(
                f"Invalid search expression type '{key_type}'", error_code=INVALID_PARAMETER_VALUE
            )

        if comparator in ("IS NULL", "IS NOT NULL"):
            present = exists().where(table.c.run_uuid == _RUNS.c.run_uuid, table.c.key == key_name)
            where.append(~present if comparator == "IS NULL" else present)
            continue
        alias = table.alias()
        matches = compare(alias.c.value, value)
        if table is _LATEST:
            # NaN is stored as 0 with is_nan: it fails every comparison but "!=".
            if comparator == "!=":
                matches = sqlalchemy.or_(matches, alias.c.is_nan == sqlalchemy.true())
            else:
                matches = sqlalchemy.and_(matches, alias.c.is_nan == sqlalchemy.false())
        joins.append(
            (alias, and_(alias.c.run_uuid == _RUNS.c.run_uuid, equals(alias.c.key, key_name), matches))
        )
    return joins, where


def _order_by_clauses(
    order_by: Sequence[str] | None,
) -> tuple[list[tuple[FromClause, ColumnElement[bool]]], list[Any]]:
    """MLflow's ``_get_orderby_clauses``: missing values last, then start_time DESC, run_uuid."""
    joins: list[tuple[FromClause, ColumnElement[bool]]] = []
    clauses: list[Any] = []
    observed: set[tuple[str, str]] = set()
    for clause in order_by or ():
        key_type, key, ascending = SearchUtils.parse_order_by_for_search_runs(clause)
        key = SearchUtils.translate_key_alias(key)
        is_metric = False
        if SearchUtils.is_string_attribute(key_type, key, "=") or SearchUtils.is_numeric_attribute(
            key_type, key, "="
        ):
            order_value: Any = getattr(SqlRun, SqlRun.get_attribute_name(key))
        else:
            if SearchUtils.is_metric(key_type, "="):
                table, is_metric = _LATEST, True
            elif SearchUtils.is_tag(key_type, "="):
                table = _TAGS
            elif SearchUtils.is_param(key_type, "="):
                table = _PARAMS
            else:
                raise MlflowException(
                    f"Invalid identifier type '{key_type}'", error_code=INVALID_PARAMETER_VALUE
                )
            alias = table.alias()
            joins.append((alias, and_(alias.c.run_uuid == _RUNS.c.run_uuid, alias.c.key == key)))
            order_value = alias.c.value
        if is_metric:
            missing_last = case((alias.c.is_nan == sqlalchemy.true(), 1), (order_value.is_(None), 2), else_=0)
        else:
            missing_last = case((order_value.is_(None), 1), else_=0)
        clauses.append(missing_last)
        if (key_type, key) in observed:
            raise MlflowException(f"`order_by` contains duplicate fields: {order_by}")
        observed.add((key_type, key))
        clauses.append(order_value if ascending else order_value.desc())
    if (SearchUtils._ATTRIBUTE_IDENTIFIER, SqlRun.start_time.key) not in observed:
        clauses.append(_RUNS.c.start_time.desc())
    clauses.append(_RUNS.c.run_uuid)
    return joins, clauses


def _runs_from_rows(store: Any, session: Session, rows: Sequence[Any]) -> list[Run]:
    """Runs with their latest metrics, params, tags, inputs and outputs, as MLflow builds them."""
    run_ids = [row.run_uuid for row in rows]
    metrics: dict[str, list[Metric]] = defaultdict(list)
    params: dict[str, list[Param]] = defaultdict(list)
    tags: dict[str, list[RunTag]] = defaultdict(list)
    for chunk in _chunks(run_ids):
        for m in session.execute(
            select(
                _LATEST.c.run_uuid,
                _LATEST.c.key,
                _LATEST.c.value,
                _LATEST.c.timestamp,
                _LATEST.c.step,
                _LATEST.c.is_nan,
            ).where(_LATEST.c.run_uuid.in_(chunk))
        ).all():
            metrics[m[0]].append(Metric(m[1], _NAN if m[5] else m[2], m[3], m[4]))
        for p in session.execute(
            select(_PARAMS.c.run_uuid, _PARAMS.c.key, _PARAMS.c.value).where(_PARAMS.c.run_uuid.in_(chunk))
        ).all():
            params[p[0]].append(Param(p[1], p[2]))
        for t in session.execute(
            select(_TAGS.c.run_uuid, _TAGS.c.key, _TAGS.c.value).where(_TAGS.c.run_uuid.in_(chunk))
        ).all():
            tags[t[0]].append(RunTag(t[1], t[2]))
    inputs = store._get_run_inputs(run_uuids=run_ids, session=session)
    outputs = store._get_model_outputs_bulk(run_ids=run_ids, session=session)
    runs = []
    for row, dataset_inputs in zip(rows, inputs, strict=True):
        run_id = row.run_uuid
        info = RunInfo(
            run_id=run_id,
            run_name=row.name,
            experiment_id=str(row.experiment_id),
            user_id=row.user_id,
            status=row.status,
            start_time=row.start_time,
            end_time=row.end_time,
            lifecycle_stage=row.lifecycle_stage,
            artifact_uri=row.artifact_uri,
        )
        run_tags = tags.get(run_id, [])
        if not info.run_name and (run_name := _get_run_name_from_tags(run_tags)):
            info._set_run_name(run_name)
        data = RunData(metrics=metrics.get(run_id, []), params=params.get(run_id, []), tags=run_tags)
        runs.append(Run(info, data, RunInputs(dataset_inputs=dataset_inputs), RunOutputs(outputs[run_id])))
    return runs


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def metric_history_rows(
    session: Session, run_id: str, metric_key: str, max_results: int | None, page_token: str | None
) -> tuple[list[Any], str | None]:
    """One page of ``(value, timestamp, step, is_nan)`` rows in MLflow's order, and its next token."""
    offset = SearchUtils.parse_start_offset_from_page_token(page_token)
    statement = (
        select(_METRICS.c.value, _METRICS.c.timestamp, _METRICS.c.step, _METRICS.c.is_nan)
        .where(_METRICS.c.run_uuid == run_id, _METRICS.c.key == metric_key)
        .order_by(_METRICS.c.timestamp, _METRICS.c.step, _METRICS.c.value)
        .offset(offset)
    )
    if max_results is not None:
        statement = statement.limit(max_results + 1)
    rows = _driver_rows(session, statement)
    next_token = None
    if max_results is not None and len(rows) == max_results + 1:
        next_token = SearchUtils.create_page_token(offset + max_results)
        rows = rows[:max_results]
    return rows, next_token


def _driver_rows(session: Session, statement: Select[Any]) -> list[Any]:
    """The driver's own tuples: for a 100,000-point history SQLAlchemy's row objects and type
    processing take three times what the database does. ``is_nan`` comes back as 0 or 1."""
    connection = session.connection()
    compiled = statement.compile(dialect=connection.dialect)
    params = compiled.construct_params()
    arguments: Any = (
        tuple(params[name] for name in compiled.positiontup or ()) if compiled.positional else params
    )
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(compiled.string, arguments)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def metric_history(
    session: Session, run_id: str, metric_key: str, max_results: int | None, page_token: str | None
) -> PagedList[Metric]:
    """MLflow's ``get_metric_history`` answer: Metric entities, ordered by timestamp, step, value."""
    rows, token = metric_history_rows(session, run_id, metric_key, max_results, page_token)
    return PagedList(
        [
            Metric(metric_key, _NAN if is_nan else value, timestamp, step)
            for value, timestamp, step, is_nan in rows
        ],
        token,
    )
