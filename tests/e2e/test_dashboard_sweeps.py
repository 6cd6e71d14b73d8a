"""Parameter sweeps in the dashboard, in headless Chromium against the real server (#14):
a grid of 4 trials submitted from the form runs to its end and the sweep page ranks them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_dashboard import PASSWORD, run_flow

pytestmark = pytest.mark.e2e
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

TRIAL_SCRIPT = """\
import argparse, time, mlflow
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
p.add_argument("--batch", type=int)
args = p.parse_args()
with mlflow.start_run():
    for step in range(3):
        mlflow.log_metric("val_loss", args.lr * args.batch * (step + 1) / 3, step=step)
        time.sleep(0.3)
print("done", args.lr, args.batch)
"""


@sqlite_only
def test_a_grid_sweep_from_the_form_runs_to_the_end_ranked(server_factory, tmp_path: Path, database_url: str):
    server = server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass")
    result = run_flow(
        tmp_path,
        server.url,
        "sweeps.mjs",
        {"username": "dana", "password": PASSWORD, "trainScript": TRIAL_SCRIPT},
        timeout=240,
    )
    assert result["randomFields"] is True and result["gridFields"] is False
    assert result["trialCount"] == "4 trials"
    assert result["firstDone"].endswith("of 4 done")
    rows = result["rows"]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["status"] for r in rows] == ["SUCCEEDED"] * 4
    assert [r["value"] for r in rows] == ["6.4", "3.2", "0.64", "0.32"]  # lr * batch, highest first
    assert [(r["lr"], r["batch"]) for r in rows] == [
        ("0.1", "64"),
        ("0.1", "32"),
        ("0.01", "64"),
        ("0.01", "32"),
    ]
    assert result["valueHeader"] == "val_loss"
    assert result["compare"] == "/train/compare?jobs=" + ",".join(r["job"] for r in rows)
    assert result["rerunHidden"] and result["cancelHidden"]
    trial_page = result["trialPage"]
    assert trial_page["sweep"] == f"Trial of sweep #{result['sweepId']}"
    assert trial_page["href"] == f"/train/sweeps/{result['sweepId']}"
    assert trial_page["runName"]  # the trial's MLflow run name, as MLflow holds it
    listed = result["listed"]
    assert listed[0] == f"#{result['sweepId']}" and listed[1] == "grid-in-the-browser"
    assert listed[2] == "Finished" and listed[3] == "4 of 4 done"
