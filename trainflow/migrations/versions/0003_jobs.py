"""jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 15:19:56.490021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tf_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('script_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('experiment_id', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.Column('env', sa.JSON(), nullable=False),
    sa.Column('timeout_s', sa.Integer(), nullable=True),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('gpu_ids', sa.String(length=255), nullable=True),
    sa.Column('supervisor_pid', sa.Integer(), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['owner_id'], ['tf_users.id'], name=op.f('fk_tf_jobs_owner_id_tf_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['script_id'], ['tf_scripts.id'], name=op.f('fk_tf_jobs_script_id_tf_scripts'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tf_jobs'))
    )
    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tf_jobs_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_tf_jobs_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tf_jobs_script_id'), ['script_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tf_jobs_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tf_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_tf_jobs_script_id'))
        batch_op.drop_index(batch_op.f('ix_tf_jobs_owner_id'))
        batch_op.drop_index(batch_op.f('ix_tf_jobs_created_at'))

    op.drop_table('tf_jobs')
