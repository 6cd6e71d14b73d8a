"""Comparing jobs, the charts' legends, labels and PNGs, and artifact previews, in Chromium.

The jobs are real: two that have ended (read from MLflow's REST API by the page), one still
running while the page is open (followed through its event stream), and one of another user,
which the page must not show. The flow is tests/e2e/js/dashboard/compare.mjs.
"""

from __future__ import annotations

import base64
import json
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.test_dashboard import run_flow, sqlite_only

pytestmark = pytest.mark.e2e
TRAIN = "/ajax-api/2.0/mlflow/train"
PASSWORD = "a-users-password"
STEPS = 12
# A 2 by 1 PNG (one red pixel, one blue): small enough to write from the job's script.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAIAAAB7QOjdAAAAEElEQVR4nGP4z8DAwMDAAAAN/wH/0eQrTgAAAABJRU5ErkJggg=="
)
CSV_ROWS = 80

FINISHED_SCRIPT = """
    import argparse, base64, json, os, pathlib
    import mlflow

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float)
    parser.add_argument("--epochs", type=int)
    args = parser.parse_args()
    with mlflow.start_run():
        for step in range(args.epochs):
            mlflow.log_metrics(
                {{
                    "train_loss": 1.0 / (step + 1) * args.lr * 100,
                    "val_loss": 1.2 / (step + 1) * args.lr * 100,
                    "accuracy": step / args.epochs,
                }},
                step=step,
            )
    out = pathlib.Path(os.environ["TRAINFLOW_OUTPUT_DIR"])
    (out / "plot.png").write_bytes(base64.b64decode("{png}"))
    note = '"a, quoted <b>cell</b>"'
    rows = ["step,loss,note"] + [f"{{i}},{{1 / (i + 1):.4f}},{{note}}" for i in range({csv_rows})]
    (out / "curve.csv").write_text("\\n".join(rows) + "\\n")
    config = {{"lr": args.lr, "layers": [64, 32], "html": "<script>x</script>"}}
    (out / "config.json").write_text(json.dumps(config))
    (out / "train.log").write_text("epoch 1 <img src=x onerror=alert(1)>\\nepoch 2\\n")
    (out / "weights.bin").write_bytes(bytes(range(256)))
    (out / "metrics").mkdir()
    (out / "metrics" / "loss").write_text("1700000000000 0.5 0\\n1700000001000 0.25 1\\n")
"""
RUNNING_SCRIPT = """
    import argparse, time
    import mlflow

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float)
    parser.add_argument("--epochs", type=int)
    parser.parse_args()
    with mlflow.start_run():
        for step in range(400):
            mlflow.log_metric("train_loss", 5.0 / (step + 1), step=step)
            time.sleep(0.25)
"""


class User:
    def __init__(self, url: str, name: str) -> None:
        self.url, self.auth = url, (name, PASSWORD)
        response = requests.post(
            f"{url}/api/register", json={"username": name, "password": PASSWORD}, timeout=10
        )
        assert response.status_code == 201, response.text

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", auth=self.auth, timeout=30, **kwargs)

    def submit(self, source: str, **body) -> int:
        upload = self.call("POST", f"{TRAIN}/upload", files={"file": ("train.py", textwrap.dedent(source))})
        assert upload.status_code == 201, upload.text
        response = self.call("POST", f"{TRAIN}/jobs", json={"script_id": upload.json()["script"], **body})
        assert response.status_code == 201, response.text
        return int(response.json()["job"])

    def wait(self, job_id: int, statuses: set[str], seconds: float = 120) -> dict:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = self.call("GET", f"{TRAIN}/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job  # type: ignore[no-any-return]
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not reach {statuses}")

    def metric_points(self, run_id: str, key: str) -> int:
        answer = self.call(
            "GET", "/api/2.0/mlflow/metrics/get-history", params={"run_id": run_id, "metric_key": key}
        )
        return len(answer.json().get("metrics", []))


@sqlite_only
def test_compare_finished_and_running_jobs_then_a_jobs_charts_and_artifact_previews(
    server_factory, tmp_path: Path, database_url: str
):
    server = server_factory(
        tmp_path / "data",
        database_url,
        TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass",
        TRAINFLOW_MAX_CONCURRENT_JOBS="4",
    )
    alice, bob = User(server.url, "alice"), User(server.url, "bob")
    script = textwrap.dedent(FINISHED_SCRIPT).format(png=base64.b64encode(PNG).decode(), csv_rows=CSV_ROWS)
    fast = alice.submit(script, run_name="fast", params={"lr": 0.1, "epochs": STEPS})
    slow = alice.submit(script, run_name="slow", params={"lr": 0.01, "epochs": STEPS})
    others = bob.submit(script, run_name="bobs", params={"lr": 0.5, "epochs": STEPS})
    for job_id, user in ((fast, alice), (slow, alice), (others, bob)):
        assert user.wait(job_id, {"SUCCEEDED", "FAILED"})["status"] == "SUCCEEDED"
    running = alice.submit(RUNNING_SCRIPT, run_name="live", params={"lr": 0.1, "epochs": STEPS})
    run_id = alice.wait(running, {"RUNNING"})["run_id"]
    deadline = time.monotonic() + 60
    while alice.metric_points(run_id, "train_loss") < 3:
        assert time.monotonic() < deadline, "the running job logged nothing"
        time.sleep(0.2)
    try:
        result = run_flow(
            tmp_path,
            server.url,
            "compare.mjs",
            {
                "username": "alice",
                "password": PASSWORD,
                "jobs": [fast, slow, running, others],
                "fast": fast,
                "running": running,
            },
            timeout=180,
        )
    finally:
        alice.call("POST", f"{TRAIN}/jobs/{running}/cancel")

    compare = result["compare"]
    # Another user's job is not shown; the page says so.
    assert compare["missing"] == [f"Job #{others} was not found (or is not yours)."]
    assert compare["listed"] == [str(fast), str(slow), str(running)]
    assert "bobs" not in json.dumps(compare)
    assert compare["loadingHidden"], "the loading note goes once every history is in"
    # train_loss and val_loss share a chart, every job's curve on it, labelled.
    loss = compare["charts"]["loss"]
    assert loss["metrics"] == "train_loss val_loss"
    assert loss["xLabel"] == "Step" and loss["yLabel"] == "train_loss / val_loss"
    labels = [label for label, _ in loss["legend"]]
    assert labels == [
        f"#{fast} fast · train_loss",
        f"#{fast} fast · val_loss",
        f"#{slow} slow · train_loss",
        f"#{slow} slow · val_loss",
        f"#{running} live · train_loss",
    ]
    # Every legend shows its latest value without hovering.
    values = dict(loss["legend"])
    assert float(values[f"#{fast} fast · train_loss"]) == pytest.approx(10 / STEPS, rel=1e-4)
    assert float(values[f"#{slow} slow · val_loss"]) == pytest.approx(1.2 / STEPS, rel=1e-4)
    assert all(value not in ("--", "") for value in values.values()), values
    accuracy = f"{(STEPS - 1) / STEPS:.6g}"
    assert compare["charts"]["accuracy"]["legend"] == [
        [f"#{fast} fast", accuracy],
        [f"#{slow} slow", accuracy],
    ]
    # The running job's curve grew while the page was open, and its legend followed it.
    before, after = compare["livePoints"]
    assert after > before >= 3 + 2 * STEPS * 2, compare["livePoints"]
    assert compare["liveLegend"][1] != compare["liveLegend"][0]
    # The table marks the differing param; "only differences" hides the rest.
    rows = compare["table"]
    assert rows["lr"] == {"differs": "true", "cells": ["0.1", "0.01", "0.1"]}
    assert rows["epochs"] == {"differs": "false", "cells": [str(STEPS)] * 3}
    assert compare["sameRowVisible"] and not compare["sameRowVisibleWhenOnlyDifferences"]
    assert compare["differingRowVisibleWhenOnlyDifferences"]
    # A metric put on another chart by hand.
    assert compare["moved"] == "accuracy train_loss"
    assert compare["phoneOverflow"] <= 0, "the compare page scrolls sideways at phone width"
    # Save PNG: a PNG file.
    assert compare["png"]["name"] == "loss.png"
    assert compare["png"]["magic"] == "89504e470d0a1a0a", compare["png"]
    assert compare["png"]["size"] > 1000
    assert result["refusals"] == {
        "tooMany": "At most 20 jobs can be compared at once; 21 were asked for.",
        "one": "Choose at least two jobs to compare.",
        "invalid": "Job numbers are whole numbers separated by commas, e.g. 12,15,16.",
    }

    job = result["job"]
    assert job["loss"]["metrics"] == "train_loss val_loss"
    assert job["loss"]["xLabel"] == "Step" and job["loss"]["yLabel"] == "train_loss / val_loss"
    assert [label for label, _ in job["loss"]["legend"]] == ["train_loss", "val_loss"]
    assert float(dict(job["loss"]["legend"])["val_loss"]) == pytest.approx(12 / STEPS, rel=1e-4)
    assert job["ungrouped"] == ["accuracy", "train_loss", "val_loss"]
    assert job["png"]["magic"] == "89504e470d0a1a0a"

    previews = result["previews"]
    assert previews["image"] == {"width": 2, "height": 1, "scheme": "data"}
    assert previews["csv"]["header"] == ["step", "loss", "note"]
    assert len(previews["csv"]["rows"]) == 50
    assert previews["csv"]["rows"][0] == ["0", "1.0000", "a, quoted <b>cell</b>"]
    assert previews["csv"]["note"] == "Showing the first 50 rows."
    assert json.loads(previews["json"]) == {"lr": 0.1, "layers": [64, 32], "html": "<script>x</script>"}
    assert previews["json"].startswith('{\n  "lr": 0.1,')
    assert previews["text"] == "epoch 1 <img src=x onerror=alert(1)>\nepoch 2\n"
    assert previews["injected"] == 0
    assert previews["metricFile"] == [["0", "0.5"], ["1", "0.25"]]
    assert previews["binaryPreview"] == 0, "a file of unknown type gets no preview"
    assert previews["binary"] == list(range(256))
