"""The job list as a run table: search, sort, filter and page in SQL.

One query joins trainflow's jobs with MLflow's runs, experiments, params and latest metrics
(the tables :mod:`trainflow.tracking.run_table` hands over), so a page of 20 out of 10,000
jobs sorted by a metric costs one indexed lookup per job rather than loading them all.

Sorting rules a user can rely on: numbers sort as numbers (a param is text in MLflow, and is
read as a number where it is one), a job without the value sorts last in either order, and
ties go by job id in the same direction, so pages never overlap or skip a job.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, exists, extract, false, func, or_, select
from sqlalchemy.orm import Session

from trainflow.accounts.credentials import Principal
from trainflow.accounts.models import User
from trainflow.jobs.models import Job
from trainflow.jobs.schemas import JobListQuery
from trainflow.scripts.models import Script
from trainflow.tracking.run_table import number_or_null, run_tables

# What a sort or a search needs joined to the jobs table.
RUNS, EXPERIMENTS, USERS, SCRIPTS = "runs", "experiments", "users", "scripts"


def list_jobs(session: Session, principal: Principal, query: JobListQuery) -> tuple[int, list[Job]]:
    """The total of jobs that match, and the page of them asked for, in order."""
    dialect = session.get_bind().dialect.name
    conditions, joins = _conditions(session, principal, query)
    count = _joined(select(func.count(Job.id)).select_from(Job), joins).where(*conditions)
    total = session.scalar(count) or 0
    if total <= (query.page - 1) * query.size:
        return total, []
    order, sort_joins, extra = _order(query, dialect)
    page = (
        _joined(select(Job.id).select_from(Job), joins | sort_joins)
        .where(*conditions)
        .order_by(*order)
        .offset((query.page - 1) * query.size)
        .limit(query.size)
    )
    for join in extra:
        page = join(page)
    ids = list(session.scalars(page).all())
    by_id = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids))).all()}
    return total, [by_id[i] for i in ids if i in by_id]


def _conditions(
    session: Session, principal: Principal, query: JobListQuery
) -> tuple[list[ColumnElement[bool]], set[str]]:
    conditions: list[ColumnElement[bool]] = []
    joins: set[str] = set()
    if not principal.is_admin:
        conditions.append(Job.owner_id == principal.user_id)
    if query.status:
        conditions.append(Job.status == query.status)
    if query.user:
        from trainflow.accounts.service import find_user

        user = find_user(session, query.user)
        conditions.append(Job.owner_id == (user.id if user else -1))
    if query.experiment_id:
        conditions.append(Job.experiment_id == query.experiment_id)
    text = (query.q or "").strip().lower()
    if text:
        joins |= {RUNS, USERS, SCRIPTS}
        conditions.append(_search(text))
    return conditions, joins


def _search(text: str) -> ColumnElement[bool]:
    """Case-insensitive: the run's name, the script's, a param's key or value, the status, the
    user, a tag (key or value) or the note holds ``text``."""
    runs, params = run_tables().runs, run_tables().params

    def holds(column: Any) -> ColumnElement[bool]:
        return func.lower(column).contains(text, autoescape=True)

    in_params = exists().where(
        params.c.run_uuid == Job.run_id, or_(holds(params.c.key), holds(params.c.value))
    )
    return or_(
        holds(runs.c.name),
        holds(Script.filename),
        holds(Job.status),
        holds(User.username),
        holds(Job.tags),
        holds(Job.note),
        in_params,
    )


def _joined(statement: Select[Any], joins: set[str]) -> Select[Any]:
    tables = run_tables()
    runs, experiments = tables.runs, tables.experiments
    if RUNS in joins or EXPERIMENTS in joins:
        statement = statement.outerjoin(runs, runs.c.run_uuid == Job.run_id)
    if EXPERIMENTS in joins:
        statement = statement.outerjoin(experiments, experiments.c.experiment_id == runs.c.experiment_id)
    if USERS in joins:
        statement = statement.join(User, User.id == Job.owner_id)
    if SCRIPTS in joins:
        statement = statement.join(Script, Script.id == Job.script_id)
    return statement


def _order(query: JobListQuery, dialect: str) -> tuple[list[Any], set[str], list[Any]]:
    """ORDER BY terms, the joins they need, and joins of their own (a param's or metric's row)."""
    ascending = query.order == "asc"
    sort = query.sort or "job"
    tables = run_tables()
    keys: list[Any]
    joins: set[str] = set()
    extra: list[Any] = []
    if sort.startswith("metrics."):
        metric = tables.latest_metrics.alias("sort_metric")
        condition = and_(metric.c.run_uuid == Job.run_id, metric.c.key == sort.removeprefix("metrics."))
        extra.append(lambda s: s.outerjoin(metric, condition))
        keys = [case((metric.c.is_nan == false(), metric.c.value), else_=None)]
    elif sort.startswith("params."):
        param = tables.params.alias("sort_param")
        condition = and_(param.c.run_uuid == Job.run_id, param.c.key == sort.removeprefix("params."))
        extra.append(lambda s: s.outerjoin(param, condition))
        keys = [number_or_null(param.c.value, dialect), param.c.value]
    else:
        column, joins = _column(sort, dialect)
        keys = [column]
    terms = [(key.asc() if ascending else key.desc()).nulls_last() for key in keys]
    if sort != "job":
        terms.append(Job.id.asc() if ascending else Job.id.desc())
    return terms, joins, extra


def _column(sort: str, dialect: str) -> tuple[Any, set[str]]:
    tables = run_tables()
    if sort == "run_name":
        return tables.runs.c.name, {RUNS}
    if sort == "experiment":
        return tables.experiments.c.name, {RUNS, EXPERIMENTS}
    if sort == "user":
        return User.username, {USERS}
    if sort == "script":
        return Script.filename, {SCRIPTS}
    if sort == "duration_s":
        return _duration(dialect), set()
    columns = {
        "job": Job.id,
        "status": Job.status,
        "created_at": Job.created_at,
        "started_at": Job.started_at,
        "finished_at": Job.finished_at,
    }
    return columns[sort], set()


def _duration(dialect: str) -> ColumnElement[Any]:
    """Seconds from start to end (to now while it runs); NULL for a job that never started."""
    if dialect == "postgresql":
        now = func.timezone("UTC", func.now())
        return extract("epoch", func.coalesce(Job.finished_at, now) - Job.started_at)
    # SQLite keeps times as ISO text in UTC, which julianday() reads.
    ended = func.coalesce(Job.finished_at, func.datetime("now"))
    return (func.julianday(ended) - func.julianday(Job.started_at)) * 86400.0
