"""The compare page's first render in headless Chromium: 2, 5 and 10 jobs of 100 metrics each.

The script starts ``trainflow server`` itself (a temporary directory, a free loopback port),
runs ``--jobs`` (10) one-line jobs as the admin, then logs ``--metrics`` (100) metrics of
``--steps`` (1,000) steps each into every job's MLflow run (``runs/log-batch``, 1,000 values a
call). It then opens ``/train/compare?jobs=...`` for the first 2, 5 and 10 of them in Debian's
Chromium, through the browser tests' driver (``tests/e2e/js/dashboard_flow.mjs`` running
``tests/e2e/js/dashboard/compare_bench.mjs``), ``--repeats`` (5) times after a warm-up load, and
times each load in the page, from the navigation's start to the first frame in which

* "first screen": the first 4 charts (what a 1280x800 window shows) are drawn with a curve per
  job;
* "every chart": all ``--metrics`` charts are drawn with a curve per job and the page has read
  every history (the issue's "first render").

The issue's target: every chart within 1 s (p50 and p99). Run:
``venv/bin/python bench/compare.py [--jobs 10] [--metrics 100] [--steps 1000] [--repeats 5]``.
The table is also written as JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dashboard import chromium_version
from jobs import ADMIN, RESULTS_DIR, ROOT, Trainflow, _raise_interrupt, num, trainflow_server, verdict
from mlflow_writes import progress, stop_all, trainflow_revision

sys.path.insert(0, str(ROOT))
from tests.e2e.browser import CHROMIUM, missing, run_node

FLOW_RUNNER = ROOT / "tests" / "e2e" / "js" / "dashboard_flow.mjs"
SETS = (2, 5, 10)
TARGET_MS = 1000.0
SCREEN_CHARTS = 4  # the charts a 1280x800 window shows
BATCH = 1000  # MLflow's most metrics in one log-batch call


def make_jobs(server: Trainflow, count: int) -> list[dict[str, Any]]:
    """``count`` finished jobs (their runs then get the metrics)."""
    ids = [server.submit("job.py")[0] for _ in range(count)]
    return [server.wait_done(job_id) for job_id in ids]


def log_metrics(server: Trainflow, run_id: str, metrics: int, steps: int) -> None:
    """``metrics`` curves of ``steps`` points into the run, in log-batch calls of 1,000 values."""
    url = f"{server.base_url}/api/2.0/mlflow/runs/log-batch"
    now = int(time.time() * 1000)
    values = [
        {
            "key": f"metric_{m:03d}",
            "value": (1 + m % 7) / (1 + step / 50) + 0.01 * ((step * 7919 + m) % 13),
            "step": step,
            "timestamp": now + step,
        }
        for step in range(steps)
        for m in range(metrics)
    ]
    for start in range(0, len(values), BATCH):
        response = server.http.post(
            url, json={"run_id": run_id, "metrics": values[start : start + BATCH]}, timeout=120
        )
        if response.status_code != 200:
            raise RuntimeError(f"log-batch: {response.status_code} {response.text[:300]}")


def measure(origin: str, ids: list[int], args: argparse.Namespace, screenshots: Path) -> list[dict[str, Any]]:
    sets = [ids[:n] for n in SETS if n <= len(ids)]
    request = {
        "origin": origin,
        "flow": "compare_bench.mjs",
        "options": {
            "username": ADMIN[0],
            "password": ADMIN[1],
            "sets": sets,
            "metrics": args.metrics,
            "repeats": args.repeats,
            "warmup": 1,
            "screen": SCREEN_CHARTS,
        },
        "executablePath": str(CHROMIUM),
        "timeoutMs": 3_600_000,
        "stepTimeoutMs": 600_000,
        "screenshots": str(screenshots),
    }
    out = run_node(FLOW_RUNNER, request, timeout=3_600)
    if out["error"] or out["pageErrors"] or out["csp"]:
        raise RuntimeError(
            json.dumps({k: out[k] for k in ("error", "steps", "pageErrors", "csp", "console")})[-5000:]
        )
    return list(out["result"])


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile (with fewer than 100 loads, p99 is the slowest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def render(results: list[dict[str, Any]]) -> str:
    header = ["jobs", "points", "first screen p50 / p99 (ms)", "every chart p50 / p99 (ms)", "target"]
    rows = []
    for r in results:
        screen = " / ".join(num(quantile(r["firstScreen"], q)) for q in (0.5, 0.99))
        p99 = quantile(r["all"], 0.99)
        every = f"{num(quantile(r['all'], 0.5))} / {num(p99)}{verdict(p99 <= TARGET_MS)}"
        rows.append([str(r["jobs"]), f"{r['points']:,}", screen, every, f"<= {TARGET_MS:g} (issue)"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) + 2 for i, h in enumerate(header)]
    lines = ["".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    lines += ["".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10, help="jobs made (the sets are 2, 5, 10 of them)")
    parser.add_argument("--metrics", type=int, default=100, help="metrics per job")
    parser.add_argument("--steps", type=int, default=1000, help="steps per metric")
    parser.add_argument("--repeats", type=int, default=5, help="timed loads per set, after one warm-up")
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = missing()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _raise_interrupt)
    environment = (
        f"Compare page first render (trainflow at {trainflow_revision()}, {chromium_version()}, "
        f"Python {platform.python_version()}, {args.metrics} metrics x {args.steps:,} steps per job, "
        f"SQLite, 2 CPUs)"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="trainflow-bench-compare-") as folder:
            tmp = Path(folder)
            with trainflow_server(args.bin_dir, tmp) as (server, _ready):
                progress(f"running {args.jobs} jobs")
                jobs = make_jobs(server, args.jobs)
                progress(f"logging {args.metrics} x {args.steps:,} values into each run")
                started = time.monotonic()
                with concurrent.futures.ThreadPoolExecutor(4) as pool:
                    for done in pool.map(
                        lambda job: log_metrics(server, job["run_id"], args.metrics, args.steps), jobs
                    ):
                        del done
                progress(f"logged in {time.monotonic() - started:.0f} s; timing the page in Chromium")
                results = measure(server.base_url, [job["job"] for job in jobs], args, tmp)
    except KeyboardInterrupt:
        stop_all()
        return 130
    table = render(results)
    print(f"{environment}\n\n{table}")
    for r in results:
        r["p50"], r["p99"] = quantile(r["all"], 0.5), quantile(r["all"], 0.99)
        r["stdev"] = statistics.pstdev(r["all"])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"environment": environment, "results": results, "table": table}, indent=1))
    progress(f"saved {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
