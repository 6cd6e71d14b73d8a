"""MLflow reads at 10,000 runs: trainflow against stock MLflow, in one run.

Two servers, each on SQLite in its own temporary directory on a free loopback port, started and
stopped by this script (helpers from ``mlflow_writes.py``):

* ``trainflow``  ``trainflow server``, the client signed in as ``admin``;
* ``mlflow``     stock ``mlflow server --workers 1`` (one request is served by one worker
  anyway; more workers only compete for the CPUs with the client).

Each server's database gets the same content: one experiment of 10,000 runs with 5 params,
10 metrics and 3 tags each, and one run with a 100,000-point metric. Runs are written straight
into MLflow's tables (the same rows MLflow's store writes) after the server has made its
schema; through the client that alone would take longer than the benchmark.

Rows, each timed through the official client (``MlflowClient``) and, the same request, as
plain HTTP (a server's time plus the transfer, without the client's parsing; for a 100,000-point
history the client spends seconds building protobuf messages and entities on its side):

* ``search_runs`` first page (100 runs, the MLflow UI's page; MLflow's default order);
* the same with 1,000 runs a page (the client's default ``max_results``);
* ordered by a metric (``metrics.m1 DESC``, 100 runs);
* filter and order (``params.optimizer = 'adam' and metrics.m2 > 0.5``, ``metrics.m1 DESC``);
* paging all 10,000 runs, 100 a page, following page tokens (one figure per pass);
* ``get_metric_history`` of 100,000 points.

Each row is repeated (``--repeat``, fewer for the slow rows) and shown as p50 / max in ms.
trainflow's cells are marked PASS/FAIL against the issue's targets on the plain HTTP p50:
first page <= 30 ms, ordered search <= 200 ms, a 100,000-point history <= 300 ms.

Run: ``venv/bin/python bench/mlflow_reads.py [--repeat 10] [--only trainflow]``.
The table is also written as JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow_writes import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    RESULTS_DIR,
    base_env,
    free_port,
    log_tail,
    progress,
    running,
    stop_all,
    trainflow_revision,
    wait_healthy,
    wait_settled,
)

RUNS = 10_000
HISTORY_POINTS = 100_000
PAGE = 100
START_MS = 1_700_000_000_000
FILTER = "params.optimizer = 'adam' and metrics.m2 > 0.5"
ORDER = ["metrics.m1 DESC"]
CLIENT_TIMEOUT_S = 3600.0
SERVERS = ("trainflow", "mlflow")

# (key, label, repeats divisor: slow rows run --repeat // divisor times, at least twice)
ROWS: tuple[tuple[str, str, int], ...] = (
    ("first_page", f"search_runs, first page of {PAGE}", 1),
    ("first_page_1000", "search_runs, first page of 1,000", 4),
    ("ordered", f"ordered by a metric ({PAGE})", 1),
    ("filter_order", f"filter + order ({PAGE})", 1),
    ("page_all", f"paging all {RUNS:,} runs ({PAGE} a page)", 5),
    ("history", f"get_metric_history, {HISTORY_POINTS:,} points", 4),
)
TARGETS_MS = {"first_page": 30.0, "ordered": 200.0, "history": 300.0}


# --------------------------------------------------------------------------------------------
# Filling a server's database
# --------------------------------------------------------------------------------------------


def fill(database_url: str, experiment_id: str) -> str:
    """Write the runs into MLflow's tables; returns the id of the long-history run."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import create_engine, insert

    rng = random.Random(14)
    runs, tags, params, metrics = [], [], [], []
    for i in range(RUNS + 1):
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex
        start = START_MS + i * 1000
        runs.append(
            {
                "run_uuid": run_id,
                "name": f"run-{i}",
                "source_type": "UNKNOWN",
                "source_name": "",
                "entry_point_name": "",
                "user_id": ADMIN_USERNAME,
                "status": "FINISHED",
                "start_time": start,
                "end_time": start + 500,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": "active",
                "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
                "experiment_id": int(experiment_id),
            }
        )
        tags += [
            {"run_uuid": run_id, "key": "mlflow.runName", "value": f"run-{i}"},
            {"run_uuid": run_id, "key": "mlflow.user", "value": ADMIN_USERNAME},
            {"run_uuid": run_id, "key": "team", "value": rng.choice("abc")},
        ]
        if i == RUNS:
            break  # the last run holds the long history only
        values = {
            "lr": rng.choice(["0.1", "0.01", "0.001"]),
            "batch_size": rng.choice(["32", "64", "128"]),
            "optimizer": rng.choice(["adam", "sgd"]),
            "layers": str(rng.randint(1, 8)),
            "dropout": f"{rng.random():.3f}",
        }
        params += [{"run_uuid": run_id, "key": k, "value": v} for k, v in values.items()]
        metrics += [
            {
                "run_uuid": run_id,
                "key": f"m{m}",
                "value": rng.random(),
                "timestamp": start,
                "step": 0,
                "is_nan": False,
            }
            for m in range(10)
        ]
    history_run = runs[-1]["run_uuid"]
    history = [
        {
            "run_uuid": history_run,
            "key": "loss",
            "value": 1 / (s + 1),
            "timestamp": START_MS + s,
            "step": s,
            "is_nan": False,
        }
        for s in range(HISTORY_POINTS)
    ]
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(insert(SqlRun.__table__), runs)
        connection.execute(insert(SqlTag.__table__), tags)
        connection.execute(insert(SqlParam.__table__), params)
        connection.execute(insert(SqlMetric.__table__), metrics + history)
        connection.execute(insert(SqlLatestMetric.__table__), [*metrics, history[-1]])
    engine.dispose()
    return str(history_run)


# --------------------------------------------------------------------------------------------
# Client side: a subprocess per server, prints one JSON line
# --------------------------------------------------------------------------------------------


def timings(call: Callable[[], Any], repeat: int) -> list[float]:
    call()  # warm: connections, caches, the server's first-request costs
    found = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        found.append((time.perf_counter() - started) * 1000)
    return found


class Http:
    """The client's request as plain HTTP: the server's time and the transfer, no parsing."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        user, password = (
            os.environ.get("MLFLOW_TRACKING_USERNAME"),
            os.environ.get("MLFLOW_TRACKING_PASSWORD"),
        )
        self.headers = {"Content-Type": "application/json"}
        if user:
            self.headers["Authorization"] = (
                "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            )

    def call(
        self, path: str, body: dict[str, Any] | None = None, query: dict[str, Any] | None = None
    ) -> bytes:
        url = f"{self.base_url}/api/2.0/mlflow/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers=self.headers)  # noqa: S310 - http://127.0.0.1
        with self.opener.open(request, timeout=600) as response:
            return bytes(response.read())


def client_main(experiment_id: str, history_run: str, repeat: int) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    http = Http(os.environ["MLFLOW_TRACKING_URI"])
    counts = {row: max(2, repeat // divisor) for row, _, divisor in ROWS}

    def search(max_results: int, filter_string: str = "", order_by: list[str] | None = None) -> Any:
        return lambda: client.search_runs(
            [experiment_id], filter_string, max_results=max_results, order_by=order_by
        )

    def search_http(max_results: int, filter_string: str = "", order_by: list[str] | None = None) -> Any:
        body = {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": max_results}
        return lambda: http.call("runs/search", {**body, "order_by": order_by or []})

    def page_all() -> None:
        token, seen = None, 0
        while True:
            page = client.search_runs([experiment_id], "", max_results=PAGE, page_token=token)
            seen += len(page)
            token = page.token
            if not token:
                break
        assert seen == RUNS + 1, seen

    def page_all_http() -> None:
        token, seen = None, 0
        while True:
            body: dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": PAGE}
            if token:
                body["page_token"] = token
            answer = json.loads(http.call("runs/search", body))
            seen += len(answer.get("runs", []))
            token = answer.get("next_page_token")
            if not token:
                break
        assert seen == RUNS + 1, seen

    def history() -> None:
        assert len(client.get_metric_history(history_run, "loss")) == HISTORY_POINTS

    def history_http() -> None:
        http.call("metrics/get-history", query={"run_id": history_run, "metric_key": "loss"})

    calls = {
        "first_page": (search(PAGE), search_http(PAGE)),
        "first_page_1000": (search(1000), search_http(1000)),
        "ordered": (search(PAGE, "", ORDER), search_http(PAGE, "", ORDER)),
        "filter_order": (search(PAGE, FILTER, ORDER), search_http(PAGE, FILTER, ORDER)),
        "page_all": (page_all, page_all_http),
        "history": (history, history_http),
    }
    results: dict[str, Any] = {}
    for row, (with_client, with_http) in calls.items():
        progress(f"  {row} x{counts[row]}")
        results[row] = {"client": timings(with_client, counts[row]), "http": timings(with_http, counts[row])}
    return results


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def server_command(name: str, bin_dir: Path, tmp: Path, port: int) -> tuple[list[str], dict[str, str], str]:
    env = base_env()
    if name == "trainflow":
        env.update(
            TRAINFLOW_DATA_DIR=str(tmp / "data"),
            TRAINFLOW_PORT=str(port),
            TRAINFLOW_HOST="127.0.0.1",
            TRAINFLOW_ADMIN_PASSWORD=ADMIN_PASSWORD,
        )
        return [str(bin_dir / "trainflow"), "server"], env, f"sqlite:///{tmp / 'data' / 'trainflow.db'}"
    database = f"sqlite:///{tmp / 'mlflow.db'}"
    argv = [
        str(bin_dir / "mlflow"), "server", "--workers", "1",
        "--backend-store-uri", database,
        "--artifacts-destination", str(tmp / "mlartifacts"),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    return argv, env, database


def bench_server(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"reads-{name}-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        argv, env, database = server_command(name, args.bin_dir, tmp, port)
        log_path = tmp / "server.log"
        progress(f"{name}: starting")
        with running(argv, env, tmp, log_path) as proc:
            wait_healthy(
                base_url + ("/api/health" if name == "trainflow" else "/health"),
                proc,
                log_path,
                time.monotonic(),
            )
            wait_settled(proc.pid, args.settle)
            client_env = base_env()
            client_env.update(MLFLOW_TRACKING_URI=base_url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
            client_env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "600"
            if name == "trainflow":
                client_env.update(
                    MLFLOW_TRACKING_USERNAME=ADMIN_USERNAME, MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD
                )
            experiment_id = make_experiment(client_env)
            progress(f"{name}: filling {RUNS:,} runs and a {HISTORY_POINTS:,}-point history")
            history_run = fill(database, experiment_id)
            progress(f"{name}: measuring")
            client_argv = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--client",
                experiment_id,
                history_run,
            ]
            client_argv += ["--repeat", str(args.repeat)]
            client_log = tmp / "client.log"
            with running(client_argv, client_env, tmp, client_log) as client:
                client.wait(timeout=CLIENT_TIMEOUT_S)
            lines = [
                line for line in client_log.read_text(errors="replace").splitlines() if line.startswith("{")
            ]
            if client.returncode != 0 or not lines:
                raise RuntimeError(f"client for {name} failed ({client.returncode}):\n{log_tail(client_log)}")
            return dict(json.loads(lines[-1]))


def make_experiment(env: dict[str, str]) -> str:
    code = "from mlflow.tracking import MlflowClient; print(MlflowClient().create_experiment('reads-bench'))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} / {max(values):,.0f}" if values else "-"


def verdict(row: str, figures: dict[str, Any]) -> str:
    goal = TARGETS_MS.get(row)
    if goal is None or "error" in figures:
        return ""
    return " PASS" if statistics.median(figures[row]["http"]) <= goal else " FAIL"


def render(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    header = [
        "p50 / max (ms)",
        *[f"{n} {how}" for n in names for how in ("client", "http")],
        "trainflow target",
    ]
    body = []
    for row, label, _ in ROWS:
        line = [label]
        for name in names:
            figures = results[name]
            if "error" in figures:
                line += ["error", "error"]
                continue
            line.append(summary(figures[row]["client"]))
            line.append(
                summary(figures[row]["http"]) + (verdict(row, figures) if name == "trainflow" else "")
            )
        goal = TARGETS_MS.get(row)
        line.append(f"http p50 <= {goal:g} (issue)" if goal else "")
        body.append(line)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        cells = [
            line[0].ljust(widths[0]),
            *(t.rjust(w) for t, w in zip(line[1:-1], widths[1:-1], strict=True)),
        ]
        return "  ".join([*cells, line[-1]]).rstrip()

    return "\n".join([fmt(header), "-" * len(fmt(header)), *(fmt(line) for line in body)])


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per fast row (default 10)")
    parser.add_argument("--only", default=",".join(SERVERS), help="comma-separated: trainflow,mlflow")
    parser.add_argument("--settle", type=float, default=30.0, help="longest wait for a server to go idle")
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent)
    parser.add_argument("--client", nargs=2, metavar=("EXPERIMENT", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        print(json.dumps(client_main(args.client[0], args.client[1], args.repeat)), flush=True)
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    results: dict[str, dict[str, Any]] = {}
    failed = False
    try:
        for name in [n for n in args.only.split(",") if n in SERVERS]:
            try:
                results[name] = bench_server(name, args)
            except Exception as e:
                progress(f"{name} failed: {e}")
                results[name] = {"error": str(e)}
                failed = True
    finally:
        stop_all()
    from importlib.metadata import version

    environment = (
        f"trainflow at {trainflow_revision()}, mlflow {version('mlflow')}, "
        f"Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}), SQLite, "
        f"{args.repeat} timed calls a row (slow rows fewer) after one warm-up call"
    )
    table = render(results)
    print(f"MLflow reads at {RUNS:,} runs through MlflowClient and as plain HTTP ({environment})\n")
    print(table)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"mlflow_reads-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps({"environment": environment, "results": results, "table": table}, indent=2) + "\n"
    )
    progress(f"saved {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
