"""Scripts' files in shared mode: uploaded on one host, run by a job any host starts (#13)."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.e2e.shared_hosts import TRAIN, Api, Deployment

pytestmark = pytest.mark.e2e


def _project() -> bytes:
    """An archive whose entry point imports a module beside it: it runs only if unpacked."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("proj/helper.py", "GREETING = 'hello from the archive'\n")
        archive.writestr("proj/train.py", "import helper\nprint(helper.GREETING)\n")
    return buffer.getvalue()


def _script_folders(data_dir) -> list[str]:  # type: ignore[no-untyped-def]
    uploads = data_dir / "uploads"
    return sorted(p.name for p in uploads.iterdir() if not p.name.startswith(".")) if uploads.is_dir() else []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # shared mode needs it
def test_a_script_uploaded_on_one_host_runs_on_another_and_deleting_it_removes_the_shared_copy(
    server_factory, database_url, redis_url, tmp_path
):
    deployment = Deployment(database_url, redis_url, tmp_path)
    runner = deployment.start(server_factory, "b")  # runs jobs
    uploader = deployment.start(server_factory, "a", TRAINFLOW_RUN_JOBS="false")
    on_a, on_b = Api(uploader.url), Api(runner.url)

    script_id = on_a.upload(_project(), "project.zip")
    assert _script_folders(tmp_path / "b") == []  # b has never seen the file
    shared = list((deployment.artifacts / "trainflow-scripts").iterdir())
    assert len(shared) == 1
    job = on_a.submit(script_id)
    done = on_b.wait(job["job"], "SUCCEEDED", "FAILED", "LOST")
    assert done["status"] == "SUCCEEDED", done  # so `import helper` found the archive's module
    assert (tmp_path / "b" / "jobs" / str(job["job"])).is_dir()  # b ran it
    assert _script_folders(tmp_path / "b") == [shared[0].name]  # from its cache, under the same key

    # A second job of the same script runs from b's cache (nothing fetched again).
    again = on_b.submit(script_id)
    assert on_b.wait(again["job"], "SUCCEEDED", "FAILED", "LOST")["status"] == "SUCCEEDED"

    for job_id in (job["job"], again["job"]):
        assert on_b.call("DELETE", f"{TRAIN}/jobs/{job_id}").status_code == 204
    assert on_a.call("DELETE", f"{TRAIN}/scripts/{script_id}").status_code == 204
    assert list((deployment.artifacts / "trainflow-scripts").iterdir()) == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_host_serves_the_content_of_a_script_uploaded_on_another(
    server_factory, database_url, redis_url, tmp_path
):
    deployment = Deployment(database_url, redis_url, tmp_path)
    on_a = Api(deployment.start(server_factory, "a", TRAINFLOW_RUN_JOBS="false").url)
    on_b = Api(deployment.start(server_factory, "b", TRAINFLOW_RUN_JOBS="false").url)
    script_id = on_a.upload("print('shared')\n")
    answer = on_b.call("GET", f"{TRAIN}/scripts/{script_id}/content")
    assert (answer.status_code, answer.text) == (200, "print('shared')\n")
