"""Training jobs: a stored script run as a supervised process, tied to one MLflow run."""
