"""A job folder as the web process prepares it for the supervisor, the command that starts one, its status."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any


def write_spec(folder: Path, **fields: Any) -> None:
    """Write ``folder/spec.json``: job 1 runs ``python -u train.py`` in ``folder/work``.

    ``fields`` add to the spec or replace its defaults (``argv``, ``env``, ``timeout_s`` ...).
    """
    spec = {
        "job": 1,
        "argv": [sys.executable, "-u", "train.py"],
        "cwd": str(folder / "work"),
        "env": {"PATH": os.environ["PATH"]},
        "timeout_s": None,
        **fields,
    }
    (folder / "spec.json").write_text(json.dumps(spec))


def write_job(folder: Path, script: str, **fields: Any) -> None:
    """Write ``script`` (dedented) as the job's ``work/train.py``, and the spec that runs it."""
    work = folder / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.py").write_text(textwrap.dedent(script))
    write_spec(folder, **fields)


def supervisor_command(folder: Path) -> list[str]:
    """How the web process starts the supervisor of the job in ``folder``."""
    return [sys.executable, "-m", "trainflow.runner.supervisor", str(folder)]


def read_status(folder: Path) -> dict[str, Any]:
    """The supervisor's ``status.json``."""
    return json.loads((folder / "status.json").read_text())
