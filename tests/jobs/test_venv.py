"""The venv cache's key and the setup step's environment: nothing of a job's own steers pip (issue 10)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from trainflow.jobs import environments, venv
from trainflow.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def project(tmp_path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "requirements.txt").write_text("sixx==1.0\n")
    (folder / "train.py").write_text("import sixx\n")
    return folder


def key(settings: Settings, project: Path) -> str:
    return environments.venv_key(settings, project / "requirements.txt")


def test_the_same_requirements_share_an_environment(settings, project, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "requirements.txt").write_text("sixx==1.0\n")
    (other / "train.py").write_text("print('a different script')\n")
    assert key(settings, project) == environments.venv_key(settings, other / "requirements.txt")


def test_other_requirements_are_another_environment(settings, project):
    before = key(settings, project)
    (project / "requirements.txt").write_text("sixx==1.1\n")
    assert key(settings, project) != before


@pytest.mark.parametrize(
    "change",
    [
        {"pip_index_url": "https://mirror.example/simple"},
        {"pip_extra_index_url": "https://extra.example/simple"},
        {"pip_trusted_host": "mirror.example"},
    ],
)
def test_the_servers_index_settings_are_in_the_key(settings, project, change):
    assert key(settings.replace(**change), project) != key(settings, project)


def test_the_python_is_in_the_key(settings, project, monkeypatch):
    before = key(settings, project)
    monkeypatch.setattr(sys, "version", sys.version + " (another build)")
    assert key(settings, project) != before


def test_the_platform_is_in_the_key(settings, project, monkeypatch):
    import sysconfig

    before = key(settings, project)
    monkeypatch.setattr(sysconfig, "get_platform", lambda: "another-platform")
    assert key(settings, project) != before


@pytest.mark.parametrize(
    "line",
    [
        "-e .",
        "./vendored/sixx",
        "--find-links wheels",
        "-f wheels",
        "-r more.txt",
        "sixx @ file:///tmp/sixx.whl",
        "wheels/sixx-1.0-py3-none-any.whl",
    ],
)
def test_requirements_that_read_the_jobs_files_key_on_those_files(settings, project, line):
    (project / "requirements.txt").write_text(f"{line}\n")
    before = key(settings, project)
    (project / "train.py").write_text("import sixx  # changed\n")
    assert key(settings, project) != before


@pytest.mark.parametrize(
    "text",
    [
        "sixx==1.0\n",
        "# a comment\nsixx>=1.0  # pinned\n",
        "--index-url https://pypi.org/simple\nsixx\n",
        "-i https://pypi.org/simple\n--prefer-binary\nsixx[extra]==1.0; python_version > '3'\n",
    ],
)
def test_plain_requirements_read_nothing_local(text):
    assert not environments.reads_local_files(text)


def test_the_setup_step_gets_the_servers_index_on_its_command_line(settings, project):
    chosen = settings.replace(
        pip_index_url="https://mirror.example/simple",
        pip_extra_index_url="https://a.example/simple https://b.example/simple",
        pip_trusted_host="mirror.example",
    )
    _, [step] = environments.venv_setup(chosen, project / "requirements.txt")
    assert step[-9:] == [
        "--pip",
        "--index-url",
        "https://mirror.example/simple",
        "--extra-index-url",
        "https://a.example/simple",
        "--extra-index-url",
        "https://b.example/simple",
        "--trusted-host",
        "mirror.example",
    ]


def test_the_setup_env_is_an_allow_list_without_the_jobs_env():
    job_env = {
        "PATH": "/srv/python/bin:/usr/bin:/bin",
        "HOME": "/data/jobs/1/home",
        "TMPDIR": "/data/jobs/1/tmp",
        "MLFLOW_TRACKING_TOKEN": "secret",
        "PIP_INDEX_URL": "file:///home/mallory/evil",
        "PIP_FIND_LINKS": "/home/mallory/wheels",
        "PIP_NO_INDEX": "1",
        "PYTHONPATH": "/home/mallory/lib",
        "MY_SETTING": "42",
    }
    server_env = {"LANG": "C.UTF-8", "HTTPS_PROXY": "http://proxy:3128", "PIP_INDEX_URL": "x", "SECRET": "s"}
    assert environments.setup_env(job_env, server_env) == {
        "PATH": "/srv/python/bin:/usr/bin:/bin",
        "HOME": "/data/jobs/1/home",
        "TMPDIR": "/data/jobs/1/tmp",
        "LANG": "C.UTF-8",
        "HTTPS_PROXY": "http://proxy:3128",
        "PIP_CONFIG_FILE": os.devnull,
        "PYTHONNOUSERSITE": "1",
    }


def test_pip_runs_isolated_from_environment_variables_and_config_files(tmp_path):
    command = venv.pip_command(Path("/v/bin/python"), tmp_path / "r.txt", tmp_path / "c.txt", ["-i", "u"])
    assert command[:4] == ["/v/bin/python", "-m", "pip", "--isolated"]
    assert command[command.index("install") + 1 :][:4] == [
        "--disable-pip-version-check",
        "--no-input",
        "-i",
        "u",
    ]


def test_the_venv_step_hands_the_servers_pip_options_to_pip(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(venv, "ensure", lambda *args: seen.setdefault("args", args) and 0)
    options = ["--index-url", "I", "--extra-index-url", "E", "--trusted-host", "H"]
    venv.main(["venv", "r.txt", "v", "site", "mlflow==1", "--pip", *options])
    assert seen["args"] == (Path("r.txt"), Path("v"), "site", ["mlflow==1"], options)


def test_a_built_environment_is_read_only_but_can_still_be_moved_and_removed(tmp_path):
    built = tmp_path / "env"
    (built / "lib" / "site").mkdir(parents=True)
    (built / "lib" / "site" / "sixx.py").write_text("ORIGIN = 'real'\n")
    (built / "bin").mkdir()
    (built / "bin" / "python").symlink_to(sys.executable)
    venv.freeze(built)
    for path in (built / "lib", built / "lib" / "site", built / "lib" / "site" / "sixx.py", built / "bin"):
        assert not stat.S_IMODE(path.stat().st_mode) & 0o222, path
    assert stat.S_IMODE(built.stat().st_mode) & stat.S_IWUSR  # renamed into place from its parent
    moved = tmp_path / "cache" / "env"
    moved.parent.mkdir()
    os.replace(built, moved)
    venv.remove(moved)
    assert not moved.exists()


def test_without_trainflow_settings_the_servers_own_pip_configuration_is_used(tmp_path):
    site = tmp_path / "pip.conf"
    site.write_text(
        "[global]\nextra-index-url = file:///opt/pypi/simple https://extra.example/simple\n"
        "find-links = /opt/wheels\ncert = /etc/ssl/certs/ca.crt\ntimeout = 60\n"
        "[install]\nconstraint = /etc/xdg/pip/constraints.txt\n"
    )
    environ = {"PIP_INDEX_URL": "https://mirror.example/simple", "PIP_FIND_LINKS": "wheels"}
    assert environments.server_pip_options(environ, [str(site), str(tmp_path / "missing.conf")]) == [
        "--index-url",
        "https://mirror.example/simple",
        "--extra-index-url",
        "file:///opt/pypi/simple",
        "--extra-index-url",
        "https://extra.example/simple",
        "--find-links",
        (Path.cwd() / "wheels").as_uri(),
        "--cert",
        "/etc/ssl/certs/ca.crt",
        "--constraint",
        "file:///etc/xdg/pip/constraints.txt",
    ]


def test_pip_config_file_devnull_turns_the_servers_config_files_off(tmp_path):
    site = tmp_path / "pip.conf"
    site.write_text("[global]\nindex-url = https://mirror.example/simple\n")
    assert environments.server_pip_options({"PIP_CONFIG_FILE": os.devnull}, [str(site)]) == []


def test_trainflow_pip_settings_replace_the_servers_own_configuration(settings):
    chosen = settings.replace(pip_index_url="https://mirror.example/simple")
    assert environments.pip_index_args(chosen) == ["--index-url", "https://mirror.example/simple"]
