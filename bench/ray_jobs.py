"""Jobs on Ray (#13): submit to first line, through trainflow against Ray Jobs directly, in one run.

One local Ray head (``ray start --head --block``, two CPUs, free loopback ports) serves both
columns, one after the other:

* ``Ray Jobs``      the one-line job (``print("first", flush=True)``) submitted with Ray's own
                    ``JobSubmissionClient``, its first line read with ``get_job_logs`` polled every
                    10 ms and, at the same time, ``tail_job_logs`` (what ``ray job logs --follow``
                    reads) (``bench/jobs.py --ray-client``);
* ``trainflow``     the same script submitted to a ``trainflow server`` with
                    ``TRAINFLOW_EXECUTOR=ray`` on that head: its first line is the first ``log``
                    event of the job's event stream (what the dashboard shows), read with a
                    follower opened right after the submit's answer. The clock starts as the
                    submit POST is sent.

Each column runs one warm-up job first (Ray builds the runtime env; trainflow uploads its
runner package), then ``--runs`` timed jobs; p50, p90 and the slowest are shown, in ms.

Run: ``venv/bin/python bench/ray_jobs.py [--runs 10]``. Needs ``ray`` (``requirements-test.txt``).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from jobs import (
    _SESSIONS,
    FINISHED,
    JOB_TIMEOUT_S,
    RAY_CLIENT_TIMEOUT_S,
    ms,
    ray_available,
    ray_command,
    stop_session,
    trainflow_server,
)
from mlflow_writes import log_tail, percentile, progress, running, start_process, wait_healthy


def ray_direct(address: str, workdir: Path, runs: int, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    """Ray's own client, in a process of its own (``bench/jobs.py --ray-client``)."""
    argv = [sys.executable, str(Path(__file__).resolve().parent / "jobs.py"), "--ray-client", address]
    argv += ["--ray-workdir", str(workdir), "--ray-runs", str(runs)]
    log_path = tmp / "ray-client.log"
    with running(argv, env, tmp, log_path) as client:
        try:
            client.wait(timeout=RAY_CLIENT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the Ray client did not finish:\n{log_tail(log_path)}") from None
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith("{")]
    if client.returncode != 0 or not lines:
        raise RuntimeError(f"the Ray client failed ({client.returncode}):\n{log_tail(log_path)}")
    return dict(json.loads(lines[-1]))


def first_event(server: Any, job_id: int, seen: dict[str, float]) -> None:
    """Follow the job's event stream; note when its first ``log`` event arrives."""
    with server.http.get(server.url(f"/jobs/{job_id}/events"), stream=True, timeout=(10, JOB_TIMEOUT_S)) as r:
        for raw in r.iter_lines():
            event = json.loads(raw)
            if event.get("type") == "log":
                seen.setdefault("at", time.time())
            if event.get("type") == "end":
                return


def trainflow_one_job(server: Any) -> dict[str, float]:
    job_id, sent, answered = server.submit("job.py")
    seen: dict[str, float] = {}
    follower = threading.Thread(target=first_event, args=(server, job_id, seen), daemon=True)
    follower.start()
    follower.join(timeout=JOB_TIMEOUT_S)
    job = server.http.get(server.url(f"/jobs/{job_id}"), timeout=30).json()
    deadline = time.time() + 60
    while job["status"] not in FINISHED and time.time() < deadline:
        time.sleep(0.05)
        job = server.http.get(server.url(f"/jobs/{job_id}"), timeout=30).json()
    if job["status"] != "SUCCEEDED":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('reason')}")
    return {"answered": ms(answered, sent), "stream": ms(seen.get("at", math.nan), sent)}


def trainflow_on_ray(opts: argparse.Namespace, address: str, tmp: Path) -> dict[str, Any]:
    env = {"TRAINFLOW_EXECUTOR": "ray", "TRAINFLOW_RAY_ADDRESS": address}
    (tmp / "trainflow").mkdir()
    with trainflow_server(opts.bin_dir, tmp / "trainflow", **env) as (server, _ready):
        first = trainflow_one_job(server)
        samples: dict[str, list[float]] = {}
        for _ in range(opts.runs):
            for key, value in trainflow_one_job(server).items():
                samples.setdefault(key, []).append(value)
    return {"first_job": first, "raw": samples}


def cell(figures: dict[str, Any] | None, key: str, stat: str) -> str:
    values = [v for v in (figures or {}).get("raw", {}).get(key, []) if not math.isnan(v)]
    if not values:
        return "n/a"
    value = max(values) if stat == "max" else percentile(values, 50 if stat == "p50" else 90)
    return f"{value:,.0f}"


def render(ray: dict[str, Any], ours: dict[str, Any]) -> str:
    rows = [
        ("submit answered", ray, "answered", ours, "answered"),
        ("first line: Ray polled (get_job_logs)", ray, "poll", None, ""),
        ("first line: Ray followed (tail_job_logs)", ray, "follow", None, ""),
        ("first line: trainflow's event stream", None, "", ours, "stream"),
    ]
    out = [f"{'ms from the submit POST':42} | {'Ray Jobs p50/p90/max':>24} | {'trainflow p50/p90/max':>24}"]
    out.append("-" * len(out[0]))
    for label, left, left_key, right, right_key in rows:
        cells = []
        for figures, key in ((left, left_key), (right, right_key)):
            stats = [cell(figures, key, stat) for stat in ("p50", "p90", "max")] if key else ["", "", ""]
            cells.append("/".join(stats) if key else "")
        out.append(f"{label:42} | {cells[0]:>24} | {cells[1]:>24}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed one-line jobs per column (default 10)")
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent)
    opts = parser.parse_args(argv)
    if not 1 <= opts.runs <= 100:
        parser.error("--runs in [1, 100]")
    version = ray_available(opts.bin_dir)
    if not version:
        parser.error("Ray is not installed here (pip install -r requirements-test.txt)")
    # Ray's unix sockets live under its temp dir: keep the path short.
    with tempfile.TemporaryDirectory(prefix="bench-ray-", dir="/tmp", ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        (tmp / "wd").mkdir()
        (tmp / "wd" / "job.py").write_text('print("first", flush=True)\n')
        argv_, env, dashboard = ray_command(opts.bin_dir, tmp)
        log_path = tmp / "ray-head.log"
        progress(f"[ray] starting a local Ray {version} head ...")
        started = time.monotonic()
        head = start_process(argv_, env, tmp, log_path)
        _SESSIONS[head.pid] = head
        try:
            address = f"http://127.0.0.1:{dashboard}"
            wait_healthy(f"{address}/api/version", head, log_path, started)
            progress(f"[ray] Ray Jobs directly: a warm-up and {opts.runs} jobs ...")
            ray = ray_direct(address, tmp / "wd", opts.runs, env, tmp)
            progress(f"[ray] trainflow on Ray: a warm-up and {opts.runs} jobs ...")
            ours = trainflow_on_ray(opts, address, tmp)
        finally:
            progress("[ray] stopping the head ...")
            stop_session(head)
            _SESSIONS.pop(head.pid, None)
    print()
    print(render(ray, ours))
    print(f"\nRay {version}; first (warm-up) jobs: Ray {ray['first_job']}, trainflow {ours['first_job']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
