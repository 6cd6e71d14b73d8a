"""job tags: a job's tags and note, and the indexes the run table sorts and joins with

tf_jobs.run_id is what the job list joins MLflow's runs on. latest_metrics (MLflow's table) gets
an index on (key, value): sorting 10,000 jobs by a metric then walks the index in order and
stops after a page, instead of looking each job's value up and sorting them all. MLflow's own
migrations do not know it; one that rebuilds the table would drop it, which costs speed only.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 17:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tags', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('note', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_tf_jobs_run_id'), ['run_id'], unique=False)
    op.create_index('tf_ix_latest_metrics_key_value', 'latest_metrics', ['key', 'value'], unique=False)


def downgrade() -> None:
    op.drop_index('tf_ix_latest_metrics_key_value', table_name='latest_metrics')
    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tf_jobs_run_id'))
        batch_op.drop_column('note')
        batch_op.drop_column('tags')
