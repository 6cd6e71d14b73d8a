"""A job's own virtual environment, built from its requirements.txt and cached by the file's hash.

Run by the job's supervisor as a setup step (``python -m trainflow.jobs.venv ...``), so pip's
output lands in the job's log and a slow install never holds up the web process. Standard
library only. Several jobs needing the same environment wait on a lock and build it once;
it is built in a temporary folder and renamed into place, so a half-built one is never used.

After pip has installed the requirements, a ``.pth`` file appends the server's own
site-packages to the environment's path: whatever the requirements list, ``import mlflow``
finds the server's MLflow (and a listed ``mlflow`` is held to the server's version by a
constraints file), so the job's runs always reach the server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: jobs building the same environment at once are not serialised
    fcntl = None  # type: ignore[assignment]

READY = ".trainflow-ready"


def python_of(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure(requirements: Path, venv: Path, server_site: str, constraints: list[str]) -> int:
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
        return _build(requirements, venv, server_site, constraints)


def _build(requirements: Path, venv: Path, server_site: str, constraints: list[str]) -> int:
    building = venv.parent / f"{venv.name}.building"
    shutil.rmtree(building, ignore_errors=True)
    print("trainflow: creating a virtual environment for requirements.txt", flush=True)
    code = subprocess.call([sys.executable, "-m", "venv", str(building)])
    if code:
        return code
    constraints_file = building / "trainflow-constraints.txt"
    constraints_file.write_text("\n".join(constraints) + "\n", encoding="utf-8")
    code = subprocess.call(
        [
            str(python_of(building)),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
            str(requirements),
            "-c",
            str(constraints_file),
        ]
    )
    if code:
        print(
            f"trainflow: pip could not install requirements.txt (exit code {code})",
            file=sys.stderr,
            flush=True,
        )
        shutil.rmtree(building, ignore_errors=True)
        return code
    site = subprocess.check_output(
        [str(python_of(building)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True,
    ).strip()
    Path(site, "trainflow_server.pth").write_text(server_site + "\n", encoding="utf-8")
    (building / READY).touch()
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(venv)
    os.replace(building, venv)
    print("trainflow: environment ready", flush=True)
    return 0


def server_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(
            "usage: python -m trainflow.jobs.venv REQUIREMENTS VENV SERVER_SITE [CONSTRAINT ...]",
            file=sys.stderr,
        )
        return 2
    return ensure(Path(argv[1]), Path(argv[2]), argv[3], argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
