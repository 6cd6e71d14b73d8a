"""Which objects each MLflow route touches, and what it does to them.

Every route of MLflow's Flask app maps to a :class:`Rule`, by its protobuf request class (the
REST API) or by its endpoint name (the routes MLflow adds by hand). A rule's locators read the
:class:`~trainflow.tracking.permissions.parsing.ParsedRequest`, the very values MLflow's handler
acts on, and name the objects (:class:`Target`) with the action each needs. A route missing
from these tables is for admins only, and a test walks the app so that it cannot go unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from trainflow.tracking.permissions.parsing import MlflowRequestError, ParsedRequest, Reader


@dataclass(frozen=True)
class Target:
    """One object a request touches: ``kind`` (experiment, run, trace, ...), its key, the action."""

    kind: str
    key: str
    action: str


Locator = Callable[[ParsedRequest], Iterable[Target]]


@dataclass(frozen=True)
class Rule:
    """Who may call a route.

    ``access``: ``objects`` (each located object's permission decides), ``read_any`` (the
    default permission decides), ``search`` (allowed; the answer's items are filtered to what
    the caller may read), ``create`` (any signed-in user), ``signed_in`` (any caller, a job's
    token included), ``graphql`` (checked per field as the query runs), ``admin``.
    """

    access: str
    locators: tuple[Locator, ...] = ()
    # For ``search``: the list in the answer, the key of each item, and its kind.
    search: tuple[str, str, str] | None = None

    def targets(self, parsed: ParsedRequest) -> list[Target]:
        return [target for locate in self.locators for target in locate(parsed)]


ADMIN = Rule("admin")
READ_ANY = Rule("read_any")
CREATE = Rule("create")
SIGNED_IN = Rule("signed_in")


def on(*locators: Locator) -> Rule:
    return Rule("objects", locators)


def _required(parsed: ParsedRequest, *names: str) -> str:
    for name in names:
        value = parsed.scalar(name)
        if value:
            return value
    raise MlflowRequestError(f"{names[0]} is required.")


def _one(kind: str, action: str, *names: str, optional: bool = False) -> Locator:
    def locate(parsed: ParsedRequest) -> Iterable[Target]:
        if optional:
            value = next((v for v in (parsed.scalar(n) for n in names) if v), "")
            return [Target(kind, value, action)] if value else []
        return [Target(kind, _required(parsed, *names), action)]

    return locate


def _many(kind: str, action: str, name: str, *, when_empty: str | None = None) -> Locator:
    def locate(parsed: ParsedRequest) -> Iterable[Target]:
        values = parsed.many(name)
        if not values and when_empty == "any":
            return [Target("any", "", action)]
        if not values and when_empty == "required":
            raise MlflowRequestError(f"{name} is required.")
        return [Target(kind, value, action) for value in values]

    return locate


def experiment(action: str, name: str = "experiment_id", optional: bool = False) -> Locator:
    return _one("experiment", action, name, optional=optional)


def experiments(action: str, name: str = "experiment_ids", when_empty: str | None = None) -> Locator:
    return _many("experiment", action, name, when_empty=when_empty)


def run(action: str, *names: str, optional: bool = False) -> Locator:
    return _one("run", action, *(names or ("run_id", "run_uuid")), optional=optional)


def runs(action: str, name: str = "run_ids") -> Locator:
    return _many("run", action, name, when_empty="required")


def logged_model(action: str, name: str = "model_id", optional: bool = False) -> Locator:
    return _one("logged_model", action, name, optional=optional)


def trace(action: str, name: str = "trace_id") -> Locator:
    return _one("trace", action, name)


def traces(action: str, name: str = "trace_ids") -> Locator:
    return _many("trace", action, name)


def registered_model(action: str, name: str = "name") -> Locator:
    return _one("registered_model", action, name)


def dataset(action: str) -> Locator:
    return _one("dataset", action, "dataset_id")


def artifact_path(action: str, name: str = "artifact_path") -> Locator:
    def locate(parsed: ParsedRequest) -> Iterable[Target]:
        return [Target("artifact_path", parsed.scalar(name), action)]

    return locate


def experiment_by_name(action: str) -> Locator:
    return _one("experiment_name", action, "experiment_name")


def lookup(kind: str, action: str, name: str) -> Locator:
    """An object MLflow's store knows by id (an issue, a label schema): decided by its experiment."""
    return _one(kind, action, name)


def _nested(kind: str, action: str, path: tuple[str, ...], leaf: str) -> Locator:
    """Each ``leaf`` found under the (possibly repeated) message fields ``path``."""

    def locate(parsed: ParsedRequest) -> Iterable[Target]:
        found: list[Target] = []
        stack: list[Any] = [parsed.message] if parsed.message is not None else []
        for step in path:
            stack = [item for node in stack for item in _children(node, step)]
        for node in stack:
            value = getattr(node, leaf, "")
            if value:
                found.append(Target(kind, str(value), action))
        return found

    return locate


def _children(node: Any, name: str) -> list[Any]:
    if name not in node.DESCRIPTOR.fields_by_name:
        return []
    value = getattr(node, name)
    if node.DESCRIPTOR.fields_by_name[name].message_type is None:
        return []
    if hasattr(value, "ListFields"):
        return [value] if node.HasField(name) else []
    return list(value)


def _start_trace_v3(parsed: ParsedRequest) -> Iterable[Target]:
    assert parsed.message is not None
    location = parsed.message.trace.trace_info.trace_location  # type: ignore[attr-defined]
    experiment_id = location.mlflow_experiment.experiment_id
    if not experiment_id:
        raise MlflowRequestError(
            "trace.trace_info.trace_location.mlflow_experiment.experiment_id is required."
        )
    return [Target("experiment", experiment_id, "update")]


def _trace_locations(parsed: ParsedRequest) -> Iterable[Target]:
    assert parsed.message is not None
    locations = list(parsed.message.locations)  # type: ignore[attr-defined]
    if not locations:
        return [Target("any", "", "read")]
    found = []
    for location in locations:
        experiment_id = location.mlflow_experiment.experiment_id
        found.append(
            Target("experiment", experiment_id, "read") if experiment_id else Target("any", "", "read")
        )
    return found


def _assessment_trace(action: str) -> Locator:
    def locate(parsed: ParsedRequest) -> Iterable[Target]:
        trace_id = _required(parsed, "trace_id")
        message = parsed.message
        if message is not None and "assessment" in message.DESCRIPTOR.fields_by_name:
            named = message.assessment.trace_id  # type: ignore[attr-defined]
            if named and named != trace_id:
                raise MlflowRequestError(
                    f"The URL names trace {trace_id!r} but the assessment says {named!r}; give one."
                )
        return [Target("trace", trace_id, action)]

    return locate


def _model_version_source(parsed: ParsedRequest) -> Iterable[Target]:
    """A new version's source must be something the caller may read (its files become readable)."""
    source = parsed.scalar("source")
    if source.startswith("runs:/"):
        run_id = source[len("runs:/") :].split("/", 1)[0]
        return [Target("run", run_id, "read")]
    if source.startswith("models:/"):
        return [Target("logged_model", source[len("models:/") :].split("/", 1)[0], "read")]
    if source.startswith("mlflow-artifacts:"):
        path = source[len("mlflow-artifacts:") :].lstrip("/")
        if "://" in source or path.split("/", 1)[0] == "":
            return [Target("admin", source, "read")]
        return [Target("artifact_path", path, "read")]
    # Any other scheme or a local path: MLflow refuses local paths on a tracking server; the
    # rest (s3:, gs:, ...) is outside the artifact store trainflow guards.
    return []


# -- the table, by protobuf request class ---------------------------------------------------------

R, U, D = "read", "update", "delete"

RULES_BY_MESSAGE: dict[str, Rule] = {
    # Experiments
    "mlflow.GetExperimentByName": on(experiment_by_name(R)),
    "mlflow.CreateExperiment": CREATE,
    "mlflow.SearchExperiments": Rule("search", search=("experiments", "experiment_id", "experiment")),
    "mlflow.GetExperiment": on(experiment(R)),
    "mlflow.DeleteExperiment": on(experiment(D)),
    "mlflow.RestoreExperiment": on(experiment(D)),
    "mlflow.UpdateExperiment": on(experiment(U)),
    "mlflow.SetExperimentTag": on(experiment(U)),
    "mlflow.DeleteExperimentTag": on(experiment(U)),
    # Runs
    "mlflow.CreateRun": on(experiment(U)),
    "mlflow.UpdateRun": on(run(U)),
    "mlflow.DeleteRun": on(run(D)),
    "mlflow.RestoreRun": on(run(D)),
    "mlflow.LogMetric": on(run(U), logged_model(R, optional=True)),
    "mlflow.LogParam": on(run(U)),
    "mlflow.SetTag": on(run(U)),
    "mlflow.DeleteTag": on(run(U)),
    "mlflow.GetRun": on(run(R)),
    "mlflow.SearchRuns": on(experiments(R)),
    "mlflow.ListArtifacts": on(run(R)),
    "mlflow.CreatePresignedUploadUrl": on(run(U), logged_model(U, optional=True)),
    "mlflow.CreatePresignedDownloadUrl": on(run(R)),
    "mlflow.GetMetricHistory": on(run(R)),
    "mlflow.GetMetricHistoryBulkInterval": on(runs(R)),
    "mlflow.LogBatch": on(run(U), _nested("logged_model", R, ("metrics",), "model_id")),
    "mlflow.LogModel": on(run(U)),
    "mlflow.LogInputs": on(run(U), _nested("logged_model", R, ("models",), "model_id")),
    "mlflow.LogOutputs": on(run(U), _nested("logged_model", R, ("models",), "model_id")),
    "mlflow.SearchDatasets": on(experiments(R)),
    # Traces, v2 and v3
    "mlflow.StartTrace": on(experiment(U)),
    "mlflow.EndTrace": on(trace(U, "request_id")),
    "mlflow.GetTraceInfo": on(trace(R, "request_id")),
    "mlflow.GetTraceInfoV3": on(trace(R)),
    "mlflow.GetTrace": on(trace(R)),
    "mlflow.BatchGetTraces": on(traces(R), experiments(R)),
    "mlflow.BatchGetTraceInfos": on(traces(R), experiments(R)),
    "mlflow.SearchTraces": on(experiments(R, when_empty="any")),
    "mlflow.SearchTracesV3": on(_trace_locations),
    "mlflow.StartTraceV3": on(_start_trace_v3),
    "mlflow.LinkTracesToRun": on(run(U, "run_id"), traces(U)),
    "mlflow.LinkPromptsToTrace": on(trace(U), _nested("registered_model", R, ("prompt_versions",), "name")),
    "mlflow.SearchUnifiedTraces": READ_ANY,  # MLflow answers 404: not implemented
    "mlflow.GetOnlineTraceDetails": READ_ANY,  # MLflow answers 404: not implemented
    "mlflow.DeleteTraces": on(experiment(D), traces(D, "request_ids")),
    "mlflow.DeleteTracesV3": on(experiment(D), traces(D, "request_ids")),
    "mlflow.CalculateTraceFilterCorrelation": on(experiments(R, when_empty="any")),
    "mlflow.QueryTraceMetrics": on(experiments(R, when_empty="any")),
    "mlflow.SetTraceTag": on(trace(U, "request_id")),
    "mlflow.SetTraceTagV3": on(trace(U)),
    "mlflow.DeleteTraceTag": on(trace(U, "request_id")),
    "mlflow.DeleteTraceTagV3": on(trace(U)),
    "mlflow.GetAssessmentRequest": on(_assessment_trace(R)),
    "mlflow.CreateAssessment": on(_assessment_trace(U)),
    "mlflow.UpdateAssessment": on(_assessment_trace(U)),
    "mlflow.DeleteAssessment": on(_assessment_trace(U)),
    # Workspaces are off in trainflow (MLflow answers 503); only admins may ask.
    "mlflow.ListWorkspaces": ADMIN,
    "mlflow.GetWorkspace": ADMIN,
    "mlflow.CreateWorkspace": ADMIN,
    "mlflow.UpdateWorkspace": ADMIN,
    "mlflow.DeleteWorkspace": ADMIN,
    # Logged models
    "mlflow.CreateLoggedModel": on(experiment(U), run(R, "source_run_id", optional=True)),
    "mlflow.FinalizeLoggedModel": on(logged_model(U)),
    "mlflow.GetLoggedModel": on(logged_model(R)),
    "mlflow.DeleteLoggedModel": on(logged_model(D)),
    "mlflow.SearchLoggedModels": on(experiments(R)),
    "mlflow.SetLoggedModelTags": on(logged_model(U)),
    "mlflow.DeleteLoggedModelTag": on(logged_model(U)),
    "mlflow.ListLoggedModelArtifacts": on(logged_model(R)),
    "mlflow.LogLoggedModelParamsRequest": on(logged_model(U)),
    # Issues, label schemas: decided by their experiment
    "mlflow.issues.CreateIssue": on(experiment(U), run(R, "source_run_id", optional=True)),
    "mlflow.issues.UpdateIssue": on(lookup("issue", U, "issue_id")),
    "mlflow.issues.GetIssue": on(lookup("issue", R, "issue_id")),
    "mlflow.issues.SearchIssues": on(experiment(R)),
    "mlflow.label_schemas.CreateLabelSchema": on(experiment(U)),
    "mlflow.label_schemas.GetLabelSchema": on(lookup("label_schema", R, "schema_id")),
    "mlflow.label_schemas.GetLabelSchemaByName": on(experiment(R)),
    "mlflow.label_schemas.ListLabelSchemas": on(experiment(R)),
    "mlflow.label_schemas.UpdateLabelSchema": on(lookup("label_schema", U, "schema_id")),
    "mlflow.label_schemas.DeleteLabelSchema": on(lookup("label_schema", U, "schema_id")),
    # Evaluation datasets: decided by every experiment they are linked to
    "mlflow.CreateDataset": on(experiments(U)),
    "mlflow.GetDataset": on(dataset(R)),
    "mlflow.DeleteDataset": on(dataset(D)),
    "mlflow.SearchEvaluationDatasets": on(experiments(R, when_empty="any")),
    "mlflow.SetDatasetTags": on(dataset(U)),
    "mlflow.DeleteDatasetTag": on(dataset(U)),
    "mlflow.UpsertDatasetRecords": on(dataset(U)),
    "mlflow.GetDatasetExperimentIds": on(dataset(R)),
    "mlflow.GetDatasetRecords": on(dataset(R)),
    "mlflow.DeleteDatasetRecords": on(dataset(U)),
    "mlflow.AddDatasetToExperiments": on(dataset(U), experiments(U)),
    "mlflow.RemoveDatasetFromExperiments": on(dataset(U), experiments(U)),
    # Scorers belong to an experiment
    "mlflow.RegisterScorer": on(experiment(U)),
    "mlflow.ListScorers": on(experiment(R, optional=True), experiments(R)),
    "mlflow.ListScorerVersions": on(experiment(R)),
    "mlflow.GetScorer": on(experiment(R)),
    "mlflow.DeleteScorer": on(experiment(U)),
    # The AI gateway holds provider secrets and spends money: admins only.
    **dict.fromkeys(
        (
            "mlflow.CreateGatewaySecret",
            "mlflow.GetGatewaySecretInfo",
            "mlflow.UpdateGatewaySecret",
            "mlflow.DeleteGatewaySecret",
            "mlflow.ListGatewaySecretInfos",
            "mlflow.CreateGatewayEndpoint",
            "mlflow.GetGatewayEndpoint",
            "mlflow.UpdateGatewayEndpoint",
            "mlflow.DeleteGatewayEndpoint",
            "mlflow.ListGatewayEndpoints",
            "mlflow.CreateGatewayModelDefinition",
            "mlflow.GetGatewayModelDefinition",
            "mlflow.ListGatewayModelDefinitions",
            "mlflow.UpdateGatewayModelDefinition",
            "mlflow.DeleteGatewayModelDefinition",
            "mlflow.AttachModelToGatewayEndpoint",
            "mlflow.DetachModelFromGatewayEndpoint",
            "mlflow.CreateGatewayEndpointBinding",
            "mlflow.DeleteGatewayEndpointBinding",
            "mlflow.ListGatewayEndpointBindings",
            "mlflow.SetGatewayEndpointTag",
            "mlflow.DeleteGatewayEndpointTag",
            "mlflow.CreateGatewayBudgetPolicy",
            "mlflow.GetGatewayBudgetPolicy",
            "mlflow.UpdateGatewayBudgetPolicy",
            "mlflow.DeleteGatewayBudgetPolicy",
            "mlflow.ListGatewayBudgetPolicies",
            "mlflow.ListGatewayBudgetWindows",
            "mlflow.CreateGatewayGuardrail",
            "mlflow.GetGatewayGuardrail",
            "mlflow.DeleteGatewayGuardrail",
            "mlflow.ListGatewayGuardrails",
            "mlflow.AddGuardrailToEndpoint",
            "mlflow.RemoveGuardrailFromEndpoint",
            "mlflow.ListEndpointGuardrailConfigs",
            "mlflow.UpdateEndpointGuardrailConfig",
        ),
        ADMIN,
    ),
    # Prompt optimisation runs LLM calls through the gateway: admins only, reads by experiment.
    "mlflow.CreatePromptOptimizationJob": ADMIN,
    "mlflow.GetPromptOptimizationJob": ADMIN,
    "mlflow.SearchPromptOptimizationJobs": on(experiment(R)),
    "mlflow.CancelPromptOptimizationJob": ADMIN,
    "mlflow.DeletePromptOptimizationJob": ADMIN,
    # Review queues: decided by their experiment
    "mlflow.review_queues.CreateReviewQueue": on(experiment(U)),
    "mlflow.review_queues.GetOrCreateUserQueue": on(experiment(U)),
    "mlflow.review_queues.GetReviewQueue": on(lookup("review_queue", R, "queue_id")),
    "mlflow.review_queues.GetReviewQueueByName": on(experiment(R)),
    "mlflow.review_queues.ListReviewQueues": on(experiment(R)),
    "mlflow.review_queues.UpdateReviewQueue": on(lookup("review_queue", U, "queue_id")),
    "mlflow.review_queues.DeleteReviewQueue": on(lookup("review_queue", D, "queue_id")),
    "mlflow.review_queues.AddItemsToReviewQueue": on(lookup("review_queue", U, "queue_id")),
    "mlflow.review_queues.RemoveItemsFromReviewQueue": on(lookup("review_queue", U, "queue_id")),
    "mlflow.review_queues.ListReviewQueueItems": on(lookup("review_queue", R, "queue_id")),
    "mlflow.review_queues.SetReviewQueueItemStatus": on(lookup("review_queue", U, "queue_id")),
    # Registered models (prompts are registered models too), their versions, tags and aliases
    "mlflow.CreateRegisteredModel": CREATE,
    "mlflow.RenameRegisteredModel": on(registered_model(U)),
    "mlflow.UpdateRegisteredModel": on(registered_model(U)),
    "mlflow.DeleteRegisteredModel": on(registered_model(D)),
    "mlflow.GetRegisteredModel": on(registered_model(R)),
    "mlflow.SearchRegisteredModels": Rule("search", search=("registered_models", "name", "registered_model")),
    "mlflow.GetLatestVersions": on(registered_model(R)),
    "mlflow.CreateModelVersion": on(
        registered_model(U),
        run(R, "run_id", optional=True),
        logged_model(R, optional=True),
        _model_version_source,
    ),
    "mlflow.UpdateModelVersion": on(registered_model(U)),
    "mlflow.TransitionModelVersionStage": on(registered_model(U)),
    "mlflow.DeleteModelVersion": on(registered_model(D)),
    "mlflow.GetModelVersion": on(registered_model(R)),
    "mlflow.SearchModelVersions": Rule("search", search=("model_versions", "name", "registered_model")),
    "mlflow.GetModelVersionDownloadUri": on(registered_model(R)),
    "mlflow.SetRegisteredModelTag": on(registered_model(U)),
    "mlflow.SetModelVersionTag": on(registered_model(U)),
    "mlflow.DeleteRegisteredModelTag": on(registered_model(U)),
    "mlflow.DeleteModelVersionTag": on(registered_model(U)),
    "mlflow.SetRegisteredModelAlias": on(registered_model(U)),
    "mlflow.DeleteRegisteredModelAlias": on(registered_model(U)),
    "mlflow.GetModelVersionByAlias": on(registered_model(R)),
    # The artifact proxy: the path names the run (or logged model, or trace) and its experiment.
    "mlflow.artifacts.DownloadArtifact": on(artifact_path(R)),
    "mlflow.artifacts.UploadArtifact": on(artifact_path(U)),
    "mlflow.artifacts.ListArtifacts": on(artifact_path(R, "path")),
    "mlflow.artifacts.DeleteArtifact": on(artifact_path(D)),
    "mlflow.artifacts.CreateMultipartUpload": on(artifact_path(U)),
    "mlflow.artifacts.CompleteMultipartUpload": on(artifact_path(U)),
    "mlflow.artifacts.AbortMultipartUpload": on(artifact_path(U)),
    "mlflow.artifacts.GetPresignedDownloadUrl": on(artifact_path(R)),
    # Webhooks call any URL with the server's network position: admins only.
    "mlflow.CreateWebhook": ADMIN,
    "mlflow.ListWebhooks": ADMIN,
    "mlflow.GetWebhook": ADMIN,
    "mlflow.UpdateWebhook": ADMIN,
    "mlflow.DeleteWebhook": ADMIN,
    "mlflow.TestWebhook": ADMIN,
}

# -- the routes MLflow adds by hand, by endpoint name ---------------------------------------------

RUN_ARGS = Reader(args=("run_id", "run_uuid", "path"), same=(("run_id", "run_uuid"),))

RULES_BY_ENDPOINT: dict[str, tuple[Reader, Rule]] = {
    # GET /get-artifact: the handler reads run_id, else run_uuid.
    "serve_artifacts": (RUN_ARGS, on(run(R))),
    # POST /ajax-api/2.0/mlflow/upload-artifact: the handler reads run_uuid alone.
    "serve_upload_artifact": (RUN_ARGS, on(run(U, "run_uuid"))),
    "serve_model_version_artifact": (
        Reader(args=("name", "version", "path")),
        on(registered_model(R)),
    ),
    "serve_get_metric_history_bulk": (
        Reader(args=("run_id", "metric_key", "max_results"), repeated=("run_id",)),
        on(_many("run", R, "run_id", when_empty="required")),
    ),
    # These two parse a protobuf message (see _message_readers).
    "serve_get_metric_history_bulk_interval": (Reader(), on(runs(R))),
    "serve_search_datasets": (Reader(), on(experiments(R))),
    "serve_create_promptlab_run": (Reader(body=True), on(experiment(U))),
    "serve_get_trace_artifact": (Reader(args=("request_id", "path")), on(trace(R, "request_id"))),
    "serve_get_logged_model_artifact": (Reader(args=("artifact_file_path",)), on(logged_model(R))),
    "serve_gateway_proxy": (Reader(), ADMIN),
    "serve_get_ui_telemetry": (Reader(), READ_ANY),
    "serve_post_ui_telemetry": (Reader(), CREATE),
    "serve": (Reader(), CREATE),  # the MLflow UI's page: any signed-in user, not a job's token
    "_graphql": (Reader(graphql=True), Rule("graphql")),
    "_get_server_info": (Reader(), SIGNED_IN),
    "_not_implemented": (Reader(), READ_ANY),
    # AI gateway discovery fetches MLflow's model catalogue from the internet: admins only.
    "_list_supported_providers": (Reader(), ADMIN),
    "_list_supported_models": (Reader(), ADMIN),
    "_get_provider_config": (Reader(), ADMIN),
    "_get_secrets_config": (Reader(), ADMIN),
    # Online scoring runs judges through the gateway on an experiment's traces.
    "_upsert_online_scoring_config": (Reader(body=True), ADMIN),
    "_get_online_scoring_configs": (Reader(body=True), READ_ANY),
    # Jobs that call LLMs or write demo data: admins only.
    "_invoke_genai_evaluate_handler": (Reader(body=True), ADMIN),
    "_invoke_scorer_handler": (Reader(body=True), ADMIN),
    "_invoke_issue_detection_handler": (Reader(body=True), ADMIN),
    "_generate_demo": (Reader(), ADMIN),
    "_delete_demo": (Reader(), ADMIN),
    "_get_job": (Reader(), ADMIN),
    "_cancel_job": (Reader(), ADMIN),
}

# Endpoints anyone may call without signing in: the UI's static files and health probes.
PUBLIC_ENDPOINTS = frozenset({"serve_static_file", "health", "version", "static"})


def _message_readers() -> dict[str, type]:
    from mlflow.protos.service_pb2 import GetMetricHistoryBulkInterval, SearchDatasets

    return {
        "serve_get_metric_history_bulk_interval": GetMetricHistoryBulkInterval,
        "serve_search_datasets": SearchDatasets,
    }


# REST routes whose handler reads no request message: only its URL path (and these query
# arguments). The workspace handlers parse with a helper of their own; they are admin-only or
# read by anyone, so nothing in them is checked.
HANDLER_READS_PATH_ONLY: dict[str, tuple[str, ...]] = {
    "mlflow.GetTraceInfo": (),
    "mlflow.GetTraceInfoV3": (),
    "mlflow.SearchUnifiedTraces": (),
    "mlflow.GetOnlineTraceDetails": (),
    "mlflow.CreateWorkspace": (),
    "mlflow.GetWorkspace": (),
    "mlflow.UpdateWorkspace": (),
    "mlflow.DeleteWorkspace": ("mode",),
    "mlflow.GetLoggedModel": ("allow_deleted",),
    "mlflow.DeleteLoggedModel": (),
    "mlflow.DeleteLoggedModelTag": (),
    "mlflow.GetAssessmentRequest": (),
    "mlflow.DeleteAssessment": (),
    "mlflow.issues.GetIssue": (),
    "mlflow.GetDataset": (),
    "mlflow.DeleteDataset": (),
    "mlflow.DeleteDatasetTag": (),
    "mlflow.GetDatasetExperimentIds": (),
    "mlflow.GetPromptOptimizationJob": (),
    "mlflow.CancelPromptOptimizationJob": (),
    "mlflow.DeletePromptOptimizationJob": (),
    "mlflow.artifacts.DownloadArtifact": (),
    "mlflow.artifacts.UploadArtifact": (),
    "mlflow.artifacts.GetPresignedDownloadUrl": (),
    "mlflow.GetWebhook": (),
    "mlflow.DeleteWebhook": (),
}
# REST routes whose handler parses another request class than the route's own.
HANDLER_PARSES_AS = {"mlflow.DeleteTracesV3": "mlflow.DeleteTraces"}


def _reader_for(request_class: Any, handler: Any) -> Reader:
    name = request_class.DESCRIPTOR.full_name
    if getattr(handler, "__name__", "") == "_not_implemented":
        return Reader()  # MLflow answers 404 without reading anything
    if name in HANDLER_READS_PATH_ONLY:
        return Reader(args=HANDLER_READS_PATH_ONLY[name])
    if name in HANDLER_PARSES_AS:
        from google.protobuf import symbol_database

        parsed_as = symbol_database.Default().GetSymbol(HANDLER_PARSES_AS[name])
        return Reader(message=parsed_as)
    return Reader(message=request_class)


@dataclass(frozen=True)
class Route:
    """One (Flask rule, method) of MLflow's app: how its handler reads it and who may call it."""

    name: str  # the protobuf request's full name, or the endpoint's name
    reader: Reader
    rule: Rule


def build_routes() -> tuple[dict[tuple[str, str], Route], dict[str, Route]]:
    """MLflow's REST routes by (Flask rule, method), and its hand-made routes by endpoint name.

    A REST route whose request class is not in :data:`RULES_BY_MESSAGE` is left out (admins
    only, and the route test fails).
    """
    from mlflow.protos.mlflow_artifacts_pb2 import MlflowArtifactsService
    from mlflow.protos.model_registry_pb2 import ModelRegistryService
    from mlflow.protos.service_pb2 import MlflowService
    from mlflow.protos.webhooks_pb2 import WebhookService
    from mlflow.server.handlers import get_handler, get_service_endpoints

    by_rule: dict[tuple[str, str], Route] = {}
    for service in (MlflowService, ModelRegistryService, MlflowArtifactsService, WebhookService):
        for path, (request_class, handler), methods in get_service_endpoints(
            service, lambda cls: (cls, get_handler(cls))
        ):
            name = request_class.DESCRIPTOR.full_name
            rule = RULES_BY_MESSAGE.get(name)
            if rule is not None:
                for method in methods:
                    by_rule[(path, method)] = Route(name, _reader_for(request_class, handler), rule)
    by_endpoint: dict[str, Route] = {}
    message_readers = _message_readers()
    for endpoint, (reader, rule) in RULES_BY_ENDPOINT.items():
        if endpoint in message_readers:
            reader = Reader(message=message_readers[endpoint])
        by_endpoint[endpoint] = Route(endpoint, reader, rule)
    return by_rule, by_endpoint
