"""A user's job is untrusted code: it reaches its own folders and the server's API, nothing else (issue 10).

One server per database runs a victim's job (another user's, still running) and then a hostile
job that tries every read, write, signal, connection and privilege a user with bad intent would;
it prints a report of what it reached, and each test asserts one item of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import IS_CI, Templates, _admin_execute, _copy_sqlite, _with_database
from tests.e2e.conftest import start_server
from tests.e2e.test_jobs import TRAIN, Api, _host_pid
from trainflow.runner import sandbox

pytestmark = pytest.mark.e2e
ADMIN = ("admin", "chosen-admin-pass")
PASSWORD = "a-users-password"
TRAINFLOW_PACKAGE = Path(sandbox.PACKAGE)
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


def _require_bwrap() -> None:
    if shutil.which("bwrap") is None:
        if IS_CI:
            pytest.fail("bubblewrap is not installed (make install); under CI nothing may skip")
        pytest.skip("bubblewrap is not installed (make install)")


VICTIM = """
    import os, time
    print("victim", os.getpid(), flush=True)
    time.sleep(300)
"""

# Baked in by the test: the paths and pids to try, as JSON.
HOSTILE = r"""
import json, os, signal, socket, subprocess, sys

T = json.loads(TARGETS)
report = {}


def attempt(name, action):
    try:
        result = action()
    except Exception as e:
        report[name] = "denied: " + type(e).__name__ + ": " + str(e)[:200]
    else:
        report[name] = "REACHED: " + repr(result)[:200]


def read(path):
    with open(path, "rb") as f:
        return f.read(64)


def write(path):
    with open(path, "ab") as f:
        f.write(b"{\"forged\": true}\n")
    return path


def walk_up_for_secret_key():
    found = []
    folder = os.getcwd()
    while True:
        for candidate in ("secret_key", "data/secret_key", "trainflow.db"):
            path = os.path.join(folder, candidate)
            try:
                found.append((path, read(path)))
            except OSError:
                pass
        if folder == "/":
            break
        folder = os.path.dirname(folder)
    if not found:
        raise PermissionError("nothing found walking up from " + os.getcwd())
    return found


def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        return s.getpeername()


def gain_root(argv, needs):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    if out.returncode == 0 and needs in out.stdout:
        return out.stdout
    raise PermissionError(f"exit {out.returncode}: {(out.stdout + out.stderr).strip()[:150]}")


def other_processes():
    mine = {1, os.getpid()}  # bubblewrap's init and this job
    others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in mine]
    if others:
        return others
    raise PermissionError("only its own processes")


def setuid_root():
    os.setuid(0)
    return os.getuid()


attempt("secret_key_by_walking_up", walk_up_for_secret_key)
attempt("secret_key_by_absolute_path", lambda: read(T["data"] + "/secret_key"))
attempt("database_file", lambda: read(T["data"] + "/trainflow.db"))
attempt("list_uploads", lambda: os.listdir(T["data"] + "/uploads"))
attempt("other_users_upload", lambda: read(T["victim_upload"]))
attempt("list_other_job", lambda: os.listdir(T["victim_job"]))
attempt("other_jobs_spec_with_token", lambda: read(T["victim_job"] + "/spec.json"))
attempt("other_jobs_work_folder", lambda: os.listdir(T["victim_job"] + "/work"))
attempt("write_venv_cache", lambda: write(T["data"] + "/venvs/planted"))
attempt("server_environ", lambda: read(f"/proc/{T['server_pid']}/environ"))
attempt("other_jobs_environ", lambda: read(f"/proc/{T['victim_pid']}/environ"))
attempt("signal_0_server", lambda: os.kill(T["server_pid"], 0))
attempt("sigstop_server", lambda: os.kill(T["server_pid"], signal.SIGSTOP))
attempt("signal_0_other_job", lambda: os.kill(T["victim_pid"], 0))
attempt("sigstop_other_job", lambda: os.kill(T["victim_pid"], signal.SIGSTOP))
attempt("signal_other_jobs_group", lambda: os.killpg(T["victim_group"], signal.SIGSTOP))
attempt("see_other_processes", other_processes)
attempt("write_own_event_log", lambda: write(T["own_job"] + "/events.ndjson"))
attempt("write_own_status", lambda: write(T["own_job"] + "/status.json"))
attempt("write_other_jobs_event_log", lambda: write(T["victim_job"] + "/events.ndjson"))
attempt("write_trainflow_package", lambda: write(T["package"] + "/__init__.py"))
attempt("create_in_trainflow_package", lambda: write(T["package"] + "/planted.py"))
attempt("write_site_packages", lambda: write(T["site_packages"] + "/planted.pth"))
attempt("connect_postgresql", lambda: connect(5432))
attempt("connect_redis", lambda: connect(6379))


def listen():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        return s.getsockname()


attempt("listen_on_a_tcp_port", listen)
attempt("read_etc_shadow", lambda: read("/etc/shadow"))
attempt("new_user_namespace", lambda: gain_root(["unshare", "--user", "--map-root-user", "id"], "uid=0"))


def keyring():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    serial = libc.syscall(250 if os.uname().machine == "x86_64" else 219, 0, -4, 0)  # the user keyring
    if serial < 0:
        raise PermissionError(os.strerror(ctypes.get_errno()))
    return serial


attempt("kernel_keyring", keyring)
attempt("setuid_0", setuid_root)
# Programs that are setuid root, and what they print or do when they ran as root.
PROGRAMS = {
    "su": (["su", "-c", "id", "root"], "uid=0"),
    "sudo": (["sudo", "-n", "id"], "uid=0"),
    "passwd": (["passwd", "-S", "root"], "root"),
    "newgrp": (["newgrp", "root"], ""),
    "mount": (["mount", "-t", "tmpfs", "none", "/tmp"], ""),
}
for program, (args, needs) in PROGRAMS.items():
    if any(os.path.exists(os.path.join(d, program)) for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin")):
        attempt("setuid_binary_" + program, lambda args=args, needs=needs: gain_root(args, needs))

# What a job must still be able to do.
child = subprocess.Popen(["sleep", "60"])
os.kill(child.pid, signal.SIGTERM)
report["signalled_own_child"] = "yes" if child.wait(timeout=10) == -signal.SIGTERM else "no"
with open(os.path.join(os.environ["TRAINFLOW_OUTPUT_DIR"], "proof.txt"), "w") as f:
    f.write("written")
report["wrote_output"] = "yes"
import mlflow
with mlflow.start_run():
    reached = [name for name, value in report.items() if value.startswith("REACHED")]
    mlflow.log_metric("reached", float(len(reached)))
report["logged_metric"] = "yes"
print("REPORT " + json.dumps(report), flush=True)
"""

ITEMS = [
    "secret_key_by_walking_up",
    "secret_key_by_absolute_path",
    "database_file",
    "list_uploads",
    "other_users_upload",
    "list_other_job",
    "other_jobs_spec_with_token",
    "other_jobs_work_folder",
    "write_venv_cache",
    "server_environ",
    "other_jobs_environ",
    "signal_0_server",
    "sigstop_server",
    "signal_0_other_job",
    "sigstop_other_job",
    "signal_other_jobs_group",
    "see_other_processes",
    "write_own_event_log",
    "write_own_status",
    "write_other_jobs_event_log",
    "write_trainflow_package",
    "create_in_trainflow_package",
    "write_site_packages",
    "connect_postgresql",
    "connect_redis",
    "listen_on_a_tcp_port",
    "read_etc_shadow",
    "new_user_namespace",
    "kernel_keyring",
    "setuid_0",
    "setuid_binary_su",
    "setuid_binary_passwd",
    "setuid_binary_newgrp",
    "setuid_binary_mount",
]


def _register(url: str, username: str) -> Api:
    response = requests.post(
        f"{url}/api/register", json={"username": username, "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 201, response.text
    return Api(url, (username, PASSWORD))


def _lines_until(api: Api, job_id: int, prefix: str, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for line in api.lines(job_id):
            if line.startswith(prefix):
                return line
        if api.job(job_id)["status"] not in ("QUEUED", "RUNNING"):
            break
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never printed {prefix!r}: {api.lines(job_id)}")


def _as_service_user(root: Path) -> str:
    """A python that runs the server as an unprivileged user would: uid 1000 in a user namespace.

    The server then has no capability outside it, so it builds sandboxes the way a server run
    by a service user does (bubblewrap's own user namespace, no uid switch).
    """
    wrapper = root / "python-as-service-user"
    wrapper.write_text(
        f'#!/bin/sh\nexec unshare --user --map-user=1000 --map-group=1000 -- {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture(
    scope="module",
    params=["sqlite-root", "sqlite-service-user", "postgresql-root", "postgresql-service-user"],
)
def attack(request, tmp_path_factory):
    """Run the victim's and the hostile job once per database and server identity; the report.

    ``root``: the server runs as root (as here and in CI), jobs as TRAINFLOW_JOB_UID.
    ``service-user``: the server runs without privileges, jobs under its uid in a user namespace.
    """
    _require_bwrap()
    database, identity = request.param.split("-", 1)
    if identity == "root" and os.geteuid() != 0:
        if IS_CI:
            pytest.fail("CI runs the server as root, and this test must see it do so")
        pytest.skip("the root variant needs the tests to run as root")
    root = tmp_path_factory.mktemp(f"sandbox-{request.param}")
    data = root / "data"
    with _database(request, data, database) as database_url:
        yield from _run_attack(root, data, database_url, identity)


@contextlib.contextmanager
def _database(request, data: Path, database: str) -> Iterator[str]:
    """A migrated database of its own for a module's server: its URL."""
    templates: Templates = request.getfixturevalue("templates")
    data.mkdir(parents=True)
    if database == "sqlite":
        _copy_sqlite(templates.sqlite(), data / "trainflow.db")
        yield f"sqlite:///{data / 'trainflow.db'}"
        return
    admin_url = request.getfixturevalue("postgres_url")
    name = f"tf_sandbox_{uuid.uuid4().hex[:12]}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{templates.postgres_template(admin_url)}"')
    try:
        yield _with_database(admin_url, name)
    finally:
        _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _run_attack(root: Path, data: Path, database_url: str, identity: str) -> Iterator[dict]:
    with pytest.MonkeyPatch.context() as patch:
        if identity == "service-user":
            patch.setattr(sys, "executable", _as_service_user(root))
        server = start_server(
            data, database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1], TRAINFLOW_JOB_GRACE_SECONDS="2"
        )
    try:
        bob = _register(server.url, "bob")
        mallory = _register(server.url, "mallory")
        victim = bob.submit(VICTIM)
        victim_ns_pid = int(_lines_until(bob, victim["job"], "victim ").split()[1])
        victim_pid = _host_pid(victim_ns_pid, b"train.py", server.process.pid)
        victim_job = data / "jobs" / str(victim["job"])
        upload = next(p for p in (data / "uploads").glob("*/original"))
        # The hostile job's own id is the next one.
        targets = {
            "data": str(data),
            "victim_upload": str(upload),
            "victim_job": str(victim_job),
            "victim_pid": victim_pid,
            "victim_group": os.getpgid(victim_pid),
            "server_pid": server.process.pid,
            "own_job": str(data / "jobs" / str(victim["job"] + 1)),
            "package": str(TRAINFLOW_PACKAGE),
            "site_packages": str(SITE_PACKAGES),
        }
        source = f"TARGETS = {json.dumps(json.dumps(targets))}\n" + HOSTILE
        hostile = mallory.submit(source)
        assert hostile["job"] == victim["job"] + 1
        done = mallory.wait(hostile["job"], "SUCCEEDED", "FAILED", seconds=120)
        lines = mallory.lines(hostile["job"])
        report_line = next((line for line in lines if line.startswith("REPORT ")), None)
        assert report_line is not None, lines
        victim_state = Path(f"/proc/{victim_pid}/stat").read_text().split(") ")[1][0]
        outcome = {
            "report": json.loads(report_line.removeprefix("REPORT ")),
            "job": done,
            "api": mallory,
            "victim_state": victim_state,
            "victim_events": (victim_job / "events.ndjson").read_text(),
            "status": json.loads((data / "jobs" / str(hostile["job"]) / "status.json").read_text()),
            "server_log": server.text,
            "package_files": sorted(p.name for p in TRAINFLOW_PACKAGE.iterdir()),
            "job_uid": 65534 if identity == "root" else 1000,
        }
        bob.call("POST", f"{TRAIN}/jobs/{victim['job']}/cancel")
        yield outcome
    finally:
        server.stop()


@pytest.mark.parametrize("item", ITEMS)
def test_a_hostile_job_reaches_nothing(attack, item):
    assert attack["report"][item].startswith("denied"), attack["report"][item]


def test_every_attempt_is_in_the_report(attack):
    assert set(ITEMS) <= set(attack["report"])


def test_the_hostile_job_still_signals_its_own_child(attack):
    assert attack["report"]["signalled_own_child"] == "yes"


def test_the_hostile_job_still_writes_its_output(attack):
    assert attack["report"]["wrote_output"] == "yes"


def test_the_hostile_job_still_logs_a_metric_through_mlflow(attack):
    run = attack["api"].run(attack["job"]["run_id"])
    # Beside the job's own metric, its supervisor's system metrics (system/...), which it logs itself.
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"] if not m["key"].startswith("system/")}
    assert metrics == {"reached": 0.0}


def test_the_hostile_job_succeeds(attack):
    assert attack["job"]["status"] == "SUCCEEDED"


def test_its_output_becomes_the_runs_artifact(attack):
    files = attack["api"].call(
        "GET", "/api/2.0/mlflow/artifacts/list", params={"run_id": attack["job"]["run_id"]}
    )
    assert [f["path"] for f in files.json()["files"]] == ["proof.txt"]


def test_the_other_job_was_not_stopped(attack):
    assert attack["victim_state"] in "RS"


def test_the_other_jobs_event_log_holds_no_forged_line(attack):
    assert "forged" not in attack["victim_events"]


def test_nothing_was_planted_in_the_trainflow_package(attack):
    assert "planted.py" not in attack["package_files"]


def test_the_status_records_what_the_sandbox_applied(attack):
    applied = attack["status"]["sandbox"]
    assert applied["no_new_privs"] is True
    assert applied["landlock"]["abi"] >= 1
    assert applied["seccomp"] is True
    assert applied["uid"] == attack["job_uid"]


def test_the_server_says_at_start_up_that_jobs_are_sandboxed(attack):
    assert "jobs are sandboxed: bubblewrap" in attack["server_log"]


# -- where no sandbox can be built, and the operator's choices ------------------------------------


def _modes_server(request, tmp_path_factory, name: str, **env: str) -> Iterator[dict]:
    root = tmp_path_factory.mktemp(f"{name}-{request.param}")
    data = root / "data"
    with _database(request, data, request.param) as database_url:
        server = start_server(data, database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1], **env)
        try:
            alice = _register(server.url, "alice")
            submitted = alice.call(
                "POST", f"{TRAIN}/jobs", json={"script_id": alice.upload("import os\nprint(os.getuid())\n")}
            )
            admin = Api(server.url, ADMIN)
            admins = admin.submit("import os\nprint(os.getuid())\n")
            yield {
                "log": server.text,
                "alice": alice,
                "submitted": submitted,
                "admins_job": admin.wait(admins["job"], "SUCCEEDED", "FAILED"),
                "admins_lines": admin.lines(admins["job"]),
                "status": json.loads((data / "jobs" / str(admins["job"]) / "status.json").read_text()),
            }
        finally:
            server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def without_bubblewrap(request, tmp_path_factory):
    """TRAINFLOW_JOB_SANDBOX=auto (the default) where bubblewrap is missing."""
    missing = str(tmp_path_factory.mktemp("nothing") / "bwrap")
    yield from _modes_server(request, tmp_path_factory, "no-bwrap", TRAINFLOW_BWRAP=missing)


def test_without_a_sandbox_the_server_says_so_at_start_up(without_bubblewrap):
    assert "No job sandbox: bubblewrap" in without_bubblewrap["log"]


def test_without_a_sandbox_the_start_up_line_says_only_admins_run_jobs(without_bubblewrap):
    assert "Jobs run only for admins" in without_bubblewrap["log"]


def test_without_a_sandbox_a_users_job_is_refused_with_403(without_bubblewrap):
    assert without_bubblewrap["submitted"].status_code == 403


def test_without_a_sandbox_the_refusal_says_why(without_bubblewrap):
    error = without_bubblewrap["submitted"].json()["error"]
    assert error["code"] == "permission_denied"
    assert "cannot sandbox jobs" in error["message"]


def test_without_a_sandbox_the_refused_job_is_not_queued(without_bubblewrap):
    listed = without_bubblewrap["alice"].call("GET", f"{TRAIN}/jobs").json()
    assert listed["list"] == []


def test_without_a_sandbox_an_admins_job_runs(without_bubblewrap):
    assert without_bubblewrap["admins_job"]["status"] == "SUCCEEDED"


def test_without_a_sandbox_an_admins_job_runs_unsandboxed(without_bubblewrap):
    assert without_bubblewrap["status"]["sandbox"] is None


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sandbox_off(request, tmp_path_factory):
    """TRAINFLOW_JOB_SANDBOX=off: the operator's explicit opt-out."""
    yield from _modes_server(request, tmp_path_factory, "off", TRAINFLOW_JOB_SANDBOX="off")


def test_off_warns_at_start_up(sandbox_off):
    assert "WARNING" in sandbox_off["log"]
    assert "Jobs are NOT sandboxed (TRAINFLOW_JOB_SANDBOX=off)" in sandbox_off["log"]


def test_off_runs_a_users_job(sandbox_off):
    assert sandbox_off["submitted"].status_code == 201


def test_off_runs_jobs_as_the_servers_user(sandbox_off):
    assert sandbox_off["admins_lines"] == [str(os.getuid())]


def test_required_refuses_to_start_without_a_sandbox(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINFLOW_", "MLFLOW_"))}
    environ.update(
        TRAINFLOW_DATA_DIR=str(tmp_path / "data"),
        TRAINFLOW_JOB_SANDBOX="required",
        TRAINFLOW_BWRAP=str(tmp_path / "no-bwrap"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "trainflow.cli", "server"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "TRAINFLOW_JOB_SANDBOX=required, but no job sandbox: bubblewrap" in result.stderr


def test_a_users_job_queued_while_sandboxed_does_not_run_unsandboxed_later(
    server_factory, tmp_path, database_url
):
    """Queued on a server that could sandbox it, started by one that cannot: it fails instead."""
    _require_bwrap()
    queuing = server_factory(
        tmp_path / "data", database_url, TRAINFLOW_ADMIN_PASSWORD=ADMIN[1], TRAINFLOW_RUN_JOBS="false"
    )
    alice = _register(queuing.url, "alice")
    job = alice.submit("print('ran')\n")
    queuing.stop()
    running = server_factory(
        tmp_path / "data",
        database_url,
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_BWRAP=str(tmp_path / "no-bwrap"),
    )
    alice = Api(running.url, ("alice", PASSWORD))
    done = alice.wait(job["job"], "SUCCEEDED", "FAILED")
    assert done["status"] == "FAILED"
    assert "cannot sandbox" in done["reason"]
