"""Several hosts (#13): scheduling throughput, live-line latency across hosts, the ingest flood.

Every figure is taken against servers this script starts itself, each with a data directory of
its own in a temporary folder, on free loopback ports. One run prints ONE table whose columns
are the deployments compared side by side in that run:

* ``one host``     one ``trainflow server`` in the default mode (SQLite, local bus, each job's
                   events written to files by its supervisor): the anchor;
* ``shared, A``    two servers in shared mode (``TRAINFLOW_SHARED=true``) on a fresh
                   PostgreSQL database made beside ``--database-url`` (dropped after) and the
                   Redis at ``--redis-url``, one signing key, one artifact folder; jobs'
                   ``TRAINFLOW_PUBLIC_URL`` is host A. Figures read through host A ...
* ``shared, B``    ... and through host B, which did not run the job.

Sections (``--only schedule,latency,ingest`` picks some):

* schedule: ``--jobs`` tiny jobs (``print(1)``) submitted at once (half through each host in
  shared mode), ``--slots`` running at a time (``TRAINFLOW_MAX_CONCURRENT_JOBS`` on every host:
  a global cap). Jobs started per second between the first and the last start, the most jobs
  ever running at once (from the stored start and end times: must not pass the cap) and how
  many jobs ended SUCCEEDED with exactly their one line (each ran once);
* latency: a job prints ``--lines`` lines at ``--rate`` lines/s, each holding the time it was
  printed; a follower of the job's event stream on each host notes when each line arrives.
  Print to arrival, p50/p99 (target: p50 at most 10 ms, p99 at most 50 ms, as on one host);
* ingest: a job prints ``--flood`` numbered lines as fast as it can. Every line must arrive in
  the stream once and in order; lines/s from the job's start to its ``end`` event.

Run: ``venv/bin/python bench/hosts.py [--jobs 300] [--only schedule]`` (PostgreSQL and Redis on
loopback by default). The table is also written as JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jobs import ADMIN, FINISHED, TRAIN, free_ports, stop_jobs
from mlflow_writes import (
    base_env,
    fresh_database,
    percentile,
    progress,
    running,
    stop_all,
    trainflow_revision,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
JOB_TIMEOUT_S = 600.0
LATENCY_TARGET_MS = {"p50": 10.0, "p99": 50.0}

TINY_SCRIPT = "print(1)\n"
TIMED_SCRIPT = """\
import sys, time
count, rate = int(sys.argv[1]), float(sys.argv[2])
start = time.perf_counter()
for i in range(count):
    delay = start + i / rate - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    print(f"{i} {time.time():.6f}", flush=True)
"""
FLOOD_SCRIPT = """\
import sys
for i in range(int(sys.argv[1])):
    print(i)
"""


@dataclass
class Host:
    name: str
    url: str
    http: Any  # requests.Session signed in as the admin

    def api(self, path: str) -> str:
        return f"{self.url}{TRAIN}{path}"

    def upload(self, name: str, source: str) -> int:
        response = self.http.post(self.api("/upload"), files={"file": (name, source.encode())}, timeout=60)
        if response.status_code != 201:
            raise RuntimeError(f"upload {name} on {self.name}: {response.status_code} {response.text[:300]}")
        return int(response.json()["script"])

    def submit(self, script_id: int, args: list[str] | None = None) -> int:
        body: dict[str, Any] = {"script_id": script_id, "args": args or []}
        response = self.http.post(self.api("/jobs"), json=body, timeout=60)
        if response.status_code != 201:
            raise RuntimeError(f"submit on {self.name}: {response.status_code} {response.text[:300]}")
        return int(response.json()["job"])

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.http.get(self.api(f"/jobs/{job_id}"), timeout=60).json())

    def log_lines(self, job_id: int) -> list[str]:
        response = self.http.get(self.api(f"/jobs/{job_id}/logs"), params={"limit": 10}, timeout=60)
        return [record["line"] for record in response.json()["lines"]]

    def wait_ended(self, job_ids: list[int], timeout: float = JOB_TIMEOUT_S) -> dict[int, dict[str, Any]]:
        deadline, ended = time.monotonic() + timeout, {}
        while len(ended) < len(job_ids) and time.monotonic() < deadline:
            page_number, pages = 1, 1
            while page_number <= pages:
                page = self.http.get(
                    self.api("/jobs"), params={"page": page_number, "size": 100}, timeout=60
                ).json()
                pages = -(-int(page["total"]) // 100)
                for job in page["list"]:
                    if job["job"] in job_ids and job["status"] in FINISHED:
                        ended[job["job"]] = job
                page_number += 1
            time.sleep(0.5)
        if len(ended) < len(job_ids):
            raise TimeoutError(f"{len(job_ids) - len(ended)} jobs did not end in {timeout:.0f} s")
        return ended


def follow(host: Host, job_id: int, arrivals: list[tuple[dict[str, Any], float]]) -> None:
    """Read the job's NDJSON stream to its ``end``, noting when each event arrived."""
    try:
        _follow(host, job_id, arrivals)
    except Exception as error:  # the figures show what arrived; the log says why no more did
        progress(f"following job {job_id} on {host.name} failed: {type(error).__name__}: {error}")


def _follow(host: Host, job_id: int, arrivals: list[tuple[dict[str, Any], float]]) -> None:
    """As a client does: a response that ends before the job's ``end`` (a ``resync`` for a
    reader that fell behind, a dropped connection) is followed by another from the last seq."""
    after = 0
    while True:
        url = host.api(f"/jobs/{job_id}/events")
        with host.http.get(url, params={"after": after}, stream=True, timeout=(10, 120)) as response:
            if response.status_code == 204:
                return
            response.raise_for_status()
            for line in response.iter_lines(chunk_size=64 * 1024):
                arrived = time.time()
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") in ("heartbeat", "resync"):
                    continue
                after = max(after, int(event.get("seq") or 0))
                arrivals.append((event, arrived))
                if event.get("type") == "end":
                    return


# --------------------------------------------------------------------------------------------
# Deployments
# --------------------------------------------------------------------------------------------


@dataclass
class Options:
    only: set[str]
    jobs: int
    slots: int
    lines: int
    rate: float
    flood: int
    database_url: str
    redis_url: str


def _session() -> Any:
    import requests

    http = requests.Session()
    http.trust_env = False  # never via a proxy
    http.auth = ADMIN
    return http


@contextlib.contextmanager
def server(name: str, tmp: Path, port: int, env: dict[str, str]) -> Iterator[Host]:
    environ = {
        **base_env(),
        "TRAINFLOW_DATA_DIR": str(tmp / name / "data"),
        "TRAINFLOW_HOST": "127.0.0.1",
        "TRAINFLOW_PORT": str(port),
        "TRAINFLOW_ADMIN_PASSWORD": ADMIN[1],
        **env,
    }
    (tmp / name).mkdir(parents=True)
    log_path = tmp / name / "server.log"
    started = time.monotonic()
    argv = [str(Path(sys.executable).parent / "trainflow"), "server"]
    with running(argv, environ, tmp / name, log_path) as proc:
        wait_healthy(f"http://127.0.0.1:{port}/api/health", proc, log_path, started)
        host = Host(name, f"http://127.0.0.1:{port}", _session())
        try:
            yield host
        finally:
            host.http.close()
            stop_jobs(tmp / name / "data" / "jobs")


@contextlib.contextmanager
def one_host(tmp: Path, opts: Options) -> Iterator[list[Host]]:
    env = {"TRAINFLOW_MAX_CONCURRENT_JOBS": str(opts.slots)}
    with server("one", tmp, free_ports(1)[0], env) as host:
        yield [host]


@contextlib.contextmanager
def shared_hosts(tmp: Path, opts: Options) -> Iterator[list[Host]]:
    port_a, port_b = free_ports(2)
    with fresh_database(opts.database_url) as database_url:
        env = {
            "TRAINFLOW_SHARED": "true",
            "TRAINFLOW_DATABASE_URL": database_url,
            "TRAINFLOW_REDIS_URL": opts.redis_url,
            "TRAINFLOW_SECRET_KEY": secrets.token_urlsafe(48),
            "TRAINFLOW_ARTIFACTS_URI": (tmp / "artifacts").as_uri(),
            "TRAINFLOW_PUBLIC_URL": f"http://127.0.0.1:{port_a}",
            "TRAINFLOW_MAX_CONCURRENT_JOBS": str(opts.slots),
        }
        (tmp / "artifacts").mkdir(parents=True)
        with server("A", tmp, port_a, env) as a, server("B", tmp, port_b, env) as b:
            yield [a, b]


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def most_at_once(jobs: list[dict[str, Any]]) -> int:
    """The most jobs whose [started_at, finished_at] overlap, from the stored times."""
    edges = []
    for job in jobs:
        if job.get("started_at") and job.get("finished_at"):
            edges.append((datetime.fromisoformat(job["started_at"].replace("Z", "+00:00")), 1))
            edges.append((datetime.fromisoformat(job["finished_at"].replace("Z", "+00:00")), -1))
    running_now = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):  # an end before a start at a tie
        running_now += step
        peak = max(peak, running_now)
    return peak


def bench_schedule(hosts: list[Host], opts: Options) -> dict[str, Any]:
    scripts = {host.name: host.upload("tiny.py", TINY_SCRIPT) for host in hosts}
    progress(f"schedule: submitting {opts.jobs} jobs through {len(hosts)} host(s)")
    job_ids = []
    for i in range(opts.jobs):
        host = hosts[i % len(hosts)]
        job_ids.append(host.submit(scripts[host.name]))
    ended = hosts[0].wait_ended(job_ids)
    jobs = list(ended.values())
    starts = sorted(
        datetime.fromisoformat(job["started_at"].replace("Z", "+00:00")).timestamp()
        for job in jobs
        if job.get("started_at")
    )
    once = sum(
        1
        for job_id in job_ids
        if ended[job_id]["status"] == "SUCCEEDED" and hosts[-1].log_lines(job_id) == ["1"]
    )
    span = starts[-1] - starts[0] if len(starts) > 1 else math.nan
    return {
        "jobs": opts.jobs,
        "started_per_s": (len(starts) - 1) / span if span else math.nan,
        "most_at_once": most_at_once(jobs),
        "succeeded_once": once,
        "runners": sorted({str(job.get("runner")) for job in jobs}),  # the executor that ran each
    }


def bench_latency(hosts: list[Host], opts: Options) -> dict[str, Any]:
    script = hosts[0].upload("timed.py", TIMED_SCRIPT)
    job_id = hosts[0].submit(script, [str(opts.lines), str(opts.rate)])
    arrivals: dict[str, list[tuple[dict[str, Any], float]]] = {host.name: [] for host in hosts}
    threads = [threading.Thread(target=follow, args=(host, job_id, arrivals[host.name])) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOB_TIMEOUT_S)
    result = {}
    for host in hosts:
        delays = [
            (arrived - float(event["line"].split()[1])) * 1000
            for event, arrived in arrivals[host.name]
            if event.get("type") == "log" and event.get("stream") == "stdout"
        ]
        result[host.name] = {
            "lines": len(delays),
            "p50": percentile(delays, 50) if delays else math.nan,
            "p99": percentile(delays, 99) if delays else math.nan,
        }
    return result


def bench_ingest(hosts: list[Host], opts: Options) -> dict[str, Any]:
    script = hosts[0].upload("flood.py", FLOOD_SCRIPT)
    job_id = hosts[0].submit(script, [str(opts.flood)])
    arrivals: list[tuple[dict[str, Any], float]] = []
    follow(hosts[-1], job_id, arrivals)
    numbers = [
        int(event["line"])
        for event, _ in arrivals
        if event.get("type") == "log" and event.get("stream") == "stdout"
    ]
    seqs = [event["seq"] for event, _ in arrivals if "seq" in event]
    job = hosts[0].job(job_id)
    started = datetime.fromisoformat(job["started_at"].replace("Z", "+00:00")).timestamp()
    return {
        "lines": len(numbers),
        "complete": numbers == list(range(opts.flood)) and seqs == list(range(seqs[0], seqs[0] + len(seqs))),
        "lines_per_s": len(numbers) / (arrivals[-1][1] - started) if arrivals else math.nan,
        "status": job["status"],
    }


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def figure(results: dict[str, Any], deployment: str, section: str, host: str | None, key: str) -> Any:
    """One figure of the results, or None where that section did not run or failed."""
    found = (results.get(deployment) or {}).get(section) or {}
    if host is not None:
        found = found.get(host) or {}
    return found.get(key)


def render(results: dict[str, Any], opts: Options) -> str:
    rows: list[list[str]] = []

    def row(label: str, section: str, key: str, target: str, per_host: bool = False, digits: int = 1) -> None:
        hosts = (
            [("one", "one"), ("shared", "A"), ("shared", "B")]
            if per_host
            else [("one", None), ("shared", None)]
        )
        cells = [fmt(figure(results, deployment, section, host, key), digits) for deployment, host in hosts]
        rows.append([label, *cells, *([] if per_host else ["(both)"]), target])

    if "schedule" in opts.only:
        jobs = f"{opts.jobs} jobs, {opts.slots} slots"
        row(f"schedule: jobs started/s ({jobs})", "schedule", "started_per_s", "")
        row("schedule: most running at once", "schedule", "most_at_once", f"<= {opts.slots}")
        row("schedule: ran once and succeeded", "schedule", "succeeded_once", f"{opts.jobs}")
    if "latency" in opts.only:
        paced = f"{opts.lines} lines at {opts.rate:g}/s"
        for q in ("p50", "p99"):
            row(f"print -> follower {q} ms ({paced})", "latency", q, f"<= {LATENCY_TARGET_MS[q]:g}", True)
        row("print -> follower: lines that arrived", "latency", "lines", f"{opts.lines}", True)
    if "ingest" in opts.only:
        flood = f"{opts.flood:,} lines, followed on B"
        row(f"flood: lines/s to the follower ({flood})", "ingest", "lines_per_s", "", digits=0)
        row("flood: every line once, in order", "ingest", "complete", "yes")
    header = ["row", "one host", "shared, A", "shared, B", "target"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r))
        for r in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def environment_line() -> str:
    return (
        f"trainflow at {trainflow_revision()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})"
    )


def run_sections(hosts: list[Host], opts: Options) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, work in (("schedule", bench_schedule), ("latency", bench_latency), ("ingest", bench_ingest)):
        if section in opts.only:
            progress(f"{section} on {', '.join(host.name for host in hosts)}")
            try:
                out[section] = work(hosts, opts)
            except Exception as error:  # one failed section still leaves the others' figures
                out[section] = {"error": f"{type(error).__name__}: {error}"}
                progress(f"{section} failed: {out[section]['error']}")
    return out


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="schedule,latency,ingest")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--flood", type=int, default=200_000)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    return Options(
        set(args.only.split(",")),
        args.jobs,
        args.slots,
        args.lines,
        args.rate,
        args.flood,
        args.database_url,
        args.redis_url,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="trainflow-bench-hosts-") as folder:
            tmp = Path(folder)
            with one_host(tmp / "one", opts) as hosts:
                results["one"] = run_sections(hosts, opts)
            with shared_hosts(tmp / "shared", opts) as hosts:
                results["shared"] = run_sections(hosts, opts)
    finally:
        stop_all()
    table = render(results, opts)
    environment = environment_line()
    print(f"Several hosts ({environment})\n\n{table}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"hosts-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"environment": environment, "results": results, "table": table}, indent=2))
    progress(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
