"""`trainflow sweep` against a real server: a grid runs to the end and is ranked; random draws
are reproducible from the seed; usage mistakes are caught before anything is uploaded (#14)."""

from __future__ import annotations

import pytest
import requests
from click.testing import CliRunner

from trainflow.cli import _sweep_params, main

pytestmark = pytest.mark.e2e
PASSWORD = "a-users-password"
TRAIN = "/ajax-api/2.0/mlflow/train"
TRIAL_PY = """\
import argparse, mlflow
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
p.add_argument("--batch", type=int)
args = p.parse_args()
with mlflow.start_run():
    mlflow.log_metric("val_loss", args.lr * args.batch)
print("trained", args.lr, args.batch)
"""


@pytest.fixture
def cli(server_factory, tmp_path, database_url):
    server = server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass")
    requests.post(f"{server.url}/api/register", json={"username": "alice", "password": PASSWORD}, timeout=10)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "TRAINFLOW_URL": server.url}
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    invoke.server = server
    invoke("login", "--username", "alice", "--password", PASSWORD)
    return invoke


def test_a_grid_sweep_follows_its_trials_to_the_end_and_ranks_them(cli, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRIAL_PY)
    result = cli(
        "sweep", str(script), "--param", "lr=0.1,0.01", "--param", "batch=32,64",
        "--metric", "val_loss", "--goal", "max", "--name", "grid-e2e", "--follow",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Sweep 1 grid-e2e: 4 trials" in result.stderr
    assert "[4 of 4 done]" in result.stderr and result.stderr.count(": SUCCEEDED") == 4
    table = result.stdout.strip().splitlines()
    assert table[0].split()[:4] == ["RANK", "JOB", "STATUS", "val_loss"]
    assert [row.split()[3] for row in table[1:]] == ["6.4", "3.2", "0.64", "0.32"]
    assert sorted(table[1].split()[4:]) == ["batch=64", "lr=0.1"]
    auth = ("alice", PASSWORD)
    sweep = requests.get(f"{cli.server.url}{TRAIN}/sweeps/1", auth=auth, timeout=10).json()
    assert sweep["status"] == "FINISHED" and sweep["counts"] == {"SUCCEEDED": 4}


def test_a_random_sweep_with_a_seed_draws_the_same_trials_and_a_failure_exits_1(cli, tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import sys\nsys.exit(2)\n")
    args = [
        "--trials",
        "3",
        "--seed",
        "11",
        "--param",
        "lr=loguniform:1e-4:1e-1",
        "--param",
        "layers=int:2:8",
    ]
    first = cli("sweep", str(script), *args, "--follow")
    assert first.exit_code == 1, first.output
    assert "3 trials (seed 11)" in first.stderr and first.stderr.count(": FAILED") == 3
    again = cli("sweep", str(script), *args)
    assert again.exit_code == 0 and "3 trials (seed 11)" in again.output
    auth = ("alice", PASSWORD)
    drawn = [
        [
            t["job"]["params"]
            for t in requests.get(f"{cli.server.url}{TRAIN}/sweeps/{n}", auth=auth, timeout=10).json()["list"]
        ]
        for n in (1, 2)
    ]
    assert drawn[0] == drawn[1] and all(1e-4 <= p["lr"] <= 0.1 and 2 <= p["layers"] <= 8 for p in drawn[0])


def test_usage_mistakes_are_caught_before_uploading(cli, tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    for args, message in [
        (["--param", "lr"], "--param takes name=values"),
        (["--param", "lr=uniform:0:1"], "give --trials N too"),
        (["--trials", "2", "--param", "lr=uniform:0"], "uniform takes uniform:LOW:HIGH"),
        ([], "at least one --param"),
    ]:
        result = cli("sweep", str(script), *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    refused = cli("sweep", str(script), "--trials", "5000", "--param", "lr=uniform:0:1")
    assert refused.exit_code == 1 and "trials: Input should be less than or equal to 1000" in refused.output
    too_many = cli(
        "sweep",
        str(script),
        "--param",
        "a=" + ",".join(map(str, range(40))),
        "--param",
        "b=" + ",".join(map(str, range(40))),
    )
    assert too_many.exit_code == 1 and "1600 combinations" in too_many.output


def test_params_read_as_numbers_when_they_are():
    assert _sweep_params(("lr=0.1,1e-3", "batch=32", "opt=adam,sgd"), False) == {
        "lr": [0.1, 0.001],
        "batch": [32],
        "opt": ["adam", "sgd"],
    }
    assert _sweep_params(("lr=loguniform:1e-4:0.1", "batch=choice:32,64", "seed=7"), True) == {
        "lr": {"distribution": "loguniform", "low": 0.0001, "high": 0.1},
        "batch": {"distribution": "choice", "values": [32, 64]},
        "seed": {"distribution": "choice", "values": [7]},
    }
