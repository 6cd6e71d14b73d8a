"""What the scheduler asks of an executor, and what an executor tells it back.

The scheduler decides *which* job runs and records *how* it ended; an executor only runs
jobs somewhere (this machine's supervisors, later a cluster) and reports on them. Everything
crosses this seam as the typed values below: the scheduler never reads an executor's files,
and an executor never touches the database.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Launch:
    """One job to start, as plain values (the scheduler has claimed it already)."""

    job_id: int
    run_id: str
    experiment_id: str
    files: Path  # the script's files, copied for the job to run in
    argv: list[str]  # [python, entrypoint, args...]; an executor may swap the interpreter
    has_requirements: bool  # the files hold a requirements.txt to install first
    user_env: dict[str, str]  # what the submitter set (checked against the allow-list already)
    token: str  # the job's own MLflow token
    tracking_uri: str
    gpu_ids: str | None  # "0,2", or None where the server manages no GPUs
    timeout_s: int | None
    owner_is_admin: bool  # only an admin's job may run where no sandbox can be built
    # Where and with what the supervisor sends the job's records to the servers (the ingest
    # endpoint, trainflow.jobs.ingest): a token for the supervisor alone, never for the job.
    supervisor_token: str = ""
    ingest_url: str = ""
    # Which run of the script this is (1, then 2 ... for retries: trainflow.jobs.retries), and how
    # many of the job's log lines earlier attempts wrote (its supervisor numbers on from there).
    attempt: int = 1
    log_from: int = 0


@dataclass(frozen=True)
class Watched:
    """A job the scheduler believes is running, with the handle its start returned."""

    job_id: int
    handle: int | None
    # The last status its supervisor sent through the ingest (status.json's fields), if any: how
    # it ended, for an executor with no files of the job to read (a cluster's).
    reported_status: dict[str, Any] | None = None
    # The attempt it runs: a status its executor finds of an earlier attempt is not this one's.
    attempt: int = 1


class State(enum.Enum):
    RUNNING = "running"
    EXITED = "exited"  # it ended, and said how
    VANISHED = "vanished"  # it is gone without a word: killed, or the machine restarted


@dataclass(frozen=True)
class Exit:
    """How a job ended, in the runner's words (``trainflow.runner.supervisor``'s reasons)."""

    exit_code: int | None
    signal: int | None = None
    reason: str | None = None  # "cancelled", "timed_out", a limit or storage reason...; None: it exited
    message: str | None = None  # the runner's own sentence, where it has one (a limit's)
    finished_at: float | None = None  # seconds since the epoch
    outputs: Path | None = None  # the job's output folder, logged to its run as artifacts
    missing_module: str | None = None  # a module the job failed to import (its traceback's last line)
    lines: int | None = None  # the number of the job's last log line when it ended, if it said

    @classmethod
    def from_status(cls, status: Mapping[str, Any], outputs: Path | None = None) -> Exit:
        """How a supervisor's status (its ``status.json``, or what it reported) says the job ended."""
        return cls(
            exit_code=status.get("exit_code"),
            signal=status.get("signal"),
            reason=status.get("reason"),
            message=status.get("message"),
            finished_at=status.get("finished_at"),
            outputs=outputs,
            missing_module=status.get("missing_module"),
            lines=status.get("lines") if isinstance(status.get("lines"), int) else None,
        )


@dataclass(frozen=True)
class Observation:
    job_id: int
    state: State
    pid: int | None = None  # the job's own process, once it has one
    exit: Exit | None = None  # set when EXITED
    was_cancelled: bool = False  # VANISHED after a cancel was asked: the cancel ended it
    message: str | None = None  # VANISHED: what the executor knows of why (a cluster's own words)

    def __post_init__(self) -> None:
        if (self.state is State.EXITED) != (self.exit is not None):
            raise ValueError("an EXITED observation carries its Exit, and only it does")


class Executor(Protocol):
    """Runs jobs; every method is safe to call again with the same arguments."""

    # Who runs the jobs it starts, recorded on each (``Job.runner``): one host's local
    # executor, or a cluster. A scheduler observes and signals only its own executor's jobs.
    name: str

    def open(self) -> str:
        """Get ready to run jobs (once, as the scheduler starts); return a line for the log."""
        ...

    def start(self, launch: Launch) -> int:
        """Start the job; return the handle to watch and cancel it by. Raises if it could not."""
        ...

    def cancel(self, job_id: int, handle: int | None) -> bool:
        """Ask the job to end (it ends CANCELLED); False if nothing was running to ask."""
        ...

    def observe(self, jobs: Sequence[Watched]) -> list[Observation]:
        """The state of each watched job, in the same order."""
        ...

    def remove(self, job_id: int) -> None:
        """Forget a finished job: its files and logs."""
        ...


__all__ = ["Executor", "Exit", "Launch", "Observation", "State", "Watched"]
