"""MLflow's GraphQL endpoint, checked field by field as the query runs.

MLflow's ``_graphql`` handler asks ``_get_graphql_auth_middleware`` for middleware (the hook its
own basic-auth app fills). trainflow fills it: each top-level field's ``input`` is parsed into
the protobuf message its resolver builds (the same ``vars(input)`` and ``parse_dict``) and
checked with the REST rule for that message, so a query reaches exactly what the REST API would
let the caller reach. A field this module does not know is refused.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, has_request_context

from trainflow.errors import PermissionDenied
from trainflow.tracking.permissions.parsing import ParsedRequest, _refuse_message_aliases
from trainflow.tracking.permissions.rules import RULES_BY_MESSAGE, Target

_WRAPPED_MARKER = "_trainflow_graphql"

# Top-level field → the request message its resolver parses ``input`` into.
_FIELDS = {
    "mlflowGetExperiment": "mlflow.protos.service_pb2.GetExperiment",
    "mlflowGetMetricHistoryBulkInterval": "mlflow.protos.service_pb2.GetMetricHistoryBulkInterval",
    "mlflowGetRun": "mlflow.protos.service_pb2.GetRun",
    "mlflowListArtifacts": "mlflow.protos.service_pb2.ListArtifacts",
    "mlflowSearchModelVersions": "mlflow.protos.model_registry_pb2.SearchModelVersions",
    "mlflowSearchDatasets": "mlflow.protos.service_pb2.SearchDatasets",
    "mlflowSearchRuns": "mlflow.protos.service_pb2.SearchRuns",
}
_HARMLESS = frozenset({"test", "testMutation", "__typename", "__schema", "__type"})


def _message_class(dotted: str) -> type:
    import importlib

    module, _, name = dotted.rpartition(".")
    message_class: type = getattr(importlib.import_module(module), name)
    return message_class


class PermissionMiddleware:
    """Graphene middleware: refuses a field the caller may not read; filters model versions."""

    def __init__(self, principal: Any) -> None:
        self.principal = principal
        self.authorizer = current_app.extensions["trainflow.mlflow_authorizer"]

    def resolve(self, next_: Any, root: Any, info: Any, **args: Any) -> Any:
        if root is None:
            self._check_top_level(info.field_name, args)
            return next_(root, info, **args)
        if info.field_name == "modelVersions":
            versions = next_(root, info, **args)
            return [v for v in versions or [] if self._may_read_model(getattr(v, "name", ""))]
        return next_(root, info, **args)

    def _check_top_level(self, field_name: str, args: dict[str, Any]) -> None:
        from mlflow.utils.proto_json_utils import parse_dict

        if field_name in _HARMLESS:
            return
        dotted = _FIELDS.get(field_name)
        if dotted is None:
            raise PermissionDenied(f"The GraphQL field {field_name} is not available here.")
        message_class = _message_class(dotted)
        name = message_class.DESCRIPTOR.full_name  # type: ignore[attr-defined]
        if name == "mlflow.SearchModelVersions":
            if not self.authorizer.default.allows("read"):
                raise PermissionDenied("Searching model versions needs the default permission to read.")
            return
        raw = args.get("input")
        message = message_class()
        parse_dict(vars(raw) if raw is not None else {}, message)
        _refuse_message_aliases(message, {})
        for target in RULES_BY_MESSAGE[name].targets(ParsedRequest(message=message)):
            self.authorizer._check(self.principal, target)

    def _may_read_model(self, name: str) -> bool:
        return bool(self.authorizer.may_read(self.principal, Target("registered_model", name, "read")))


def install() -> None:
    """Give MLflow's GraphQL handler trainflow's middleware for non-admin callers (once per process)."""
    from mlflow.server import handlers

    if getattr(handlers._get_graphql_auth_middleware, _WRAPPED_MARKER, False):
        return

    def middleware() -> list[Any]:
        principal = g.get("principal") if has_request_context() else None
        if principal is None or (principal.is_admin and principal.run_scope is None):
            return []
        return [PermissionMiddleware(principal)]

    setattr(middleware, _WRAPPED_MARKER, True)
    handlers._get_graphql_auth_middleware = middleware
