"""The OpenAPI 3.1 document, built from the routes' own :class:`~trainflow.api.Operation`s."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from flask import Flask
from pydantic import BaseModel

from trainflow import __version__
from trainflow.api import Operation, operation_of

_CONVERTER = re.compile(r"<(?:(?P<conv>[a-z]+):)?(?P<name>\w+)>")
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "array", "items": {"type": "object"}},
            },
        }
    },
}


# What each error status means, wherever it is declared.
ERRORS = {
    400: "Bad input; the message (and `fields`, for a body or query that breaks its schema) names "
    "what to change.",
    401: "No credentials, or wrong ones: sign in with `Authorization: Basic` or `Bearer`.",
    403: "Not allowed to you (a job's token may only reach its own MLflow run).",
    404: "No such object, or none of yours (an id must be a whole number).",
    408: "The request (its headers or body) stopped arriving for TRAINFLOW_READ_TIMEOUT_SECONDS; "
    "nothing of it was kept.",
    409: "Conflicts with the current state (see the message).",
    413: "The body is too large.",
    414: "The request line is longer than 8 KB; send long values in a body.",
    415: "The body is not of the declared Content-Type.",
    429: "Too many failed password checks from this client (TRAINFLOW_LOGIN_ATTEMPTS, "
    "TRAINFLOW_LOGIN_ADDRESS_BURST), or the password-hashing queue is full "
    "(TRAINFLOW_PASSWORD_HASH_QUEUE); `Retry-After` says when to try again.",
    431: "The request's header fields are too large (over 100, a line over 64 KB, or 64 KB in all).",
    503: "The server is busy (no database connection came free in time), or its database is not "
    "answering; `Retry-After` says when to try again.",
    507: "The disk holding the server's data is full, or below TRAINFLOW_MIN_FREE_MB; what was "
    "stored before is kept.",
}
# Answered by the server for any request, before a route runs (trainflow.server).
_SERVER_ERRORS = (408, 414, 431)
_HEADERS = {
    401: {"WWW-Authenticate": "`Basic` (a browser then asks), or `Bearer` for a token that failed."},
    429: {"Retry-After": "Seconds to wait before trying again."},
    503: {"Retry-After": "Seconds to wait before trying again."},
}


def statuses(operation: Operation, rule: str) -> list[int]:
    """Every error status the route can answer: its own, and those of every route of its kind."""
    found = set(operation.errors) | set(_SERVER_ERRORS)
    if not operation.is_public:
        # The sign-in hook: no or wrong credentials; a job's token; a password check that
        # the failed-login limit or a full hashing queue refuses.
        found |= {401, 403, 429}
    if operation.body is not None or operation.query is not None:
        found.add(400)
    if operation.body is not None:
        found.add(415)
    if any(m.group("conv") not in ("path", "page") for m in _CONVERTER.finditer(rule)):
        # No such object, or a segment that is not what the route takes (a <path:...> takes
        # any text but a newline, the dashboard's <page:...> any at all).
        found.add(404)
    if operation.uses_database:
        found.add(503)
        if operation.method != "GET":
            found.add(507)
    return sorted(found)


def build_spec(app: Flask) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        operation = operation_of(app.view_functions.get(rule.endpoint))
        if operation is None:
            continue
        path = _CONVERTER.sub(r"{\g<name>}", rule.rule)
        op: dict[str, Any] = {
            "operationId": rule.endpoint.replace(".", "_"),
            "summary": operation.summary,
            "tags": [operation.tag],
            "responses": {},
        }
        if operation.description:
            op["description"] = operation.description
        parameters = [
            {
                "name": m.group("name"),
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if m.group("conv") == "int" else "string"},
            }
            for m in _CONVERTER.finditer(rule.rule)
        ]
        if operation.query is not None:
            query_schema = _schema(operation.query, schemas, inline=True)
            for name, prop in query_schema.get("properties", {}).items():
                parameters.append(
                    {
                        "name": name,
                        "in": "query",
                        "required": name in query_schema.get("required", []),
                        "schema": prop,
                    }
                )
        if parameters:
            op["parameters"] = parameters
        if operation.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(operation.body, schemas)}},
            }
        if operation.form is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"multipart/form-data": {"schema": _schema(operation.form, schemas)}},
            }
        successes = {operation.status: HTTPStatus(operation.status).phrase, **operation.extra_responses}
        for status, description in successes.items():
            success: dict[str, Any] = {"description": description}
            if operation.response is not None and status != 204:
                success["content"] = {"application/json": {"schema": _schema(operation.response, schemas)}}
            elif operation.media_types and status != 204:
                media_types = operation.media_types
                success["content"] = {media: {"schema": _raw_schema(media)} for media in media_types}
            op["responses"][str(status)] = success
        for status in statuses(operation, rule.rule):
            error: dict[str, Any] = {
                "description": ERRORS.get(status, HTTPStatus(status).phrase),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            if status in _HEADERS:
                error["headers"] = {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in _HEADERS[status].items()
                }
            op["responses"][str(status)] = error
        if not operation.is_public:
            op["security"] = [{"bearer": []}, {"basic": []}]
        paths.setdefault(path, {})[operation.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trainflow",
            "version": __version__,
            "description": "trainflow's own API. The MLflow REST API is served on the same port "
            "under /api/2.0/mlflow/ and /ajax-api/2.0/mlflow/, with the same sign-in.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
    }


def _raw_schema(media_type: str) -> dict[str, str]:
    """The schema of an answer that is no pydantic model: a stream's events are JSON objects."""
    if media_type in ("application/json", "application/x-ndjson", "text/event-stream"):
        return {"type": "object"}
    return {"type": "string"}


def _schema(model: type[BaseModel], schemas: dict[str, Any], inline: bool = False) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    if inline:
        return schema
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}
