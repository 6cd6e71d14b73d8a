"""Everything that touches MLflow; no other package of trainflow imports ``mlflow``.

- :mod:`.mlflow_server`: MLflow's Flask app, rebuilt per ``create_app``, and its process-wide stores.
- :mod:`.store`: MLflow's SQL tracking store with the fast metric writes.
- :mod:`.metric_events`: the metrics a job logs, announced to its followers.
- :mod:`.permissions`: who may do what to MLflow's objects.
- :mod:`.experiment_names`: experiment names namespaced by user.
- :mod:`.runs`: the run each job has, from submission to its end.
- :mod:`.schema`: MLflow's tables, brought up to date.
- :mod:`.hosts`: the Host headers MLflow's server allows.

ruff's banned-import rule (TID251) and an import-linter contract in ``pyproject.toml`` keep
``mlflow`` in here. MLflow is imported when first used, not with this package: it takes
seconds, and the CLI and the database upgrade import parts of this package.
"""

from __future__ import annotations


def mlflow_version() -> str:
    """The version of the MLflow this server runs (and holds jobs' environments to)."""
    import mlflow

    return str(mlflow.__version__)
