"""Everything that touches MLflow.

- :mod:`.app`: MLflow's Flask app, rebuilt per ``create_app``, and its process-wide stores.
- :mod:`.store`: MLflow's SQL tracking store with the fast metric writes.
- :mod:`.metric_events`: the metrics a job logs, announced to its followers.
- :mod:`.permissions`: who may do what to MLflow's objects.
- :mod:`.experiment_names`: experiment names namespaced by user.
"""
