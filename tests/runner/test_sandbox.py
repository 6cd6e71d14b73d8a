"""The job sandbox's parts: its command line, the launcher, Landlock, the supervisor using them (issue 10)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import IS_CI
from tests.processes import wait_for
from tests.runner.supervision import read_status, supervisor_command, write_spec
from trainflow.jobs import sandboxing
from trainflow.runner import landlock, sandbox, seccomp
from trainflow.settings import Settings

LAUNCHER = sandbox.launcher_command()


@pytest.fixture
def bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        if IS_CI:
            pytest.fail("bubblewrap is not installed (make install); under CI nothing may skip")
        pytest.skip("bubblewrap is not installed (make install)")
    return path


@pytest.fixture
def settings(tmp_path) -> Settings:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret_key").write_text("the-servers-key")
    return Settings(data_dir=data)


def job_folder(settings: Settings, job_id: int = 1) -> Path:
    folder = settings.jobs_dir / str(job_id)
    for name in ("work", "output", "tmp", "home"):
        (folder / name).mkdir(parents=True)
    return folder


def supervise(folder: Path, spec: dict) -> subprocess.Popen:
    env = {"PATH": os.environ["PATH"], "HOME": str(folder / "home")}
    write_spec(folder, **{"grace_s": 2, "env": env, **spec})
    return subprocess.Popen(supervisor_command(folder))


def lines(folder: Path) -> list[str]:
    path = folder / "logs.ndjson"
    return [json.loads(line)["line"] for line in path.read_text().splitlines()] if path.exists() else []


def run_job(settings: Settings, script: str, **spec) -> Path:
    folder = job_folder(settings)
    (folder / "work" / "train.py").write_text(textwrap.dedent(script))
    policy = sandboxing.job_policy(settings, folder, None, None)
    sandboxing.grant_folders(settings, folder)
    supervisor = supervise(folder, {"argv": [sys.executable, "-u", "train.py"], "sandbox": policy, **spec})
    assert supervisor.wait(timeout=60) == 0
    return folder


# -- the command line -----------------------------------------------------------------------------


def test_bubblewrap_never_gets_what_steers_its_loader(settings, bwrap):
    """Where the server is root, bubblewrap runs with root's privileges before the sandbox exists."""
    folder = run_job(
        settings,
        "import os\nfor name in sorted(os.environ): print(name)\n",
        env={"PATH": os.environ["PATH"], "LD_PRELOAD": "/nonexistent.so", "GCONV_PATH": "/x", "KEPT": "1"},
    )
    printed = lines(folder)
    assert "KEPT" in printed
    assert "LD_PRELOAD" not in printed
    assert "GCONV_PATH" not in printed


def test_exit_codes_of_bubblewrap_become_signals():
    assert sandbox.exit_status(0) == (0, None)
    assert sandbox.exit_status(3) == (3, None)
    assert sandbox.exit_status(128 + signal.SIGTERM) == (None, signal.SIGTERM)
    assert sandbox.exit_status(-signal.SIGKILL) == (None, signal.SIGKILL)


def test_a_bound_path_holding_the_data_directory_is_refused(tmp_path):
    with pytest.raises(sandbox.SandboxError, match="contains the data directory"):
        sandbox.check_hidden([str(tmp_path)], [str(tmp_path / "data")])


def test_an_extra_read_path_holding_the_data_directory_is_refused(settings):
    with pytest.raises(sandbox.SandboxError, match="contains the data directory"):
        sandboxing.job_policy(
            settings.replace(job_read_paths=str(settings.data_dir.parent)), Path("/x"), None, None
        )


def test_the_runtime_never_holds_the_data_directory(settings):
    sandbox.check_hidden(sandbox.runtime_paths(), [str(settings.resolved_data_dir)])


def test_the_trainflow_package_is_bound_not_its_parent():
    assert sandbox.PACKAGE in sandbox.runtime_paths()
    assert os.path.dirname(sandbox.PACKAGE) not in sandbox.runtime_paths()


def test_the_command_binds_no_secret_of_etc(settings):
    argv = sandbox.command(["true"], sandboxing.job_policy(settings, job_folder(settings), None, None), "/")
    bound = {argv[i + 1] for i, arg in enumerate(argv) if arg in ("--ro-bind", "--ro-bind-try", "--bind")}
    assert "/etc" not in bound
    assert "/etc/shadow" not in bound
    assert str(settings.resolved_data_dir) not in bound


def test_the_command_shows_only_the_jobs_own_folders_of_the_data_directory(settings):
    folder = job_folder(settings)
    argv = sandbox.command(["true"], sandboxing.job_policy(settings, folder, None, None), "/")
    data = str(settings.resolved_data_dir)
    bound = [argv[i + 1] for i, arg in enumerate(argv) if arg in ("--ro-bind", "--bind")]
    assert sorted(path for path in bound if path.startswith(data)) == sorted(
        str(folder / name) for name in ("checkpoint", "home", "output", "tmp", "work")
    )


def test_a_job_folder_reached_through_a_link_is_not_bound(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(sandbox.SandboxError, match="link"):
        sandbox.check_own_folder(str(tmp_path / "link"))


def test_as_root_jobs_switch_uid_and_otherwise_get_a_user_namespace(settings):
    policy = sandboxing.job_policy(settings, job_folder(settings), None, None)
    argv = sandbox.command(["true"], {**policy, "identity": None}, "/")
    assert "--unshare-user" in argv
    argv = sandbox.command(["true"], {**policy, "identity": {"uid": 65534, "gid": 65534}}, "/")
    assert "--unshare-user" not in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"


def test_the_job_may_connect_only_to_the_servers_port(settings):
    policy = sandboxing.job_policy(settings, job_folder(settings), None, None)
    assert policy["tcp"] == [settings.port]


def test_an_open_network_leaves_tcp_to_the_job(settings):
    policy = sandboxing.job_policy(settings.replace(job_network="open"), job_folder(settings), None, None)
    assert policy["tcp"] is None


def test_an_unknown_network_setting_is_a_configuration_error(settings):
    from trainflow.errors import ConfigError

    with pytest.raises(ConfigError, match="server or open"):
        sandboxing.sandbox_state(settings.replace(job_network="some"))


# -- output the server copies ---------------------------------------------------------------------


def test_links_and_fifos_are_removed_from_an_output_folder(tmp_path):
    (tmp_path / "model.txt").write_text("weights")
    (tmp_path / "key").symlink_to("/etc/hostname")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up").symlink_to(tmp_path.parent)
    assert sorted(sandbox.remove_links(str(tmp_path))) == ["key", "pipe", "sub/up"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["model.txt", "sub"]


def test_a_published_folder_is_read_only_and_has_no_setuid_bit(tmp_path):
    built = tmp_path / "built"
    (built / "bin").mkdir(parents=True)
    (built / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(built / "bin" / "tool", 0o4777)  # noqa: S103 - what a hostile build might leave
    assert sandbox.publish(str(built), str(tmp_path / "venv"))
    mode = stat.S_IMODE((tmp_path / "venv" / "bin" / "tool").stat().st_mode)
    assert mode == 0o555


def test_a_link_is_never_published(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "built").symlink_to(tmp_path / "elsewhere")
    assert not sandbox.publish(str(tmp_path / "built"), str(tmp_path / "venv"))
    assert not (tmp_path / "venv").exists()


def test_publishing_over_an_existing_folder_keeps_it_and_removes_the_new_one(tmp_path):
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "first").write_text("")
    (tmp_path / "built" / "sub").mkdir(parents=True)
    (tmp_path / "built" / "second").write_text("")
    assert not sandbox.publish(str(tmp_path / "built"), str(tmp_path / "venv"))
    assert [p.name for p in (tmp_path / "venv").iterdir()] == ["first"]
    assert not (tmp_path / "built").exists()


# -- Landlock and the launcher --------------------------------------------------------------------


def test_this_kernel_has_landlock():
    if landlock.abi_version() < 1 and not IS_CI:
        pytest.skip("this kernel has no Landlock")
    assert landlock.abi_version() >= 1


def test_landlock_denies_what_no_rule_allows(tmp_path):
    if landlock.abi_version() < 1 and not IS_CI:
        pytest.skip("this kernel has no Landlock")
    (tmp_path / "allowed").mkdir()
    (tmp_path / "secret").write_text("s")
    config = {
        "sandbox": {
            "read": ["/usr", "/etc", sys.base_prefix],
            "write": [str(tmp_path / "allowed")],
            "tcp": [],
        }
    }
    allowed, secret = str(tmp_path / "allowed" / "f"), str(tmp_path / "secret")
    script = f"open({allowed!r}, 'w').write('x'); open({secret!r}).read()"
    result = subprocess.run(
        [*LAUNCHER, json.dumps(config), sys.executable, "-I", "-S", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "PermissionError" in result.stderr
    assert (tmp_path / "allowed" / "f").read_text() == "x"


def test_the_launcher_refuses_to_run_a_job_it_cannot_lock_down():
    config = {"sandbox": {"identity": {"uid": "nobody", "gid": 0}}}
    result = subprocess.run(
        [*LAUNCHER, json.dumps(config), "/bin/echo", "ran"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 126
    assert "could not build the job's sandbox" in result.stderr
    assert "ran" not in result.stdout


def test_the_launcher_reports_what_it_applied(tmp_path):
    read_end, write_end = os.pipe()
    config = {"sandbox": {"read": ["/"], "write": [], "tcp": None, "report_fd": write_end}}
    subprocess.run([*LAUNCHER, json.dumps(config)], pass_fds=(write_end,), timeout=30, check=True)
    os.close(write_end)
    report = sandbox.read_report(read_end, timeout_s=5)
    os.close(read_end)
    assert report["no_new_privs"] is True


# -- the supervisor with a sandbox ----------------------------------------------------------------


def test_a_sandboxed_job_runs_and_its_status_says_what_was_applied(bwrap, settings):
    folder = run_job(settings, "print('hello from inside')\n")
    assert lines(folder) == ["hello from inside"]
    final = read_status(folder)
    assert final["exit_code"] == 0
    assert final["sandbox"]["no_new_privs"] is True


def test_a_sandboxed_job_has_no_capabilities(bwrap, settings):
    folder = run_job(settings, "print([l for l in open('/proc/self/status') if l.startswith('Cap')])\n")
    capabilities = {line.split(":")[0]: line.split()[1] for line in eval(lines(folder)[0])}  # noqa: S307
    assert int(capabilities["CapEff"], 16) == 0
    assert int(capabilities["CapBnd"], 16) == 0


def test_a_job_killed_by_a_signal_is_recorded_as_that_signal(bwrap, settings):
    folder = run_job(settings, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert read_status(folder)["signal"] == signal.SIGKILL
    assert read_status(folder)["exit_code"] is None


def test_a_cancelled_sandboxed_job_gets_sigterm_and_can_end_cleanly(bwrap, settings):
    folder = job_folder(settings)
    (folder / "work" / "train.py").write_text(
        textwrap.dedent("""
        import signal, sys, time
        def stop(signum, frame):
            print("saving a checkpoint", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        print("ready", flush=True)
        time.sleep(60)
    """)
    )
    policy = sandboxing.job_policy(settings, folder, None, None)
    sandboxing.grant_folders(settings, folder)
    supervisor = supervise(
        folder, {"argv": [sys.executable, "-u", "train.py"], "sandbox": policy, "grace_s": 20}
    )
    wait_for(lambda: "ready" in lines(folder))
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    assert "saving a checkpoint" in lines(folder)
    assert read_status(folder)["reason"] == "cancelled"
    assert time.monotonic() - started < 10  # it ended on SIGTERM, not on the SIGKILL 20 s later


def test_a_sandboxed_job_that_cannot_start_fails(bwrap, settings):
    folder = job_folder(settings)
    policy = sandboxing.job_policy(settings, folder, None, None)
    supervise(folder, {"argv": ["/nonexistent/python"], "sandbox": policy}).wait(timeout=60)
    assert read_status(folder)["exit_code"] == 127
    assert any("could not start the job" in line for line in lines(folder))


# -- the venv build step --------------------------------------------------------------------------

HOSTILE_SETUP = r"""
import json, os, socket, sys
data, venv, other = sys.argv[1:4]
report = {}
def attempt(name, action):
    try:
        action()
        report[name] = "REACHED"
    except Exception as e:
        report[name] = "denied: " + type(e).__name__
def plant():
    with open(os.path.join(other, "bin", "planted"), "w") as f:
        f.write("x")
def new_env():
    os.makedirs(os.path.join(os.path.dirname(venv), "another-key", "bin"))
    open(os.path.join(os.path.dirname(venv), "another-key", "bin", "python"), "w").close()
attempt("secret_key", lambda: open(os.path.join(data, "secret_key")).read())
attempt("plant_in_another_environment", plant)
def others():
    if os.path.basename(other) not in os.listdir(os.path.dirname(venv)):
        raise PermissionError("not shown")
attempt("list_other_environments", others)
attempt("connect_postgresql", lambda: socket.create_connection(("127.0.0.1", 5432), timeout=3))
# What a build does: make its own environment, where the cache is.
os.makedirs(os.path.join(venv, "bin"))
with open(os.path.join(venv, "bin", "python"), "w") as f:
    f.write("built")
os.chmod(os.path.join(venv, "bin", "python"), 0o4777)
print("REPORT " + json.dumps(report), flush=True)
"""


@pytest.fixture
def built_step(bwrap, settings, tmp_path):
    """A hostile setup step's report, after it ran in the venv build's sandbox and was published."""
    venvs = settings.resolved_data_dir / "venvs"
    other = venvs / "someone-elses-key"
    (other / "bin").mkdir(parents=True)
    (other / "bin" / "python").write_text("theirs")
    folder = job_folder(settings)
    venv = venvs / "this-jobs-key"
    step = [sys.executable, "-c", HOSTILE_SETUP, str(settings.resolved_data_dir), str(venv), str(other)]
    policy, publish = sandboxing.setup_policy(settings, folder, venv, [step], {})
    sandboxing.grant_folders(settings, folder)
    spec = {"argv": ["true"], "setup": [step], "setup_sandbox": policy, "setup_publish": publish}
    assert supervise(folder, spec).wait(timeout=60) == 0
    report_line = next(line for line in lines(folder) if line.startswith("REPORT "))
    return {"report": json.loads(report_line.removeprefix("REPORT ")), "venv": venv, "other": other}


@pytest.mark.parametrize(
    "item", ["secret_key", "plant_in_another_environment", "list_other_environments", "connect_postgresql"]
)
def test_a_hostile_venv_build_reaches_nothing(built_step, item):
    assert built_step["report"][item].startswith("denied")


def test_another_environment_is_untouched_by_a_build(built_step):
    assert sorted(p.name for p in (built_step["other"] / "bin").iterdir()) == ["python"]


def test_a_build_cannot_add_an_environment_under_another_key(built_step):
    assert not (built_step["venv"].parent / "another-key").exists()


def test_the_built_environment_is_published_read_only(built_step):
    python = built_step["venv"] / "bin" / "python"
    assert python.read_text() == "built"
    assert stat.S_IMODE(python.stat().st_mode) == 0o555


def test_the_built_environment_belongs_to_the_server(built_step):
    assert (built_step["venv"] / "bin" / "python").stat().st_uid == os.getuid()


# -- the server's view: modes ---------------------------------------------------------------------


def test_an_unknown_mode_is_a_configuration_error(settings):
    from trainflow.errors import ConfigError

    with pytest.raises(ConfigError, match="auto, required or off"):
        sandboxing.sandbox_state(settings.replace(job_sandbox="sometimes"))


def test_required_passes_where_a_sandbox_can_be_built(bwrap, settings):
    assert sandboxing.sandbox_state(settings.replace(job_sandbox="required"))["is_available"]


def test_required_refuses_where_none_can_be_built(settings, tmp_path):
    from trainflow.errors import ConfigError

    missing = settings.replace(job_sandbox="required", bwrap=str(tmp_path / "no-bwrap"))
    with pytest.raises(ConfigError, match=r"bubblewrap .* is not installed"):
        sandboxing.sandbox_state(missing)


def test_the_uid_of_jobs_is_never_root():
    from trainflow.errors import ConfigError

    with pytest.raises(ConfigError, match="TRAINFLOW_JOB_UID"):
        Settings(job_uid=0)


# -- the seccomp filter ---------------------------------------------------------------------------


def test_no_filter_is_made_for_an_unknown_architecture():
    assert seccomp.program("riscv64") is None


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_filter_is_whole_instructions(machine):
    assert len(seccomp.program(machine)) % 8 == 0


def test_a_sandboxed_job_cannot_make_a_user_namespace(bwrap, settings):
    folder = run_job(
        settings, "import subprocess\nprint(subprocess.run(['unshare', '--user', 'true']).returncode)\n"
    )
    assert lines(folder)[-1] == "1"


def test_a_sandboxed_job_still_runs_threads_and_processes(bwrap, settings):
    folder = run_job(
        settings,
        """
        import concurrent.futures, multiprocessing
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            print(sum(pool.map(abs, range(-10, 0))))
        with multiprocessing.Pool(2) as pool:
            print(sum(pool.map(abs, range(-10, 0))))
    """,
    )
    assert lines(folder) == ["55", "55"]


def test_the_supervisor_and_the_sandbox_need_only_the_standard_library():
    root = str(Path(sandbox.PACKAGE).parent)
    modules = "trainflow.runner.supervisor, trainflow.runner.sandbox, trainflow.runner.launcher"
    code = f"import sys; sys.path.insert(0, {root!r}); import {modules}"
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_read_path_holding_the_data_directory_means_no_sandbox(bwrap, settings):
    state = sandboxing.sandbox_state(settings.replace(job_read_paths=str(settings.data_dir.parent)))
    assert not state["is_available"]
    assert "contains the data directory" in state["reason"]


def test_a_read_path_reached_through_a_link_is_readable(bwrap, settings, tmp_path):
    (tmp_path / "disk" / "datasets").mkdir(parents=True)
    (tmp_path / "disk" / "datasets" / "rows.csv").write_text("a,b\n")
    (tmp_path / "shared").symlink_to(tmp_path / "disk")
    datasets = tmp_path / "shared" / "datasets"
    folder = run_job(
        settings.replace(job_read_paths=str(datasets)), f"print(open({str(datasets / 'rows.csv')!r}).read())"
    )
    assert lines(folder) == ["a,b", ""]
