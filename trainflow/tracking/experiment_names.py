"""Experiment names are namespaced by user: ``<username>/...`` is its user's (and admins') alone.

A job's default experiment is ``<owner>/<script name>``. If anyone could create that name first,
they would own the experiment and the owner's default submissions would be refused. So a user
may create (or rename an experiment to) a name without a slash, or one under their own
username; names under another user's name, or starting with a slash, are for admins only.
Usernames cannot hold a slash and are unique case-insensitively, so the namespaces never overlap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import g, request

from trainflow.errors import PermissionDenied

if TYPE_CHECKING:
    from trainflow.accounts.credentials import Principal

# MLflow endpoints that set an experiment's name, and the field of their request that holds it.
NAMING_ENDPOINTS = {"_create_experiment": "name", "_update_experiment": "new_name"}


def may_use_name(username: str, is_admin: bool, name: str) -> bool:
    """Whether this user may create an experiment called ``name`` (or rename one to it)."""
    if is_admin or "/" not in name:
        return True
    owner = name.split("/", 1)[0]
    return owner.casefold() == username.casefold()


def check_experiment_name(principal: Principal, name: str) -> None:
    """Raise PermissionDenied (403) unless ``principal`` may give an experiment this name."""
    if not may_use_name(principal.username, principal.is_admin, name):
        raise PermissionDenied(
            f"Experiment names with a slash belong to the user named before it; call yours "
            f"{principal.username}/{name.rsplit('/', 1)[-1]} or use a name without a slash."
        )


def check_request() -> None:
    """before_request hook, after authentication: the name a create/rename asks for is allowed.

    The name is read with MLflow's own request parsing, so it is the name MLflow's handler acts
    on; a request MLflow cannot parse is left for its handler to refuse.
    """
    field = NAMING_ENDPOINTS.get(request.endpoint or "")
    principal = g.get("principal")
    if field is None or principal is None:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.protos.service_pb2 import CreateExperiment, UpdateExperiment
    from mlflow.server.handlers import _get_request_message

    message = CreateExperiment() if field == "name" else UpdateExperiment()
    try:
        parsed = _get_request_message(message)
    except (MlflowException, ValueError, TypeError):
        return
    name = getattr(parsed, field)
    if name:
        check_experiment_name(principal, name)
