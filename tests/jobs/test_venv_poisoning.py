"""One user's job cannot plant a package in another user's environment (issue 10).

The sequence of the issue, on the real server, without a network: the server's index is a
local one holding the real ``sixx``; Alice's job points pip at her own index (through its
``env``), which holds a fake ``sixx`` of the same version; then Bob submits a project with the
same requirements.txt. Both import the real one: Alice's env never reaches pip.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import start_server
from tests.e2e.test_jobs import ADMIN, PASSWORD, TRAIN, Api
from tests.jobs.wheels import make_index, make_wheel

pytestmark = pytest.mark.e2e

TRAIN_PY = "import sixx\nprint('sixx is', sixx.ORIGIN)\n"


def project(requirements: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.py", TRAIN_PY)
        archive.writestr("requirements.txt", requirements)
    return buffer.getvalue()


def submit(api: Api, archive: bytes, **body) -> dict:
    response = api.call("POST", f"{TRAIN}/upload", files={"file": ("project.zip", archive)})
    assert response.status_code == 201, response.text
    response = api.call("POST", f"{TRAIN}/jobs", json={"script_id": response.json()["script"], **body})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def indexes(tmp_path):
    real = make_wheel(tmp_path / "real-wheels", "sixx", "1.0", "ORIGIN = 'the real one'\n")
    fake = make_wheel(tmp_path / "fake-wheels", "sixx", "1.0", "ORIGIN = 'planted by alice'\n")
    # Readable by anyone: a sandboxed build runs as an unprivileged user.
    tmp_path.chmod(0o755)
    return {
        "real": make_index(tmp_path / "real-index", [real]),
        "fake": make_index(tmp_path / "fake-index", [fake]),
        "fake_wheels": str(fake.parent),
    }


@pytest.fixture
def users(tmp_path, database_url, indexes):
    server = start_server(
        tmp_path / "data",
        database_url,
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_PIP_INDEX_URL=indexes["real"],
    )
    try:
        apis = {}
        for name in ("alice", "bob"):
            requests.post(
                f"{server.url}/api/register", json={"username": name, "password": PASSWORD}, timeout=10
            )
            apis[name] = Api(server.url, (name, PASSWORD))
        yield apis
    finally:
        server.stop()


def test_a_jobs_env_cannot_plant_a_package_for_the_next_user(users, indexes):
    alice, bob = users["alice"], users["bob"]
    attack = {
        "PIP_INDEX_URL": indexes["fake"],
        "PIP_FIND_LINKS": indexes["fake_wheels"],
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": "/nonexistent",
    }
    first = submit(alice, project("sixx==1.0\n"), env=attack)
    done = alice.wait(first["job"], "SUCCEEDED", "FAILED", seconds=180)
    assert done["status"] == "SUCCEEDED", alice.lines(first["job"])
    assert "sixx is the real one" in alice.lines(first["job"])
    second = submit(bob, project("sixx==1.0\n"))
    done = bob.wait(second["job"], "SUCCEEDED", "FAILED", seconds=180)
    assert done["status"] == "SUCCEEDED", bob.lines(second["job"])
    assert "sixx is the real one" in bob.lines(second["job"])
    assert any("using the cached environment" in line for line in bob.lines(second["job"]))


def test_requirements_that_name_their_own_wheels_get_an_environment_of_their_own(users, indexes):
    alice, bob = users["alice"], users["bob"]
    # Alice's requirements.txt may choose her own wheels: that text is part of the key, and
    # the wheels are files of her project, so only the same text *and* files share it.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.py", TRAIN_PY)
        archive.writestr("requirements.txt", "--no-index\n--find-links wheels\nsixx==1.0\n")
        fake = next(Path(indexes["fake_wheels"]).glob("*.whl"))
        archive.writestr(f"wheels/{fake.name}", fake.read_bytes())
    first = submit(alice, buffer.getvalue())
    assert alice.wait(first["job"], "SUCCEEDED", "FAILED", seconds=180)["status"] == "SUCCEEDED"
    assert "sixx is planted by alice" in alice.lines(first["job"])
    # Bob's project has the same requirements.txt but the real wheel in its folder.
    buffer = io.BytesIO()
    real = make_wheel(Path(indexes["fake_wheels"]).parent / "bob-wheels", "sixx", "1.0", "ORIGIN = 'bob'\n")
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.py", TRAIN_PY)
        archive.writestr("requirements.txt", "--no-index\n--find-links wheels\nsixx==1.0\n")
        archive.writestr(f"wheels/{real.name}", real.read_bytes())
    second = submit(bob, buffer.getvalue())
    assert bob.wait(second["job"], "SUCCEEDED", "FAILED", seconds=180)["status"] == "SUCCEEDED"
    assert "sixx is bob" in bob.lines(second["job"])
