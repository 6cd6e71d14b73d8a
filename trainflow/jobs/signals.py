"""What jobs announce to those built on them (sweeps), which jobs' own code does not know.

``job_finished``: sent by :func:`trainflow.jobs.service.finish` once a job's end is recorded
and its MLflow run ended, with ``job`` (refreshed) and ``session``; the sender is the app.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

job_finished = _signals.signal("job-finished")
