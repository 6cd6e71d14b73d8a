"""Every route of MLflow's Flask app maps to a permission rule reading what its handler reads (issue 10).

A new MLflow endpoint fails these tests until someone decides who may call it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.routing import Rule

from tests.tracking.conftest import Mlflow
from trainflow.api import operation_of
from trainflow.tracking.permissions import PUBLIC_ENDPOINTS

# Endpoints that do real work even on empty input (demo data, LLM calls): not called as admin.
# Gateway discovery fetches a model catalogue from the internet, which tests cannot reach.
_NOT_CALLED_AS_ADMIN = {
    "_generate_demo",
    "_delete_demo",
    "serve_gateway_proxy",
    "_list_supported_providers",
    "_list_supported_models",
    "_get_provider_config",
}


def mlflow_routes(app: Flask) -> Iterator[tuple[Rule, str]]:
    """Each (rule, method) MLflow's app serves, trainflow's own routes and public files left out."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        view = app.view_functions[rule.endpoint]
        if operation_of(view) is not None or rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        if rule.endpoint.endswith(".static"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield rule, method


def _authorizer(app: Flask) -> Any:
    return app.extensions["trainflow.mlflow_authorizer"]


def test_every_mlflow_route_is_mapped_to_a_rule(app):
    routes = list(mlflow_routes(app))
    unmapped = [
        f"{method} {rule.rule} ({rule.endpoint})"
        for rule, method in routes
        if _authorizer(app).route_for(rule.rule, rule.endpoint, method) is None
    ]
    assert unmapped == []
    assert len(routes) >= 400  # the walk saw MLflow's whole app, both /api and /ajax-api


def _parsed_classes(function: Any, depth: int = 0) -> set[str]:
    """The request classes a handler passes to ``_get_request_message`` (through one wrapper)."""
    function = inspect.unwrap(function)
    source = inspect.getsource(function)
    names = re.findall(r"_get_request_message\(\s*(\w+)\(", source)
    found = {function.__globals__[name].DESCRIPTOR.full_name for name in names}
    if not found and depth == 0:
        for callee in re.findall(r"return (\w+)\(", source):
            target = function.__globals__.get(callee)
            if inspect.isfunction(target):
                found |= _parsed_classes(target, depth + 1)
    return found


def test_the_check_parses_the_message_each_handler_parses(app):
    """The check's one parse is the handler's: same protobuf class, or none when the handler reads none."""
    wrong = []
    for rule, method in mlflow_routes(app):
        route = _authorizer(app).route_for(rule.rule, rule.endpoint, method)
        handler_reads = _parsed_classes(app.view_functions[rule.endpoint])
        check_reads = {route.reader.message.DESCRIPTOR.full_name} if route.reader.message else set()
        if handler_reads != check_reads and not (route.rule.access == "admin" and not check_reads):
            wrong.append(f"{method} {rule.rule}: handler {handler_reads}, check {check_reads}")
    assert wrong == []


_BAD_INPUTS: list[dict[str, Any]] = [
    {"json": {}},
    {"query": {"junk": "1"}, "json": {"name": "\x00"}},
    {"json": [1, 2]},
    {"data": '"{\\"double\\": "', "content_type": "application/json"},
    {"json": {"experiment_id": {"x": 1}, "run_id": [1], "name": 5, "max_results": "many"}},
]


def _sample_url(rule: Rule) -> str:
    url = re.sub(r"<path:[a-z_]+>", "1/no-such-run/artifacts/file.txt", rule.rule)
    return re.sub(r"<[a-z_:]+>", "no-such-id", url)


@pytest.mark.parametrize("who", ["user", "admin"])
def test_every_route_answers_bad_input_with_a_4xx(app, client, alice, admin, who):
    """An empty or junk request to any MLflow route is refused cleanly: never a 500, never a crash."""
    caller = Mlflow(client, (admin if who == "admin" else alice).basic)
    failures = []
    for rule, method in mlflow_routes(app):
        if who == "admin" and rule.endpoint in _NOT_CALLED_AS_ADMIN:
            continue
        url = _sample_url(rule)
        for kwargs in _BAD_INPUTS:
            response = caller.call(method, url, **kwargs)
            # Workspaces are off: MLflow says so with a 503 (only admins get that far).
            is_disabled = response.status_code == 503 and "/workspaces" in url and who == "admin"
            # The presigned download: MLflow says the local artifact store cannot, with a 501.
            is_unsupported = response.status_code == 501 and "/presigned/" in url
            if response.status_code >= 500 and not (is_disabled or is_unsupported):
                body = response.get_data(True)[:200]
                failures.append(f"{method} {url} {kwargs}: {response.status_code} {body}")
            response.close()  # the UI's index.html is a file streamed from disk
    assert not failures, "\n".join(failures)
