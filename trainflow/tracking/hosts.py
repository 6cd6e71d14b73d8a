"""The Host headers MLflow's server allows, by MLflow's own rule (DNS-rebinding protection).

``trainflow.web_security`` installs the check in place of MLflow's security middleware; the
list and the match stay MLflow's, so ``MLFLOW_SERVER_ALLOWED_HOSTS`` means what MLflow documents.
"""

from __future__ import annotations

from collections.abc import Sequence


def allowed_hosts() -> tuple[str, ...]:
    """``MLFLOW_SERVER_ALLOWED_HOSTS``, or MLflow's default of local names and private addresses."""
    from mlflow.server.security import get_allowed_hosts

    return tuple(get_allowed_hosts())


def is_allowed_host(allowed: Sequence[str], host: str) -> bool:
    """Whether ``host`` (a Host header) matches one of ``allowed``, as MLflow matches it."""
    from mlflow.server.security_utils import is_allowed_host_header

    return bool(is_allowed_host_header(list(allowed), host))
