"""sweeps: a parameter sweep's row, and each trial job's sweep and the trial that replaced it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tf_sweeps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('script_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=250), nullable=False),
    sa.Column('experiment_id', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('strategy', sa.String(length=16), nullable=False),
    sa.Column('space', sa.JSON(), nullable=False),
    sa.Column('trials', sa.Integer(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=True),
    sa.Column('metric', sa.String(length=250), nullable=True),
    sa.Column('goal', sa.String(length=3), nullable=False),
    sa.Column('job_fields', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('cancelled', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['owner_id'], ['tf_users.id'], name=op.f('fk_tf_sweeps_owner_id_tf_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['script_id'], ['tf_scripts.id'], name=op.f('fk_tf_sweeps_script_id_tf_scripts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tf_sweeps'))
    )
    with op.batch_alter_table('tf_sweeps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tf_sweeps_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_tf_sweeps_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tf_sweeps_script_id'), ['script_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tf_sweeps_status'), ['status'], unique=False)

    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sweep_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('superseded_by', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_tf_jobs_sweep_id'), ['sweep_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tf_jobs_sweep_id'))
        batch_op.drop_column('superseded_by')
        batch_op.drop_column('sweep_id')

    with op.batch_alter_table('tf_sweeps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tf_sweeps_status'))
        batch_op.drop_index(batch_op.f('ix_tf_sweeps_script_id'))
        batch_op.drop_index(batch_op.f('ix_tf_sweeps_owner_id'))
        batch_op.drop_index(batch_op.f('ix_tf_sweeps_created_at'))
    op.drop_table('tf_sweeps')
