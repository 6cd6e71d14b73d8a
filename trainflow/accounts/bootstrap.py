"""The first admin account, created on the first start of an empty server."""

from __future__ import annotations

import secrets

from trainflow.accounts import service
from trainflow.accounts.models import Role
from trainflow.db import db
from trainflow.settings import Settings

ADMIN_USERNAME = "admin"


def ensure_admin(settings: Settings) -> str | None:
    """Create ``admin`` when there are no users; return its password if it was generated."""
    if service.count_users(db.session) > 0:
        return None
    password = settings.admin_password or secrets.token_urlsafe(16)
    service.create_user(db.session, username=ADMIN_USERNAME, password=password, role=Role.ADMIN.value)
    return None if settings.admin_password else password
