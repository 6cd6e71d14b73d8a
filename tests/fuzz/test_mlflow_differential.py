"""The MLflow routes answer malformed requests as stock MLflow does (issue 11).

A stock ``mlflow server`` runs beside the test (one process for the module). Generated requests
to MLflow's REST routes, built from each route's own protobuf request message with hypothesis
(wrong types, missing and unknown fields, NUL and other unicode in names, huge numbers, values
given twice in the query, a query beside a body, bodies that are no JSON object), go to stock
MLflow and to trainflow, as an admin and as a user. trainflow never answers 500 (where stock
MLflow does, the value was one its handler could not use: trainflow checks it first). Where
stock MLflow answers 400, trainflow answers 400 to the admin, and 400, 403 or 404 to the user
(whose permissions may decide before the values do). trainflow may refuse more than MLflow
does (a name given twice, a NUL: 400 where MLflow goes on), never less.

A handful of requests that once answered 500 are always sent (KNOWN). TRAINFLOW_FUZZ_PER_ROUTE
sets the generated requests per route and method (6: ~730 requests in all, each sent to stock
MLflow once and to trainflow twice).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import PASSWORD, _copy_sqlite
from tests.fuzz.conftest import FUZZ_SETTINGS
from tests.processes import free_port
from trainflow.accounts import service
from trainflow.db import db
from trainflow.tracking.permissions.rules import build_routes

# Routes left out: they reach the network or a provider (the AI gateway, webhooks and their
# test call), start MLflow's jobs (prompt optimisation), or manage workspaces; trainflow lets
# only admins near them, and a fuzzer's requests there say nothing about the permission layer.
SKIPPED = ("/gateway/", "/webhooks", "/prompt-optimization/", "/workspaces", "mlflow-artifacts", "/scorers/")
START_SECONDS = 180


@dataclass(frozen=True)
class Endpoint:
    method: str
    rule: str
    message: Any  # the protobuf request class, or None where the handler reads JSON by hand


def endpoints() -> list[Endpoint]:
    by_rule, _ = build_routes()
    found = []
    for (rule, method), route in sorted(by_rule.items()):
        if rule.startswith(("/api/2.0/mlflow/", "/api/3.0/mlflow/")) and not any(s in rule for s in SKIPPED):
            found.append(Endpoint(method, rule, route.reader.message))
    return found


# -- the stock server -------------------------------------------------------------------------


@dataclass
class Stock:
    url: str
    process: subprocess.Popen[bytes]
    session: requests.Session = field(default_factory=requests.Session)


@pytest.fixture(scope="module")
def stock_mlflow(tmp_path_factory: pytest.TempPathFactory, templates) -> Iterator[Stock]:  # type: ignore[no-untyped-def]
    """``mlflow server`` as its users start it, on SQLite, with one worker."""
    folder = tmp_path_factory.mktemp("stock-mlflow")
    database = folder / "mlflow.db"
    # A copy of the migrated template: MLflow's schema is already there, so start-up skips the
    # migrations (trainflow's own tables beside them change nothing for MLflow).
    _copy_sqlite(templates.sqlite(), database)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRAINFLOW_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", NO_PROXY="127.0.0.1,localhost")
    argv = [str(Path(sys.executable).with_name("mlflow")), "server", "--workers", "1"]
    argv += [
        "--backend-store-uri",
        f"sqlite:///{database}",
        "--artifacts-destination",
        str(folder / "artifacts"),
    ]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with open(folder / "server.log", "wb") as log:
        process = subprocess.Popen(
            argv, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    stock = Stock(f"http://127.0.0.1:{port}", process)
    try:
        _wait_until_healthy(stock, folder / "server.log")
        yield stock
    finally:
        stock.session.close()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_healthy(stock: Stock, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if stock.process.poll() is not None:
            raise AssertionError(f"mlflow server exited: {log.read_text()[-3000:]}")
        try:
            if stock.session.get(f"{stock.url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet, or still starting
        time.sleep(0.2)
    raise AssertionError(f"mlflow server did not answer within {START_SECONDS} s: {log.read_text()[-3000:]}")


# -- the requests -----------------------------------------------------------------------------

NAMES = st.sampled_from(["0", "1", "Default", "m", "x" * 300, "a/b", "name\x00nul", "ünï©ødé ✓", "", " "])
HUGE = st.sampled_from([2**63, 2**64 + 1, -(2**63) - 1, 10**30, -1, 0, 1.5, 1e308, -1e308])
SCALARS = st.one_of(NAMES, HUGE, st.booleans(), st.none(), st.text(max_size=20), st.integers(-(2**70), 2**70))
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
    max_leaves=6,
)


def field_value(descriptor: Any) -> st.SearchStrategy[Any]:
    """A value for one protobuf field: of its type mostly, of a wrong type often."""
    from google.protobuf.descriptor import FieldDescriptor as F

    if descriptor.message_type is not None:
        fitting: st.SearchStrategy[Any] = st.dictionaries(NAMES, SCALARS, max_size=3)
    elif descriptor.type in (F.TYPE_STRING, F.TYPE_BYTES):
        fitting = NAMES | st.text(max_size=30)
    elif descriptor.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        fitting = HUGE | st.floats(allow_nan=False, allow_infinity=False)
    elif descriptor.type == F.TYPE_BOOL:
        fitting = st.booleans()
    elif descriptor.type == F.TYPE_ENUM:
        fitting = st.sampled_from([v.name for v in descriptor.enum_type.values] + ["NOT_A_VALUE"])
    else:
        fitting = HUGE | st.integers(-(2**64), 2**64) | st.sampled_from(["12", "x", ""])
    if _is_repeated(descriptor):
        fitting = st.lists(fitting, max_size=3)
    return st.one_of(fitting, fitting, ANY_JSON)


def _is_repeated(descriptor: Any) -> bool:
    try:
        return bool(descriptor.is_repeated)
    except AttributeError:
        return bool(descriptor.label == descriptor.LABEL_REPEATED)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: list[tuple[str, str]]
    body: bytes | None
    content_type: str | None

    def describe(self) -> str:
        query = "&".join(f"{k}={v!r}" for k, v in self.query)
        body = (self.body or b"")[:300].decode("utf-8", "replace")
        return f"{self.method} {self.path}{'?' + query if query else ''} {self.content_type} {body}"


@st.composite
def calls(draw: st.DrawFn, endpoint: Endpoint) -> Call:
    fields = list(endpoint.message.DESCRIPTOR.fields) if endpoint.message is not None else []
    names = [f.name for f in fields] + [f.json_name for f in fields if f.json_name != f.name]
    chosen = (
        draw(st.lists(st.sampled_from(fields), max_size=len(fields), unique_by=lambda f: f.name))
        if fields
        else []
    )
    obj: dict[str, Any] = {}
    for descriptor in chosen:
        key = draw(st.sampled_from([descriptor.name, descriptor.json_name]))
        obj[key] = draw(field_value(descriptor))
    if draw(st.integers(0, 5)) == 0:
        obj[draw(st.text(min_size=1, max_size=8))] = draw(SCALARS)  # a field no message has
    path = endpoint.rule
    while "<" in path:
        start, end = path.index("<"), path.index(">")
        path = (
            path[:start] + draw(st.sampled_from(["0", "1", "tr-0", "x" * 40, "ünï", "%00"])) + path[end + 1 :]
        )
    query: list[tuple[str, str]] = []
    body: bytes | None = None
    content_type: str | None = "application/json"
    in_query = endpoint.method == "GET" and draw(st.integers(0, 4)) > 0
    if in_query:
        for key, value in obj.items():
            values = value if isinstance(value, list) and value else [value]
            for item in values:
                query.append((key, item if isinstance(item, str) else json.dumps(item)))
        if query and draw(st.integers(0, 5)) == 0:
            query.append(draw(st.sampled_from(query)))  # a key given twice
        if draw(st.integers(0, 5)) == 0:
            body = json.dumps(obj).encode()  # and a body beside it
    else:
        shape = draw(st.integers(0, 9))
        if shape == 0:
            body = draw(st.sampled_from([b"[]", b'"text"', b"12", b"null", b"{", b"\xff\xfe", b"{}{}"]))
        elif shape == 1:
            body = json.dumps(obj).encode()
            content_type = draw(st.sampled_from([None, "text/plain", "application/x-www-form-urlencoded"]))
        else:
            body = json.dumps(obj).encode()
        if names and draw(st.integers(0, 5)) == 0:
            query.append((draw(st.sampled_from(names)), draw(NAMES)))  # a query beside the body
    return Call(endpoint.method, path, query, body, content_type)


def _post(path: str, body: Any) -> Call:
    return Call("POST", path, [], json.dumps(body).encode(), "application/json")


ISSUE = {"experiment_id": "0", "name": "n", "description": "d"}
# Requests that once made trainflow (or MLflow behind it) answer 500, always sent.
KNOWN = [
    _post("/api/3.0/mlflow/issues", {**ISSUE, "status": "bogus"}),
    _post("/api/3.0/mlflow/issues", {**ISSUE, "severity": ""}),
    _post("/api/3.0/mlflow/datasets/d-1/records", {"records": "0"}),
    _post("/api/2.0/mlflow/registered-models/create", {"name": "a\x00b"}),
    _post("/api/2.0/mlflow/experiments/create", {"name": ["a"]}),
    _post("/api/3.0/mlflow/datasets/search", {"page_token": "\U00014a34"}),
    _post("/api/2.0/mlflow/logged-models/search", {"experiment_ids": ["0"], "page_token": "WzFd"}),
    Call(
        "GET", "/api/2.0/mlflow/experiments/get", [("experiment_id", "0"), ("experiment_id", "1")], None, None
    ),
    Call("GET", "/api/2.0/mlflow/runs/get", [("run_id", "x")], b'{"run_id": "y"}', "application/json"),
    Call("POST", "/api/2.0/mlflow/runs/log-metric", [], b'{"run_id": "x", "key": "k", "value": 1e999}', None),
    Call("GET", "/api/2.0/mlflow/traces", [("experiment_ids", "\u6aab")], None, None),
    Call("GET", "/api/3.0/mlflow/datasets/0/records", [("max_results", "")], None, None),
]


# -- the comparison ---------------------------------------------------------------------------


@dataclass
class Tally:
    """What one caller (an admin, a user) got, beside what stock MLflow answered."""

    role: str
    auth: dict[str, str]
    sent: int = 0
    pairs: Counter[tuple[int, int]] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)

    def record(self, call: Call, theirs: int, ours: int, body: Any) -> None:
        self.sent += 1
        self.pairs[(theirs, ours)] += 1
        problem = mismatch(theirs, ours, is_admin=self.role == "admin")
        if problem is not None:
            message = body.get("message", "") if isinstance(body, dict) else ""
            self.mismatches.append(f"{problem}: {call.describe()} -> {message[:200]}")

    def report(self) -> str:
        shown = "\n".join(self.mismatches[:25])
        return f"As {self.role}, {len(self.mismatches)} of {self.sent} answered unlike stock MLflow:\n{shown}"


def send_stock(stock: Stock, call: Call) -> int:
    headers = {"Content-Type": call.content_type} if call.content_type and call.body is not None else {}
    response = stock.session.request(
        call.method, stock.url + call.path, params=call.query, data=call.body, headers=headers, timeout=30
    )
    return response.status_code


def send_trainflow(client: Any, auth: dict[str, str], call: Call) -> tuple[int, Any]:
    headers = dict(auth)
    if call.content_type and call.body is not None:
        headers["Content-Type"] = call.content_type
    response = client.open(
        call.path, method=call.method, query_string=call.query, data=call.body, headers=headers
    )
    body = response.get_json(silent=True)
    response.close()
    return response.status_code, body


def mismatch(stock: int, ours: int, *, is_admin: bool) -> str | None:
    if ours >= 500:
        # Where stock MLflow fails too, its handler could not use a value it had accepted:
        # trainflow checks such values before the handler runs (parsing._HANDLER_CONVERSIONS).
        return f"trainflow {ours} where stock MLflow answers {stock}"
    # A user may be refused (403) or not shown (404) what the request names, before its values
    # are looked at; an admin's request is judged on its values alone.
    allowed = (400,) if is_admin else (400, 403, 404)
    if stock == 400 and ours not in allowed:
        return f"trainflow {ours} where stock MLflow answers 400"
    return None


def compare(app: Flask, stock: Stock, endpoint: Endpoint, tallies: list[Tally]) -> None:
    """Generated requests to ``endpoint``: each to stock MLflow once, and to trainflow as each caller."""
    client = app.test_client()

    @FUZZ_SETTINGS
    @given(call=calls(endpoint))
    def send(call: Call) -> None:
        theirs = send_stock(stock, call)
        for tally in tallies:
            tally.record(call, theirs, *send_trainflow(client, tally.auth, call))

    send()


def _caller(app: Flask, username: str, role: str) -> Tally:
    with app.app_context():
        service.create_user(db.session, username=username, password=PASSWORD, role=role)
    token = base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()
    return Tally(role, {"Authorization": f"Basic {token}"})


def test_mlflow_routes_refuse_bad_input_as_stock_mlflow_does(fuzz_app: Flask, stock_mlflow: Stock) -> None:
    tallies = [_caller(fuzz_app, "fuzz-admin", "admin"), _caller(fuzz_app, "fuzz-user", "user")]
    client = fuzz_app.test_client()
    for call in KNOWN:
        theirs = send_stock(stock_mlflow, call)
        for tally in tallies:
            tally.record(call, theirs, *send_trainflow(client, tally.auth, call))
    for endpoint in endpoints():
        compare(fuzz_app, stock_mlflow, endpoint, tallies)
    for tally in tallies:
        pairs = dict(tally.pairs.most_common())
        print(f"\nas {tally.role}: {tally.sent} requests; (stock, trainflow): {pairs}")
    assert tallies[0].sent >= 100
    assert not tallies[0].mismatches, tallies[0].report()
    assert not tallies[1].mismatches, tallies[1].report()
