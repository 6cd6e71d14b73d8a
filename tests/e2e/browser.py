"""Run a page in headless Chromium (Debian's, driven by playwright-core) and read what it computed.

`make test` installs both (`make install-browser`). Without them a test skips, except under CI=true,
where it fails: there nothing may skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).parent / "js" / "run_page.mjs"
CHROMIUM = Path("/usr/bin/chromium")
IS_CI = os.environ.get("CI", "").lower() == "true"
JS = Path(__file__).parent / "js"
EVENTS_JS = ROOT / "trainflow" / "static" / "api" / "js" / "events.js"
EVENTS_JS_URL = "/api/static/js/events.js"  # where the server serves it (meta blueprint's static folder)
# A test page and its script are answered inside the browser, never by the server.
TEST_PAGE, TEST_SCRIPT = "/__test__/page.html", "/__test__/page.js"
PAGE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>{name}</title></head>
<body><pre id="log"></pre><script type="module" src="{script}"></script></body></html>
"""


@dataclass
class PageRun:
    """What run_page.mjs printed: window.__result, or window.__progress of a page that timed out."""

    result: Any
    timed_out: bool
    progress: Any
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return json.dumps(
            {"progress": self.progress, "console": self.console, "errors": self.errors}, indent=1
        )[:20_000]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: `make install-browser` installs Debian's chromium"
    if shutil.which("node") is None:
        return "node is not on PATH (Node 20 runs the browser tests' driver)"
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed: run `npm ci` (or `make install-browser`)"
    return None


class PageFailed(RuntimeError):
    """A browser driver (run_page.mjs, dashboard_flow.mjs) did not finish, or failed."""


def run_node(driver: Path, request: dict[str, Any], timeout: float) -> Any:
    """Run a Node.js browser driver with `request` as JSON on stdin; return the JSON it prints.

    Raises PageFailed when it fails or is still running `timeout` + 60 s later (then it is
    killed with its Chromium).
    """
    process = subprocess.Popen(
        ["node", str(driver)],
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
        raise PageFailed(f"the browser did not finish in {timeout + 60:.0f} s:\n{stderr[-5000:]}") from None
    if process.returncode != 0:
        raise PageFailed(f"{driver.name} failed ({process.returncode}):\n{stderr[-5000:]}")
    return json.loads(stdout)


def run_page(
    origin: str,
    script: str,
    init: Any = None,
    *,
    screenshot: Path | None = None,
    serve_events_js: bool = False,
    timeout: float = 60,
) -> PageRun:
    """Run the module tests/e2e/js/<script> in a page at `origin`; return its window.__result.

    `init` becomes window.__options. The page imports the client from EVENTS_JS_URL: from the
    server at `origin`, or with serve_events_js from this checkout (then `origin` needs no server).
    A page can record window.__progress as it goes: a run that times out returns it. Raises
    PageFailed when the browser could not run the page. bench/dashboard.py uses it too.
    """
    origin = origin.rstrip("/")
    routes = {
        origin + TEST_PAGE: {
            "body": PAGE_HTML.format(name=Path(script).stem, script=TEST_SCRIPT),
            "contentType": "text/html; charset=utf-8",
        },
        origin + TEST_SCRIPT: {
            "body": (JS / script).read_text(encoding="utf-8"),
            "contentType": "text/javascript",
        },
    }
    if serve_events_js:
        routes[origin + EVENTS_JS_URL] = {
            "body": EVENTS_JS.read_text(encoding="utf-8"),
            "contentType": "text/javascript",
        }
    options = {
        "url": origin + TEST_PAGE,
        "routes": routes,
        "init": init,
        "executablePath": str(CHROMIUM),
        "timeoutMs": int(timeout * 1000),
        "screenshot": str(screenshot) if screenshot else None,
    }
    out = run_node(RUNNER, options, timeout)
    return PageRun(out["result"], out["timedOut"], out["progress"], out["console"], out["errors"])


@dataclass
class Chromium:
    screenshots: Path

    def run(
        self,
        origin: str,
        script: str,
        init: Any = None,
        *,
        serve_events_js: bool = False,
        timeout: float = 60,
    ) -> PageRun:
        """run_page() in a test: a screenshot lands at `<screenshots>/<script>.screenshot.png`,
        and a browser that fails fails the test."""
        try:
            return run_page(
                origin,
                script,
                init,
                screenshot=self.screenshots / f"{Path(script).stem}.screenshot.png",
                serve_events_js=serve_events_js,
                timeout=timeout,
            )
        except PageFailed as error:
            pytest.fail(str(error))


def chromium(tmp_path: Path) -> Chromium:
    """A Chromium to run pages in; skips (fails under CI=true) when it is not installed."""
    reason = missing()
    if reason is not None:
        if IS_CI:
            pytest.fail(f"{reason} (under CI nothing may skip)")
        pytest.skip(reason)
    return Chromium(tmp_path)
