"""job attempts: retries of FAILED or LOST jobs, each attempt recorded, into the same MLflow run

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_retries', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('attempt', sa.Integer(), server_default='1', nullable=False))
    op.create_table('tf_job_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('log_from', sa.Integer(), nullable=False),
    sa.Column('log_through', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['tf_jobs.id'], name=op.f('fk_tf_job_attempts_job_id_tf_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tf_job_attempts')),
    sa.UniqueConstraint('job_id', 'number', name=op.f('uq_tf_job_attempts_job_id_number'))
    )


def downgrade() -> None:
    op.drop_table('tf_job_attempts')
    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.drop_column('attempt')
        batch_op.drop_column('max_retries')
