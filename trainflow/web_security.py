"""What a browser may do with the server's answers: headers, cross-origin rules, host checks.

trainflow installs these in place of MLflow's own security middleware (``mlflow.server.security``),
which grants credentialed CORS to every ``http://localhost:*`` origin and lets any localhost page
send state-changing requests. Here:

- **User bytes** (artifacts, job logs, uploaded scripts) are never run by a browser on this
  origin: ``nosniff``, a sandboxing CSP, and anything but a short list of inert types is served
  as ``application/octet-stream`` in an attachment.
- **The MLflow UI** (``/`` and ``/static-files/...``) runs under :data:`MLFLOW_UI_POLICY`, the
  strictest policy it works under (found in Chromium: tests/e2e/test_mlflow_ui_csp.py).
- **CORS** is off unless ``TRAINFLOW_CORS_ORIGINS`` names origins; then exactly those get
  credentialed CORS. A state-changing request whose ``Origin`` is neither this server nor a
  configured origin is refused (403), whatever the origin's host.
- **Host header** checks (DNS rebinding) as MLflow does them: ``MLFLOW_SERVER_ALLOWED_HOSTS``, by
  default localhost and private addresses (MLflow's rule, in :mod:`trainflow.tracking.hosts`).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flask import Response, current_app, request

from trainflow.errors import ConfigError, error_response
from trainflow.tracking.hosts import allowed_hosts, is_allowed_host

if TYPE_CHECKING:
    from flask import Flask

    from trainflow.settings import Settings

log = logging.getLogger(__name__)

# Endpoints whose answer is bytes a user (or a user's job) chose. A test checks that each one
# is a route of the app, so a renamed MLflow handler fails loudly instead of going unprotected.
USER_BYTES_ENDPOINTS = frozenset(
    {
        "serve_artifacts",  # /get-artifact
        "serve_model_version_artifact",  # /model-versions/get-artifact
        "_download_artifact",  # GET /api/2.0/mlflow-artifacts/artifacts/<path> (and /ajax-api)
        "serve_get_logged_model_artifact",  # /ajax-api/2.0/mlflow/logged-models/<id>/artifacts/files
        "serve_get_trace_artifact",  # /ajax-api/{2,3}.0/mlflow/get-trace-artifact
        "scripts.script_content",  # an uploaded script or archive, as uploaded
        "jobs.download_logs",  # a job's whole output
    }
)
# Types a browser shows but never runs. Anything else (HTML, SVG, XML, JavaScript, CSS, and
# every type we cannot vouch for) becomes an opaque download.
INERT_TYPES = frozenset(
    {
        "text/plain",
        "text/csv",
        "text/tab-separated-values",
        "text/x-python",
        "application/json",
        "application/octet-stream",
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/avif",
    }
)
INERT_PREFIXES = ("audio/", "video/")
USER_BYTES_POLICY = "sandbox; default-src 'none'"

# The MLflow UI's bundle, under the strictest policy it runs under (found in Chromium): scripts and
# workers from this origin only; emotion inserts <style> elements at run time, so inline styles are
# allowed (no inline script is); images and fonts also as data: URLs, images as blob: URLs (an
# artifact image is shown from its fetched bytes); no plugins, no framing by other origins.
MLFLOW_UI_POLICY = (
    "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; manifest-src 'self'; "
    "frame-src blob:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)
MLFLOW_UI_ENDPOINTS = frozenset({"serve", "serve_static_file"})
# MLflow serves this renderer to Jupyter notebooks, which frame it from their own origin.
NOTEBOOK_RENDERER = "/static-files/lib/notebook-trace-renderer"

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CORS_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HEALTH_PATHS = frozenset({"/health", "/version", "/api/health"})


def cors_origins(settings: Settings) -> list[str]:
    """The origins of TRAINFLOW_CORS_ORIGINS, each ``scheme://host[:port]``; ConfigError otherwise."""
    origins = []
    for raw in settings.cors_origins.split(","):
        origin = raw.strip().rstrip("/")
        if not origin:
            continue
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path or parts.query:
            raise ConfigError(
                f"TRAINFLOW_CORS_ORIGINS: {raw.strip()!r} is not an origin; write it as "
                "scheme://host[:port], e.g. https://notebooks.example.com."
            )
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return origins


def init_app(app: Flask, settings: Settings) -> None:
    """Install the host check, the cross-origin rules and the response headers on ``app``.

    Call before the authentication hook: a CORS preflight carries no credentials.
    """
    origins = cors_origins(settings)
    app.extensions["trainflow.cors_origins"] = frozenset(origins)
    if origins:
        from flask_cors import CORS

        # Compiled, anchored patterns: flask-cors reads a plain string holding a '.' as a
        # regular expression, which would let https://a.example.com.evil.net through.
        CORS(
            app,
            resources={r"/*": {"origins": [re.compile(f"^{re.escape(o)}$", re.IGNORECASE) for o in origins]}},
            supports_credentials=True,
            methods=CORS_METHODS,
            vary_header=True,
        )
    app.extensions["trainflow.allowed_hosts"] = allowed_hosts()  # read once, at start
    app.before_request(check_host)
    app.before_request(check_origin)
    app.after_request(add_headers)


def check_host() -> Response | None:
    """Refuse a Host header the operator did not allow (DNS rebinding), as MLflow does."""
    allowed = current_app.extensions["trainflow.allowed_hosts"]
    if "*" in allowed or request.path in HEALTH_PATHS:
        return None
    if is_allowed_host(allowed, request.headers.get("Host", "")):
        return None
    log.warning("Refused a request with an unexpected Host header")
    return error_response(
        403, "invalid_host", "This Host header is not allowed; set MLFLOW_SERVER_ALLOWED_HOSTS."
    )


def check_origin() -> Response | None:
    """Answer a configured origin's preflight; refuse state changes from any other origin."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    is_allowed = _is_same_origin(origin) or origin.lower() in current_app.extensions["trainflow.cors_origins"]
    if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        # A preflight has no credentials. For an allowed origin flask-cors adds the headers
        # to this empty answer; any other origin gets the same answer without them.
        return Response(status=204)
    if request.method in STATE_CHANGING and not is_allowed:
        log.warning("Refused a cross-origin %s", request.method)
        return error_response(
            403,
            "cross_origin_refused",
            "Cross-origin requests are refused; an operator can allow an origin (TRAINFLOW_CORS_ORIGINS).",
        )
    return None


def _is_same_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == request.host.lower()


def add_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if not request.path.startswith(NOTEBOOK_RENDERER):
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    endpoint = request.endpoint or ""
    if endpoint in USER_BYTES_ENDPOINTS:
        protect_user_bytes(response)
    elif endpoint in MLFLOW_UI_ENDPOINTS and not request.path.startswith(NOTEBOOK_RENDERER):
        response.headers["Content-Security-Policy"] = MLFLOW_UI_POLICY
        response.headers.setdefault("Referrer-Policy", "same-origin")
    if (
        request.method == "OPTIONS"
        and response.status_code == 200
        and request.path.startswith(("/api/", "/ajax-api/"))
    ):
        # As MLflow's middleware answers them: no body.
        response.status_code = 204
        response.set_data(b"")
    return response


def protect_user_bytes(response: Response) -> None:
    """User-chosen bytes never run on this origin: inert type or a download, sandboxed either way."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = USER_BYTES_POLICY
    if response.status_code >= 300:
        return
    mimetype = (response.mimetype or "").lower()
    if mimetype in INERT_TYPES or mimetype.startswith(INERT_PREFIXES):
        return
    response.headers["Content-Type"] = "application/octet-stream"
    disposition = response.headers.get("Content-Disposition", "")
    if not disposition.lower().startswith("attachment"):
        _, _, params = disposition.partition(";")
        response.headers["Content-Disposition"] = "attachment" + (f";{params}" if params else "")
