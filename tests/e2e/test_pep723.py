"""A single file declares its packages inline (PEP 723); a missing one is named in the reason (issue 14).

The environment is built as for any requirements.txt: pip takes packages from where the server's
own pip configuration says (as for ``examples/sklearn_digits``), without a network where that is
a local index or wheel folder.
"""

from __future__ import annotations

import importlib.metadata
import io
import zipfile

import pytest
import requests

from tests.e2e.test_jobs import ADMIN, PASSWORD, TRAIN, Api

pytestmark = pytest.mark.e2e

TQDM = importlib.metadata.version("tqdm")


@pytest.fixture
def api(server_factory, tmp_path, database_url) -> Api:
    server = server_factory(tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1])
    requests.post(f"{server.url}/api/register", json={"username": "alice", "password": PASSWORD}, timeout=10)
    return Api(server.url, ("alice", PASSWORD))


WITH_TQDM = f"""\
# /// script
# requires-python = ">=3.10"
# dependencies = ["tqdm=={TQDM}"]
# ///
import tqdm

print("tqdm from", "its environment" if "/venvs/" in tqdm.__file__ else tqdm.__file__)
for _ in tqdm.tqdm(range(3)):
    pass
"""


def test_a_script_with_inline_dependencies_runs_in_an_environment_of_its_own(api: Api):
    job = api.submit(WITH_TQDM)
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", seconds=300)
    assert done["status"] == "SUCCEEDED", api.lines(job["job"])
    lines = api.lines(job["job"])
    assert "tqdm from its environment" in lines
    assert any("creating a virtual environment" in line for line in lines)


def test_a_single_file_missing_a_module_is_told_to_declare_its_package_inline(api: Api):
    job = api.submit("import os\nimport cv2\n")
    done = api.wait(job["job"], "FAILED", "SUCCEEDED")
    assert done["status"] == "FAILED"
    assert done["reason"].startswith(
        "Exited with code 1. No module named 'cv2' (it comes from the package opencv-python)"
    )
    assert '# /// script\n# dependencies = ["opencv-python"]\n# ///' in done["reason"]


def test_an_archive_missing_a_module_is_told_to_list_it_in_requirements(api: Api):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.py", "import helpers\n")
        archive.writestr("helpers.py", "import skimage.io\n")
    response = api.call("POST", f"{TRAIN}/upload", files={"file": ("project.zip", buffer.getvalue())})
    assert response.status_code == 201, response.text
    job = api.call("POST", f"{TRAIN}/jobs", json={"script_id": response.json()["script"]}).json()
    done = api.wait(job["job"], "FAILED", "SUCCEEDED")
    assert "No module named 'skimage' (it comes from the package scikit-image)" in done["reason"]
    assert "add a line `scikit-image` to the project's requirements.txt" in done["reason"]


def test_a_job_that_handles_a_missing_module_and_fails_otherwise_gets_no_hint(api: Api):
    job = api.submit(
        "import sys\ntry:\n    import cv2\nexcept ImportError as e:\n"
        "    print(e, file=sys.stderr)\nsys.exit(2)\n"
    )
    done = api.wait(job["job"], "FAILED", "SUCCEEDED")
    assert done["reason"] == "Exited with code 2."
