"""How jobs take part in what other packages do, without those packages knowing jobs.

Connected once per app by :func:`init_app`: a deleted user's jobs and files go first
(``user_deleting``), a script some job uses is kept (``script_deleting``), and a job's token
is accepted as a scoped access token (:mod:`trainflow.jobs.tokens`).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from trainflow.accounts.signals import user_deleting
from trainflow.db import db
from trainflow.jobs import tokens
from trainflow.scripts.signals import script_deleting


def init_app(app: Flask) -> None:
    tokens.init_app(app)
    user_deleting.connect(_purge_owner, sender=app, weak=False)
    script_deleting.connect(_keep_used_script, sender=app, weak=False)


def _purge_owner(app: Flask, user_id: int, **_: Any) -> None:
    from trainflow.jobs.scheduler import executor_for
    from trainflow.jobs.service import purge_owner

    purge_owner(db.session(), app.config["TRAINFLOW"], executor_for(app), user_id)


def _keep_used_script(app: Flask, script_id: int, **_: Any) -> None:
    from trainflow.jobs.service import ensure_script_unused

    ensure_script_unused(db.session(), script_id)
