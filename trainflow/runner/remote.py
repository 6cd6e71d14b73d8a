"""A job's entrypoint on a Ray node: exchange the ticket, then run the supervisor there.

``python -m trainflow.runner.remote --server URL --job ID --ticket T`` is what Ray runs for a
trainflow job (:mod:`trainflow.jobs.executors.ray`), in the job's uploaded files (Ray's
``working_dir``) with its requirements installed (Ray's ``pip``). Ray's job table, which
anyone with Ray API access reads, holds only this line: the ticket is good for one exchange,
within minutes, at ``POST URL/ajax-api/2.0/mlflow/train/jobs/ID/ticket``, for the
supervisor's spec (the job's argv, environment and tokens, limits, timeout, and where to send
its records).

This runner then makes the job a folder in the node's temporary directory (``work/`` a copy
of the uploaded files, ``output/``, ``tmp/``, ``home/``), writes the spec there with this
node's paths, and runs :mod:`trainflow.runner.supervisor` on it, so the job's lines,
progress and end are recorded exactly as on the server's own machine. There is no sandbox on
Ray nodes: the cluster's own isolation is what holds a job there. The supervisor sends the
job's records and its end to the servers' ingest endpoint (``ray job logs`` shows only this
runner's and the supervisor's own lines). It exits with the job's code (128 + N for a job
killed by signal N), and removes the folder.

Standard library only, like the rest of :mod:`trainflow.runner`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

EXCHANGE_TIMEOUT_S = 30.0  # each try of the exchange
EXCHANGE_TRIES = 5  # a server that does not answer at all is tried again, a refusal is final
PASSED_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_VISIBLE_DEVICES", "RAY_ADDRESS")
SPEC_READ_S = 30.0  # the longest a supervisor may take to read its spec and say it started


class Refused(Exception):
    """The server would not give the spec (the ticket was used, expired, or the job ended)."""


def exchange(server: str, job_id: int, ticket: str) -> dict[str, Any]:
    """The supervisor's spec for this job, for its single-use ticket."""
    url = f"{server.rstrip('/')}/ajax-api/2.0/mlflow/train/jobs/{job_id}/ticket"
    body = json.dumps({"ticket": ticket}).encode()
    for attempt in range(1, EXCHANGE_TRIES + 1):
        request = urllib.request.Request(  # noqa: S310 - the server's own http(s) URL
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=EXCHANGE_TIMEOUT_S) as response:  # noqa: S310
                spec: dict[str, Any] = json.loads(response.read())
                return spec
        except urllib.error.HTTPError as e:
            if e.code < 500:
                raise Refused(f"{e.code}: {_error_message(e)}") from None
            problem = f"{e.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            problem = str(getattr(e, "reason", e))
        print(f"trainflow: the server at {server} did not answer ({problem}); try {attempt}", flush=True)
        time.sleep(min(2.0**attempt, 15.0))
    raise Refused(f"the server at {server} did not answer after {EXCHANGE_TRIES} tries")


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return error.reason if isinstance(error.reason, str) else "refused"


def make_job_dir(job_id: int, files: Path) -> Path:
    """A folder of the job's own, as the local executor makes one: a copy of its files to run in.

    Ray unpacks a package once per node and may give it to several jobs: each works on a copy.
    """
    folder = Path(tempfile.mkdtemp(prefix=f"trainflow-job-{job_id}-"))
    shutil.copytree(files, folder / "work", symlinks=True)
    # The checkpoint folder is this attempt's alone here: a retry runs in a fresh folder, maybe on
    # another node, so on Ray a script cannot resume from what an earlier attempt left in it.
    for name in ("output", "tmp", "home", "checkpoint"):
        (folder / name).mkdir(mode=0o700)
    return folder


def supervisor_spec(spec: dict[str, Any], folder: Path, environ: dict[str, str]) -> dict[str, Any]:
    """The server's spec with this node's paths: its Python, the job's folders, no sandbox."""
    env = {k: v for k, v in environ.items() if k in PASSED_ENV}
    env.update(spec.get("env") or {})
    env.update(
        PATH=str(Path(sys.executable).parent) + ":/usr/local/bin:/usr/bin:/bin",
        HOME=str(folder / "home"),
        TMPDIR=str(folder / "tmp"),
        TRAINFLOW_OUTPUT_DIR=str(folder / "output"),
        TRAINFLOW_CHECKPOINT_DIR=str(folder / "checkpoint"),
    )
    argv = [sys.executable, *list(spec["argv"])[1:]]
    document = {
        "job": spec.get("job"),
        "argv": argv,
        "cwd": str(folder / "work"),
        "env": env,
        "timeout_s": spec.get("timeout_s"),
        "grace_s": spec.get("grace_s", 10.0),
        "setup": [],  # Ray installed the requirements (its runtime environment's pip)
        "setup_env": env,
        "sandbox": None,
        "setup_sandbox": None,
        "setup_publish": [],
        "limits": spec.get("limits"),
        "disk_full_s": spec.get("disk_full_s", 120.0),
        "system_metrics": spec.get("system_metrics"),
        "notify": None,
        "bus": None,
        "attempt": spec.get("attempt", 1),
        "log_from": spec.get("log_from", 0),
    }
    if spec.get("ingest"):
        document["ingest"] = spec["ingest"]  # the supervisor sends its records to the servers
    return document


def write_spec(folder: Path, document: dict[str, Any]) -> None:
    # It holds the job's tokens: only this user may read it.
    fd = os.open(folder / "spec.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(document, f)


def run_supervisor(folder: Path) -> int:
    """Run the supervisor on ``folder`` until it ends; SIGTERM (Ray's stop) is passed on to it."""
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "trainflow.runner.supervisor", str(folder)],
        stdin=subprocess.DEVNULL,
        env={**_own_env(), "PYTHONPATH": _package_root()},
    )

    def pass_on(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            supervisor.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    forget_spec(folder, supervisor)
    return supervisor.wait()


def forget_spec(folder: Path, supervisor: subprocess.Popen[bytes]) -> None:
    """Delete the spec once the supervisor has read it (it then writes its first status).

    No sandbox stands between a job and its folder on a Ray node, and the spec holds the
    supervisor's token, with which a job could write its own records: gone before the job
    starts, it is at least not lying there. (A job running as the supervisor's user can still
    look into the supervisor's memory where the system lets it: see docs/SECURITY.md.)
    """
    deadline = time.monotonic() + SPEC_READ_S
    while not (folder / "status.json").exists():
        if supervisor.poll() is not None or time.monotonic() > deadline:
            return  # it never started (its own log says why); the folder goes at the end
        time.sleep(0.005)
    with contextlib.suppress(OSError):
        os.unlink(folder / "spec.json")


def exit_code_of(folder: Path) -> int:
    """The job's own exit code from the supervisor's status (128 + N for signal N)."""
    try:
        status = json.loads((folder / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 1
    if status.get("exit_code") is not None:
        return int(status["exit_code"])
    if status.get("signal"):
        return 128 + int(status["signal"])
    return 1 if status.get("reason") else 0


def _own_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in {"PATH", "LANG", "LC_ALL", "SYSTEMROOT"}}


def _package_root() -> str:
    """The folder holding this ``trainflow`` package (Ray's copy of it, on a Ray node)."""
    return str(Path(__file__).resolve().parent.parent.parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainflow.runner.remote", description=__doc__)
    parser.add_argument("--server", required=True, help="the trainflow server's URL")
    parser.add_argument("--job", type=int, required=True, help="the job's id")
    parser.add_argument("--ticket", required=True, help="the job's single-use ticket")
    args = parser.parse_args(argv)
    # Stopped before the supervisor runs: there is nothing to record, so just end.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        spec = exchange(args.server, args.job, args.ticket)
    except Refused as e:
        print(f"trainflow: job {args.job} cannot start: the server refused its ticket ({e})", file=sys.stderr)
        return 1
    folder = make_job_dir(args.job, Path.cwd())
    try:
        write_spec(folder, supervisor_spec(spec, folder, dict(os.environ)))
        code = run_supervisor(folder)
        if code != 0:
            print(f"trainflow: job {args.job}: its supervisor exited with {code}", file=sys.stderr)
            return 1
        return exit_code_of(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
