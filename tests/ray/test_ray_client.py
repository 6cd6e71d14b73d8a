"""trainflow's client of Ray's Job Submission REST API, against a real local Ray head (#13)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from trainflow.jobs.executors.ray import RayClient, RayUnavailable, zip_folder

pytestmark = pytest.mark.serial


def wait_for_status(client: RayClient, sid: str, *statuses: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        info = client.job(sid)
        if info is not None and info["status"] in statuses:
            return info
        time.sleep(0.5)
    raise AssertionError(f"Ray job {sid} is {client.job(sid)}, not {statuses}")


def request(sid: str, entrypoint: str, **more) -> dict:
    return {"entrypoint": entrypoint, "submission_id": sid, "entrypoint_num_cpus": 1, **more}


def test_a_job_runs_in_its_uploaded_files_and_reports_its_exit_code(ray_head, tmp_path: Path):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "data.txt").write_text("from the package")
    client = RayClient(ray_head.address)
    uri = client.upload_package(zip_folder(tmp_path / "files"))
    sid = f"client-test-{time.time_ns()}"
    entrypoint = "python -c \"import sys; print(open('data.txt').read()); sys.exit(3)\""
    assert client.submit(request(sid, entrypoint, runtime_env={"working_dir": uri}))
    info = wait_for_status(client, sid, "SUCCEEDED", "FAILED", "STOPPED")
    assert info["status"] == "FAILED"
    assert info["driver_exit_code"] == 3
    assert "from the package" in client.logs(sid)


def test_the_same_package_is_uploaded_once_under_the_same_name(ray_head, tmp_path: Path):
    (tmp_path / "a.py").write_text("print(1)\n")
    client = RayClient(ray_head.address)
    first = client.upload_package(zip_folder(tmp_path))
    assert client.upload_package(zip_folder(tmp_path)) == first
    (tmp_path / "a.py").write_text("print(2)\n")
    assert client.upload_package(zip_folder(tmp_path)) != first


def test_a_second_submit_with_the_same_id_is_no_new_job(ray_head):
    client = RayClient(ray_head.address)
    sid = f"client-retry-{time.time_ns()}"
    assert client.submit(request(sid, "python -c 'print(1)'", metadata={"try": "1"}))
    assert not client.submit(request(sid, "python -c 'print(2)'", metadata={"try": "2"}))
    assert client.job(sid)["metadata"] == {"try": "1"}


def test_a_stopped_job_is_stopped(ray_head):
    client = RayClient(ray_head.address)
    sid = f"client-stop-{time.time_ns()}"
    assert client.submit(request(sid, "python -c 'import time; print(\"up\", flush=True); time.sleep(600)'"))
    wait_for_status(client, sid, "RUNNING")
    assert client.stop(sid)
    assert wait_for_status(client, sid, "STOPPED", "SUCCEEDED", "FAILED")["status"] == "STOPPED"


def test_an_unknown_job_is_none_and_a_closed_port_is_unavailable(ray_head):
    assert RayClient(ray_head.address).job("no-such-job") is None
    with pytest.raises(RayUnavailable):
        RayClient("http://127.0.0.1:9", timeout_s=2).job("x")
