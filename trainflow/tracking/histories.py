"""Many metrics of many runs in one read, each history sampled to a chart's width.

MLflow's ``get-history-bulk-interval`` answers one metric per request and samples each run's
history in its own query (``NTILE`` over the run's rows, then protobuf to JSON): ~50-200 ms per
run and metric, so the compare page's 100 metrics of 10 runs took minutes. Here one Core query
per run reads MLflow's ``metrics`` table in the order of its index ``(run_uuid, key, step)``
(no sort: the plan is a search of that index on both SQLite and PostgreSQL), and the sampling is
done over the rows as tuples:

* each step keeps its most recent value, MLflow's ordering ``(timestamp, value)``: the largest;
* a history of more than ``points`` steps keeps ``points`` of them, evenly spaced by position,
  always the first and the last (MLflow's bulk-interval semantics, by distinct step).

Sampling in SQL (``ROW_NUMBER`` over ``(run_uuid, key ORDER BY step)`` with a filter on the
computed position) returns fewer rows but was slower here: SQLite's window functions cost more
per row than reading the row (20 s against 5 s for 10 runs x 100 metrics x 1,000 steps on the
loaded dev machine; PostgreSQL 5-8 s against 5-7 s).

Values are JSON-safe: MLflow stores NaN as ``is_nan`` and infinities as the largest finite
doubles (``SqlAlchemyStore.sanitize_metric_value``); those come back as the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` (so a value really logged as 1.7976931348623157e308 reads as
infinity, the one value that cannot be told apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlMetric
from sqlalchemy import Select, Table, select

_METRICS: Table = SqlMetric.__table__
_DOUBLE_MAX = 1.7976931348623157e308

Value = float | str
# steps, values, timestamps
History = tuple[list[int], list[Value], list[int]]


def history_query(run_id: str, keys: Sequence[str] | None) -> Select[Any]:
    """One run's rows of ``keys`` (all when None), in the order of the table's index."""
    m = _METRICS.c
    query = select(m.key, m.step, m.timestamp, m.value, m.is_nan).where(m.run_uuid == run_id)
    if keys is not None:
        query = query.where(m.key.in_(keys))
    return query.order_by(m.key, m.step)


def read_histories(
    run_ids: Sequence[str], keys: Sequence[str] | None, points: int
) -> dict[str, dict[str, History]]:
    """``{run_id: {key: (steps, values, timestamps)}}``, each history sampled to ``points`` steps.

    Runs without any of the keys map to an empty dict; keys a run lacks are left out.
    """
    from trainflow.tracking.runs import _store

    out: dict[str, dict[str, History]] = {}
    with _store().engine.connect() as connection:
        for run_id in dict.fromkeys(run_ids):
            rows = connection.execute(history_query(run_id, keys)).all()
            out[run_id] = {key: sample(list(chunk), points) for key, chunk in groupby(rows, itemgetter(0))}
    return out


def sample(rows: Sequence[Sequence[Any]], points: int) -> History:
    """Rows ``(key, step, timestamp, value, is_nan)`` of one history, ordered by step, sampled."""
    columns = list(zip(*rows, strict=True))
    steps: Sequence[Any] = columns[1]
    timestamps: Sequence[Any] = columns[2]
    values: Sequence[Any] = columns[3]
    nans: Sequence[Any] = columns[4]
    if len(set(steps)) != len(steps):
        steps, timestamps, values, nans = _latest_per_step(rows)
    n = len(steps)
    if n > points:
        picked = [(j * (n - 1)) // (points - 1) for j in range(points)]
        steps = [steps[i] for i in picked]
        timestamps = [timestamps[i] for i in picked]
        values = [values[i] for i in picked]
        nans = [nans[i] for i in picked]
    if any(nans) or max(values) >= _DOUBLE_MAX or min(values) <= -_DOUBLE_MAX:
        values = [_json_value(v, bool(nan)) for v, nan in zip(values, nans, strict=True)]
    return list(steps), list(values), list(timestamps)


def _latest_per_step(rows: Sequence[Sequence[Any]]) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """Each step's most recent row: the largest ``(timestamp, value)``, MLflow's rule."""
    steps: list[Any] = []
    timestamps: list[Any] = []
    values: list[Any] = []
    nans: list[Any] = []
    for _, step, timestamp, value, is_nan in rows:
        if steps and steps[-1] == step:
            if (timestamp, value) > (timestamps[-1], values[-1]):
                timestamps[-1], values[-1], nans[-1] = timestamp, value, is_nan
            continue
        steps.append(step)
        timestamps.append(timestamp)
        values.append(value)
        nans.append(is_nan)
    return steps, timestamps, values, nans


def _json_value(value: float, is_nan: bool) -> Value:
    if is_nan:
        return "NaN"
    if value >= _DOUBLE_MAX:
        return "Infinity"
    if value <= -_DOUBLE_MAX:
        return "-Infinity"
    return float(value)
