"""A job's system samples, logged to its MLflow run under MLflow's own system-metric keys.

Standard library only (the supervisor imports it). The supervisor logs them itself, over MLflow's
REST API (``runs/log-batch``) with the job's own token (``MLFLOW_TRACKING_TOKEN``, which may write
only to the job's run), the same way whether the job runs on the server's machine, in shared
mode or on a Ray node: the server never has to read a job's samples back to log them. MLflow's
System metrics tab shows keys under ``system/``; the names are those of MLflow's own monitor
(``mlflow/system_metrics``), with the job's figures:

- ``system/cpu_utilization_percentage``: the job's CPU, 100 = one core (MLflow's monitor
  logs the machine's, 100 = every core);
- ``system/process_rss_megabytes``: the resident memory of the job's processes (a key of ours);
- ``system/gpu_<n>_utilization_percentage``, ``system/gpu_<n>_memory_usage_megabytes`` and
  ``system/gpu_<n>_memory_usage_percentage``, ``n`` the job's own CUDA device number.

One thread sends, one request at a time, each with a timeout: the supervisor only queues, so
a slow or unreachable server never holds up the job or its output. What cannot be sent waits
in a bounded queue and is retried with a growing pause (samples that find the queue full are not
logged to the run; the job's stream still has them); a refusal (the run ended, the token no
longer valid) drops the batch.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import threading
import time
import urllib.parse
from typing import Any

from trainflow.runner.sysmetrics import Sample

TIMEOUT_S = 10.0
MAX_HELD = 2000  # metrics waiting to be sent (a few hours of samples of one GPU job)
BATCH = 500  # log-batch takes at most 1,000 metrics
MAX_PAUSE_S = 30.0
PREFIX = "system/"


def metrics_of(sample: Sample, step: int) -> list[dict[str, Any]]:
    """A sample as MLflow metrics (``key``, ``value``, ``timestamp`` in ms, ``step``)."""
    values = {
        "cpu_utilization_percentage": sample.cpu_percent,
        "process_rss_megabytes": sample.rss_mb,
    }
    for gpu in sample.gpus:
        values[f"gpu_{gpu.device}_utilization_percentage"] = gpu.utilization_percent
        values[f"gpu_{gpu.device}_memory_usage_megabytes"] = gpu.memory_used_mb
        if gpu.memory_total_mb > 0:
            values[f"gpu_{gpu.device}_memory_usage_percentage"] = (
                100 * gpu.memory_used_mb / gpu.memory_total_mb
            )
    timestamp = int(sample.ts * 1000)
    return [
        {"key": PREFIX + key, "value": round(value, 3), "timestamp": timestamp, "step": step}
        for key, value in values.items()
    ]


class RunLog:
    """Sends a job's samples to its MLflow run from a thread of its own."""

    def __init__(self, tracking_uri: str, run_id: str, token: str, timeout_s: float = TIMEOUT_S) -> None:
        parts = urllib.parse.urlsplit(tracking_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the tracking URI must be http:// or https://, not {tracking_uri!r}")
        self.parts = parts
        self.path = parts.path.rstrip("/") + "/api/2.0/mlflow/runs/log-batch"
        self.run_id = run_id
        self.token = token
        self.timeout_s = timeout_s
        self._held: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._is_stopping = False
        self._is_busy = False
        self.step = 0
        self.sent = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls, env: dict[str, str]) -> RunLog | None:
        """The job's run, from the variables its MLflow client gets; None if it has none."""
        uri, run, token = (
            env.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_TRACKING_TOKEN")
        )
        if not (uri and run and token):
            return None
        try:
            return cls(uri, run, token)
        except ValueError:
            return None

    def add(self, sample: Sample) -> None:
        """Queue a sample; it never waits. The thread starts with the first one, after the job's
        fork (a thread must not be mid-request while the supervisor forks)."""
        metrics = metrics_of(sample, self.step)
        with self._cond:
            self.step += 1
            if len(self._held) + len(metrics) > MAX_HELD:
                return  # the server has taken nothing for hours: keep memory bounded
            self._held.extend(metrics)
            self._cond.notify_all()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="runlog", daemon=True)
            self._thread.start()

    def close(self, wait_s: float = 2.0) -> None:
        """Send what is queued, waiting ``wait_s`` at most, then stop."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            self._is_stopping = True
            self._cond.notify_all()
            while (self._held or self._is_busy) and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)

    def _run(self) -> None:
        pause = 0.5
        while True:
            with self._cond:
                while not self._held and not self._is_stopping:
                    self._cond.wait()
                if not self._held:
                    return
                batch = [self._held[i] for i in range(min(BATCH, len(self._held)))]
                self._is_busy = True
            outcome = self._send(batch)
            with self._cond:
                self._is_busy = False
                if outcome != "retry":
                    for _ in batch:  # sent, or refused for good: either way it leaves the queue
                        if self._held:
                            self._held.popleft()
                    pause = 0.5
                self._cond.notify_all()
                if outcome == "retry":
                    if self._is_stopping:
                        return
                    self._cond.wait(pause)
                    pause = min(pause * 2, MAX_PAUSE_S)

    def _send(self, batch: list[dict[str, Any]]) -> str:
        body = json.dumps({"run_id": self.run_id, "metrics": batch}).encode()
        connection_class = (
            http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(self.parts.hostname or "", self.parts.port, timeout=self.timeout_s)
        try:
            connection.request(
                "POST",
                self.path,
                body,
                {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
            )
            response = connection.getresponse()
            response.read(64 * 1024)
        except (OSError, http.client.HTTPException) as e:
            self.last_error = str(e) or type(e).__name__
            return "retry"
        finally:
            with contextlib.suppress(OSError):
                connection.close()
        if response.status == 200:
            self.sent += len(batch)
            return "sent"
        self.last_error = f"HTTP {response.status}"
        # Busy or failing servers are asked again; anything else would be refused again.
        return "retry" if response.status == 429 or response.status >= 500 else "refused"
