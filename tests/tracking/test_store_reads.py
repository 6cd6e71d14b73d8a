"""trainflow's run search and metric history answer exactly as MLflow's own store does.

One database holds random runs (several experiments, deleted runs, NaN and infinite metrics,
missing keys, tied values and start times); generated searches go through both stores, on
SQLite and PostgreSQL, page by page to the end, and must give the same runs in the same order
with the same page tokens. MLflow is pinned exactly, and this is the tripwire when it moves.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.service_pb2 import GetMetricHistory, SearchRuns
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.proto_json_utils import message_to_json

from tests.tracking.conftest import AJAX, API
from trainflow.tracking.mlflow_server import DEFAULT_ARTIFACT_ROOT, dispose_stores
from trainflow.tracking.reads_views import (
    get_metric_history_view,
    metric_history_document,
    metric_history_json,
    search_runs_document,
    search_runs_view,
)
from trainflow.tracking.store import TrainflowTrackingStore

VALUES = [0.0, 1.5, -2.0, 1.5, 3.0, 1e300, math.nan, math.inf, -math.inf]
METRICS = ["loss", "acc", "f1"]
PARAMS = ["lr", "opt", "layers"]
PARAM_VALUES = ["0.1", "0.01", "adam", "Adam", "sgd", "3", "10"]
TAGS = ["team", "note", "stage"]
TAG_VALUES = ["a", "b", "B", "alpha", "beta", "x%y", ""]
STATUSES = ["RUNNING", "FINISHED", "FAILED", "KILLED"]


@dataclass
class World:
    ours: TrainflowTrackingStore
    theirs: SqlAlchemyStore
    experiments: list[str]
    run_ids: list[str]
    start_times: list[int]


@pytest.fixture
def world(app: Any, database_url: str) -> Iterator[World]:
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    ours, theirs = (
        TrainflowTrackingStore(url, DEFAULT_ARTIFACT_ROOT),
        SqlAlchemyStore(url, DEFAULT_ARTIFACT_ROOT),
    )
    rng = random.Random(14)
    experiments = ["0", theirs.create_experiment("reads-a"), theirs.create_experiment("reads-b")]
    run_ids, start_times = [], [1000, 2000, 2000, 3000, 4000]
    for i in range(45):
        experiment = rng.choice(experiments)
        start = rng.choice(start_times)  # many ties: the order falls back to start_time, then run_uuid
        name = rng.choice([f"run-{i}", f"Run-{i % 4}", ""])
        tags = [RunTag(k, rng.choice(TAG_VALUES)) for k in TAGS if rng.random() < 0.6]
        run_id = theirs.create_run(
            experiment, rng.choice(["ann", "bo"]), start, tags, name or None
        ).info.run_id
        metrics = [
            Metric(k, rng.choice(VALUES), rng.randint(0, 3), rng.randint(0, 3))
            for k in METRICS
            for _ in range(rng.randint(0, 3))
        ]
        params = [Param(k, rng.choice(PARAM_VALUES)) for k in PARAMS if rng.random() < 0.7]
        theirs.log_batch(run_id, metrics, params, [])
        if rng.random() < 0.6:
            status = RunStatus.from_string(rng.choice(STATUSES))
            theirs.update_run_info(run_id, status, start + rng.choice([5, 50, 500]), None)
        if rng.random() < 0.15:
            theirs.delete_run(run_id)
        run_ids.append(run_id)
    yield World(ours, theirs, experiments, run_ids, start_times)
    dispose_stores(url)


# -- comparing answers --------------------------------------------------------------------------


def _number(value: float) -> str:
    return repr(value)  # NaN equals NaN here, and -0.0 differs from 0.0


def _run(run: Any) -> tuple[Any, ...]:
    """Everything a client sees of a run; the order of a run's metrics, params and tags is not
    meaningful (a dict in the client), so those are compared sorted."""
    info = run.info
    data = run.data
    return (
        info.run_id,
        info.run_name,
        info.experiment_id,
        info.user_id,
        info.status,
        info.start_time,
        info.end_time,
        info.lifecycle_stage,
        info.artifact_uri,
        sorted((m.key, _number(m.value), m.timestamp, m.step) for m in data._metric_objs),
        sorted(data.params.items()),
        sorted(data.tags.items()),
        [i.to_dictionary() for i in run.inputs.dataset_inputs],
        [o.to_dictionary() for o in run.outputs.model_outputs] if run.outputs else None,
    )


def _pages(store: Any, request: dict[str, Any], token: str | None = None) -> list[tuple[list[Any], Any]]:
    pages = []
    while True:
        page = store.search_runs(page_token=token, **request)
        pages.append(([_run(r) for r in page], page.token))
        token = page.token
        if not token:
            return pages


def _error(call: Any) -> tuple[str, str] | None:
    try:
        call()
    except MlflowException as e:
        return e.error_code, e.message
    return None


# -- generated searches -------------------------------------------------------------------------

_quoted = st.sampled_from(PARAM_VALUES + TAG_VALUES + ["%a%", "A%", "%", "_"]).map(lambda v: f"'{v}'")
_metric_filter = st.builds(
    "metrics.{} {} {}".format,
    st.sampled_from(METRICS),
    st.sampled_from([">", ">=", "!=", "=", "<", "<="]),
    st.sampled_from(["0", "1.5", "-2", "3", "1e300", "-1e308"]),
)
_param_filter = st.builds(
    "params.{} {} {}".format,
    st.sampled_from(PARAMS),
    st.sampled_from(["=", "!=", "LIKE", "ILIKE"]),
    _quoted,
)
_tag_filter = st.one_of(
    st.builds(
        "tags.{} {} {}".format, st.sampled_from(TAGS), st.sampled_from(["=", "!=", "LIKE", "ILIKE"]), _quoted
    ),
    st.builds("tags.{} {}".format, st.sampled_from(TAGS), st.sampled_from(["IS NULL", "IS NOT NULL"])),
    st.builds("params.{} {}".format, st.sampled_from(PARAMS), st.sampled_from(["IS NULL", "IS NOT NULL"])),
)
_attribute_filter = st.one_of(
    st.builds(
        "attributes.status {} {}".format, st.sampled_from(["=", "!="]), st.sampled_from(STATUSES).map(repr)
    ),
    st.builds(
        "attributes.{} {} {}".format,
        st.sampled_from(["start_time", "end_time", "created"]),
        st.sampled_from([">", ">=", "!=", "=", "<", "<="]),
        st.sampled_from(["1000", "2000", "2050", "3500"]),
    ),
    st.builds(
        "attributes.run_name {} {}".format,
        st.sampled_from(["=", "!=", "LIKE", "ILIKE"]),
        st.sampled_from(["'run-3'", "'Run-1'", "'run%'", "'%-1'"]),
    ),
    st.builds(
        "attributes.user_id {} {}".format,
        st.sampled_from(["=", "!=", "LIKE"]),
        st.sampled_from(["'ann'", "'b%'"]),
    ),
)
_filter = st.lists(st.one_of(_metric_filter, _param_filter, _tag_filter, _attribute_filter), max_size=3).map(
    " and ".join
)
_order_key = st.one_of(
    st.sampled_from(METRICS).map("metrics.{}".format),
    st.sampled_from(PARAMS).map("params.{}".format),
    st.sampled_from(TAGS).map("tags.{}".format),
    st.sampled_from(
        [
            "attributes.start_time",
            "attributes.end_time",
            "attributes.status",
            "attributes.run_name",
            "created",
        ]
    ),
    st.sampled_from(["attributes.run_id", "attributes.user_id", "attributes.artifact_uri"]),
)


@st.composite
def _order_by(draw: Any) -> list[str]:
    keys = draw(
        st.lists(_order_key, max_size=3, unique_by=lambda k: k.replace("created", "attributes.start_time"))
    )
    return [f"{k}{draw(st.sampled_from(['', ' ASC', ' DESC', ' asc', ' desc']))}" for k in keys]


@st.composite
def _request(draw: Any, experiments: list[str]) -> dict[str, Any]:
    return {
        "experiment_ids": draw(st.lists(st.sampled_from(experiments), min_size=1, max_size=3, unique=True)),
        "filter_string": draw(_filter),
        "run_view_type": draw(st.sampled_from([ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL])),
        "max_results": draw(st.sampled_from([1, 2, 3, 7, 50, 1000])),
        "order_by": draw(_order_by()),
    }


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_searches_answer_as_mlflows_store(world: World, data: Any) -> None:
    request = data.draw(_request(world.experiments))
    ours = _pages(world.ours, request)
    theirs = _pages(world.theirs, request)
    assert ours == theirs, request


def test_a_client_pages_through_mixing_both_stores(world: World) -> None:
    request = {
        "experiment_ids": world.experiments,
        "filter_string": "",
        "run_view_type": ViewType.ALL,
        "max_results": 4,
        "order_by": ["metrics.loss DESC", "params.lr"],
    }
    expected = [run for page, _ in _pages(world.theirs, request) for run in page]
    mixed, token, stores = [], None, [world.ours, world.theirs]
    for turn in range(100):
        page = stores[turn % 2].search_runs(page_token=token, **request)
        mixed.extend(_run(r) for r in page)
        token = page.token
        if not token:
            break
    assert mixed == expected
    assert len(expected) == len(world.run_ids)  # every run, deleted ones too (ViewType.ALL)


def test_the_default_order_and_search_without_a_limit(world: World) -> None:
    for request in (
        {"experiment_ids": world.experiments, "filter_string": None, "run_view_type": ViewType.ACTIVE_ONLY},
        {"experiment_ids": world.experiments[1:], "filter_string": "", "run_view_type": ViewType.ALL},
    ):
        assert _pages(world.ours, request) == _pages(world.theirs, request)
    unlimited = {"experiment_ids": world.experiments, "filter_string": "", "run_view_type": ViewType.ALL}
    ours = world.ours._search_runs(max_results=None, order_by=["metrics.acc"], page_token=None, **unlimited)
    theirs = world.theirs._search_runs(
        max_results=None, order_by=["metrics.acc"], page_token=None, **unlimited
    )
    assert [_run(r) for r in ours[0]] == [_run(r) for r in theirs[0]] and ours[1] is theirs[1] is None
    assert len(ours[0]) == len(world.run_ids)


BAD_SEARCHES: list[tuple[str, list[str] | None, int, str | None]] = [
    ("metrics.loss > 'abc'", None, 10, None),
    ("metrics.loss LIKE '1'", None, 10, None),
    ("params.lr > '1'", None, 10, None),
    ("nothing.lr = '1'", None, 10, None),
    ("attributes.start_time LIKE '1'", None, 10, None),
    ("attributes.missing = 'x'", None, 10, None),
    ("metrics.loss >", None, 10, None),
    ("", ["metrics.loss", "metrics.loss DESC"], 10, None),
    ("", ["nothing.x"], 10, None),
    ("", ["metrics.loss sideways"], 10, None),
    ("", None, 0, None),
    ("", None, 50001, None),
    ("", None, 10, "not a token"),
    ("", None, 10, "eyJub3QiOiAxfQ=="),
    ("attributes.start_time LIKE '1'", ["metrics.loss", "metrics.loss"], 10, "not a token"),
    ("metrics.loss > 'abc'", ["nothing.x"], 0, None),
]


def test_bad_searches_fail_as_in_mlflows_store(world: World) -> None:
    for case in BAD_SEARCHES:
        theirs = _error(
            lambda store=world.theirs, case=case: store.search_runs(
                world.experiments, case[0], ViewType.ALL, case[2], case[1], case[3]
            )
        )
        ours = _error(
            lambda store=world.ours, case=case: store.search_runs(
                world.experiments, case[0], ViewType.ALL, case[2], case[1], case[3]
            )
        )
        assert theirs is not None and ours == theirs, case


def test_dataset_filters_answer_through_mlflows_implementation(world: World) -> None:
    request = {
        "experiment_ids": world.experiments,
        "filter_string": "datasets.name = 'train' and metrics.loss > 0",
        "run_view_type": ViewType.ALL,
        "max_results": 5,
        "order_by": ["metrics.loss"],
    }
    assert _pages(world.ours, request) == _pages(world.theirs, request)


# -- metric history ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_metric_history_answers_as_mlflows_store(world: World, seed: int) -> None:
    rng = random.Random(seed)
    run_id = world.theirs.create_run(world.experiments[1], "ann", 0, [], f"history-{seed}").info.run_id
    # Repeated timestamps and steps, so the order falls through to (timestamp, step, value).
    points = [Metric("loss", rng.choice(VALUES), rng.randint(0, 20), rng.randint(0, 20)) for _ in range(300)]
    for start in range(0, len(points), 50):
        world.theirs.log_batch(run_id, points[start : start + 50], [], [])

    def history(store: Any, **kwargs: Any) -> list[Any]:
        return [
            (m.key, _number(m.value), m.timestamp, m.step)
            for m in store.get_metric_history(run_id, "loss", **kwargs)
        ]

    theirs = history(world.theirs)
    assert len(theirs) > 200 and history(world.ours) == theirs
    for max_results in (1, 7, 299, 1000):
        ours_pages, theirs_pages = (
            _history_pages(world.ours, run_id, max_results),
            _history_pages(world.theirs, run_id, max_results),
        )
        assert ours_pages == theirs_pages
    assert (
        history(world.ours, max_results=5, page_token=_history_pages(world.theirs, run_id, 5)[0][1])
        == theirs[5:10]
    )
    assert world.ours.get_metric_history(run_id, "missing") == []
    assert list(world.ours.get_metric_history("0" * 32, "loss")) == list(
        world.theirs.get_metric_history("0" * 32, "loss")
    )
    assert _error(lambda: world.ours.get_metric_history(run_id, "loss", 5, "bad")) == _error(
        lambda: world.theirs.get_metric_history(run_id, "loss", 5, "bad")
    )


def _history_pages(store: Any, run_id: str, max_results: int) -> list[tuple[list[Any], Any]]:
    pages, token = [], None
    while True:
        page = store.get_metric_history(run_id, "loss", max_results=max_results, page_token=token)
        pages.append(([(_number(m.value), m.timestamp, m.step) for m in page], page.token))
        token = page.token
        if not token:
            return pages


# -- the JSON the two routes answer -------------------------------------------------------------


def _mlflows_json(message: Any) -> Any:
    return json.loads(message_to_json(message))


def test_search_documents_are_mlflows_json(world: World) -> None:
    searches = [
        ([], None),
        (["metrics.loss DESC"], "params.lr != 'x'"),
        (["attributes.end_time"], "attributes.status != 'RUNNING'"),
    ]
    for order_by, filter_string in searches:
        page = world.ours.search_runs(world.experiments, filter_string, ViewType.ALL, 20, order_by)
        response = SearchRuns.Response()
        response.runs.extend([run.to_proto() for run in page])
        response.next_page_token = page.token
        document = json.loads(json.dumps(search_runs_document(page, page.token)))
        assert document == _mlflows_json(response)
        assert len(document["runs"]) == 20 and document["next_page_token"]
    empty = world.ours.search_runs(world.experiments, "params.lr = 'none'", ViewType.ALL, 5)
    assert search_runs_document(empty, empty.token) == _mlflows_json(SearchRuns.Response()) == {}


def test_history_documents_are_mlflows_json(world: World) -> None:
    run_id = world.theirs.create_run(world.experiments[1], "ann", 0, [], "history").info.run_id
    points = [Metric("loss", v, i % 5, i) for i, v in enumerate(VALUES * 3)]
    world.theirs.log_batch(run_id, points, [], [])
    for max_results, token in (
        (None, None),
        (4, None),
        (4, world.ours.get_metric_history(run_id, "loss", 4).token),
    ):
        rows, our_token = world.ours.metric_history_rows(run_id, "loss", max_results, token)
        response = GetMetricHistory.Response()
        theirs = world.theirs.get_metric_history(run_id, "loss", max_results, token)
        response.metrics.extend([m.to_proto() for m in theirs])
        if theirs.token:
            response.next_page_token = theirs.token
        expected = _mlflows_json(response)
        assert json.loads(json.dumps(metric_history_document("loss", rows, our_token))) == expected
        assert json.loads(metric_history_json("loss", rows, our_token)) == expected
    assert (
        json.loads(metric_history_json("loss", [], None)) == _mlflows_json(GetMetricHistory.Response()) == {}
    )


def test_the_routes_answer_mlflows_json(app: Any, world: World, as_admin: Any, as_bob: Any) -> None:
    from mlflow.server import handlers

    assert {search_runs_view, get_metric_history_view} <= set(app.view_functions.values())
    body = {"experiment_ids": world.experiments[1:], "max_results": 3, "order_by": ["metrics.acc DESC"]}
    for prefix in (API, AJAX):
        answer = as_admin.ok("POST", f"{prefix}/runs/search", json=body)
        with app.test_request_context(f"{prefix}/runs/search", method="POST", json=body):
            assert answer == json.loads(handlers._search_runs().get_data())
    query = {"run_id": world.run_ids[0], "metric_key": "loss"}
    answer = as_admin.ok("GET", f"{API}/metrics/get-history", query=query)
    with app.test_request_context(f"{API}/metrics/get-history", query_string=query):
        assert answer == json.loads(handlers._get_metric_history().get_data())
    # Bad input is MLflow's 400, naming the field.
    bad = as_admin.call("POST", f"{API}/runs/search", json={**body, "max_results": "many"})
    assert bad.status_code == 400 and "max_results" in bad.get_data(True)
    bad = as_admin.call("GET", f"{API}/metrics/get-history", query={**query, "max_results": 0})
    assert bad.status_code == 400 and "max_results" in bad.get_data(True)
    # Another user's permissions are checked before the view answers.
    bobs = as_bob.experiment("bobs")
    bob_run = as_bob.run(bobs)
    assert (
        as_admin.ok("POST", f"{API}/runs/search", json={"experiment_ids": [bobs]})["runs"][0]["info"][
            "run_id"
        ]
        == bob_run
    )
    assert (
        as_bob.ok("POST", f"{API}/runs/search", json={"experiment_ids": [bobs]})["runs"][0]["info"]["run_id"]
        == bob_run
    )
