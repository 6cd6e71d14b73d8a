"""MLflow's ``runs/search`` and ``metrics/get-history`` routes, answered without protobuf.

MLflow's handlers turn every run and metric into a protobuf message, then the response into
a dict (``MessageToDict``) and that into indented JSON with Python's pure-Python encoder
(``indent=2`` rules out the C one). For a 100,000-point history that is seconds of server
time, several times what the database takes; for a page of 100 runs, more than the search.
These views parse and check the request exactly as MLflow's do (with MLflow's own
``_get_request_message``, so trainflow's permission layer shares the parse), ask the same
store, and write the same JSON document directly from the entities (or, for a history, from
the rows), compact and with the C encoder. The document is MLflow's, field for field (``NaN``
and infinities as MLflow writes them, int64 fields as numbers, unset fields left out);
``tests/tracking/test_store_reads.py`` compares the two. A run with dataset inputs or model
outputs is written with MLflow's own conversion.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, Response
from google.protobuf.json_format import MessageToDict
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.protos.service_pb2 import GetMetricHistory, SearchRuns
from mlflow.server import handlers
from mlflow.server.handlers import (
    _assert_array,
    _assert_intlike,
    _assert_item_type_string,
    _assert_less_than_or_equal,
    _assert_required,
    _assert_string,
    _disable_if_artifacts_only,
    catch_mlflow_exception,
)
from mlflow.utils.proto_json_utils import _mark_int64_fields, _merge_json_dicts

_HIGHEST = 1.7976931348623157e308  # finite doubles go out as numbers, as they are
_LOWEST = -_HIGHEST


def install(app: Flask) -> None:
    """Answer the search and history routes of ``app`` (copied from MLflow's) with these views."""
    replacements: dict[Callable[..., Any], Callable[..., Any]] = {
        handlers._search_runs: search_runs_view,
        handlers._get_metric_history: get_metric_history_view,
    }
    for endpoint, view in list(app.view_functions.items()):
        if view in replacements:
            app.view_functions[endpoint] = replacements[view]


def _json_response(document: dict[str, Any]) -> Response:
    response = Response(mimetype="application/json")
    response.set_data(json.dumps(document, separators=(",", ":")))
    return response


def _number(value: float) -> float | str:
    """A double as ``MessageToDict`` writes it: NaN and infinities as strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)


def _fast_store() -> Any:
    from trainflow.tracking.store import TrainflowTrackingStore

    store = handlers._get_tracking_store()
    return store if isinstance(store, TrainflowTrackingStore) else None


# -- runs/search ----------------------------------------------------------------------------


def _search_runs() -> Response:
    """MLflow's ``_search_runs`` and ``search_runs_impl``, its JSON written directly."""
    request_message = handlers._get_request_message(
        SearchRuns(),
        schema={
            "experiment_ids": [_assert_array],
            "filter": [_assert_string],
            "max_results": [_assert_intlike, lambda x: _assert_less_than_or_equal(int(x), 50000)],
            "order_by": [_assert_array, _assert_item_type_string],
        },
    )
    run_view_type = ViewType.ACTIVE_ONLY
    if request_message.HasField("run_view_type"):
        run_view_type = ViewType.from_proto(request_message.run_view_type)
    runs = handlers._get_tracking_store().search_runs(
        experiment_ids=list(request_message.experiment_ids),
        filter_string=request_message.filter,
        run_view_type=run_view_type,
        max_results=request_message.max_results,
        order_by=request_message.order_by,
        page_token=request_message.page_token or None,
    )
    return _json_response(search_runs_document(runs, runs.token))


# MLflow's decorators: its error answers (JSON with MLflow's codes), and off in artifacts-only mode.
search_runs_view: Callable[[], Response] = catch_mlflow_exception(_disable_if_artifacts_only(_search_runs))


def search_runs_document(runs: Sequence[Run], token: str | None) -> dict[str, Any]:
    """The dict ``message_to_json`` makes of a ``SearchRuns.Response`` with these runs."""
    document: dict[str, Any] = {}
    if runs:
        document["runs"] = [_run_document(run) for run in runs]
    if token:
        document["next_page_token"] = _text(token)
    return document


def _text(token: str | bytes) -> str:
    """MLflow makes page tokens as bytes; the protobuf string field holds them as text."""
    return token.decode() if isinstance(token, bytes) else token


def _proto_document(proto: Any) -> dict[str, Any]:
    """MLflow's own conversion (``message_to_json`` before it dumps), for what is rare here."""
    document: dict[str, Any] = _merge_json_dicts(
        _mark_int64_fields(proto), MessageToDict(proto, preserving_proto_field_name=True)
    )
    return document


def _run_document(run: Run) -> dict[str, Any]:
    if (run.inputs and (run.inputs.dataset_inputs or run.inputs.model_inputs)) or (
        run.outputs and run.outputs.model_outputs
    ):
        return _proto_document(run.to_proto())
    info = run.info
    info_document: dict[str, Any] = {"run_uuid": info.run_id, "experiment_id": info.experiment_id}
    if info.run_name is not None:
        info_document["run_name"] = info.run_name
    info_document["user_id"] = info.user_id
    info_document["status"] = info.status
    info_document["start_time"] = info.start_time
    if info.end_time:
        info_document["end_time"] = info.end_time
    if info.artifact_uri:
        info_document["artifact_uri"] = info.artifact_uri
    info_document["lifecycle_stage"] = info.lifecycle_stage
    info_document["run_id"] = info.run_id
    document: dict[str, Any] = {"info": info_document}
    data = run.data
    if data:
        data_document: dict[str, Any] = {}
        if metrics := data._metric_objs:
            data_document["metrics"] = [
                {"key": m.key, "value": _number(m.value), "timestamp": m.timestamp, "step": m.step}
                if not (m.model_id or m.dataset_name or m.dataset_digest or m.run_id)
                else _proto_document(m.to_proto())
                for m in metrics
            ]
        if params := data.params:
            data_document["params"] = [{"key": k, "value": v} for k, v in params.items()]
        if tags := data.tags:
            data_document["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        document["data"] = data_document
    if run.inputs:
        document["inputs"] = {}
    if run.outputs:
        document["outputs"] = {}
    return document


# -- metrics/get-history --------------------------------------------------------------------


def _get_metric_history() -> Response:
    """MLflow's ``_get_metric_history``, reading rows and writing its JSON directly."""
    request_message = handlers._get_request_message(
        GetMetricHistory(),
        schema={
            "run_id": [_assert_string, _assert_required],
            "metric_key": [_assert_string, _assert_required],
            "page_token": [_assert_string],
        },
    )
    run_id = request_message.run_id or request_message.run_uuid
    # As MLflow's handler: an unset max_results means every point, a non-positive one is refused.
    max_results = request_message.max_results if request_message.HasField("max_results") else None
    if max_results is not None and max_results <= 0:
        raise MlflowException(
            f"Invalid value {max_results} for parameter 'max_results' supplied. "
            "It must be a positive integer.",
            error_code=INVALID_PARAMETER_VALUE,
        )
    key = request_message.metric_key
    page_token = request_message.page_token or None
    store = _fast_store()
    if store is None:
        history = handlers._get_tracking_store().get_metric_history(run_id, key, max_results, page_token)
        rows = [(m.value, m.timestamp, m.step, False) for m in history]
        token = history.token
    else:
        rows, token = store.metric_history_rows(run_id, key, max_results, page_token)
    response = Response(mimetype="application/json")
    response.set_data(metric_history_json(key, rows, token))
    return response


get_metric_history_view: Callable[[], Response] = catch_mlflow_exception(
    _disable_if_artifacts_only(_get_metric_history)
)


def metric_history_document(key: str, rows: Sequence[Any], token: str | bytes | None) -> dict[str, Any]:
    """The dict ``message_to_json`` makes of a ``GetMetricHistory.Response``, from
    ``(value, timestamp, step, is_nan)`` rows."""
    document: dict[str, Any] = {}
    if rows:
        document["metrics"] = [
            {"key": key, "value": _history_value(value, is_nan), "timestamp": timestamp, "step": step}
            for value, timestamp, step, is_nan in rows
        ]
    if token:
        document["next_page_token"] = _text(token)
    return document


def metric_history_json(key: str, rows: Sequence[Any], token: str | bytes | None) -> str:
    """:func:`metric_history_document` as compact JSON, written point by point: building and
    encoding 100,000 dicts takes longer than reading the points."""
    if not rows:
        return json.dumps(metric_history_document(key, rows, token), separators=(",", ":"))
    head = '{"key":' + json.dumps(key) + ',"value":'
    if all(
        not is_nan
        and type(value) is float
        and _LOWEST <= value <= _HIGHEST
        and type(t) is int
        and type(s) is int
        for value, t, s, is_nan in rows
    ):  # the usual case: plain finite numbers, written as json.dumps would (repr)
        points = ",".join(f'{head}{value!r},"timestamp":{t},"step":{s}}}' for value, t, s, _ in rows)
    else:
        points = ",".join(
            json.dumps(point, separators=(",", ":"))
            for point in metric_history_document(key, rows, None)["metrics"]
        )
    tail = f',"next_page_token":{json.dumps(_text(token))}' if token else ""
    return f'{{"metrics":[{points}]{tail}}}'


def _history_value(value: float, is_nan: Any) -> float | str:
    return "NaN" if is_nan else _number(value)
