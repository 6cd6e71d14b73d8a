"""trainflow: a self-hosted training platform on Flask and MLflow."""

from __future__ import annotations

__version__ = "0.1.0"
