"""Jobs on a real local Ray cluster through a real trainflow server (TRAINFLOW_EXECUTOR=ray, #13).

One Ray head serves every Ray test (see conftest); one server this module. The head has one CPU,
and every Ray job asks for one, so these jobs run one at a time.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import RunningServer, start_server
from tests.jobs.wheels import make_wheel
from trainflow.jobs.executors.ray import RayClient, handle_of, submission_id

pytestmark = [pytest.mark.serial, pytest.mark.e2e]
TRAIN = "/ajax-api/2.0/mlflow/train"
ADMIN = ("admin", "chosen-admin-pass")
RAY_WAIT_S = 240  # a first job with requirements waits for Ray to build its virtualenv


@pytest.fixture(scope="module")
def server(ray_head, tmp_path_factory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("ray-server")
    running = start_server(
        folder / "data",
        f"sqlite:///{folder / 'trainflow.db'}",
        TRAINFLOW_EXECUTOR="ray",
        TRAINFLOW_RAY_ADDRESS=ray_head.address,
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        # Longer than Ray's own stop wait (3 s): a cancelled job's cleanup must still finish.
        TRAINFLOW_JOB_GRACE_SECONDS="6",
    )
    yield running
    running.stop()


class Api:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", auth=ADMIN, timeout=30, **kwargs)

    def submit(self, files: dict[str, bytes], **body) -> dict:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        upload = self.call("POST", f"{TRAIN}/upload", files={"file": ("project.tar.gz", buffer.getvalue())})
        assert upload.status_code == 201, upload.text
        answer = self.call("POST", f"{TRAIN}/jobs", json={"script_id": upload.json()["script"], **body})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def job(self, job_id: int) -> dict:
        return self.call("GET", f"{TRAIN}/jobs/{job_id}").json()

    def wait(self, job_id: int, *statuses: str, seconds: float = RAY_WAIT_S) -> dict:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} is {self.job(job_id)}, not {statuses}")

    def run(self, run_id: str) -> dict:
        return self.call("GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id}).json()["run"]

    def lines(self, job_id: int) -> list[str]:
        """The lines the job's stream holds so far (the dashboard's console reads them there)."""
        lines = []
        try:
            with requests.get(
                f"{self.url}{TRAIN}/jobs/{job_id}/events", auth=ADMIN, stream=True, timeout=(10, 1)
            ) as response:
                for raw in response.iter_lines():
                    event = json.loads(raw)
                    if event["type"] == "log":
                        lines.append(event["line"])
                    if event["type"] == "end":
                        break
        except requests.ConnectionError:  # no event for a second: all stored ones are read
            pass
        return lines

    def events(self, job_id: int, seconds: float = RAY_WAIT_S) -> list[dict]:
        """The job's whole event stream, from its first event to its ``end``."""
        events = []
        with requests.get(
            f"{self.url}{TRAIN}/jobs/{job_id}/events", auth=ADMIN, stream=True, timeout=(10, seconds)
        ) as response:
            assert response.status_code == 200, response.text
            for raw in response.iter_lines():
                event = json.loads(raw)
                events.append(event)
                if event["type"] == "end":
                    break
        return events


@pytest.fixture
def api(server) -> Api:
    return Api(server.url)


def sid_of(job: dict) -> str:
    return submission_id(job["job"], handle_of(job["run_id"]))


def wait_for_line(api: Api, job: dict, text: str, seconds: float = RAY_WAIT_S) -> None:
    """Until the job printed ``text`` (its supervisor on Ray sends its lines to the servers)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in api.lines(job["job"]):
            return
        time.sleep(0.25)
    raise AssertionError(f"{text!r} not among job {job['job']}'s lines: {api.lines(job['job'])}")


TRAIN_PY = b"""
import mlflow, tinymod
print("value", tinymod.VALUE)
mlflow.log_metric("answer", tinymod.VALUE)
print("done")
"""


def test_a_job_with_requirements_runs_on_ray_to_the_end(api, ray_head, tmp_path: Path):
    wheel = make_wheel(tmp_path, "tinymod", "0.1", "VALUE = 42\n")
    job = api.submit(
        {
            "train.py": TRAIN_PY,
            "requirements.txt": b"--no-index\n--find-links wheels\ntinymod==0.1\n",
            f"wheels/{wheel.name}": wheel.read_bytes(),
        }
    )
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", "CANCELLED")
    assert done["status"] == "SUCCEEDED", (done, RayClient(ray_head.address).logs(sid_of(job)))
    assert done["exit_code"] == 0
    assert done["runner"] == f"ray:{ray_head.address}"
    run = api.run(job["run_id"])
    assert run["info"]["status"] == "FINISHED"
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"answer": 42.0}
    assert api.lines(job["job"])[:2] == ["value 42", "done"]  # then MLflow says where the run is


def test_a_failing_job_ends_failed_with_its_exit_code(api):
    job = api.submit({"train.py": b"import sys\nprint('bad things', file=sys.stderr)\nsys.exit(3)\n"})
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", "CANCELLED")
    assert done["status"] == "FAILED"
    assert done["exit_code"] == 3


def test_requirements_that_cannot_be_installed_make_the_job_lost_with_rays_message(api):
    job = api.submit(
        {"train.py": b"print('never')\n", "requirements.txt": b"--no-index\nno-such-package-here==1.0\n"}
    )
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", "CANCELLED")
    assert done["status"] == "LOST"
    assert "Ray: runtime_env setup failed" in done["reason"]
    assert "No matching distribution found for no-such-package-here==1.0" in done["reason"]


TERMINAL = b"""
import sys, time
print("first line")
time.sleep(0.3)
print("to stderr", file=sys.stderr, flush=True)
time.sleep(0.3)
for i in range(1, 4):
    sys.stdout.write(f"\\rtrain: {i * 33}%|###| {i}/3 [00:0{i}<00:0{3 - i}, 1.00it/s]")
    sys.stdout.flush()
    time.sleep(0.3)
sys.stdout.write("\\n")
print('trainflow:progress {"current": 5, "total": 10, "desc": "marked"}', flush=True)
time.sleep(0.3)
sys.stdout.write("no newline yet")
sys.stdout.flush()
time.sleep(1.8)
print(" and the rest")
sys.exit(4)
"""


def recorded(events: list[dict]) -> list[tuple]:
    """What a job's stream says it printed and how it ended, without times and sequence numbers."""
    seen = []
    for event in events:
        if event["type"] == "log":
            seen.append(("log", event["stream"], event["n"], event["line"], event.get("partial", False)))
        elif event["type"] == "progress":
            seen.append(
                ("progress", *sorted((k, v) for k, v in event.items() if k not in {"seq", "ts", "type"}))
            )
        elif event["type"] in {"status", "end"}:
            seen.append((event["type"], event.get("status"), event.get("exit_code")))
    return seen


def test_a_ray_jobs_stream_is_the_one_it_would_have_had_on_the_server(api, tmp_path_factory):
    """Lines, their numbers and streams, redraws, progress, a partial line, the end: as a local job's."""
    folder = tmp_path_factory.mktemp("local-server")
    local = start_server(
        folder / "data", f"sqlite:///{folder / 'trainflow.db'}", TRAINFLOW_ADMIN_PASSWORD=ADMIN[1]
    )
    try:
        on_ray, here = api.submit({"train.py": TERMINAL}), Api(local.url).submit({"train.py": TERMINAL})
        ray_events, local_events = api.events(on_ray["job"]), Api(local.url).events(here["job"])
    finally:
        local.stop()
    assert recorded(ray_events) == recorded(local_events), api.job(on_ray["job"])["reason"]
    assert ("log", "stdout", 4, "no newline yet", True) in recorded(ray_events)
    assert api.job(on_ray["job"])["exit_code"] == 4


SLEEPER = b"""
import time
print("started", flush=True)
time.sleep(600)
"""


CLEANS_UP = b"""
import signal, sys, time

def stop(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("stopping", flush=True)
    time.sleep(4)
    print("stopped cleanly", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
print("started", flush=True)
time.sleep(600)
"""


def test_a_cancelled_job_is_cancelled_and_its_run_killed(api, ray_head):
    job = api.submit({"train.py": SLEEPER})
    wait_for_line(api, job, "started")
    answer = api.call("POST", f"{TRAIN}/jobs/{job['job']}/cancel")
    assert answer.status_code == 202
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", "CANCELLED", seconds=60)
    assert done["status"] == "CANCELLED"
    assert api.run(job["run_id"])["info"]["status"] == "KILLED"
    # The cancel reaches the supervisor in its ingest's answer, and Ray is told to stop it too.
    deadline = time.monotonic() + 30
    while RayClient(ray_head.address).job(sid_of(job))["status"] not in {"STOPPED", "FAILED", "SUCCEEDED"}:
        assert time.monotonic() < deadline, "the Ray job still runs"
        time.sleep(0.25)


def test_a_cancelled_job_has_the_grace_period_to_clean_up_not_rays_three_seconds(api, ray_head):
    job = api.submit({"train.py": CLEANS_UP})
    wait_for_line(api, job, "started")
    api.call("POST", f"{TRAIN}/jobs/{job['job']}/cancel")
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", "CANCELLED", seconds=60)
    assert done["status"] == "CANCELLED"
    wait_for_line(api, job, "stopped cleanly", seconds=20)


def test_rays_job_table_holds_no_token_and_a_used_ticket(api, ray_head):
    job = api.submit({"train.py": b"print('hello')\n"})
    api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", "CANCELLED")
    record = requests.get(f"{ray_head.address}/api/jobs/{sid_of(job)}", timeout=10).json()
    text = str(record)
    assert "eyJ" not in text  # no JWT: neither the job's MLflow token nor any other
    ticket = re.search(r"--ticket (\S+)", record["entrypoint"]).group(1)
    again = requests.post(f"{api.url}{TRAIN}/jobs/{job['job']}/ticket", json={"ticket": ticket}, timeout=10)
    assert again.status_code == 410


def test_the_job_does_not_find_its_supervisors_spec_in_its_folder(api, ray_head):
    job = api.submit({"train.py": b"import os\nprint('spec there:', os.path.exists('../spec.json'))\n"})
    assert api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", "CANCELLED")["status"] == "SUCCEEDED"
    assert api.lines(job["job"]) == ["spec there: False"]


def test_a_retried_submit_finds_its_own_ray_job(ray_head, tmp_path: Path):
    """A submit tried again (its answer lost) makes no second Ray job, and is no error."""
    from trainflow.jobs.executors.base import Launch
    from trainflow.jobs.executors.ray import RayExecutor
    from trainflow.settings import Settings

    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "train.py").write_text("print('hi')\n")
    issued: list[str] = []

    def issue(job_id: int, spec: dict) -> str:
        issued.append(f"ticket-{len(issued)}")
        return issued[-1]

    executor = RayExecutor(Settings(executor="ray", ray_address=ray_head.address), issue)
    launch = Launch(
        job_id=7,
        run_id=f"{time.time_ns():032x}",
        experiment_id="0",
        files=tmp_path / "files",
        argv=["python", "-u", "train.py"],
        has_requirements=False,
        user_env={},
        token="not-used",
        tracking_uri="http://127.0.0.1:9",  # nothing answers: the job fails at its exchange
        gpu_ids=None,
        timeout_s=None,
        owner_is_admin=True,
    )
    handle = executor.start(launch)
    assert executor.start(launch) == handle
    record = RayClient(ray_head.address).job(submission_id(7, handle))
    assert "--ticket ticket-0" in record["entrypoint"]  # the first submit's job, not a second
    executor.cancel(7, handle)


def test_an_unreachable_ray_decides_nothing_and_a_restarted_one_that_lost_the_job_makes_it_lost(
    api, ray_head, server
):
    job = api.submit({"train.py": SLEEPER})
    wait_for_line(api, job, "started")
    said = server.text.count("Ray is unreachable")
    ray_head.stop()
    try:
        time.sleep(3)  # several scheduler rounds against a Ray that does not answer
        assert api.job(job["job"])["status"] == "RUNNING"
        assert server.text.count("Ray is unreachable") == said + 1  # said once, not every round
    finally:
        ray_head.start()  # a fresh head: it knows nothing of the job
    done = api.wait(job["job"], "SUCCEEDED", "FAILED", "LOST", "CANCELLED", seconds=60)
    assert done["status"] == "LOST"
    assert "Ray no longer knows its job" in done["reason"]
    assert api.run(job["run_id"])["info"]["status"] == "FAILED"
