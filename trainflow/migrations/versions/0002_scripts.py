"""scripts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 15:11:48.713547
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tf_scripts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('entrypoint', sa.String(length=1024), nullable=False),
    sa.Column('has_requirements', sa.Boolean(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('storage_key', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['tf_users.id'], name=op.f('fk_tf_scripts_owner_id_tf_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tf_scripts')),
    sa.UniqueConstraint('storage_key', name=op.f('uq_tf_scripts_storage_key'))
    )
    with op.batch_alter_table('tf_scripts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tf_scripts_owner_id'), ['owner_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tf_scripts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tf_scripts_owner_id'))

    op.drop_table('tf_scripts')
