"""The web dashboard (/train/), driven in headless Chromium against the real server.

Each browser test runs one flow, tests/e2e/js/dashboard/<flow>.mjs, through
tests/e2e/js/dashboard_flow.mjs, which prints what the page showed; screenshots of each step land
in the test's tmp_path (never committed). The flows run on SQLite only: the database variants of
the API underneath are covered by the other e2e tests.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.e2e.browser import CHROMIUM, IS_CI, ROOT, PageFailed, chromium, run_node
from trainflow.web.views import ASSETS, CONTENT_SECURITY_POLICY

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
    try:
        out = run_node(FLOW_RUNNER, request, timeout)
    except PageFailed as error:
        pytest.fail(str(error))
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
    """No innerHTML, insertAdjacentHTML, document.write or eval in our code: text goes in as text.

    The one parser of markup is highlight.js's output, read in an inert document and rebuilt
    from spans and text (js/highlight.js). Vendored libraries are checked by their own tests.
    """
    for path in (ASSETS / "js").rglob("*.js"):
        source = path.read_text(encoding="utf-8")
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("*", "//")))
        forbidden = [
            r"\.(inner|outer)HTML\b",
            r"insertAdjacentHTML",
            r"document\.write",
            r"\beval\(",
            r"new Function",
        ]
        if path.name != "highlight.js":
            forbidden.append(r"DOMParser")
        for pattern in forbidden:
            assert not re.search(pattern, code), f"{path.relative_to(ROOT)} uses {pattern}"
    html = (ASSETS / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "style=" not in html and "<style" not in html


def _catalogue(name: str) -> set[str]:
    source = (ASSETS / "js" / "messages" / name).read_text(encoding="utf-8")
    return set(re.findall(r'^  "([\w.]+)":', source, flags=re.MULTILINE))


def test_both_languages_have_every_message_the_code_asks_for():
    english, chinese = _catalogue("en.js"), _catalogue("zh-CN.js")
    assert english == chinese, sorted(english ^ chinese)
    used = {
        key
        for path in (ASSETS / "js").rglob("*.js")
        for key in re.findall(r'\bt\("([\w.]+)"', path.read_text("utf-8"))
    }
    assert used and used <= english, sorted(used - english)


# Files copied unmodified from npm packages into trainflow/static/dashboard/vendor/<folder>/:
# npm package -> (folder, paths inside the package).
VENDORED = {
    "uplot": ("uplot", ("dist/uPlot.esm.js", "dist/uPlot.min.css", "LICENSE")),
    "@highlightjs/cdn-assets": ("highlight.js", ("es/core.min.js", "es/languages/python.min.js", "LICENSE")),
}


@pytest.mark.parametrize("name", sorted(VENDORED))
def test_vendored_libraries_are_the_locked_npm_release_byte_for_byte(name: str):
    locked = json.loads((ROOT / "package-lock.json").read_text("utf-8"))["packages"][f"node_modules/{name}"]
    assert (
        json.loads((ROOT / "package.json").read_text("utf-8"))["devDependencies"][name] == locked["version"]
    )
    folder, files = VENDORED[name]
    vendor = ASSETS / "vendor" / folder
    assert sorted(p.name for p in vendor.iterdir()) == sorted(Path(f).name for f in files)
    installed = ROOT / "node_modules" / name
    if not installed.is_dir():
        reason = f"node_modules/{name} is missing: run `npm ci` (or `make install-browser`)"
        pytest.fail(reason) if IS_CI else pytest.skip(reason)
    assert json.loads((installed / "package.json").read_text("utf-8"))["version"] == locked["version"]
    for file in files:
        assert (vendor / Path(file).name).read_bytes() == (installed / file).read_bytes(), file


# --- in the browser -------------------------------------------------------------------------------

SLOW_JOB = """
    import time
    print("starting", flush=True)
    time.sleep(3)
    print("done", flush=True)
"""


@sqlite_only
def test_sign_in_job_list_live_preferences_and_sign_out(server_factory, tmp_path: Path, database_url: str):
    # One job at a time, so that a second job waits in the queue and shows its place.
    server = server_factory(
        tmp_path / "data",
        database_url,
        TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass",
        TRAINFLOW_MAX_CONCURRENT_JOBS="1",
    )
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
    assert result["queued"] == "Queued (#1 in queue)"
    assert result["queuedThenRan"] == "SUCCEEDED", "the waiting job ran when the first one ended"
    assert result["injected"] == 0
    assert result["listCallsWhileIdle"] == 0, "the list is kept live by the stream, not by polling"
    assert result["zh"] == {"lang": "zh-CN", "status": "成功", "signOut": "退出登录"}
    assert result["theme"]["pressed"] == "true" and result["theme"]["chosen"] == "dark"
    assert result["theme"]["after"] != result["theme"]["before"]
    assert result["phoneOverflow"] <= 0, "the page scrolls sideways at phone width"
    assert result["missing"] == {
        "job": ["Page not found", "There is no job with this number."],
        "script": ["Page not found", "There is no script with this number."],
    }
    assert result["refreshed"]
    assert result["expired"] == "Your session has expired; sign in again."
    assert result["expiredSession"] is None
    assert result["signedOut"] == "You have signed out."
    assert result["storageAfterSignOut"] == 0
    assert result["revokedTokenStatus"] == 401, "signing out revokes the token on the server"


EPOCHS = 25
TRAIN_SCRIPT = """
    import argparse
    import json
    import os
    import pathlib
    import sys
    import time

    import mlflow

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float)
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args()
    print(f"lr={args.lr} epochs={args.epochs}", flush=True)
    print("<img src=x onerror=alert(1)>", flush=True)
    print("a warning on stderr", file=sys.stderr, flush=True)
    print("\\033[1;32mcoloured\\033[0m plain", flush=True)
    with mlflow.start_run():
        for i in range(args.epochs):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
            print(f"step {i}", flush=True)
            progress = {"current": i + 1, "total": args.epochs, "desc": "epochs"}
            print("trainflow:progress " + json.dumps(progress), flush=True)
            time.sleep(0.7)  # long enough that the flow's reload comes while it runs, on a busy machine
    output = pathlib.Path(os.environ["TRAINFLOW_OUTPUT_DIR"])
    (output / "model.txt").write_text("weights 42\\n")
    (output / "plots").mkdir(exist_ok=True)
    (output / "plots" / "curve.csv").write_text("step,loss\\n")
    print("training done", flush=True)
"""
SLEEP_SCRIPT = """
import time
print("sleeping", flush=True)
time.sleep(600)
"""


@sqlite_only
def test_upload_submit_follow_a_job_and_cancel_another(server, tmp_path: Path):
    result = run_flow(
        tmp_path,
        server.url,
        "jobs.mjs",
        {
            "username": "carol",
            "password": PASSWORD,
            "trainScript": textwrap.dedent(TRAIN_SCRIPT),
            "sleepScript": SLEEP_SCRIPT,
            "epochs": EPOCHS,
        },
        timeout=240,
    )
    assert "neither a Python script" in result["refused"], result["refused"]
    assert result["upload"]["value"] == result["upload"]["max"] > 0
    assert result["chosenScript"].startswith("train.py (#")
    # The output: every line once, in order, through a reload; stderr told apart; markup as text.
    lines = result["lines"]
    steps = [text for _, text in lines if text.startswith("step ")]
    assert steps == [f"step {i}" for i in range(EPOCHS)], steps
    assert ("line stdout", "lr=0.01 epochs=25") in [tuple(x) for x in lines]
    assert ("line stderr", "a warning on stderr") in [tuple(x) for x in lines]
    assert ("line stdout", XSS) in [tuple(x) for x in lines]
    assert result["injected"] == 0
    assert lines[-1] == ["line stdout", "training done"]
    assert ["line stdout", "coloured plain"] in lines and result["coloured"] == "coloured"
    assert int(result["lineCount"]) == len(lines)
    # Search: 11 lines hold "step 1" (1, 10-19); the latest is shown first.
    assert result["search"] == ["11 of 11", "step 19", "10 of 11", "step 1"]
    # Progress moved while it ran, and ended full.
    first, later = result["progressMoved"]
    assert 2 <= first < later
    assert result["progressText"].startswith(f"epochs · {EPOCHS} / {EPOCHS} · 100%"), result["progressText"]
    assert result["loss"][-1] == str(EPOCHS - 1), result["loss"]  # the latest step
    assert float(result["loss"][0]) == pytest.approx(1 / EPOCHS, rel=1e-4)
    assert float(result["chartHover"]) == pytest.approx(1 / (EPOCHS // 2 + 1), rel=0.3), result["chartHover"]
    assert result["chartByTime"] == str(EPOCHS)
    assert result["zoom"] == ["true", "false"], "drag zooms in, double-click zooms out"
    assert result["runningAtReload"] == 1, "the reload was meant to come while the job ran"
    assert result["reconnecting"] == "Reconnecting…"
    assert result["exitCode"] == "0" and result["cancelHidden"]
    assert sorted(result["params"]) == [f"epochs={EPOCHS}", "lr=0.01"]
    assert re.fullmatch(r"/#/experiments/\d+/runs/[0-9a-f]{32}", result["runLink"]), result["runLink"]
    assert result["download"]["name"] == f"job-{result['jobId']}.log"
    assert f"step {EPOCHS - 1}\n" in result["download"]["text"] and XSS in result["download"]["text"]
    assert result["phoneOverflow"] <= 0
    assert result["artifacts"] == {
        "top": ["plots", "model.txt"],
        "nested": "plots/curve.csv",
        "model": "weights 42\n",
    }
    rerun = result["rerun"]
    assert sorted(rerun.pop("params")) == [["epochs", str(EPOCHS)], ["lr", "0.01"]]
    assert rerun == {
        "experiment": "dashboard-e2e",
        "timeout": "300",
        "retries": "2",  # set in the form, read back from the job
        "script": result["chosenScript"].split("#")[1].split(",")[0],
    }
    # The second job was cancelled while it slept.
    assert result["cancelReason"], result
    assert [row[1] for row in result["listed"]] == ["CANCELLED", "SUCCEEDED"]


@sqlite_only
def test_console_holds_a_million_lines_and_a_chart_100000_points_while_streaming(server, tmp_path: Path):
    """The page bench/dashboard.py times (frame times are its business, not this test's): a
    console of 1,000,000 lines keeps only the lines in view as elements, wherever it is scrolled;
    then 1,000 lines/s into it and new points into a chart of 100,000 arrive whole, with the view
    on the tail, and the chart draws a decimated series that keeps the extremes."""
    run = chromium(tmp_path).run(
        server.url,
        "dashboard_bench_page.js",
        {"lines": 1_000_000, "chartPoints": 100_000, "streamSeconds": 2},
        timeout=120,
    )
    assert not run.timed_out and not run.errors, run.describe()
    assert "error" not in run.result, run.result["error"]
    assert run.result["decimation"] == {
        "points": run.result["decimation"]["points"],
        "ends": [0, 99_999],
        "extremes": [-9, 7],
        "sorted": True,
        "zoomed": [103, 999, 1101],  # the range at full detail, and a point beyond each edge
        "nonFinite": 0,  # NaN and infinities are drawn as gaps (null)
        "whole": [1, None, None, None],
    }
    assert run.result["decimation"]["points"] <= 4 * 500
    console, streaming = run.result["console"], run.result["streaming"]
    assert console["count"] == 1_000_000 and console["elements"] < 100
    assert console["top"][0] == 1 and console["bottom"][1] == 1_000_000
    assert 400_000 < console["middle"][0] < 600_000
    assert re.fullmatch(r"line \d+ ok loss=\d\.\d{6}", console["sample"]), console["sample"]
    assert streaming["linesFed"] > 0 and streaming["linesShown"] == streaming["linesFed"]
    assert streaming["lastVisible"] == streaming["linesFed"]
    assert streaming["chartPoints"] == 100_000 + streaming["linesFed"] // 5


@sqlite_only
def test_admin_manages_users_and_a_person_their_account(server, tmp_path: Path):
    result = run_flow(
        tmp_path,
        server.url,
        "accounts.mjs",
        {
            "adminPassword": "chosen-admin-pass",
            "newUser": "dave",
            "newUserPassword": PASSWORD,
            "newPassword": "a-brand-new-passphrase",
        },
    )
    assert result["roleAfterReload"] == "admin"
    assert result["ownDeleteHidden"], "an admin is not offered to delete themself"
    assert result["confirmLabel"] == "Delete dave and their jobs?" and result["deletedGone"]
    assert result["email"] == "root@example.org"
    assert "password" in result["wrongPassword"].lower(), result["wrongPassword"]
    assert result["tokensReplaced"] and result["oldTokenStatus"] == 401
    assert result["everywhere"] == "You have signed out on every device."
    assert result["refreshAfterEverywhere"] == 401
    assert result["usersLinkForUser"] == 0 and result["usersPageForUser"] == "Page not found"


SOURCE = '''"""A model. </code><script>alert(1)</script>"""
import math

# <img src=x onerror=alert(1)>


def loss(x: float) -> float:
    return math.exp(-x) if x > 0 else 1.0  # "quoted" & 'single'


class Model:
    pass
'''


@sqlite_only
def test_scripts_list_source_run_and_delete(server, tmp_path: Path):
    result = run_flow(
        tmp_path,
        server.url,
        "scripts.mjs",
        {"username": "frank", "password": PASSWORD, "source": SOURCE, "spare": "print('spare')\n"},
    )
    assert result["listed"] == ["spare.py", "model.py"]
    source = result["source"]
    assert source["text"] == SOURCE, "the source is shown exactly, markup in it as text"
    assert source["tags"] == ["code", "span"] and source["attributes"] == []
    assert source["keywords"] == ["import", "def", "return"]
    assert result["injected"] == 0
    assert re.fullmatch(r"[0-9a-f]{64}", result["sha"])
    assert result["chosen"] == str(result["used"])
    assert result["stillListed"] == 1 and "job" in result["refusal"].lower(), result["refusal"]
