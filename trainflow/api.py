"""Declaring JSON endpoints: one decorator validates the request and documents the route.

The OpenAPI document (:mod:`trainflow.openapi`) is built from the :class:`Operation` each
view carries, and the same pydantic models validate the requests, so the two cannot drift.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ValidationError

from trainflow.errors import BadRequest, UnsupportedMediaType, ValidationFailed


@dataclass(frozen=True)
class Operation:
    """What the OpenAPI document says of one route."""

    method: str
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    form: type[BaseModel] | None = None  # a multipart/form-data body, read by the view itself
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    is_public: bool = False
    description: str = ""
    # Other successful answers, status → when: 202 for a cancel still under way, 204 for a stream
    # with nothing left to send. They carry the ``response`` model, 204 excepted.
    extra_responses: dict[int, str] = field(default_factory=dict)
    # False for what is answered without the database (static pages, this API's document): no 503.
    uses_database: bool = True
    # What a successful answer is when it is not the JSON ``response`` (a stream, a file, a page).
    media_types: tuple[str, ...] = ()


def endpoint(
    bp: Blueprint,
    rule: str,
    method: str,
    *,
    summary: str,
    tag: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    form: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    errors: tuple[int, ...] = (),
    is_public: bool = False,
    description: str = "",
    responses: dict[int, str] | None = None,
    uses_database: bool = True,
    media_types: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` on ``bp``; it gets ``body=``/``query=`` as validated models.

    ``errors`` lists the errors particular to the route; those every route of its kind can
    answer (401 and 429 where one signs in, 400 and 415 where a body is read ...) the OpenAPI
    document adds by itself (:func:`trainflow.openapi.statuses`).
    """
    operation = Operation(
        method=method,
        summary=summary,
        tag=tag,
        body=body,
        query=query,
        form=form,
        response=response,
        status=status,
        errors=errors,
        is_public=is_public,
        description=description,
        extra_responses=dict(responses or {}),
        uses_database=uses_database,
        media_types=media_types,
    )

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def view(**kwargs: Any) -> Any:
            if query is not None:
                kwargs["query"] = parse_query(query)
            if body is not None:
                kwargs["body"] = parse_body(body)
            return fn(**kwargs)

        view.operation = operation  # type: ignore[attr-defined]
        bp.add_url_rule(rule, f"{fn.__name__}", view, methods=[method])
        return view

    return decorator


def operation_of(view: Callable[..., Any] | None) -> Operation | None:
    return getattr(view, "operation", None)


def parse_body(model: type[BaseModel]) -> BaseModel:
    raw = request.get_data(cache=True)
    if not raw.strip():
        data: Any = {}
    else:
        if request.mimetype != "application/json":
            raise UnsupportedMediaType(
                f"Send the body as JSON with Content-Type: application/json, "
                f"not {request.mimetype or 'no type'}."
            )
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"The body is not valid JSON: {e}.") from None
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    return validate(model, data)


def parse_query(model: type[BaseModel]) -> BaseModel:
    return validate(model, request.args.to_dict())


def validate(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    nul_fields = sorted(_fields_with_nul(data))
    if nul_fields:
        # PostgreSQL cannot store NUL in text, and no legitimate field holds one.
        fields = [{"field": name, "message": "must not contain NUL characters"} for name in nul_fields]
        raise ValidationFailed(
            f"Invalid request: {', '.join(nul_fields)}: must not contain NUL characters.", fields=fields
        )
    try:
        return model.model_validate(data)
    except ValidationError as e:
        fields = _field_errors(e.errors(include_url=False))
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise ValidationFailed(f"Invalid request: {summary}.", fields=fields) from None


def _fields_with_nul(value: Any, path: str = "") -> list[str]:
    if isinstance(value, str):
        return [path or "body"] if "\x00" in value else []
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _fields_with_nul(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [
            f for i, v in enumerate(value) for f in _fields_with_nul(v, f"{path}.{i}" if path else str(i))
        ]
    return []


# pydantic tags each member of a union of these types in the error's location ("params.lr.str").
_SCALAR_TAGS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}


def _field_errors(errors: list[Any]) -> list[dict[str, str]]:
    """One entry per field. A value that fits no member of a union of scalars (``str | int |
    float | bool``) gives one error per member; those become one, naming what it may be."""
    located = [[str(part) for part in err["loc"]] for err in errors]
    tagged = Counter(".".join(loc[:-1]) for loc in located if len(loc) > 1 and loc[-1] in _SCALAR_TAGS)
    fields: list[dict[str, str]] = []
    unions: dict[str, list[str]] = {}
    for err, loc in zip(errors, located, strict=True):
        field = ".".join(loc[:-1])
        if len(loc) > 1 and loc[-1] in _SCALAR_TAGS and tagged[field] > 1:
            if field not in unions:
                unions[field] = []
                fields.append({"field": field, "message": ""})
            unions[field].append(_SCALAR_TAGS[loc[-1]])
            continue
        fields.append({"field": ".".join(loc) or "body", "message": _message(err)})
    for entry in fields:
        kinds = unions.get(entry["field"])
        if kinds and not entry["message"]:
            entry["message"] = f"must be {', '.join(kinds[:-1])} or {kinds[-1]}"
    return fields


def _message(err: Any) -> str:
    if err["type"] == "missing":
        return "is required"
    if err["type"] == "extra_forbidden":
        return "is not a known field"
    message: str = err["msg"]
    # pydantic prefixes messages from our own validators with "Value error, ".
    return message.removeprefix("Value error, ")


def json_response(payload: BaseModel | dict[str, Any], status: int = 200) -> Response:
    data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    response = jsonify(data)
    response.status_code = status
    return response
