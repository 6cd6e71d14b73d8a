"""Reading a job's log file (written by its supervisor) without holding it in memory.

The logs API reads a job's lines through the event store (:mod:`trainflow.events.store`),
whose file store reads ``logs.ndjson`` with this.
"""

from __future__ import annotations

from trainflow.events.store import complete_lines

__all__ = ["complete_lines"]
