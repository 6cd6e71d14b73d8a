"""job events in the database: one numbered sequence per job, for shared mode

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'tf_job_event_heads',
        sa.Column('job_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('last_seq', sa.BigInteger(), nullable=False),
        sa.Column('ingested', sa.BigInteger(), nullable=False),
        sa.Column('ended', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('job_id', name=op.f('pk_tf_job_event_heads')),
    )
    op.create_table(
        'tf_job_events',
        sa.Column('job_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('line_no', sa.BigInteger(), nullable=True),
        sa.Column('body', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('job_id', 'seq', name=op.f('pk_tf_job_events')),
    )
    with op.batch_alter_table('tf_job_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tf_job_events_job_id_line_no'), ['job_id', 'line_no'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tf_job_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tf_job_events_job_id_line_no'))
    op.drop_table('tf_job_events')
    op.drop_table('tf_job_event_heads')
