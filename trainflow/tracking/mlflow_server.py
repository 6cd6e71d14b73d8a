"""MLflow's tracking server as a Flask app we can build more than once, on our database.

MLflow builds its Flask app once, at import, in ``mlflow.server``, and keeps its stores in
module globals read from environment variables. trainflow copies that app's routes and hooks
into a fresh Flask app per :func:`trainflow.app.create_app` call (so tests can build many),
and points MLflow's globals at the configured database and artifact folder. One process
serves one configuration at a time, as with ``mlflow server``.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:
    from trainflow.settings import Settings

# Where runs' artifacts go: MLflow's artifact proxy, so clients never need the server's disk.
DEFAULT_ARTIFACT_ROOT = "mlflow-artifacts:/"


def configure_stores(settings: Settings) -> None:
    """Point MLflow's process-wide tracking, registry and artifact stores at our settings."""
    from mlflow.server import constants, handlers

    uri = settings.resolved_database_url
    if not settings.artifacts_uri:
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    # MLflow's handlers read these variables whenever they rebuild a store.
    os.environ[constants.BACKEND_STORE_URI_ENV_VAR] = uri
    os.environ[constants.REGISTRY_STORE_URI_ENV_VAR] = uri
    os.environ[constants.ARTIFACT_ROOT_ENV_VAR] = DEFAULT_ARTIFACT_ROOT
    os.environ[constants.SERVE_ARTIFACTS_ENV_VAR] = "true"
    os.environ[constants.ARTIFACTS_DESTINATION_ENV_VAR] = settings.artifacts_destination
    # MLflow's store pools its connections as trainflow does (read when it makes its engine).
    pool = pool_options(settings)
    for variable, option in (
        ("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "pool_size"),
        ("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "max_overflow"),
    ):
        if option in pool:
            os.environ[variable] = str(pool[option])
        else:
            os.environ.pop(variable, None)
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from trainflow.tracking.store import TrainflowTrackingStore

    handlers._model_registry_store = None
    handlers._artifact_repo = None
    # Our store subclass, set first so that MLflow's own initialisation keeps it.
    handlers._tracking_store = TrainflowTrackingStore(uri, DEFAULT_ARTIFACT_ROOT)  # type: ignore[assignment]
    tracking_utils.set_tracking_uri(uri)
    handlers.initialize_backend_stores(uri, uri, DEFAULT_ARTIFACT_ROOT)


def pool_options(settings: Settings) -> dict[str, int]:
    """Connection pool sizes for a server database; SQLite keeps SQLAlchemy's own choice.

    Under gevent a request holds its connection while other requests run, so a busy server
    needs more than SQLAlchemy's 5 + 10: the soak's 150 users on PostgreSQL met 30 s waits for a
    connection (503s, and MLflow's own 500s) with those.
    """
    if settings.resolved_database_url.startswith("sqlite"):
        return {}
    return {"pool_size": settings.database_pool_size, "max_overflow": settings.database_max_overflow}


def mlflow_flask_app(import_name: str) -> Flask:
    """A new Flask app with every route and request hook of MLflow's own app."""
    from mlflow.server import app as mlflow_app

    # trainflow replaces MLflow's basic-auth app. Some MLflow handlers (search_runs, graphql)
    # import that app when they can and ask its own, unconfigured user store who may read
    # what, which fails the request. A None entry makes their import fail, and they then
    # skip that step, as they do when the auth extra is not installed; our permission hook
    # has already checked the request.
    sys.modules.setdefault("mlflow.server.auth", None)  # type: ignore[arg-type]

    app = Flask(import_name, static_folder=None)
    for rule in mlflow_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        app.add_url_rule(
            rule.rule,
            endpoint=rule.endpoint,
            view_func=mlflow_app.view_functions[rule.endpoint],
            methods=sorted(rule.methods or ()),
        )
    for hooks_name in ("before_request_funcs", "after_request_funcs", "teardown_request_funcs"):
        for scope, funcs in getattr(mlflow_app, hooks_name).items():
            kept = [f for f in funcs if f.__module__ not in MLFLOW_SECURITY_MODULES]
            getattr(app, hooks_name).setdefault(scope, []).extend(kept)
    # MLflow's host-header, CORS and header hooks (installed on its module app when it was
    # imported inside a server process) are left out: trainflow.web_security replaces them.
    from trainflow.tracking import reads_views

    reads_views.install(app)  # runs/search and metrics/get-history without protobuf
    return app


# MLflow's security middleware and the flask-cors hook it installs.
MLFLOW_SECURITY_MODULES = frozenset({"mlflow.server.security", "flask_cors.extension"})


def dispose_stores(database_url: str) -> None:
    """Close the connections MLflow's stores hold to ``database_url`` (before a fork, or in tests).

    MLflow caches one engine per URL in each store class, for the life of the process.
    """
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    for store_class in (TrackingStore, RegistryStore):
        engine = store_class._engine_map.pop(database_url, None)
        if engine is not None:
            engine.dispose()
