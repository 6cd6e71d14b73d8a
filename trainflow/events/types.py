"""The event catalogue: the type of every event the server sends, and the statuses of a job.

Each name is written once, here (event types in :mod:`trainflow.runner.catalogue`, so that the
supervisor, which imports only the runner and the standard library, can write them too); the
server's Python uses these, and a test holds the dashboard's JavaScript (and the public
``events.js``) to them.

- A job's stream (``/jobs/<id>/events``): ``status``, ``log``, ``metric``, ``progress``, ``system`` and
  finally ``end``, each with a ``seq``; without a seq, ``heartbeat``, ``resync`` (then the
  response ends) and ``deleted`` (likewise).
- The all-jobs stream (``/events``): ``status`` and ``deleted`` changes, and ``heartbeat``
  lines carrying the seq the stream has reached.
"""

from __future__ import annotations

import enum

from trainflow.runner.catalogue import EventType

__all__ = ["CHANGE_TYPES", "FINISHED", "EventType", "JobStatus"]


class JobStatus(enum.StrEnum):
    """The states a job moves through: QUEUED → RUNNING → one of the finished ones."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    LOST = "LOST"  # its process vanished without a recorded exit

    @property
    def is_finished(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


FINISHED = frozenset(status for status in JobStatus if status.is_finished)
# The kinds of change the all-jobs stream sends (``tf_job_changes.kind``).
CHANGE_TYPES = (EventType.STATUS, EventType.DELETED)
