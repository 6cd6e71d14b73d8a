"""The command line against a real server: login, submit --follow, jobs, logs, cancel (issue 4)."""

from __future__ import annotations

import json
import stat
import time

import pytest
import requests
from click.testing import CliRunner

from trainflow.cli import main

pytestmark = pytest.mark.e2e
PASSWORD = "a-users-password"


@pytest.fixture
def cli(server_factory, tmp_path, database_url):
    server = server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass")
    requests.post(f"{server.url}/api/register", json={"username": "alice", "password": PASSWORD}, timeout=10)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "TRAINFLOW_URL": server.url}
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    invoke.config = tmp_path / "config" / "trainflow" / "credentials.json"
    invoke.server = server
    return invoke


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def test_login_keeps_tokens_not_the_password(cli):
    result = cli("login", "--username", "alice", "--password", PASSWORD)
    assert result.exit_code == 0 and "Signed in" in result.output
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    text = cli.config.read_text()
    assert PASSWORD not in text and "refresh_token" in json.loads(text)[cli.server.url]
    wrong = cli("login", "--username", "alice", "--password", "not-the-password")
    assert wrong.exit_code == 1 and "Wrong username or password" in wrong.output


def test_submit_follow_prints_the_output_and_exits_with_the_outcome(cli, tmp_path):
    cli("login", "--username", "alice", "--password", PASSWORD)
    script = write(
        tmp_path,
        "train.py",
        "import argparse\np = argparse.ArgumentParser()\np.add_argument('--lr')\n"
        "print('lr is', p.parse_args().lr)\n",
    )
    result = cli("submit", script, "--param", "lr=0.3", "--follow")
    assert result.exit_code == 0, result.output
    assert "lr is 0.3" in result.stdout
    assert "Uploading train.py" in result.stderr and "SUCCEEDED" in result.stderr
    failing = write(tmp_path, "fail.py", "import sys\nprint('oops', file=sys.stderr)\nsys.exit(3)\n")
    result = cli("submit", failing, "--follow")
    assert result.exit_code == 3 and "oops" in result.stderr and "FAILED" in result.stderr


def test_jobs_logs_and_cancel(cli, tmp_path):
    cli("login", "--username", "alice", "--password", PASSWORD)
    quick = write(tmp_path, "quick.py", "for i in range(3): print('line', i)\n")
    result = cli("submit", quick, "--follow")
    assert result.exit_code == 0
    slow = write(tmp_path, "slow.py", "import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    submitted = cli("submit", slow)
    assert submitted.exit_code == 0
    job_id = int(submitted.output.split("Job ")[1].split()[0])
    listing = cli("jobs")
    assert listing.exit_code == 0 and f"{job_id:>6}" in listing.output and "quick.py" in listing.output
    deadline = time.monotonic() + 30
    while "started" not in cli("logs", str(job_id)).output and time.monotonic() < deadline:
        time.sleep(0.2)
    cancelled = cli("cancel", str(job_id))
    assert cancelled.exit_code == 0
    followed = cli("logs", str(job_id), "--follow")
    assert followed.exit_code == 130 and "CANCELLED" in followed.stderr
    assert cli("logs", "999999").exit_code == 1


def test_clear_errors_without_a_session_or_a_server(cli, tmp_path):
    script = write(tmp_path, "t.py", "print(1)\n")
    result = cli("submit", script)
    assert result.exit_code == 1 and "Not signed in" in result.output
    result = CliRunner().invoke(
        main, ["jobs", "--server", "http://127.0.0.1:9"], env={"XDG_CONFIG_HOME": str(tmp_path / "none")}
    )
    assert result.exit_code == 1 and ("Cannot reach" in result.output or "Not signed in" in result.output)
    assert cli("submit", script, "--param", "novalue").exit_code == 2


def test_the_example_project_runs_with_its_own_requirements(cli):
    """examples/sklearn_digits: a folder, a requirements.txt (tqdm, not in the server's venv), MLflow."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "sklearn_digits"
    cli("login", "--username", "alice", "--password", PASSWORD)
    result = cli("submit", str(example), "--param", "epochs=3", "--follow")
    assert result.exit_code == 0, result.output
    assert "final accuracy" in result.stdout
    assert "epochs: 100%" in result.stderr  # tqdm's bar, kept as its final line
    assert "creating a virtual environment" in result.stdout
    job_id = int(result.stderr.split("Job ")[1].split()[0])
    job = requests.get(
        f"{cli.server.url}/ajax-api/2.0/mlflow/train/jobs/{job_id}", auth=("alice", PASSWORD), timeout=10
    ).json()
    run = requests.get(
        f"{cli.server.url}/api/2.0/mlflow/runs/get",
        params={"run_id": job["run_id"]},
        auth=("alice", PASSWORD),
        timeout=10,
    ).json()["run"]
    assert {m["key"] for m in run["data"]["metrics"]} == {"accuracy", "loss"}
    # The environment is cached: a second run does not build it again.
    again = cli("submit", str(example), "--param", "epochs=1", "--follow")
    assert again.exit_code == 0 and "using the cached environment" in again.stdout
