"""What the local executor gives a job's supervisor."""

from __future__ import annotations

import subprocess
import sys

from trainflow.jobs.executors.local import _supervisor_env


def test_the_supervisor_finds_trainflow_from_its_own_environment_alone(tmp_path):
    """Not through the server's site-packages (an editable install's finder hid a wrong path)."""
    env = _supervisor_env()
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "SYSTEMROOT", "PYTHONPATH"}
    found = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import trainflow.runner.supervisor, trainflow; print(trainflow.__file__)",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().endswith("trainflow/__init__.py")
