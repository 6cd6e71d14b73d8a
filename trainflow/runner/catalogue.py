"""The types of a job's events: the names its event log holds and every stream sends.

Defined here, in the standard-library-only package, because the supervisor writes ``log`` and
``progress`` events and the event log recognises ``end``, and what runs beside a job imports
nothing outside :mod:`trainflow.runner` and the standard library. The server takes them from
:mod:`trainflow.events.types`, the catalogue, which re-exports them (events may depend on the
runner; never the other way round). Not named ``types.py``: the launcher puts this folder first
on ``sys.path``, where that name would hide the standard library's ``types``.
"""

from __future__ import annotations

import enum


class EventType(enum.StrEnum):
    """The ``type`` of an event, as the streams and the dashboard know it."""

    STATUS = "status"  # the job's new status; on the all-jobs stream, one job's status change
    LOG = "log"  # a line the job printed (the supervisor)
    METRIC = "metric"  # a metric the job's MLflow client logged through the server
    PROGRESS = "progress"  # a tqdm-style bar redrawn, or a ``trainflow:progress`` line (the supervisor)
    END = "end"  # the last event of a job: its final status and exit code
    RESYNC = "resync"  # a live follower fell too far behind: reconnect with ``after`` = its seq
    DELETED = "deleted"  # the job was deleted
    HEARTBEAT = "heartbeat"  # a silence kept open; on the all-jobs stream, how far it has come
    SYSTEM = "system"  # the job's CPU, memory and GPU use, sampled every few seconds (the supervisor)
