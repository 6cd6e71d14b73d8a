"""The check before MLflow's handler runs, and the bookkeeping after it answered.

A user holds MANAGE on what they created, the configured default permission on everything
else, and admins may do anything. Runs, logged models, traces, datasets, issues and label
schemas are decided by their experiment; model versions, aliases and tags by their registered
model; artifact paths by the run (or logged model, or trace) the path names. A job's token
reaches its own run, its artifacts and the logged models made from it, and nothing else.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from flask import Response, g, request
from sqlalchemy import Row, delete, select, update

from trainflow.accounts.credentials import AuthEpoch, Principal
from trainflow.db import db
from trainflow.errors import PermissionDenied
from trainflow.tracking.permissions.models import ExperimentPermission, Permission, RegisteredModelPermission
from trainflow.tracking.permissions.parsing import MlflowRequestError, ParsedRequest, parse_request
from trainflow.tracking.permissions.rules import Route, Target, build_routes

_SEARCH_KEY = "trainflow_mlflow_search"
_JOB_SEARCH_KEY = "trainflow_mlflow_job_search"


class MlflowAuthorizer:
    """Checks a request to an MLflow route against the rule tables; records creators."""

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
        self.routes_by_rule, self.routes_by_endpoint = build_routes()
        # A run never changes experiment, so its experiment id can be remembered for good.
        self._run_experiments: OrderedDict[str, str] = OrderedDict()
        # Stored permissions change only when this module grants or moves one, which bumps the
        # shared permission epoch; a user deleted (whose id a new user may get) bumps the auth
        # epoch. A cached answer is trusted only while both are as they were.
        self._permission_epoch = permission_epoch
        self._auth_epoch = auth_epoch
        self._permissions: OrderedDict[tuple[int, str, str], tuple[Permission, int, int]] = OrderedDict()

    # -- which route ---------------------------------------------------------------------------

    def route_for(self, rule: str, endpoint: str, method: str) -> Route | None:
        """The route a (Flask rule, endpoint, HTTP method) maps to; None when no table knows it."""
        method = "GET" if method == "HEAD" else method
        return self.routes_by_rule.get((rule, method)) or self.routes_by_endpoint.get(endpoint)

    def route_for_request(self) -> Route | None:
        rule = request.url_rule.rule if request.url_rule else ""
        return self.route_for(rule, request.endpoint or "", request.method)

    # -- before the handler ----------------------------------------------------------------------

    def authorize(self, principal: Principal) -> None:
        if request.method == "OPTIONS":
            return  # answered by Flask itself; no handler runs
        route = self.route_for_request()
        if route is None:
            # A route no table knows (a new MLflow endpoint): admins only until someone maps it.
            if principal.is_admin and principal.run_scope is None:
                return
            raise PermissionDenied(f"Only an admin may call {request.method} {request.path} here.")
        parsed = parse_request(route.reader)
        if principal.run_scope is not None:
            self._authorize_job(principal, route, parsed)
            return
        # Locating the objects refuses a request that lacks their ids (400), admins' too.
        targets = route.rule.targets(parsed)
        if principal.is_admin:
            return
        access = route.rule.access
        if access in ("create", "signed_in"):
            if route.name == "mlflow.CreateExperiment" and parsed.scalar("artifact_location"):
                # Its runs' artifacts would go wherever it says, another experiment's folder included.
                raise PermissionDenied("Only an admin may choose an experiment's artifact_location.")
            return
        if access == "admin":
            raise PermissionDenied(f"Only an admin may call {request.method} {request.path}.")
        if access == "read_any":
            self._check(principal, Target("any", "", "read"))
            return
        if access == "search":
            g.setdefault(_SEARCH_KEY, route.rule.search)
            return
        if access == "graphql":
            return  # checked field by field as the query runs (see graphql.py)
        # A route that names no object here (a search over no experiment) reads at most what
        # the default permission allows.
        for target in targets or [Target("any", "", "read")]:
            self._check(principal, target)

    def _check(self, principal: Principal, target: Target) -> None:
        for kind, key in self.owners(target):
            if kind == "admin":
                raise PermissionDenied(f"Only an admin may use {key!r} here.")
            permission = self.default if kind == "any" else self.permission(principal.user_id, kind, key)
            if not permission.allows(target.action):
                what = "MLflow objects here" if kind == "any" else f"{kind.replace('_', ' ')} {key!r}"
                raise PermissionDenied(
                    f"You have {permission.value} on {what}; this needs permission to {target.action} it."
                )

    def may_read(self, principal: Principal, target: Target) -> bool:
        try:
            self._check(principal, target)
        except PermissionDenied:
            return False
        return True

    def owners(self, target: Target) -> list[tuple[str, str]]:
        """The (experiment | registered_model | any, key) pairs whose permission decides ``target``."""
        kind, key = target.kind, target.key
        if kind in ("experiment", "registered_model", "any"):
            return [(kind, key)]
        if kind == "admin":
            return [("admin", key)]
        if kind == "experiment_name":
            experiment_id = _experiment_id_by_name(key)
            return [] if experiment_id is None else [("experiment", experiment_id)]
        if kind == "run":
            return [("experiment", self._experiment_of_run(key))]
        if kind == "logged_model":
            return [("experiment", _logged_model(key)[0])]
        if kind == "trace":
            return [("experiment", _experiment_of_trace(key))]
        if kind == "dataset":
            return [("experiment", e) for e in _experiments_of_dataset(key)] or [("experiment", "")]
        if kind in ("issue", "label_schema", "review_queue"):
            return [("experiment", _experiment_of_store_object(kind, key))]
        if kind == "artifact_path":
            return self.owners(self.artifact_owner(key, target.action))
        raise AssertionError(f"unknown target kind {kind}")

    def artifact_owner(self, path: str, action: str) -> Target:
        """The run, logged model or trace an artifact path belongs to.

        Paths under the artifact proxy are ``<experiment id>/<run id>/artifacts/...``,
        ``<experiment id>/models/<model id>/artifacts/...`` and
        ``<experiment id>/traces/<trace id>/artifacts/...``; a path that names none of these, or
        names one in another experiment, is refused.
        """
        parts = path.strip("/").split("/") if path.strip("/") else []
        if any(part in ("", ".", "..") or "\\" in part for part in parts):
            raise MlflowRequestError(f"The artifact path {path!r} is not a plain relative path.")
        refused = PermissionDenied(
            f"The artifact path {path!r} names no run, logged model or trace of its experiment; "
            "artifact paths look like <experiment id>/<run id>/artifacts/<file>."
        )
        if not parts:
            raise refused
        experiment_id = parts[0]
        if not experiment_id.isdigit():  # not an experiment's folder (scripts' shared copies live there)
            raise refused
        if len(parts) == 1:
            return Target("experiment", experiment_id, action)
        if parts[1] in ("models", "traces") and len(parts) >= 3:
            kind = "logged_model" if parts[1] == "models" else "trace"
            owner = _logged_model(parts[2])[0] if kind == "logged_model" else _experiment_of_trace(parts[2])
            if owner != experiment_id:
                raise refused
            return Target(kind, parts[2], action)
        if self._experiment_of_run(parts[1]) != experiment_id:
            raise refused
        return Target("run", parts[1], action)

    # -- a job's token ---------------------------------------------------------------------------

    def _authorize_job(self, principal: Principal, route: Route, parsed: ParsedRequest) -> None:
        """A job's token: its own run, its artifacts and the logged models made from it."""
        if route.rule.access == "signed_in":
            return
        denied = PermissionDenied(
            f"A job's token may only use its own run {principal.run_scope}; "
            f"{request.method} {request.path} is outside it."
        )
        targets = route.rule.targets(parsed) if route.rule.access == "objects" else []
        if not targets:
            raise denied
        for target in targets:
            if not self._job_may(principal, route, parsed, target):
                raise denied

    def _job_may(self, principal: Principal, route: Route, parsed: ParsedRequest, target: Target) -> bool:
        own_run, own_experiment = principal.run_scope, principal.experiment_scope
        if target.action not in ("read", "update"):
            return False
        if target.kind == "run":
            return target.key == own_run
        if target.kind == "experiment":
            if target.key != own_experiment:
                return False
            # A logged model made by the job's run lives in its experiment (mlflow.log_model).
            creates_own_model = (
                route.name == "mlflow.CreateLoggedModel" and parsed.scalar("source_run_id") == own_run
            )
            # Reading its experiment's own record, not searching its other runs. The client's
            # list_artifacts looks for logged models made by the run: that search is answered
            # with the job's own models only (see _filter_job_search).
            reads_experiment = target.action == "read" and route.name in (
                "mlflow.GetExperiment",
                "mlflow.SearchLoggedModels",
            )
            if route.name == "mlflow.SearchLoggedModels":
                g.setdefault(_JOB_SEARCH_KEY, True)
            return reads_experiment or creates_own_model
        if target.kind == "logged_model":
            return _logged_model(target.key) == (own_experiment, own_run)
        if target.kind == "artifact_path":
            try:
                owner = self.artifact_owner(target.key, target.action)
            except PermissionDenied:
                return False
            return owner.kind in ("run", "logged_model") and self._job_may(principal, route, parsed, owner)
        return False

    # -- looking objects up ----------------------------------------------------------------------

    def _experiment_of_run(self, run_id: str) -> str:
        cached = self._run_experiments.get(run_id)
        if cached is not None:
            return cached
        from mlflow.store.tracking.dbmodels.models import SqlRun

        experiment_id = db.session.scalar(select(SqlRun.experiment_id).where(SqlRun.run_uuid == run_id))
        if experiment_id is None:
            return ""  # no such run: MLflow answers its own 404 where the permission allows
        self._run_experiments[run_id] = str(experiment_id)
        while len(self._run_experiments) > self._CACHE_SIZE:
            self._run_experiments.popitem(last=False)
        return str(experiment_id)

    def permission(self, user_id: int, kind: str, key: str) -> Permission:
        """What this user may do to one object (cached; see the class notes)."""
        if kind == "admin":
            return Permission.NO_PERMISSIONS
        if key == "":
            return self.default  # no such object: MLflow will say so
        epochs = (self._permission_epoch.current(), self._auth_epoch.current())
        cache_key = (user_id, kind, key)
        cached = self._permissions.get(cache_key)
        if cached is not None and cached[1:] == epochs:
            return cached[0]
        model: Any = ExperimentPermission if kind == "experiment" else RegisteredModelPermission
        column = model.experiment_id if kind == "experiment" else model.name
        stored = db.session.scalar(select(model.permission).where(column == key, model.user_id == user_id))
        permission = Permission(stored) if stored else self.default
        self._permissions[cache_key] = (permission, *epochs)
        while len(self._permissions) > self._CACHE_SIZE:
            self._permissions.popitem(last=False)
        return permission

    # -- after MLflow answered -----------------------------------------------------------------

    def record_creator(self, response: Response, principal: Principal) -> None:
        """Give the creator MANAGE on what they just created; filter searches to what they may read."""
        from trainflow.tracking.permissions.parsing import current

        parsed = current()
        if response.status_code != 200 or parsed is None:
            return
        if g.get(_JOB_SEARCH_KEY):
            self._filter_job_search(response, principal)
            return
        search = g.get(_SEARCH_KEY)
        if search is not None:
            self._filter_search(response, principal, search)
            return
        message = parsed.message
        name = message.DESCRIPTOR.full_name if message is not None else ""
        if name == "mlflow.CreateExperiment":
            body = response.get_json(silent=True) or {}
            if "experiment_id" in body:
                self.grant(principal.user_id, "experiment", str(body["experiment_id"]), Permission.MANAGE)
        elif name == "mlflow.CreateRegisteredModel":
            self.grant(principal.user_id, "registered_model", parsed.scalar("name"), Permission.MANAGE)
        elif name == "mlflow.RenameRegisteredModel":
            db.session.execute(
                update(RegisteredModelPermission)
                .where(RegisteredModelPermission.name == parsed.scalar("name"))
                .values(name=parsed.scalar("new_name"))
            )
            self._commit_change()
        elif name == "mlflow.DeleteRegisteredModel":
            db.session.execute(
                delete(RegisteredModelPermission).where(
                    RegisteredModelPermission.name == parsed.scalar("name")
                )
            )
            self._commit_change()

    def _filter_search(self, response: Response, principal: Principal, search: tuple[str, str, str]) -> None:
        """Under a default that does not allow reading, a search lists only what the caller may read.

        A page may then hold fewer items than asked for; its page token still leads on.
        """
        if principal.is_admin or self.default.allows("read") or response.is_streamed:
            return
        list_key, id_key, kind = search
        body = response.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get(list_key), list):
            return
        body[list_key] = [
            item
            for item in body[list_key]
            if isinstance(item, dict)
            and self.may_read(principal, Target(kind, str(item.get(id_key, "")), "read"))
        ]
        response.set_data(json.dumps(body))

    def _filter_job_search(self, response: Response, principal: Principal) -> None:
        """A job's search for logged models answers with those made by its own run, no others."""
        body = response.get_json(silent=True)
        if not isinstance(body, dict):
            response.set_data(json.dumps({}))
            return
        body["models"] = [
            model
            for model in body.get("models") or []
            if isinstance(model, dict)
            and (model.get("info") or {}).get("source_run_id") == principal.run_scope
        ]
        response.set_data(json.dumps(body))

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


def _experiment_id_by_name(name: str) -> str | None:
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    experiment_id = db.session.scalar(select(SqlExperiment.experiment_id).where(SqlExperiment.name == name))
    return None if experiment_id is None else str(experiment_id)


def _logged_model(model_id: str) -> tuple[str, str | None]:
    """A logged model's experiment id and source run ("" and None when there is no such model)."""
    from mlflow.store.tracking.dbmodels.models import SqlLoggedModel

    row: Row[Any, Any] | None = db.session.execute(
        select(SqlLoggedModel.experiment_id, SqlLoggedModel.source_run_id).where(
            SqlLoggedModel.model_id == model_id
        )
    ).first()
    return ("", None) if row is None else (str(row[0]), row[1])


def _experiment_of_trace(trace_id: str) -> str:
    from mlflow.store.tracking.dbmodels.models import SqlTraceInfo

    experiment_id = db.session.scalar(
        select(SqlTraceInfo.experiment_id).where(SqlTraceInfo.request_id == trace_id)
    )
    return "" if experiment_id is None else str(experiment_id)


def _experiments_of_dataset(dataset_id: str) -> list[str]:
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_tracking_store

    try:
        return [str(e) for e in _get_tracking_store().get_dataset_experiment_ids(dataset_id)]
    except MlflowException:
        return []


def _experiment_of_store_object(kind: str, key: str) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_tracking_store

    store = _get_tracking_store()
    try:
        getter = {
            "issue": store.get_issue,
            "label_schema": store.get_label_schema,
            "review_queue": store.get_review_queue,
        }[kind]
        found = getter(key)
    except (MlflowException, NotImplementedError):
        return ""
    return str(getattr(found, "experiment_id", "") or "")
