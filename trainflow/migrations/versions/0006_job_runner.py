"""job runner: which executor runs a job, and a cancel any host may ask for

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('runner', sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column('cancel_requested', sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index(batch_op.f('ix_tf_jobs_runner'), ['runner'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tf_jobs_runner'))
        batch_op.drop_column('cancel_requested')
        batch_op.drop_column('runner')
