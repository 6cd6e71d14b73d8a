"""job tickets: the single-use tickets a job started on a cluster exchanges for its secrets

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tf_job_tickets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('sealed_spec', sa.Text(), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['tf_jobs.id'], name=op.f('fk_tf_job_tickets_job_id_tf_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tf_job_tickets')),
    sa.UniqueConstraint('digest', name=op.f('uq_tf_job_tickets_digest'))
    )
    with op.batch_alter_table('tf_job_tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tf_job_tickets_job_id'), ['job_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tf_job_tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tf_job_tickets_job_id'))
    op.drop_table('tf_job_tickets')
