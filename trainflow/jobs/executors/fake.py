"""An executor that runs nothing: a test starts jobs through the scheduler, then says how they end.

Like HTTPX's mock transport, it lets the scheduler's rules (queue order, per-user limits,
GPU assignment, timeouts, LOST, cancel) be tested in-process, in milliseconds, with no
process, folder or sandbox involved.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from trainflow.jobs.executors.base import Exit, Launch, Observation, State, Watched


class FakeExecutor:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.launches: dict[int, Launch] = {}  # every job started, by id
        self.cancelled: set[int] = set()  # jobs asked to cancel
        self.removed: list[int] = []
        self.refuse_next_start: Exception | None = None  # raised by the next start
        self._handles = itertools.count(10_000)
        self._states: dict[int, Observation] = {}

    # -- the executor interface -------------------------------------------------------------

    def open(self) -> str:
        return "Jobs run nowhere: a fake executor (tests)."

    def start(self, launch: Launch) -> int:
        if self.refuse_next_start is not None:
            error, self.refuse_next_start = self.refuse_next_start, None
            raise error
        self.launches[launch.job_id] = launch
        self._states[launch.job_id] = Observation(launch.job_id, State.RUNNING)
        return next(self._handles)

    def cancel(self, job_id: int, handle: int | None) -> bool:
        self.cancelled.add(job_id)
        if self.is_running(job_id):
            self.exit(job_id, exit_code=None, signal=15, reason="cancelled")
            return True
        return False

    def observe(self, jobs: Sequence[Watched]) -> list[Observation]:
        return [self._states.get(job.job_id) or self._vanished(job.job_id) for job in jobs]

    def remove(self, job_id: int) -> None:
        self.removed.append(job_id)

    # -- what a test says happened ----------------------------------------------------------

    def running(self) -> list[int]:
        """Ids of the jobs running now, in the order they started."""
        return [job_id for job_id in self.launches if self.is_running(job_id)]

    def is_running(self, job_id: int) -> bool:
        observation = self._states.get(job_id)
        return observation is not None and observation.state is State.RUNNING

    def exit(
        self,
        job_id: int,
        exit_code: int | None = 0,
        *,
        signal: int | None = None,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """The job ended: ``exit(3, 1)``, ``exit(3, None, reason="timed_out")``..."""
        ended = Exit(exit_code, signal, reason, message)
        self._states[job_id] = Observation(job_id, State.EXITED, exit=ended)

    def vanish(self, job_id: int) -> None:
        """The job's process is gone without a word (killed, or the machine restarted)."""
        self._states.pop(job_id, None)

    def _vanished(self, job_id: int) -> Observation:
        return Observation(job_id, State.VANISHED, was_cancelled=job_id in self.cancelled)
