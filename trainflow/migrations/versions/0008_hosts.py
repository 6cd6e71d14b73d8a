"""hosts: a heartbeat per executor that runs jobs (a survivor decides for a dead host's jobs), and
each script's size on disk as measured at upload (hosts without a copy count it in quotas)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tf_hosts',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_tf_hosts')),
    )
    with op.batch_alter_table('tf_scripts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stored_bytes', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tf_scripts', schema=None) as batch_op:
        batch_op.drop_column('stored_bytes')
    op.drop_table('tf_hosts')
