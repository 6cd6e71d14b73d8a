"""The environments a job and its venv build run with: their variables and the venv cache key.

A job gets an allow-list of the server's variables, the user's own ``env`` and what trainflow
sets. Its venv build gets less: a fixed list, never the user's ``env`` (which would steer pip),
and the server's pip options on pip's command line. The venv cache key covers everything that
decides what pip installs, so one user's build is shared with another only for the same inputs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainflow.jobs.executors.base import Launch
from trainflow.runner.supervisor import CHECKPOINT_DIR
from trainflow.tracking import mlflow_version

PASSED_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")  # from the server's environment, and no more


# From the server's environment to the setup step, and no more: proxies and certificates decide
# how pip reaches an index, never what it installs. No PIP_* variable: pip runs --isolated, with
# the server's index settings (TRAINFLOW_PIP_*) on its command line.
SETUP_PASSED_ENV = (
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "SYSTEMROOT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


VENV_KEY_FORMAT = "2"


# requirements.txt options that only name an index or choose among what it offers; any other
# option (-r, -c, -e, -f, ...) or a requirement given as a path may read the job's own files.
_INDEX_OPTIONS = (
    "-i",
    "--index-url",
    "--extra-index-url",
    "--trusted-host",
    "--pre",
    "--prefer-binary",
    "--only-binary",
    "--no-binary",
    "--require-hashes",
)


def venv_constraints() -> list[str]:
    """What holds a listed MLflow to the server's version."""
    version = mlflow_version()
    return [f"mlflow=={version}", f"mlflow-skinny=={version}", f"mlflow-tracing=={version}"]


def pip_index_args(settings: Any) -> list[str]:
    """The server's pip options for a venv build: what TRAINFLOW_PIP_* say, or else what the
    server's own pip configuration says of where packages come from."""
    if settings.pip_index_url or settings.pip_extra_index_url or settings.pip_trusted_host:
        args = ["--index-url", settings.pip_index_url] if settings.pip_index_url else []
        args += [a for url in settings.pip_extra_index_url.split() for a in ("--extra-index-url", url)]
        args += [a for host in settings.pip_trusted_host.split() for a in ("--trusted-host", host)]
        return args
    return list(_server_pip_options())


_PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host", "cert", "constraint", "no-index")


@functools.cache
def _server_pip_options() -> tuple[str, ...]:
    return tuple(server_pip_options(dict(os.environ), _pip_config_files(os.environ)))


def _pip_config_files(environ: Any) -> list[str]:
    """pip's configuration files, lowest precedence first (global, user, PIP_CONFIG_FILE)."""
    xdg_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [os.path.join(d, "pip", "pip.conf") for d in reversed(xdg_dirs.split(":")) if d]
    files.append("/etc/pip.conf")
    home = os.path.expanduser("~")
    xdg_home = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files += [os.path.join(home, ".pip", "pip.conf"), os.path.join(xdg_home, "pip", "pip.conf")]
    if environ.get("PIP_CONFIG_FILE"):
        files.append(environ["PIP_CONFIG_FILE"])
    return files


def server_pip_options(environ: dict[str, str], config_files: list[str]) -> list[str]:
    """The server's own pip configuration (its pip.conf files, then its PIP_* variables) as
    command-line options: only where packages come from (index, wheel folders, trusted hosts,
    certificate, constraints). Local paths become file:// URLs, which the build's sandbox shows."""
    import configparser

    values: dict[str, str] = {}
    if environ.get("PIP_CONFIG_FILE") != os.devnull:
        for path in config_files:
            parser = configparser.RawConfigParser()
            with contextlib.suppress(configparser.Error, OSError, UnicodeDecodeError):
                parser.read(path, encoding="utf-8")
            for section in ("global", "install"):
                if parser.has_section(section):
                    for key, value in parser.items(section):
                        values[key.replace("_", "-")] = value
    for key in _PIP_KEYS:
        env = "PIP_" + key.upper().replace("-", "_")
        if environ.get(env):
            values[key] = environ[env]
    options: list[str] = []
    for key in _PIP_KEYS:
        value = values.get(key, "").strip()
        if not value:
            continue
        if key == "no-index":
            if value.lower() in {"1", "true", "yes", "on"}:
                options.append("--no-index")
        elif key in {"index-url", "cert"}:
            options += [f"--{key}", value]
        else:
            for word in value.split():
                options += [f"--{key}", _as_url(word) if key in {"find-links", "constraint"} else word]
    return options


def _as_url(word: str) -> str:
    return word if "://" in word else Path(os.path.abspath(os.path.expanduser(word))).as_uri()


def reads_local_files(requirements: str) -> bool:
    """Whether the requirements may install from the job's own files (``-e .``, ``./pkg``...)."""
    for raw in requirements.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            option = line.split("=", 1)[0].split()[0]
            if option not in _INDEX_OPTIONS:
                return True
        elif line.startswith((".", "/", "~", "file:")) or "/" in line or "\\" in line:
            return True
    return False


def _folder_digest(folder: Path) -> str:
    """A digest of every file under ``folder``: names and contents."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        digest.update(str(path.relative_to(folder)).encode("utf-8", "surrogateescape") + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def venv_key(settings: Any, requirements: Path) -> str:
    """The cache key of a job's environment: everything that decides what pip installs.

    The requirements file, the constraints, the server's index settings, this Python (version,
    implementation, installation) and the platform; and, when the requirements read the job's
    own files, every file of the job's copy of its script. Not the job's ``env``: it never
    reaches pip.
    """
    import hashlib
    import platform
    import sysconfig

    text = requirements.read_bytes()
    digest = hashlib.sha256()

    def add(label: str, value: str | bytes) -> None:
        data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        digest.update(f"{label}:{len(data)}:".encode() + data)

    add("format", VENV_KEY_FORMAT)
    add("requirements", text)
    add("constraints", "\n".join(venv_constraints()))
    add("pip", "\0".join(pip_index_args(settings)))
    add("python", f"{sys.version}|{sys.implementation.cache_tag}|{sys.base_prefix}")
    add("executable", os.path.realpath(sys.executable))
    add("platform", f"{sysconfig.get_platform()}|{platform.libc_ver()}")
    if reads_local_files(text.decode("utf-8", "replace")):
        add("project", _folder_digest(requirements.parent))
    return digest.hexdigest()[:32]


def venv_setup(settings: Any, requirements: Path) -> tuple[Path, list[list[str]]]:
    """The cached environment for this requirements.txt, and the step that makes sure it exists."""
    from trainflow.jobs.venv import server_site_packages

    venv = settings.resolved_data_dir / "venvs" / venv_key(settings, requirements)
    step = [
        sys.executable,
        "-m",
        "trainflow.jobs.venv",
        str(requirements),
        str(venv),
        server_site_packages(),
        *venv_constraints(),
        "--pip",
        *pip_index_args(settings),
    ]
    return venv, [step]


def setup_env(job_env: dict[str, str], server_env: dict[str, str]) -> dict[str, str]:
    """The setup step's environment: a fixed allow-list, nothing of the job's own ``env``.

    PATH, HOME and TMPDIR are the job's (trainflow sets them, in the job's folder); locale,
    proxies and certificates come from the server; no pip configuration file is read.
    """
    env = {k: v for k, v in server_env.items() if k in SETUP_PASSED_ENV}
    env.update({k: job_env[k] for k in ("PATH", "HOME", "TMPDIR") if k in job_env})
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHONNOUSERSITE="1")
    return env


def job_env(launch: Launch, *, base_env: dict[str, str], folder: Path) -> dict[str, str]:
    """The job's whole environment: an allow-list, never the server's secrets."""
    env = {k: v for k, v in base_env.items() if k in PASSED_ENV}
    env.update(launch.user_env)
    env.update(
        PATH=str(Path(sys.executable).parent) + ":/usr/local/bin:/usr/bin:/bin",
        HOME=str(folder / "home"),
        TMPDIR=str(folder / "tmp"),
        TRAINFLOW_OUTPUT_DIR=str(folder / "output"),
        # Kept across a retried job's attempts (trainflow.jobs.retries): what a retry resumes from.
        TRAINFLOW_CHECKPOINT_DIR=str(folder / CHECKPOINT_DIR),
    )
    env.update(run_env(launch))
    if launch.gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = launch.gpu_ids
    return env


def run_env(launch: Launch) -> dict[str, str]:
    """What every job gets wherever it runs, over the user's own variables: its run, its token."""
    return {
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
        "MLFLOW_TRACKING_URI": launch.tracking_uri,
        "MLFLOW_RUN_ID": launch.run_id,
        "MLFLOW_EXPERIMENT_ID": launch.experiment_id,
        "MLFLOW_TRACKING_TOKEN": launch.token,
        "TRAINFLOW_JOB_ID": str(launch.job_id),
        "TRAINFLOW_ATTEMPT": str(launch.attempt),
    }
