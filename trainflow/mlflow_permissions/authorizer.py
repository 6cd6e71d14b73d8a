"""Who may do what to MLflow's own objects: MLflow basic-auth's permission model, on our users.

Each MLflow REST endpoint maps to a :class:`Rule`: which object it touches (an experiment, a
run, a registered model, a logged model, an artifact path) and the permission it needs
(read, update, delete). A user holds MANAGE on what they created, the configured default
permission on everything else, and admins may do anything. Endpoints this table does not
know are readable with the default permission and writable by admins only: new MLflow
endpoints fail closed until someone decides who may call them.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request
from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from trainflow.accounts.credentials import AuthEpoch, Principal
from trainflow.db import TABLE_PREFIX, db
from trainflow.errors import BadRequest, PermissionDenied
from trainflow.settings import Settings


class Permission(enum.StrEnum):
    READ = "READ"
    USE = "USE"
    EDIT = "EDIT"
    MANAGE = "MANAGE"
    NO_PERMISSIONS = "NO_PERMISSIONS"

    def allows(self, action: str) -> bool:
        return action in _ALLOWED[self]


_ALLOWED = {
    Permission.READ: {"read"},
    Permission.USE: {"read", "use"},
    Permission.EDIT: {"read", "use", "update"},
    Permission.MANAGE: {"read", "use", "update", "delete", "manage"},
    Permission.NO_PERMISSIONS: set(),
}


class ExperimentPermission(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{TABLE_PREFIX}experiment_permissions"
    __table_args__ = (UniqueConstraint("experiment_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey(f"{TABLE_PREFIX}users.id", ondelete="CASCADE"))
    permission: Mapped[str] = mapped_column(String(32))


class RegisteredModelPermission(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{TABLE_PREFIX}registered_model_permissions"
    __table_args__ = (UniqueConstraint("name", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey(f"{TABLE_PREFIX}users.id", ondelete="CASCADE"))
    permission: Mapped[str] = mapped_column(String(32))


@dataclass(frozen=True)
class Rule:
    """The object an endpoint touches (``target``) and what it does to it (``action``)."""

    target: str
    action: str


READ_ANY = Rule("any", "read")
CREATE = Rule("create", "update")

_RULES_BY_REQUEST: dict[str, Rule] = {
    # Experiments
    "GetExperimentByName": Rule("experiment_name", "read"),
    "CreateExperiment": CREATE,
    "SearchExperiments": READ_ANY,
    "GetExperiment": Rule("experiment", "read"),
    "DeleteExperiment": Rule("experiment", "delete"),
    "RestoreExperiment": Rule("experiment", "delete"),
    "UpdateExperiment": Rule("experiment", "update"),
    "SetExperimentTag": Rule("experiment", "update"),
    "DeleteExperimentTag": Rule("experiment", "update"),
    "CreateRun": Rule("experiment", "update"),
    "CreateLoggedModel": Rule("experiment", "update"),
    "StartTraceV3": Rule("experiment", "update"),
    "SearchRuns": Rule("experiment_ids", "read"),
    "SearchLoggedModels": Rule("experiment_ids", "read"),
    "SearchDatasets": Rule("experiment_ids", "read"),
    # Runs
    "GetRun": Rule("run", "read"),
    "ListArtifacts": Rule("run", "read"),
    "GetMetricHistory": Rule("run", "read"),
    "GetMetricHistoryBulkInterval": Rule("run_ids", "read"),
    "UpdateRun": Rule("run", "update"),
    "LogMetric": Rule("run", "update"),
    "LogParam": Rule("run", "update"),
    "SetTag": Rule("run", "update"),
    "DeleteTag": Rule("run", "update"),
    "LogBatch": Rule("run", "update"),
    "LogModel": Rule("run", "update"),
    "LogInputs": Rule("run", "update"),
    "LogOutputs": Rule("run", "update"),
    "DeleteRun": Rule("run", "delete"),
    "RestoreRun": Rule("run", "delete"),
    # Logged models
    "GetLoggedModel": Rule("logged_model", "read"),
    "ListLoggedModelArtifacts": Rule("logged_model", "read"),
    "FinalizeLoggedModel": Rule("logged_model", "update"),
    "SetLoggedModelTags": Rule("logged_model", "update"),
    "DeleteLoggedModelTag": Rule("logged_model", "update"),
    "LogLoggedModelParamsRequest": Rule("logged_model", "update"),
    "DeleteLoggedModel": Rule("logged_model", "delete"),
    # Registered models and their versions
    "CreateRegisteredModel": CREATE,
    "SearchRegisteredModels": READ_ANY,
    "SearchModelVersions": READ_ANY,
    "GetRegisteredModel": Rule("registered_model", "read"),
    "GetLatestVersions": Rule("registered_model", "read"),
    "GetModelVersion": Rule("registered_model", "read"),
    "GetModelVersionDownloadUri": Rule("registered_model", "read"),
    "GetModelVersionByAlias": Rule("registered_model", "read"),
    "RenameRegisteredModel": Rule("registered_model", "update"),
    "UpdateRegisteredModel": Rule("registered_model", "update"),
    "SetRegisteredModelTag": Rule("registered_model", "update"),
    "DeleteRegisteredModelTag": Rule("registered_model", "update"),
    "SetRegisteredModelAlias": Rule("registered_model", "update"),
    "DeleteRegisteredModelAlias": Rule("registered_model", "update"),
    "CreateModelVersion": Rule("registered_model", "update"),
    "UpdateModelVersion": Rule("registered_model", "update"),
    "TransitionModelVersionStage": Rule("registered_model", "update"),
    "SetModelVersionTag": Rule("registered_model", "update"),
    "DeleteModelVersionTag": Rule("registered_model", "update"),
    "DeleteRegisteredModel": Rule("registered_model", "delete"),
    "DeleteModelVersion": Rule("registered_model", "delete"),
    # Reads the MLflow UI makes with POST; they touch no object of one owner in particular.
    **dict.fromkeys(
        (
            "SearchTraces",
            "SearchTracesV3",
            "SearchUnifiedTraces",
            "GetTraceInfo",
            "GetTraceInfoV3",
            "GetTrace",
            "BatchGetTraces",
            "BatchGetTraceInfos",
            "QueryTraceMetrics",
            "CalculateTraceFilterCorrelation",
            "GetOnlineTraceDetails",
            "GetAssessmentRequest",
            "SearchEvaluationDatasets",
            "GetDataset",
            "GetDatasetRecords",
            "GetDatasetExperimentIds",
            "ListScorers",
            "ListScorerVersions",
            "GetScorer",
            "GetIssue",
            "SearchIssues",
            "SearchPromptOptimizationJobs",
            "GetPromptOptimizationJob",
        ),
        READ_ANY,
    ),
    # The artifact proxy: the first segment of the path is the experiment id.
    "DownloadArtifact": Rule("artifact_path", "read"),
    "UploadArtifact": Rule("artifact_path", "update"),
    "DeleteArtifact": Rule("artifact_path", "delete"),
    "CreateMultipartUpload": Rule("artifact_path", "update"),
    "CompleteMultipartUpload": Rule("artifact_path", "update"),
    "AbortMultipartUpload": Rule("artifact_path", "update"),
}

# Routes MLflow's app adds by hand rather than from its protobuf services, by endpoint name.
_RULES_BY_ENDPOINT: dict[str, Rule] = {
    "serve_artifacts": Rule("run", "read"),
    "serve_model_version_artifact": Rule("registered_model", "read"),
    "serve_get_metric_history_bulk": Rule("run_ids", "read"),
    "serve_get_metric_history_bulk_interval": Rule("run_ids", "read"),
    "serve_upload_artifact": Rule("run", "update"),
    "_graphql": READ_ANY,
    "_get_server_info": READ_ANY,
}

# Endpoints anyone may call without signing in: the UI's static files and health probes.
PUBLIC_ENDPOINTS = frozenset({"serve_static_file", "health", "version", "static"})


def build_rule_table() -> dict[tuple[str, str], Rule]:
    """(Flask rule, HTTP method) → Rule, from MLflow's own list of its REST endpoints."""
    from mlflow.protos.mlflow_artifacts_pb2 import MlflowArtifactsService
    from mlflow.protos.model_registry_pb2 import ModelRegistryService
    from mlflow.protos.service_pb2 import MlflowService
    from mlflow.server.handlers import get_service_endpoints

    def rule_for(request_class: type) -> Callable[[], None]:
        rule = _RULES_BY_REQUEST.get(request_class.__name__)

        def marker() -> None:  # get_service_endpoints wants a callable per endpoint
            return None

        marker.rule = rule  # type: ignore[attr-defined]
        return marker

    table: dict[tuple[str, str], Rule] = {}
    for service in (MlflowService, ModelRegistryService, MlflowArtifactsService):
        for path, marker, methods in get_service_endpoints(service, rule_for):
            if marker.rule is not None:  # type: ignore[attr-defined]
                for method in methods:
                    table[(path, method)] = marker.rule  # type: ignore[attr-defined]
    return table


class MlflowAuthorizer:
    """Checks a request to an MLflow route against the rule table; records creators."""

    _CACHE_SIZE = 100_000

    def __init__(self, default_permission: str, permission_epoch: AuthEpoch, auth_epoch: AuthEpoch) -> None:
        try:
            self.default = Permission(default_permission.upper())
        except ValueError:
            from trainflow.errors import ConfigError

            raise ConfigError(
                f"TRAINFLOW_DEFAULT_PERMISSION must be one of "
                f"{', '.join(p.value for p in Permission)}, not {default_permission!r}."
            ) from None
        self.rules = build_rule_table()
        # A run never changes experiment, so its experiment id can be remembered for good.
        self._run_experiments: OrderedDict[str, str | None] = OrderedDict()
        # Stored permissions change only when this module grants or moves one, which bumps the
        # shared permission epoch; a user deleted (whose id a new user may get) bumps the auth
        # epoch. A cached answer is trusted only while both are as they were.
        self._permission_epoch = permission_epoch
        self._auth_epoch = auth_epoch
        self._permissions: OrderedDict[tuple[int, str, str], tuple[Permission, int, int]] = OrderedDict()

    def rule_for_request(self) -> Rule:
        url_rule = request.url_rule
        rule = self.rules.get((url_rule.rule, request.method)) if url_rule else None
        if rule is None:
            rule = _RULES_BY_ENDPOINT.get(request.endpoint or "")
        if rule is None:
            # Unknown to this table: reading follows the default, writing is for admins.
            rule = READ_ANY if request.method in ("GET", "HEAD") else Rule("admin", "update")
        return rule

    def authorize(self, principal: Principal) -> None:
        if principal.run_scope is not None:
            self._authorize_job(principal)
            return
        if principal.is_admin:
            return
        rule = self.rule_for_request()
        if rule.target == "create":
            return
        if rule.target == "admin":
            raise PermissionDenied(f"Only an admin may call {request.method} {request.path} here.")
        if rule.target == "any":
            if not self.default.allows(rule.action):
                raise PermissionDenied("You have no permission to read MLflow objects here.")
            return
        for kind, key in self._resources(rule.target):
            permission = self.permission(principal.user_id, kind, key)
            if not permission.allows(rule.action):
                raise PermissionDenied(
                    f"You have {permission.value} on {kind} {key!r}; "
                    f"this needs permission to {rule.action} it."
                )

    def _authorize_job(self, principal: Principal) -> None:
        """A job's token: its own run (and reading its experiment), nothing else."""
        rule = self.rule_for_request()
        denied = PermissionDenied(
            f"A job's token may only use its own run {principal.run_scope}; "
            f"{request.method} {request.path} is outside it."
        )
        if request.endpoint == "_get_server_info":
            return
        if rule.target == "run":
            if _param("run_id", "run_uuid") != principal.run_scope:
                raise denied
        elif rule.target == "run_ids":
            if set(_params("run_ids", "run_id")) - {principal.run_scope}:
                raise denied
        elif rule.target == "experiment" and rule.action == "read":
            if _param("experiment_id") != principal.experiment_scope:
                raise denied
        elif rule.target == "artifact_path":
            path = (request.view_args or {}).get("artifact_path") or request.args.get("path") or ""
            if not path.strip("/").startswith(f"{principal.experiment_scope}/{principal.run_scope}/"):
                raise denied
        else:
            raise denied

    # -- finding the objects a request touches ------------------------------------------------

    def _resources(self, target: str) -> Iterable[tuple[str, str]]:
        if target == "experiment":
            yield "experiment", _param("experiment_id")
        elif target == "experiment_ids":
            for experiment_id in _params("experiment_ids"):
                yield "experiment", experiment_id
        elif target == "experiment_name":
            name = _param("experiment_name")
            experiment_id = _experiment_id_by_name(name)
            if experiment_id is not None:
                yield "experiment", experiment_id
        elif target == "run":
            yield "experiment", self._experiment_of_run(_param("run_id", "run_uuid"))
        elif target == "run_ids":
            for run_id in _params("run_ids", "run_id"):
                yield "experiment", self._experiment_of_run(run_id)
        elif target == "logged_model":
            model_id = (request.view_args or {}).get("model_id") or _param("model_id")
            yield "experiment", _experiment_of_logged_model(model_id)
        elif target == "registered_model":
            yield "registered_model", _param("name")
        elif target == "artifact_path":
            path = (request.view_args or {}).get("artifact_path") or request.args.get("path") or ""
            experiment_id = path.strip("/").split("/", 1)[0]
            if not experiment_id:
                raise PermissionDenied("Artifact paths start with an experiment id.")
            yield "experiment", experiment_id

    def _experiment_of_run(self, run_id: str) -> str:
        if run_id not in self._run_experiments:
            from mlflow.store.tracking.dbmodels.models import SqlRun

            experiment_id = db.session.scalar(select(SqlRun.experiment_id).where(SqlRun.run_uuid == run_id))
            if experiment_id is None:
                # Let MLflow answer its own 404 for a run that does not exist.
                return ""
            self._run_experiments[run_id] = str(experiment_id)
            while len(self._run_experiments) > self._CACHE_SIZE:
                self._run_experiments.popitem(last=False)
        return self._run_experiments[run_id] or ""

    def permission(self, user_id: int, kind: str, key: str) -> Permission:
        """What this user may do to one object (cached; see the class notes)."""
        if kind == "experiment" and key == "":
            return self.default  # no such object: MLflow will say so
        epochs = (self._permission_epoch.current(), self._auth_epoch.current())
        cache_key = (user_id, kind, key)
        cached = self._permissions.get(cache_key)
        if cached is not None and cached[1:] == epochs:
            return cached[0]
        model = ExperimentPermission if kind == "experiment" else RegisteredModelPermission
        column = model.experiment_id if kind == "experiment" else model.name
        stored = db.session.scalar(select(model.permission).where(column == key, model.user_id == user_id))
        permission = Permission(stored) if stored else self.default
        self._permissions[cache_key] = (permission, *epochs)
        while len(self._permissions) > self._CACHE_SIZE:
            self._permissions.popitem(last=False)
        return permission

    # -- after MLflow answered ----------------------------------------------------------------

    def record_creator(self, response: Response, principal: Principal) -> None:
        """Give the creator MANAGE on an experiment or registered model they just created."""
        if response.status_code != 200 or request.method != "POST":
            return
        name = _request_name()
        if name == "CreateExperiment":
            body = response.get_json(silent=True) or {}
            if "experiment_id" in body:
                self.grant(principal.user_id, "experiment", str(body["experiment_id"]), Permission.MANAGE)
        elif name == "CreateRegisteredModel":
            self.grant(principal.user_id, "registered_model", _param("name"), Permission.MANAGE)
        elif name == "RenameRegisteredModel":
            db.session.execute(
                update(RegisteredModelPermission)
                .where(RegisteredModelPermission.name == _param("name"))
                .values(name=_param("new_name"))
            )
            self._commit_change()
        elif name == "DeleteRegisteredModel":
            db.session.execute(
                delete(RegisteredModelPermission).where(RegisteredModelPermission.name == _param("name"))
            )
            self._commit_change()

    def grant(self, user_id: int, kind: str, key: str, permission: Permission) -> None:
        model: Any = ExperimentPermission if kind == "experiment" else RegisteredModelPermission
        column = model.experiment_id if kind == "experiment" else model.name
        row = db.session.scalars(select(model).where(column == key, model.user_id == user_id)).first()
        if row is None:
            fields = {"experiment_id" if kind == "experiment" else "name": key}
            db.session.add(model(user_id=user_id, permission=permission.value, **fields))
        else:
            row.permission = permission.value
        self._commit_change()

    def _commit_change(self) -> None:
        db.session.commit()
        self._permission_epoch.bump()


def _request_name() -> str:
    path = request.path
    for suffix, name in (
        ("/experiments/create", "CreateExperiment"),
        ("/registered-models/create", "CreateRegisteredModel"),
        ("/registered-models/rename", "RenameRegisteredModel"),
        ("/registered-models/delete", "DeleteRegisteredModel"),
    ):
        if path.endswith(suffix):
            return name
    return ""


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True) if request.method != "GET" else None
    return data if isinstance(data, dict) else {}


def _param(*names: str) -> str:
    for name in names:
        value = request.args.get(name) if request.method in ("GET", "DELETE") else None
        if value is None:
            value = _body().get(name)
        if value is None and request.method not in ("GET", "DELETE"):
            value = request.args.get(name)
        if value is not None:
            return _clean(name, str(value))
    raise BadRequest(f"{names[0]} is required.")


def _clean(name: str, value: str) -> str:
    if "\x00" in value:
        raise BadRequest(f"{name} must not contain NUL characters.")
    return value


def _params(*names: str) -> list[str]:
    for name in names:
        values = request.args.getlist(name) if request.method == "GET" else []
        if not values:
            body_value = _body().get(name)
            if isinstance(body_value, list):
                values = [str(v) for v in body_value]
            elif body_value is not None:
                values = [str(body_value)]
        if values:
            return [_clean(name, v) for v in values]
    return []


def _experiment_id_by_name(name: str) -> str | None:
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    experiment_id = db.session.scalar(select(SqlExperiment.experiment_id).where(SqlExperiment.name == name))
    return None if experiment_id is None else str(experiment_id)


def _experiment_of_logged_model(model_id: str) -> str:
    from mlflow.store.tracking.dbmodels.models import SqlLoggedModel

    experiment_id = db.session.scalar(
        select(SqlLoggedModel.experiment_id).where(SqlLoggedModel.model_id == model_id)
    )
    return "" if experiment_id is None else str(experiment_id)


def init_app(app: Flask, settings: Settings, auth_epoch: AuthEpoch) -> None:
    permission_epoch = AuthEpoch(settings.resolved_data_dir / "permission_epoch")
    app.extensions["trainflow.mlflow_authorizer"] = MlflowAuthorizer(
        settings.default_permission, permission_epoch, auth_epoch
    )
