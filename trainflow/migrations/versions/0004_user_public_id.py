"""users: a random public id for tokens; ids never reused on SQLite

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 07:00:00.000000

Tokens name a user by ``public_id`` from now on: a token issued before this migration (which
named the numeric id) no longer works, so everyone signs in once more. On SQLite the table is
rebuilt with AUTOINCREMENT, which the other tables' foreign keys must survive: SQLite's
``DROP TABLE`` would otherwise cascade to every user's jobs, scripts and permissions, so
foreign keys are off while the table is copied and checked before they come back on.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_users = sa.table('tf_users', sa.column('id', sa.Integer()), sa.column('public_id', sa.String()))


def upgrade() -> None:
    is_sqlite = op.get_bind().dialect.name == 'sqlite'
    if is_sqlite:
        _set_sqlite_foreign_keys(False)
    with op.batch_alter_table('tf_users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('public_id', sa.String(length=32), nullable=True))
    bind = op.get_bind()
    for (user_id,) in bind.execute(sa.select(_users.c.id)).all():
        bind.execute(
            _users.update().where(_users.c.id == user_id).values(public_id=secrets.token_urlsafe(16))
        )
    with op.batch_alter_table(
        'tf_users',
        schema=None,
        recreate='always' if is_sqlite else 'auto',
        table_kwargs={'sqlite_autoincrement': True},
    ) as batch_op:
        batch_op.alter_column('public_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_tf_users_public_id'), ['public_id'])
    if is_sqlite:
        _check_sqlite_foreign_keys()
        _set_sqlite_foreign_keys(True)


def downgrade() -> None:
    is_sqlite = op.get_bind().dialect.name == 'sqlite'
    if is_sqlite:
        _set_sqlite_foreign_keys(False)
    with op.batch_alter_table(
        'tf_users',
        schema=None,
        recreate='always' if is_sqlite else 'auto',
        table_kwargs={'sqlite_autoincrement': False},
    ) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_tf_users_public_id'), type_='unique')
        batch_op.drop_column('public_id')
    if is_sqlite:
        _check_sqlite_foreign_keys()
        _set_sqlite_foreign_keys(True)


def _set_sqlite_foreign_keys(is_on: bool) -> None:
    # The pragma is ignored inside a transaction: run it in one of its own.
    with op.get_context().autocommit_block():
        op.execute(f"PRAGMA foreign_keys={'ON' if is_on else 'OFF'}")
    actual = op.get_bind().execute(sa.text('PRAGMA foreign_keys')).scalar()
    if bool(actual) != is_on:
        state = 'on' if is_on else 'off'
        raise RuntimeError(f'SQLite did not turn foreign keys {state}; tf_users was left as it was.')


def _check_sqlite_foreign_keys() -> None:
    broken = op.get_bind().execute(sa.text('PRAGMA foreign_key_check')).all()
    if broken:
        raise RuntimeError(f'Rebuilding tf_users broke foreign keys: {broken[:5]}')
