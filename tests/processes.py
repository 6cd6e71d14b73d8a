"""Helpers for tests that watch real processes."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

# Ports for the servers tests start: below Linux's ephemeral range (32768-60999), so no client
# connection takes one between its choice and the bind, and a block per pytest-xdist worker.
PORTS_FROM, PORTS_PER_WORKER = 20000, 1000


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, from this test worker's own block."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = PORTS_FROM + (int(worker) if worker.isdigit() else 0) % 12 * PORTS_PER_WORKER
    for port in random.sample(range(first, first + PORTS_PER_WORKER), PORTS_PER_WORKER):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + PORTS_PER_WORKER - 1}")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except FileNotFoundError:
        return False  # it ended between the two looks
    return state != "Z"


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is ``pid``'s parent, or its parent's, and so on.

    Tests run side by side (pytest-xdist): a process found by its name or its pid inside a
    job's namespace may belong to another test's server; this keeps a test to its own.
    """
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            return False
    return False


def wait_for(predicate: Callable[[], object], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")
