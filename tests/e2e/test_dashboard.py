"""The web dashboard (/train/), driven in headless Chromium against the real server.

Each browser test runs one flow, tests/e2e/js/dashboard/<flow>.mjs, through
tests/e2e/js/dashboard_flow.mjs, which prints what the page showed; screenshots of each step land
in the test's tmp_path (never committed). The flows run on SQLite only: the database variants of
the API underneath are covered by the other e2e tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.e2e.browser import CHROMIUM, ROOT, chromium
from trainflow.web.views import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.e2e
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
FLOW_RUNNER = Path(__file__).parent / "js" / "dashboard_flow.mjs"
PASSWORD = "a-users-password"
XSS = "<img src=x onerror=alert(1)>"


def run_flow(
    screenshots: Path, origin: str, flow: str, options: dict[str, Any], timeout: float = 150
) -> dict:
    """Run tests/e2e/js/dashboard/<flow>; return its result, failing with what it saw if it failed."""
    chromium(screenshots)  # skips (fails under CI) when the browser is not installed
    request = {
        "origin": origin.rstrip("/"),
        "flow": flow,
        "options": options,
        "executablePath": str(CHROMIUM),
        "timeoutMs": int(timeout * 1000),
        "screenshots": str(screenshots),
    }
    process = subprocess.Popen(
        ["node", str(FLOW_RUNNER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        start_new_session=True,  # so that a hung run's Chromium goes with it
    )
    try:
        stdout, stderr = process.communicate(json.dumps(request), timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the browser did not finish in {timeout + 60:.0f} s:\n{stderr[-5000:]}")
    if process.returncode != 0:
        pytest.fail(f"dashboard_flow.mjs failed ({process.returncode}):\n{stderr[-5000:]}")
    out = json.loads(stdout)
    seen = json.dumps({k: out[k] for k in ("steps", "console", "pageErrors", "csp", "dialogs")}, indent=1)
    assert out["error"] is None, f"{out['error']}\n{seen[-10_000:]}\nscreenshots in {screenshots}"
    assert out["pageErrors"] == [], seen
    assert out["csp"] == [], f"the page broke its Content-Security-Policy:\n{seen}"
    assert out["dialogs"] == [], seen
    return out["result"]  # type: ignore[no-any-return]


@pytest.fixture
def server(server_factory, tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    return server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass")


# --- served by the app (no browser) ---------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("path", ["/train/", "/train/jobs/7", "/train/signin?next=/train/", "/train/a/b/c"])
def test_every_page_is_the_same_html_with_a_strict_policy(client: FlaskClient, path: str):
    response = client.get(path)  # no credentials: the page itself is public
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert b'<script type="module" src="/train/static/js/main.js">' in response.data
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    response.close()


def test_the_policy_allows_nothing_inline_and_nothing_from_elsewhere():
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == directives["style-src"] == directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == directives["base-uri"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


@sqlite_only
def test_assets_are_served_with_the_policy_and_a_missing_one_is_a_404(client: FlaskClient):
    for path, mimetype in (
        ("/train/static/js/main.js", "javascript"),
        ("/train/static/app.css", "text/css"),
        ("/train/static/favicon.svg", "image/svg+xml"),
    ):
        response = client.get(path)
        assert response.status_code == 200 and mimetype in response.mimetype, path
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-cache"
        response.close()
    missing = client.get("/train/static/js/nothing-here.js")
    assert missing.status_code == 404 and missing.headers["Content-Security-Policy"]
    missing.close()


def test_the_dashboard_never_writes_markup_from_strings():
    """No innerHTML, insertAdjacentHTML, document.write or eval: text goes in as text."""
    static = ROOT / "trainflow" / "web" / "static"
    for path in static.rglob("*.js"):
        source = path.read_text(encoding="utf-8")
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("*", "//")))
        for forbidden in (
            "innerHTML =",
            "outerHTML =",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert forbidden not in code, f"{path.relative_to(ROOT)} uses {forbidden}"
    html = (static / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "style=" not in html and "<style" not in html


# --- in the browser -------------------------------------------------------------------------------

SLOW_JOB = """
    import time
    print("starting", flush=True)
    time.sleep(3)
    print("done", flush=True)
"""


@sqlite_only
def test_sign_in_job_list_live_preferences_and_sign_out(server, tmp_path: Path):
    result = run_flow(
        tmp_path,
        server.url,
        "basics.mjs",
        {
            "username": "alice",
            "password": PASSWORD,
            "weakPassword": "short",
            "jobFilename": f"{XSS}.py",
            "jobScript": textwrap.dedent(SLOW_JOB),
        },
    )
    assert "8 characters" in result["refusal"], result["refusal"]
    # The session holds tokens and who they belong to, never the password.
    stored = json.dumps(result["storage"])
    assert PASSWORD not in stored
    session = json.loads(result["storage"]["session"]["trainflow.session"])
    assert set(session) == {"access", "refresh", "user"} and session["user"]["username"] == "alice"
    # A name a user chose is shown as text: no element was made of it.
    assert result["scriptCell"] == f"{XSS}.py" and result["userCell"] == "alice"
    assert result["injected"] == 0
    assert result["listCallsWhileIdle"] == 0, "the list is kept live by the stream, not by polling"
    assert result["zh"] == {"lang": "zh-CN", "status": "成功", "signOut": "退出登录"}
    assert result["theme"]["pressed"] == "true" and result["theme"]["chosen"] == "dark"
    assert result["theme"]["after"] != result["theme"]["before"]
    assert result["phoneOverflow"] <= 0, "the page scrolls sideways at phone width"
    assert result["refreshed"]
    assert result["expired"] == "Your session has expired; sign in again."
    assert result["expiredSession"] is None
    assert result["signedOut"] == "You have signed out."
    assert result["storageAfterSignOut"] == 0
    assert result["revokedTokenStatus"] == 401, "signing out revokes the token on the server"
