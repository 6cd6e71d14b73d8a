"""schemathesis over /api/openapi.json, as a user and as an admin (issue 11).

Every operation of the document gets generated requests, valid ones and ones that break its
rules, sent to the app in-process with real SQLite. Each answer must not be a 500 and must be
what the document says: a declared status, a declared content type, a body that fits the
declared schema. TRAINFLOW_FUZZ_PER_ROUTE sets the cases per operation and mode.

The two event streams never end by design (they follow jobs live). They are asked for as
Server-Sent Events, which schemathesis reads for at most STREAM_SECONDS before it closes the
stream; the app's heartbeat (0.1 s here) keeps the stream talking, so the cut comes on time.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from tests.conftest import PASSWORD
from tests.fuzz.conftest import FUZZ_SETTINGS, finished_job_with_log, uploaded_script
from trainflow.accounts import service
from trainflow.accounts.models import User, fold_username
from trainflow.db import db

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
STREAM_SECONDS = 0.2
STREAMS = ("/ajax-api/2.0/mlflow/train/events", "/ajax-api/2.0/mlflow/train/jobs/{job_id}/events")


@dataclass
class Actor:
    """The phase's signed-in user; put back as it was whenever a generated request changed it."""

    username: str
    role: str
    password_hash: str = ""

    @property
    def headers(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.username}:{PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def create(self, app: Flask) -> int:
        with app.app_context():
            user = service.create_user(db.session, username=self.username, password=PASSWORD, role=self.role)
            self.password_hash = user.password_hash
            return user.id

    def restore(self, app: Flask) -> None:
        """A generated DELETE, PUT or PATCH may have removed, renamed or demoted the actor."""
        with app.app_context():
            user = db.session.scalars(select(User).where(User.password_hash == self.password_hash)).first()
            if user is None:
                db.session.remove()
                self.create(app)
                return
            if user.username != self.username or user.role != self.role:
                user.username, user.role = self.username, self.role
                user.username_key = fold_username(self.username)
                db.session.commit()
            db.session.remove()


@dataclass
class Findings:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: dict[str, Counter[int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def report(self) -> str:
        shown = "\n\n".join(self.failures[:15])
        return f"{len(self.failures)} of {self.sent} answers broke the document:\n\n{shown}"


def closing(app: Flask) -> Any:
    """The app, with every answer but a stream read whole and closed, as a server would.

    schemathesis reads a WSGI answer without closing it, so a file the app sends (the docs
    page) would stay open until the garbage collector finds it.
    """

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        content_type = ""

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal content_type
            content_type = dict(headers).get("Content-Type", "")
            return start_response(status, headers, exc_info)

        body = app(environ, start)
        if content_type.startswith(("text/event-stream", "application/x-ndjson")):
            return body
        try:
            return [b"".join(body)]
        finally:
            if hasattr(body, "close"):
                body.close()

    return wsgi


def can_break(definition: dict[str, Any]) -> bool:
    """Whether a request can break the operation's rules: a body, or a parameter that is not any string."""
    return "requestBody" in definition or any(
        parameter.get("schema") != {"type": "string"} for parameter in definition.get("parameters", [])
    )


@dataclass
class Run:
    """One phase's app, actor and tally."""

    app: Flask
    wsgi: Any
    actor: Actor
    found: Findings

    def send(self, operation: Any, mode: GenerationMode, path_parameters: dict[str, int] | None) -> None:
        """Generated requests to ``operation`` (FUZZ_SETTINGS), each answer checked against the document."""
        name = f"{operation.method.upper()} {operation.path}"
        headers = {**self.actor.headers}
        if operation.path in STREAMS:
            headers["Accept"] = "text/event-stream"

        @FUZZ_SETTINGS
        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        def send(case: Any) -> None:
            call = f"{case.method} {case.formatted_path} ({mode.value})"
            self.found.sent += 1
            try:
                response = case.call(headers=headers, timeout=STREAM_SECONDS, app=self.wsgi)
            except Exception as e:  # noqa: BLE001 - an exception in the app is a finding
                self.found.failures.append(f"{call}: the app raised {e!r}")
                return
            finally:
                self.actor.restore(self.app)
            self.found.statuses[response.status_code] += 1
            self.found.by_operation.setdefault(name, Counter())[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except (AssertionError, BaseExceptionGroup) as e:  # schemathesis's failures
                self.found.failures.append(f"{call}: {e}")

        started = time.monotonic()
        send()
        self.found.seconds[name] = self.found.seconds.get(name, 0.0) + time.monotonic() - started


def fuzz(app: Flask, actor: Actor, known: dict[str, int]) -> Findings:
    """Every operation: generated valid requests, invalid ones, and valid ones on ``known`` ids
    (random ids mostly find nothing, so the routes behind a 404 get their share too)."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    run = Run(app, closing(app), actor, Findings())
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deletions last: the known ids stay there for every other operation.
    for operation in sorted(operations, key=lambda op: op.method.upper() == "DELETE"):
        run.send(operation, GenerationMode.POSITIVE, None)
        if can_break(operation.definition.raw):
            run.send(operation, GenerationMode.NEGATIVE, None)
        ids = {key: value for key, value in known.items() if "{" + key + "}" in operation.path}
        if ids:
            run.send(operation, GenerationMode.POSITIVE, ids)
    return run.found


@pytest.mark.parametrize("role", ["user", "admin"])
def test_every_answer_matches_the_document(fuzz_app: Flask, role: str) -> None:
    actor = Actor(f"fuzz-{role}", role)
    actor_id = actor.create(fuzz_app)
    peer = Actor(f"peer-of-{role}", "user")
    peer_id = peer.create(fuzz_app)
    script_id = uploaded_script(fuzz_app, actor.headers)
    job_id = finished_job_with_log(fuzz_app, actor_id, script_id, lines=2500)
    found = fuzz(fuzz_app, actor, {"job_id": job_id, "script_id": script_id, "user_id": peer_id})
    print(f"\n{role}: {found.sent} requests, statuses {dict(sorted(found.statuses.items()))}")
    for name, statuses in sorted(found.by_operation.items()):
        print(f"  {name}: {dict(sorted(statuses.items()))} in {found.seconds[name]:.1f} s")
    assert found.sent >= 50
    assert not found.failures, found.report()


@pytest.mark.parametrize("offset", [2400, 2**63 - 1, 10**16])
def test_a_log_page_far_past_the_end_is_empty(fuzz_app: Flask, offset: int) -> None:
    # 10**16 answered 500: the log's index was asked for a position the file system refuses.
    actor = Actor("reader", "user")
    actor_id = actor.create(fuzz_app)
    job_id = finished_job_with_log(fuzz_app, actor_id, uploaded_script(fuzz_app, actor.headers), lines=2500)
    url = f"/ajax-api/2.0/mlflow/train/jobs/{job_id}/logs?offset={offset}"
    response = fuzz_app.test_client().get(url, headers=actor.headers)
    assert response.status_code == 200
    assert [line["n"] for line in response.json["lines"]] == list(range(offset, 2500))
