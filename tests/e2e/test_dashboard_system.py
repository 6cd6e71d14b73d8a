"""The job page's System panel and the missing-module hint, in headless Chromium (issue 14).

The server samples jobs every second, with a stub NVML (a C library built here) and one GPU to
hand out; the job burns a core for a while holding 200 MB in a child process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.e2e.test_dashboard import run_flow, sqlite_only
from tests.e2e.test_jobs import TRAIN
from tests.runner.nvml_stub import build_stub
from tests.runner.test_sysmetrics import BURNER, core_floor

pytestmark = [pytest.mark.e2e, pytest.mark.serial]
PASSWORD = "a-users-password"


@sqlite_only
def test_the_system_panel_is_live_and_a_missing_module_is_explained(
    server_factory, tmp_path: Path, database_url
):
    stub = build_stub(tmp_path / "nvml")
    tmp_path.chmod(0o755)
    server = server_factory(
        tmp_path / "data",
        database_url,
        TRAINFLOW_ADMIN_PASSWORD="chosen-admin-pass",
        TRAINFLOW_SYSTEM_METRICS_SECONDS="1",
        TRAINFLOW_GPUS="1",
        TRAINFLOW_NVML_LIBRARY=str(stub),
    )
    users = {
        role: {"username": name, "password": PASSWORD}
        for role, name in (("owner", "erin"), ("other", "frank"))
    }
    for user in users.values():
        assert requests.post(f"{server.url}/api/register", json=user, timeout=10).status_code == 201

    def submit(source: str, **body) -> int:
        auth = (users["owner"]["username"], PASSWORD)
        upload = requests.post(
            f"{server.url}{TRAIN}/upload", files={"file": ("train.py", source)}, auth=auth, timeout=30
        )
        assert upload.status_code == 201, upload.text
        job = requests.post(
            f"{server.url}{TRAIN}/jobs",
            json={"script_id": upload.json()["script"], **body},
            auth=auth,
            timeout=30,
        )
        assert job.status_code == 201, job.text
        return int(job.json()["job"])

    missing = submit("import os\nimport skimage.io\n")
    burner = submit(BURNER, args=["25"], gpus=1)
    result = run_flow(
        tmp_path,
        server.url,
        "system.mjs",
        {"users": users, "burnerJob": burner, "missingJob": missing, "cpuFloor": core_floor()},
        timeout=200,
    )
    assert result["title"] == "System"
    assert result["statusWhileShown"] == "RUNNING"  # live, not read back after the end
    assert float(result["cpu"].split()[0]) > core_floor()
    assert float(result["memory"].split()[0]) > 150
    assert result["gpu"] == "20 % busy, 2000 of 16384 MB"
    assert set(result["charts"]) >= {"CPU (%)", "Memory (MB)", "GPU 0 utilisation (%)", "GPU 0 memory (MB)"}
    assert "No module named 'skimage' (it comes from the package scikit-image)" in result["reason"]
    assert '# /// script\n# dependencies = ["scikit-image"]\n# ///' in result["reason"]
    assert result["otherSees"] == [0, 0]
