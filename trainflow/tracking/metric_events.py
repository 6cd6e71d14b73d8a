"""A job's metrics announced to its followers as it logs them, read from MLflow's own requests.

The metric write itself is :class:`~trainflow.tracking.store.TrainflowTrackingStore`'s; this
after-request hook reads the same ``log-metric`` / ``log-batch`` body once MLflow's handler
has stored it, and appends the metrics to the job's event log.
"""

from __future__ import annotations

from flask import Response, current_app, g, request

from trainflow.events.record import record_metrics

METRIC_PATHS = ("/runs/log-metric", "/runs/log-batch")
SYSTEM = "system/"  # the prefix of MLflow's system metrics


def push_job_metrics(response: Response) -> Response:
    """A job's metrics go to its followers the moment its MLflow client has logged them."""
    principal = g.get("principal")
    if (
        principal is None
        or principal.job_id is None
        or response.status_code != 200
        or not request.path.endswith(METRIC_PATHS)
    ):
        return response
    body = request.get_json(silent=True, force=True)
    if isinstance(body, dict):
        metrics = body.get("metrics") if request.path.endswith("log-batch") else [body]
        if isinstance(metrics, list):
            # MLflow's system metrics (the supervisor's samples, trainflow.runner.runlog) reach
            # followers as the job's ``system`` events; as metrics they would be charted twice.
            metrics = [
                m for m in metrics if not (isinstance(m, dict) and str(m.get("key", "")).startswith(SYSTEM))
            ]
            if metrics:
                record_metrics(current_app, principal.job_id, metrics)
    return response
