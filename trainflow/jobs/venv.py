"""A job's own virtual environment, built from its requirements.txt and cached by what decides it.

Run by the job's supervisor as a setup step (``python -m trainflow.jobs.venv ...``), so pip's
output lands in the job's log and a slow install never holds up the web process. Standard
library only. It is built in a temporary folder and renamed into place, so a half-built one is
never used; where the server sandboxes jobs, the step runs in the job's sandbox and builds into
a folder of the job's own, which the supervisor moves into the cache afterwards.

Nothing the job's user controls steers pip beyond the requirements file itself, and that is
part of the cache key (see :func:`trainflow.jobs.environments.venv_key`): pip runs ``--isolated``
(no environment variables, no configuration files) with the server's index settings given on
its command line, and the step's environment is a fixed allow-list.

After pip has installed the requirements, a ``.pth`` file appends the server's own
site-packages to the environment's path: whatever the requirements list, ``import mlflow``
finds the server's MLflow (and a listed ``mlflow`` is held to the server's version by a
constraints file), so the job's runs always reach the server. Last, every file and folder of
the environment loses its write permission (its own folder once the supervisor has moved it
into the cache): jobs bind it read-only, and this keeps it so should a bind ever be missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: jobs building the same environment at once are not serialised
    fcntl = None  # type: ignore[assignment]

READY = ".trainflow-ready"
WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def python_of(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure(
    requirements: Path, venv: Path, server_site: str, constraints: list[str], pip_options: list[str]
) -> int:
    if (venv / READY).exists():
        print(
            f"trainflow: using the cached environment for this requirements.txt ({venv.name[:12]})",
            flush=True,
        )
        return 0
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / READY).exists():  # another job built it while we waited
            print("trainflow: using the environment another job just built", flush=True)
            return 0
        return _build(requirements, venv, server_site, constraints, pip_options)


def pip_command(python: Path, requirements: Path, constraints: Path, pip_options: list[str]) -> list[str]:
    """pip's command line: isolated from every environment variable and configuration file."""
    return [
        str(python),
        "-m",
        "pip",
        "--isolated",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        *pip_options,
        "-r",
        str(requirements),
        "-c",
        str(constraints),
    ]


def _build(
    requirements: Path, venv: Path, server_site: str, constraints: list[str], pip_options: list[str]
) -> int:
    building = venv.parent / f"{venv.name}.building"
    remove(building)
    print("trainflow: creating a virtual environment for requirements.txt", flush=True)
    code = subprocess.call([sys.executable, "-m", "venv", str(building)])
    if code:
        return code
    constraints_file = building / "trainflow-constraints.txt"
    constraints_file.write_text("\n".join(constraints) + "\n", encoding="utf-8")
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    code = subprocess.call(
        pip_command(python_of(building), requirements, constraints_file, pip_options), env=env
    )
    if code:
        print(
            f"trainflow: pip could not install requirements.txt (exit code {code})",
            file=sys.stderr,
            flush=True,
        )
        remove(building)
        return code
    # Where the environment's packages go, computed here: running the environment's own Python
    # would run whatever .pth files the packages just installed.
    site = sysconfig.get_path("purelib", "venv", vars={"base": str(building), "platbase": str(building)})
    Path(site, "trainflow_server.pth").write_text(server_site + "\n", encoding="utf-8")
    (building / READY).touch()
    freeze(building)
    with contextlib.suppress(FileNotFoundError):
        remove(venv)
    os.replace(building, venv)
    print("trainflow: environment ready", flush=True)
    return 0


def freeze(folder: Path) -> None:
    """Take the write permission off everything under ``folder`` (the folder itself keeps it,
    so that it can still be moved into place). Links are left alone."""
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(path, stat.S_IMODE(mode) & ~WRITE_BITS)


def remove(folder: Path) -> None:
    """Delete an environment, frozen or half-built; nothing if there is none."""
    if folder.is_symlink():
        folder.unlink()
        return
    if not folder.is_dir():
        return
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRWXU)
    os.chmod(folder, stat.S_IMODE(folder.stat().st_mode) | stat.S_IRWXU)
    shutil.rmtree(folder)


def server_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def main(argv: list[str]) -> int:
    """``python -m trainflow.jobs.venv REQUIREMENTS VENV SERVER_SITE [CONSTRAINT ...] [--pip OPTION ...]``

    What follows ``--pip`` are the server's own pip options (its index, wheel folders,
    certificate), handed to pip as they are.
    """
    args, pip_options = argv[1:], []
    if "--pip" in args:
        at = args.index("--pip")
        args, pip_options = args[:at], args[at + 1 :]
    if len(args) < 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    return ensure(Path(args[0]), Path(args[1]), args[2], args[3:], pip_options)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
