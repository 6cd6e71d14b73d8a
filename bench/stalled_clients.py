"""Stalled uploads against one server: do health checks and signed-in requests still answer?

For each count of stalled uploads (``--stalls 0,16,100``) the script starts a fresh
``trainflow server`` (admin account, its own temporary data directory, a free loopback port),
makes users (every third an admin) and one fresh access token per stalled upload (each token
is new to the server, so checking it reads the database, as a client's first call does). It
then opens the stalled uploads: raw sockets that send the head and the first 70 KB of a 200 KB
multipart body and stop. Once they are in (their first bytes spooled under
``uploads/.incoming``, or 40 s passed), it times sequential ``GET /api/health`` and
``GET /api/me`` (Basic, a credential the server has cached) for ``--seconds`` or ``--samples``
each, whichever ends first, with a 35 s client timeout, and prints p50/p99 and the failures
(status other than 200, or no answer).

``--source DIR`` runs the server from another source tree with this venv (e.g. an earlier
commit unpacked with ``git archive <commit> | tar -x -C DIR``), to compare before and after.
The read timeout is set to 600 s and uploads per user to 100 so the stalls last the run.

Run: ``venv/bin/python bench/stalled_clients.py [--stalls 0,16,100] [--source DIR --label main]``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ADMIN = ("admin", "bench-admin-pass-1")
PASSWORD = "bench-user-pass-1"
UPLOAD = "/ajax-api/2.0/mlflow/train/upload"
BOUNDARY = "benchStalledBoundary"
READY = re.compile(r"trainflow is serving on (http://\S+)")
CLIENT_TIMEOUT = 35


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, source: Path | None) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINFLOW_", "MLFLOW_"))}
    env.update(
        TRAINFLOW_DATA_DIR=str(data_dir),
        TRAINFLOW_PORT=str(port),
        TRAINFLOW_ADMIN_PASSWORD=ADMIN[1],
        TRAINFLOW_READ_TIMEOUT_SECONDS="600",
        TRAINFLOW_UPLOADS_PER_USER="100",
        PYTHONUNBUFFERED="1",
    )
    if source is not None:
        env["PYTHONPATH"] = str(source)
    process = subprocess.Popen(
        [sys.executable, "-m", "trainflow.cli", "server"],
        env=env,
        cwd=source or Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if READY.search(line):
            break
        if time.monotonic() > deadline:
            break
    else:
        raise RuntimeError("the server exited before it was ready")
    # Keep reading its output, so a full pipe never blocks it.
    threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def fresh_tokens(url: str, stalls: int) -> list[str]:
    """One never-seen access token per stalled upload, from len(stalls)/10 + 1 users."""
    users = [f"staller{i}" for i in range(stalls // 10 + 1)] if stalls else []
    refresh = []
    for i, name in enumerate(users):
        role = "admin" if i % 3 == 0 else "user"
        made = requests.post(
            f"{url}/api/users",
            json={"username": name, "password": PASSWORD, "role": role},
            auth=ADMIN,
            timeout=60,
        )
        made.raise_for_status()
        login = requests.post(f"{url}/api/login", json={"username": name, "password": PASSWORD}, timeout=60)
        login.raise_for_status()
        refresh.append(login.json()["refresh_token"])
    tokens = []
    for i in range(stalls):
        answer = requests.post(
            f"{url}/api/token/refresh", json={"refresh_token": refresh[i % len(refresh)]}, timeout=60
        )
        answer.raise_for_status()
        tokens.append(answer.json()["access_token"])
    return tokens


def stall(url: str, token: str) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="train.py"\r\n'
        "Content-Type: text/x-python\r\n\r\n"
    ).encode() + b"#" * 70_000
    head = (
        f"POST {UPLOAD} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 200000\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def spooled(data_dir: Path) -> int:
    folder = data_dir / "uploads" / ".incoming"
    return len(list(folder.iterdir())) if folder.exists() else 0


def sample(url: str, seconds: float, samples: int) -> dict[str, tuple[list[float], int]]:
    """Latencies (s) and failures of health and a cached signed-in GET, sent one after another."""
    sessions = {"health": requests.Session(), "me": requests.Session()}
    sessions["me"].auth = ADMIN
    sessions["me"].get(f"{url}/api/me", timeout=CLIENT_TIMEOUT)  # verified once, then cached
    paths = {"health": "/api/health", "me": "/api/me"}
    found: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in paths}
    deadline = time.monotonic() + seconds
    for _ in range(samples):
        if time.monotonic() > deadline:
            break
        for name, path in paths.items():
            started = time.perf_counter()
            try:
                ok = sessions[name].get(f"{url}{path}", timeout=CLIENT_TIMEOUT).status_code == 200
            except requests.RequestException:
                ok = False
            latencies, failures = found[name]
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                found[name] = (latencies, failures + 1)
    return found


def percentile(values: list[float], share: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stalls", default="0,16,100")
    parser.add_argument("--seconds", type=float, default=20.0, help="longest sampling per row")
    parser.add_argument("--samples", type=int, default=200, help="most requests per route per row")
    parser.add_argument("--source", type=Path, help="run the server from this source tree")
    parser.add_argument("--label", default="this tree")
    args = parser.parse_args()
    rows = []
    for stalls in [int(n) for n in args.stalls.split(",")]:
        with tempfile.TemporaryDirectory(prefix="tf-stall-") as tmp:
            data_dir = Path(tmp) / "data"
            process, url = start_server(data_dir, args.source)
            opened: list[socket.socket] = []
            try:
                tokens = fresh_tokens(url, stalls)
                opened = [stall(url, token) for token in tokens]
                deadline = time.monotonic() + 40
                while spooled(data_dir) < stalls and time.monotonic() < deadline:
                    time.sleep(0.1)
                found = sample(url, args.seconds, args.samples)
                rows.append((stalls, spooled(data_dir), found))
            finally:
                for sock in opened:
                    sock.close()
                stop(process)
    print(
        f"\nStalled uploads against {args.label} (latency in ms; failed: not 200 within {CLIENT_TIMEOUT} s)\n"
    )
    print("| stalled | spooled | health p50 | health p99 | health failed | me p50 | me p99 | me failed |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for stalls, in_flight, found in rows:
        health, me = found["health"], found["me"]
        cells = [str(stalls), str(in_flight)]
        for latencies, failures in (health, me):
            cells += [percentile(latencies, 0.5), percentile(latencies, 0.99)]
            cells.append(f"{failures}/{len(latencies) + failures}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
