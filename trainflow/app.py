"""create_app: MLflow's tracking server with trainflow's blueprints and hooks on one port."""

from __future__ import annotations

from flask import Flask, Response, g, request
from flask_jwt_extended import JWTManager
from flask_migrate import Migrate

from trainflow import errors, housekeeping, web_security
from trainflow.accounts import auth
from trainflow.accounts import views as accounts_views
from trainflow.api import operation_of
from trainflow.db import db
from trainflow.errors import PermissionDenied
from trainflow.events import views as events_views
from trainflow.events.hub import hub_of, share_epochs
from trainflow.jobs import hooks as jobs_hooks
from trainflow.jobs import ingest as jobs_ingest
from trainflow.jobs import sandboxing, stream_views, sweep_views, sweeps
from trainflow.jobs import tickets as jobs_tickets
from trainflow.jobs import views as jobs_views
from trainflow.keys import load_secret_key
from trainflow.meta import bp as meta_bp
from trainflow.migrate import MIGRATIONS_DIR, VERSION_TABLE
from trainflow.scripts import shared as scripts_shared
from trainflow.scripts import views as scripts_views
from trainflow.settings import Settings
from trainflow.tracking import experiment_names, permissions
from trainflow.tracking.blobs import shared_blobs
from trainflow.tracking.metric_events import push_job_metrics
from trainflow.tracking.mlflow_server import configure_stores, mlflow_flask_app, pool_options
from trainflow.web import views as web_views


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Says once per process whether jobs are sandboxed; refuses to start if one is required.
    sandboxing.sandbox_state(settings)
    configure_stores(settings)

    app = mlflow_flask_app(__name__)
    app.config["TRAINFLOW"] = settings
    app.config["SQLALCHEMY_DATABASE_URI"] = settings.resolved_database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True, **pool_options(settings)}
    app.config.update(auth.jwt_config(settings, load_secret_key(settings)))
    # Host and origin checks run before authentication: a CORS preflight has no credentials.
    web_security.init_app(app, settings)

    db.init_app(app)
    JWTManager(app)
    Migrate(app, db, directory=str(MIGRATIONS_DIR), version_table=VERSION_TABLE)
    auth_state = auth.init_app(app, settings)
    permission_epoch = permissions.init_app(app, settings, auth_state.epoch)
    if settings.redis_url:
        # Hosts with data directories of their own: a password change, sign-out, role change or
        # grant on one empties the caches of all, through the bus (one machine shares the
        # counters through its data directory).
        share_epochs(hub_of(app), [auth_state.epoch, auth_state.job_epoch, permission_epoch])
    jobs_hooks.init_app(app)
    scripts_shared.init_app(app, shared_blobs(settings))  # scripts' originals, in shared mode
    errors.register(app)

    app.register_blueprint(accounts_views.bp)
    app.register_blueprint(meta_bp)
    app.register_blueprint(scripts_views.bp)
    app.register_blueprint(jobs_views.bp)
    app.register_blueprint(sweep_views.bp)
    sweeps.init_app(app)  # a sweep's parent run follows its trials' ends
    app.register_blueprint(jobs_tickets.bp)
    app.register_blueprint(stream_views.bp)
    app.register_blueprint(jobs_ingest.bp)
    app.register_blueprint(events_views.bp)
    app.register_blueprint(web_views.bp)
    # Run before MLflow's own hooks would touch a store, after its host-header check.
    app.before_request(authenticate_and_authorize)
    app.before_request(experiment_names.check_request)
    app.before_request(housekeeping.refuse_when_low)  # uploads and submissions, below the watermark
    app.after_request(record_mlflow_creator)
    app.after_request(push_job_metrics)
    return app


def authenticate_and_authorize() -> None:
    """Every route needs a signed-in user unless declared public; MLflow routes also a permission."""
    from flask import current_app

    if request.endpoint is None:
        return None  # no such route: the 404 handler answers
    view = current_app.view_functions.get(request.endpoint)
    operation = operation_of(view)
    if operation is not None:  # one of trainflow's own routes
        if not operation.is_public:
            g.principal = auth.authenticate_request()
            if g.principal.job_id is not None:
                raise PermissionDenied("A job's token works only for its own MLflow run.")
        return None
    if request.endpoint in permissions.PUBLIC_ENDPOINTS or request.endpoint.endswith(".static"):
        return None
    g.principal = auth.authenticate_request()
    current_app.extensions["trainflow.mlflow_authorizer"].authorize(g.principal)
    # The permission check may have read the database; MLflow's handler may then wait on the
    # network for a long body (an artifact upload through the proxy): give the connection back.
    db.session.rollback()
    return None


def record_mlflow_creator(response: Response) -> Response:
    from flask import current_app

    principal = g.get("principal")
    if principal is not None and operation_of(current_app.view_functions.get(request.endpoint or "")) is None:
        current_app.extensions["trainflow.mlflow_authorizer"].record_creator(response, principal)
    return response
