"""Who may do what to MLflow's own objects: MLflow basic-auth's permission model, on our users.

- :mod:`.parsing`: the request parsed once, with MLflow's own parser, and handed to MLflow's
  handler, so the check and the handler cannot read it two ways; aliased names refused.
- :mod:`.rules`: every MLflow route → the objects it touches and the action each needs.
- :mod:`.authorizer`: the check (users, admins, jobs' tokens) and the bookkeeping after.
- :mod:`.graphql`: the same rules for MLflow's GraphQL fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainflow.tracking.permissions.authorizer import MlflowAuthorizer
from trainflow.tracking.permissions.models import ExperimentPermission, Permission, RegisteredModelPermission
from trainflow.tracking.permissions.rules import PUBLIC_ENDPOINTS

if TYPE_CHECKING:
    from flask import Flask

    from trainflow.accounts.credentials import AuthEpoch
    from trainflow.settings import Settings

__all__ = [
    "PUBLIC_ENDPOINTS",
    "ExperimentPermission",
    "MlflowAuthorizer",
    "Permission",
    "RegisteredModelPermission",
    "init_app",
]


def init_app(app: Flask, settings: Settings, auth_epoch: AuthEpoch) -> AuthEpoch:
    """Install the permission checks; returns the epoch that a change of permissions bumps."""
    from trainflow.accounts.credentials import AuthEpoch
    from trainflow.tracking.permissions import graphql, parsing

    permission_epoch = AuthEpoch(settings.resolved_data_dir / "permission_epoch")
    app.extensions["trainflow.mlflow_authorizer"] = MlflowAuthorizer(
        settings.default_permission, permission_epoch, auth_epoch
    )
    parsing.register(app)
    graphql.install()
    return permission_epoch
