"""Serve the dashboard: index.html for every page under /train/, its assets from static/dashboard/.

The dashboard is plain ES modules with no build step; it talks to the server only through the
JSON API and the event streams. Its pages are routed in the browser (History API), so any
/train/<path> that is not an asset answers with the same index.html.

The page routes are declared with ``endpoint(..., is_public=True)``: the app's auth hook lets a
route through without credentials only when it says so (an undeclared route is treated as an
MLflow route and would answer 401 with a Basic challenge). The assets are the blueprint's own
static endpoint (``web.static``), which the hook also lets through.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import PathConverter

from trainflow.api import endpoint

# The server's assets live in one tree, trainflow/static/; the dashboard's are its dashboard/ folder.
ASSETS = Path(__file__).resolve().parent.parent / "static" / "dashboard"
bp = Blueprint("web", __name__, url_prefix="/train", static_folder=ASSETS, static_url_path="/static")
TAG = "dashboard"


class PagePath(PathConverter):
    """Any rest of the path, a newline or a leading slash too: every /train/<path> is a page.

    Werkzeug's ``path`` stops at a newline, so such a URL fell through to an HTML 404 that the
    API document does not declare; the dashboard's router says "page not found" itself.
    """

    regex = "(?s:.+)"
    part_isolating = False  # it spans segments (Werkzeug guesses from a "/" in the regex)


def _add_page_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("page", PagePath)


bp.record_once(_add_page_converter)

# Nothing inline, nothing from another origin. Styles set from JS through the CSSOM
# (element.style.width = ...) are allowed by style-src 'self'; style="" in markup is not.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@bp.after_request
def add_security_headers(response: Response) -> Response:
    """Every answer of this blueprint (pages and assets, errors too) gets the same policy."""
    response.headers.update(SECURITY_HEADERS)
    # The assets have no content hash in their names: revalidate (ETag) on every load, so an
    # upgraded server is never paired with a stale module.
    response.headers["Cache-Control"] = "no-cache"
    return response


@endpoint(
    bp,
    "/",
    "GET",
    summary="The web dashboard (HTML)",
    tag=TAG,
    is_public=True,
    uses_database=False,
    media_types=("text/html",),
)
def index() -> Response:
    return _index_html()


@endpoint(
    bp,
    "/<page:path>",
    "GET",
    summary="A page of the web dashboard (the same HTML; the page is routed in the browser)",
    tag=TAG,
    is_public=True,
    uses_database=False,
    media_types=("text/html",),
)
def page(path: str) -> Response:
    return _index_html()


def _index_html() -> Response:
    return send_from_directory(bp.static_folder or "", "index.html", mimetype="text/html")
