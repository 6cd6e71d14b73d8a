"""The check and MLflow's handler share one parse of the request (issue 10)."""

from __future__ import annotations

import pytest
from mlflow.protos.model_registry_pb2 import UpdateRegisteredModel
from mlflow.protos.service_pb2 import CreateRun, GetRun
from mlflow.server import handlers

from trainflow.tracking.permissions.parsing import (
    MlflowRequestError,
    ParsedAsAnotherMessage,
    Reader,
    parse_request,
)


def test_the_handler_gets_the_message_the_check_decided_on(app):
    with app.test_request_context("/api/2.0/mlflow/runs/create", method="POST", json={"experiment_id": "5"}):
        parsed = parse_request(Reader(message=CreateRun))
        assert parsed.message.experiment_id == "5"
        # Whatever the check holds is what the handler gets: not a second parse of the body.
        parsed.message.experiment_id = "7"
        assert handlers._get_request_message(CreateRun()).experiment_id == "7"


def test_mlflows_validation_still_runs_on_the_shared_message(app):
    from mlflow.exceptions import MlflowException

    with app.test_request_context("/api/2.0/mlflow/runs/create", method="POST", json={"experiment_id": "5"}):
        parse_request(Reader(message=CreateRun))
        with pytest.raises(MlflowException, match="run_name"):
            handlers._get_request_message(CreateRun(), schema={"run_name": [handlers._assert_required]})


def test_a_body_protobuf_cannot_hold_is_a_400(app):
    body = {"experiment_id": "5", "start_time": "not a number"}
    with app.test_request_context("/api/2.0/mlflow/runs/create", method="POST", json=body):
        with pytest.raises(MlflowRequestError, match="start_time"):
            parse_request(Reader(message=CreateRun))


def test_a_handler_reading_another_message_is_refused(app):
    with app.test_request_context("/api/2.0/mlflow/runs/create", method="POST", json={"experiment_id": "5"}):
        parse_request(Reader(message=CreateRun))
        with pytest.raises(ParsedAsAnotherMessage):
            handlers._get_request_message(GetRun())


def test_a_text_plain_patch_is_read_as_mlflow_reads_it(app):
    body = '{"name": "theirs", "description": "x"}'
    with app.test_request_context(
        "/api/2.0/mlflow/registered-models/update", method="PATCH", data=body, content_type="text/plain"
    ):
        assert parse_request(Reader(message=UpdateRegisteredModel)).message.name == "theirs"


@pytest.mark.parametrize(
    ("method", "query", "body", "message"),
    [
        ("POST", "experiment_id=1", {"experiment_id": "2"}, "says otherwise"),
        ("POST", "experiment_id=1", {"experimentId": "2"}, "says otherwise"),
        ("POST", "", {"experiment_id": "1", "experimentId": "2"}, "both 'experiment_id' and 'experimentId'"),
        ("POST", "experiment_id=2", {}, "MLflow reads this request's body"),
    ],
)
def test_a_request_naming_a_field_twice_is_refused(app, method, query, body, message):
    with app.test_request_context(f"/api/2.0/mlflow/runs/create?{query}", method=method, json=body):
        with pytest.raises(MlflowRequestError, match=message) as refused:
            parse_request(Reader(message=CreateRun))
    assert refused.value.status == 400
    assert refused.value.mlflow_code == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize(
    "query",
    ["run_id=a&run_id=b", "run_id=a&run_uuid=b", "runId=b", "run_id=a&runId=b"],
)
def test_a_get_naming_a_field_twice_is_refused(app, query):
    with app.test_request_context(f"/api/2.0/mlflow/runs/get?{query}", method="GET"):
        with pytest.raises(MlflowRequestError):
            parse_request(Reader(message=GetRun))
