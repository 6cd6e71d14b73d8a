"""The OpenAPI 3.1 document, built from the routes' own :class:`~trainflow.api.Operation`s."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from flask import Flask
from pydantic import BaseModel

from trainflow import __version__
from trainflow.api import operation_of

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
        success: dict[str, Any] = {"description": HTTPStatus(operation.status).phrase}
        if operation.response is not None:
            success["content"] = {"application/json": {"schema": _schema(operation.response, schemas)}}
        op["responses"][str(operation.status)] = success
        for status in operation.errors:
            op["responses"][str(status)] = {
                "description": HTTPStatus(status).phrase,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
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


def _schema(model: type[BaseModel], schemas: dict[str, Any], inline: bool = False) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    if inline:
        return schema
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}
