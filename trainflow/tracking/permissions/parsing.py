"""One parse of an MLflow request, shared by the permission check and MLflow's own handler.

The check must decide on exactly the values the handler acts on. So the request is parsed
once, before the check, with MLflow's own ``_get_request_message`` (query arguments for a GET
that has some, the JSON body otherwise, whatever the Content-Type says), and the parsed message
is kept on ``flask.g``. MLflow's ``handlers._get_request_message`` is wrapped so that the
handler, when it asks for its message, gets a copy of that very message: check and action
cannot read the request two ways.

A request that names one thing in two places that could disagree (a query argument and a
body field, ``run_id`` and ``run_uuid``, ``experiment_id`` and ``experimentId``, a path segment
and a body field, a query argument given twice) is refused with 400 before anything is
checked, even where the two agree would be harmless: the client has to say it once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import g, has_request_context, request

from trainflow.errors import BadRequest, TrainflowError, error_response

if TYPE_CHECKING:
    from flask import Flask, Response
    from google.protobuf.message import Message

_G_KEY = "trainflow_mlflow_request"
_WRAPPED_MARKER = "_trainflow_shared_parse"


class MlflowRequestError(BadRequest):
    """A request refused before MLflow's handler ran; keeps MLflow's ``error_code`` for its client."""

    code = "invalid_parameter_value"

    def __init__(self, message: str, status: int = 400, mlflow_code: str = "INVALID_PARAMETER_VALUE") -> None:
        super().__init__(message)
        self.status = status
        self.mlflow_code = mlflow_code


def render_request_error(e: MlflowRequestError) -> Response:
    response = error_response(e.status, e.code, str(e))
    body = response.get_json()
    body["error_code"] = e.mlflow_code
    response.set_data(json.dumps(body))
    return response


class ParsedAsAnotherMessage(TrainflowError):
    """MLflow's handler asked for another message than the one the check decided on (a table bug)."""


@dataclass(frozen=True)
class Reader:
    """How MLflow's handler for one route reads its request.

    ``message``: the protobuf request class it parses with ``_get_request_message``;
    ``body``: it reads a JSON object without protobuf; ``args``: the query arguments it reads
    by hand (``repeated`` among them may be given more than once); ``same``: groups of query
    arguments the handler treats as one value (``run_id`` or ``run_uuid``).
    """

    message: type | None = None
    body: bool = False
    graphql: bool = False
    args: tuple[str, ...] = ()
    repeated: tuple[str, ...] = ()
    same: tuple[tuple[str, ...], ...] = ()


@dataclass
class ParsedRequest:
    """What the handler will act on: its message (or JSON object), query arguments and path values."""

    message: Message | None = None
    body: Mapping[str, Any] = field(default_factory=dict)
    args: Mapping[str, str] = field(default_factory=dict)
    view_args: Mapping[str, str] = field(default_factory=dict)

    def scalar(self, name: str) -> str:
        """The one value of ``name``: from the path, the parsed message, the body or the query."""
        if name in self.view_args:
            return str(self.view_args[name])
        if self.message is not None:
            if name in self.message.DESCRIPTOR.fields_by_name:
                value = getattr(self.message, name)
                return "" if isinstance(value, (list, tuple)) or not _is_scalar(value) else str(value)
            return ""
        if name in self.body:
            value = self.body[name]
            return "" if value is None or isinstance(value, (dict, list)) else str(value)
        return str(self.args.get(name, ""))

    def many(self, name: str) -> list[str]:
        """Every value of a repeated field ``name``."""
        if self.message is not None:
            if name not in self.message.DESCRIPTOR.fields_by_name:
                return []
            value = getattr(self.message, name)
            return [str(v) for v in value] if not _is_scalar(value) else ([str(value)] if value else [])
        if name in self.body:
            value = self.body[name]
            if isinstance(value, list):
                return [str(v) for v in value]
            return [] if value is None else [str(value)]
        getlist = getattr(self.args, "getlist", None)
        return list(getlist(name)) if getlist is not None else []


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float, bool, bytes))


def current() -> ParsedRequest | None:
    return g.get(_G_KEY) if has_request_context() else None


def parse_request(reader: Reader) -> ParsedRequest:
    """Parse the current request as the handler will, refusing aliased names; remember it on ``g``."""
    view_args = {k: str(v) for k, v in (request.view_args or {}).items()}
    _refuse_nul(view_args.items(), "the URL path")
    _refuse_nul(((k, v) for k, vs in request.args.lists() for v in vs), "the query string")
    parsed = ParsedRequest(args=request.args, view_args=view_args)
    if reader.message is not None:
        _refuse_query_aliases(reader.message)
        parsed.message = _parse_message(reader.message)
        _refuse_message_aliases(parsed.message, view_args)
        _refuse_nul(_strings_in(parsed.message), "the request")
        _refuse_values_the_handler_cannot_use(parsed.message)
    elif reader.body:
        parsed.body = _parse_body()
        _refuse_nul(_strings_in_json(parsed.body), "the request")
    elif reader.graphql:
        parsed.body = _parse_graphql()
    if reader.args:
        _refuse_repeated_args(reader)
    g.setdefault(_G_KEY, parsed)
    return parsed


def _parse_message(message_class: type) -> Message:
    from mlflow.exceptions import MlflowException

    if not _reads_query():
        _refuse_body_protobuf_cannot_hold(message_class)
    try:
        message: Message = _original_get_request_message()(message_class(), flask_request=request)
        return message
    except MlflowException as e:
        raise MlflowRequestError(e.message, e.get_http_status_code(), str(e.error_code)) from None
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        # A double-encoded body that is not JSON inside, or a value protobuf cannot hold.
        raise MlflowRequestError(f"The request body is not a valid {message_class.__name__}: {e}") from None


def _refuse_body_protobuf_cannot_hold(message_class: type) -> None:
    """A body that is no JSON object, or has a value of the wrong type, is a 400 here.

    MLflow parses such a body into a half-filled message and lets its handler go on; some
    handlers then fail with a 500. Refusing it keeps bad input a 4xx and the message whole.
    """
    from google.protobuf.json_format import ParseDict, ParseError
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers

    try:
        body = handlers._get_normalized_request_json(request)
    except MlflowException as e:
        raise MlflowRequestError(e.message, e.get_http_status_code(), str(e.error_code)) from None
    except ValueError as e:
        raise MlflowRequestError(f"The request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise MlflowRequestError("The request body must be a JSON object.")
    try:
        ParseDict(body, message_class(), ignore_unknown_fields=True)
    except ParseError as e:
        raise MlflowRequestError(f"The request body does not fit {message_class.__name__}: {e}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise MlflowRequestError(f"The request body does not fit {message_class.__name__}: {e}") from None


def _parse_body() -> dict[str, Any]:
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers

    try:
        body = handlers._get_validated_flask_request_json(request)
    except MlflowException as e:
        raise MlflowRequestError(e.message, e.get_http_status_code(), str(e.error_code)) from None
    except (ValueError, TypeError) as e:
        raise MlflowRequestError(f"The request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise MlflowRequestError("The request body must be a JSON object.")
    if request.method != "GET" or not request.args:
        _refuse_query_beside_body(body.keys(), lambda name: body.get(name))
    return body


def _parse_graphql() -> dict[str, Any]:
    """MLflow's GraphQL handler reads ``query``, ``variables`` and ``operationName`` from the body."""
    from graphql import GraphQLError, parse
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers

    try:
        body = handlers._get_request_json(request)
    except MlflowException as e:
        raise MlflowRequestError(e.message, e.get_http_status_code(), str(e.error_code)) from None
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise MlflowRequestError('A GraphQL request is a JSON object with a "query" string.')
    if not isinstance(body.get("variables") or {}, dict):
        raise MlflowRequestError('GraphQL "variables" must be a JSON object.')
    if not isinstance(body.get("operationName") or "", str):
        raise MlflowRequestError('GraphQL "operationName" must be a string.')
    try:
        parse(body["query"])
    except GraphQLError as e:
        raise MlflowRequestError(f"The GraphQL query does not parse: {e.message}") from None
    return body


def _is_repeated(field_descriptor: Any) -> bool:
    try:
        return bool(field_descriptor.is_repeated)
    except AttributeError:
        return bool(field_descriptor.label == field_descriptor.LABEL_REPEATED)


def _reads_query() -> bool:
    """MLflow reads a GET's query arguments when it has some; every other request's JSON body."""
    return request.method == "GET" and bool(request.args)


def _refuse_query_aliases(message_class: type) -> None:
    fields = message_class.DESCRIPTOR.fields  # type: ignore[attr-defined]
    by_json_name = {f.json_name: f for f in fields if f.json_name != f.name}
    by_name = {f.name: f for f in fields}
    for key in request.args:
        count = len(request.args.getlist(key))
        known = by_name.get(key) or by_json_name.get(key)
        if count > 1 and not (known is not None and key == known.name and _is_repeated(known)):
            raise MlflowRequestError(f"The query argument {key!r} is given {count} times; give it once.")
    if _reads_query():
        for key in request.args:
            if key in by_json_name:
                name = by_json_name[key].name
                raise MlflowRequestError(
                    f"The query argument {key!r} is not read here; send {name!r} instead."
                    if name not in request.args
                    else f"The request names both {name!r} and {key!r}; give only {name!r}."
                )
        body = request.get_json(force=True, silent=True)
        if isinstance(body, dict):
            named = sorted(k for k in body if k in by_name or k in by_json_name)
            if named:
                raise MlflowRequestError(
                    f"This GET reads its query arguments, yet its body names {', '.join(named)}; "
                    "send each value once, in the query string."
                )
        return
    # MLflow reads the body: a query argument naming a field must not say something else.
    from mlflow.server import handlers

    try:
        body = handlers._get_normalized_request_json(request)
    except Exception:  # noqa: BLE001 - MLflow's own parse (next) reports a bad body properly
        return
    if not isinstance(body, dict):
        return

    def body_value(key: str) -> Any:
        f = by_name.get(key) or by_json_name.get(key)
        if f is None:
            return None
        return body.get(f.name, body.get(f.json_name))

    _refuse_query_beside_body([k for k in request.args if k in by_name or k in by_json_name], body_value)


def _refuse_query_beside_body(keys: Iterable[str], body_value: Callable[[str], Any]) -> None:
    for key in list(keys):
        if key not in request.args:
            continue
        value = body_value(key)
        if value is None or str(value) != request.args[key]:
            raise MlflowRequestError(
                f"{key!r} is in the query string but MLflow reads this request's body"
                + ("" if value is None else ", which says otherwise")
                + f"; send {key!r} once, in the JSON body."
            )


def _refuse_message_aliases(message: Message, view_args: Mapping[str, str]) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    if "run_id" in fields and "run_uuid" in fields:
        run_id, run_uuid = message.run_id, message.run_uuid  # type: ignore[attr-defined]
        if run_id and run_uuid and run_id != run_uuid:
            raise MlflowRequestError("The request names run_id and run_uuid with different runs; give one.")
    for name, value in view_args.items():
        if name in fields and not _is_repeated(fields[name]):
            given = getattr(message, name)
            if given not in ("", None) and str(given) != value:
                raise MlflowRequestError(
                    f"The URL names {name} {value!r} but the request says {given!r}; give one."
                )


def _refuse_repeated_args(reader: Reader) -> None:
    for key in reader.args:
        count = len(request.args.getlist(key))
        if count > 1 and key not in reader.repeated:
            raise MlflowRequestError(f"The query argument {key!r} is given {count} times; give it once.")
    for group in reader.same:
        values = {request.args[key] for key in group if request.args.get(key)}
        if len(values) > 1:
            raise MlflowRequestError(
                f"The request names {' and '.join(group)} with different values; give one."
            )


def _json_text(kind: type) -> Callable[[str], None]:
    """A field that holds JSON text of ``kind`` (the handler calls ``json.loads`` on it)."""

    def check(value: str) -> None:
        if not value:
            return  # the handlers skip an empty value, or MLflow's own check requires one
        try:
            decoded = json.loads(value)
        except ValueError:
            raise ValueError(f"must be JSON text: {'an array' if kind is list else 'an object'}") from None
        if not isinstance(decoded, kind):
            raise ValueError(f"must be a JSON {'array' if kind is list else 'object'}")

    return check


def _one_of(enum_path: str) -> Callable[[str], None]:
    """A field the handler turns into one of MLflow's enums (``IssueStatus(value)``)."""

    def check(value: str) -> None:
        import importlib

        module, _, name = enum_path.rpartition(".")
        choices = [member.value for member in getattr(importlib.import_module(module), name)]
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")

    return check


# Fields MLflow's handlers convert themselves once the message is parsed, where a value they
# cannot convert raises inside the handler and answers 500 (stock MLflow too). Checked here,
# before the handler, they answer 400 as MLflow's own validation of the message would.
_HANDLER_CONVERSIONS: dict[str, dict[str, Callable[[str], None]]] = {
    "mlflow.issues.CreateIssue": {
        "status": _one_of("mlflow.entities.issue.IssueStatus"),
        "severity": _one_of("mlflow.entities.issue.IssueSeverity"),
    },
    "mlflow.issues.UpdateIssue": {
        "status": _one_of("mlflow.entities.issue.IssueStatus"),
        "severity": _one_of("mlflow.entities.issue.IssueSeverity"),
    },
    "mlflow.UpsertDatasetRecords": {"records": _json_text(list)},
    "mlflow.CreateDataset": {"tags": _json_text(dict)},
    "mlflow.SetDatasetTags": {"tags": _json_text(dict)},
    "mlflow.LogModel": {"model_json": _json_text(dict)},
}


def _is_set(message: Message, name: str) -> bool:
    """Sent, even empty (MLflow's messages are proto2: ``HasField`` tells an empty string from none)."""
    try:
        return bool(message.HasField(name))
    except ValueError:
        return bool(getattr(message, name))


def _page_token(value: str) -> None:
    """MLflow's page tokens are base64 of UTF-8 text: a JSON object, or ``<time>:<id>``.

    MLflow's stores decode a token without catching what a token of other bytes raises
    (non-ASCII text, bytes that are no UTF-8, JSON that is no object): a 500 there.
    """
    import base64
    import binascii

    try:
        text = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error):
        raise ValueError("it is not a page token this server gave out") from None
    try:
        decoded = json.loads(text)
    except ValueError:
        return  # not JSON: a token of another kind, which its store reads itself
    if not isinstance(decoded, dict):
        raise ValueError("it is not a page token this server gave out")


def _experiment_id(value: str) -> None:
    """Experiments in MLflow's SQL store, the one trainflow runs, are numbered."""
    if not value:
        return  # not given, as MLflow reads it; its own check says where one is required
    try:
        int(value)
    except ValueError:
        raise ValueError("an experiment's id is a whole number") from None


def _refuse_values_the_handler_cannot_use(message: Message) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    checks = dict(_HANDLER_CONVERSIONS.get(message.DESCRIPTOR.full_name, {}))
    if "page_token" in fields:
        checks["page_token"] = _page_token
    for name in ("experiment_id", "experiment_ids"):
        if name in fields and fields[name].type == fields[name].TYPE_STRING:
            # Some searches (traces) turn each id into a number unguarded: a 500 there.
            checks[name] = _experiment_id
    for name, check in checks.items():
        if _is_repeated(fields[name]):
            values = list(getattr(message, name))
        elif _is_set(message, name):
            values = [getattr(message, name)]
        else:
            continue  # absent: the handler skips it, or MLflow's own check says it is required
        try:
            for value in values:
                check(value)
        except ValueError as e:
            shown = value if len(value) <= 100 else value[:100] + "..."
            raise MlflowRequestError(
                f"Invalid value {shown!r} for parameter '{name}' supplied: {e}."
            ) from None


def _refuse_nul(pairs: Iterable[tuple[str, Any]], where: str) -> None:
    for name, value in pairs:
        if "\x00" in str(name) or (isinstance(value, str) and "\x00" in value):
            raise MlflowRequestError(f"{where.capitalize()} holds a NUL character (in {name!r}); remove it.")


def _strings_in(message: Message) -> Iterable[tuple[str, str]]:
    for descriptor, value in message.ListFields():
        values = value if _is_repeated(descriptor) else [value]
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            values = [item for pair in value.items() for item in pair]  # a map's keys and values
        for item in values:
            if isinstance(item, str):
                yield descriptor.name, item
            elif hasattr(item, "ListFields"):
                yield from _strings_in(item)


def _strings_in_json(value: Any, name: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key), str(key)
            yield from _strings_in_json(item, str(key))
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in_json(item, name)


# -- the handler's side: the same message ---------------------------------------------------------


def _original_get_request_message() -> Callable[..., Any]:
    from mlflow.server import handlers

    function = handlers._get_request_message
    original: Callable[..., Any] = getattr(function, "__wrapped__", function)
    return original


def install() -> None:
    """Make MLflow's handlers take the message the check decided on (once per process)."""
    from mlflow.server import handlers

    if getattr(handlers._get_request_message, _WRAPPED_MARKER, False):
        return
    original: Callable[..., Any] = handlers._get_request_message

    def shared_get_request_message(
        request_message: Any, flask_request: Any = request, schema: Any = None
    ) -> Any:
        parsed = current()
        if parsed is None or parsed.message is None or flask_request is not request:
            return original(request_message, flask_request=flask_request, schema=schema)
        if type(request_message) is not type(parsed.message):
            raise ParsedAsAnotherMessage(
                f"{request.method} {request.path} was checked as {type(parsed.message).__name__} but "
                f"MLflow's handler reads {type(request_message).__name__}; refusing it."
            )
        if schema:
            # MLflow's validation of the same request (it raises on bad input, changes nothing).
            original(type(request_message)(), flask_request=flask_request, schema=schema)
        request_message.CopyFrom(parsed.message)
        return request_message

    shared_get_request_message.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(shared_get_request_message, _WRAPPED_MARKER, True)
    handlers._get_request_message = shared_get_request_message


def render_mlflow_exception(e: Exception) -> Response:
    """An MlflowException a handler let escape: MLflow's answer for it, not a 500.

    Most of MLflow's handlers turn the ``MlflowException`` they raise into its status
    (``catch_mlflow_exception``); a few do not (dataset records), so their own validation of a
    bad argument reached Flask as a 500. A 5xx one is still an unexpected error: logged, and a
    full disk or a busy pool answered as such.
    """
    from flask import Response as FlaskResponse
    from mlflow.exceptions import MlflowException

    from trainflow.errors import handle_unexpected

    assert isinstance(e, MlflowException)
    status = e.get_http_status_code()
    if status >= 500:
        return handle_unexpected(e)
    return FlaskResponse(e.serialize_as_json(), status=status, mimetype="application/json")


def register(app: Flask) -> None:
    from mlflow.exceptions import MlflowException

    install()
    app.register_error_handler(MlflowRequestError, render_request_error)
    app.register_error_handler(MlflowException, render_mlflow_exception)
