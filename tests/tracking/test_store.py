"""trainflow's metric write path leaves the database exactly as MLflow's own store does."""

from __future__ import annotations

import math
import random

import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from sqlalchemy import create_engine, text

from trainflow.tracking.mlflow_server import DEFAULT_ARTIFACT_ROOT, dispose_stores
from trainflow.tracking.store import TrainflowTrackingStore

VALUES = [0.0, 1.5, -2.0, 1.5, 1e300, math.nan, math.inf, -math.inf]


@pytest.fixture
def stores(app, database_url):
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    ours, theirs = (
        TrainflowTrackingStore(url, DEFAULT_ARTIFACT_ROOT),
        SqlAlchemyStore(url, DEFAULT_ARTIFACT_ROOT),
    )
    yield ours, theirs
    dispose_stores(url)


def _run(store, name):
    return store.create_run(
        experiment_id="0", user_id="tester", start_time=0, tags=[], run_name=name
    ).info.run_id


def _rows(url, table, run_id):
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT key, value, timestamp, step, is_nan FROM {table} WHERE run_uuid = :r"),  # noqa: S608
            {"r": run_id},
        ).all()
    engine.dispose()
    return sorted((r[0], float(r[1]), int(r[2]), int(r[3]), bool(r[4])) for r in rows)


def _random_batches(seed):
    rng = random.Random(seed)
    history = []
    for _ in range(25):
        batch = []
        for _ in range(rng.randint(1, 12)):
            if history and rng.random() < 0.25:
                batch.append(rng.choice(history))  # exactly a metric logged before
            else:
                batch.append(
                    Metric(rng.choice("abc"), rng.choice(VALUES), rng.randint(0, 3), rng.randint(0, 4))
                )
        history.extend(batch)
        yield batch


@pytest.mark.parametrize("seed", range(6))
def test_same_rows_as_mlflows_store(app, stores, seed):
    ours, theirs = stores
    our_run, their_run = _run(ours, "ours"), _run(theirs, "theirs")
    for batch in _random_batches(seed):
        if len(batch) == 1:
            ours.log_metric(our_run, batch[0])
            theirs.log_metric(their_run, batch[0])
        else:
            ours.log_batch(our_run, batch, [], [])
            theirs.log_batch(their_run, batch, [], [])
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    for table in ("metrics", "latest_metrics"):
        assert _rows(url, table, our_run) == _rows(url, table, their_run), table
    assert _rows(url, "latest_metrics", our_run)  # the comparison was not vacuous


def test_same_errors_as_mlflows_store(stores):
    ours, theirs = stores
    metric = Metric("loss", 1.0, 0, 0)
    for store in (ours, theirs):
        with pytest.raises(MlflowException) as missing:
            store.log_metric("0" * 32, metric)
        assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        run_id = _run(store, "deleted")
        store.delete_run(run_id)
        with pytest.raises(MlflowException) as deleted:
            store.log_metric(run_id, metric)
        assert deleted.value.error_code == "INVALID_PARAMETER_VALUE" and "active" in deleted.value.message
        with pytest.raises(MlflowException) as invalid:
            store.log_metric(_run(store, "bad"), Metric("loss", "not a number", 0, 0))
        assert invalid.value.error_code == "INVALID_PARAMETER_VALUE"


def test_the_server_uses_it(app):
    from mlflow.server import handlers

    assert isinstance(handlers._get_tracking_store(), TrainflowTrackingStore)
