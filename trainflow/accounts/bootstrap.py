"""The first admin account, created on the first start of an empty server."""

from __future__ import annotations

import secrets

from trainflow.accounts import service
from trainflow.accounts.models import Role
from trainflow.accounts.schemas import check_password
from trainflow.db import db
from trainflow.errors import ConfigError
from trainflow.settings import Settings

ADMIN_USERNAME = "admin"


def ensure_admin(settings: Settings) -> str | None:
    """Create ``admin`` when there are no users; return its password if it was generated."""
    if service.count_users(db.session()) > 0:
        return None
    if settings.admin_password:
        try:
            check_password(settings.admin_password)
        except ValueError as e:
            raise ConfigError(f"TRAINFLOW_ADMIN_PASSWORD {e}.") from None
    password = settings.admin_password or secrets.token_urlsafe(16)
    service.create_user(db.session(), username=ADMIN_USERNAME, password=password, role=Role.ADMIN.value)
    return None if settings.admin_password else password
