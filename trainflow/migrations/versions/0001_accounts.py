"""accounts and MLflow permissions

Revision ID: 0001
Revises:
Create Date: 2026-11-25 14:19:05.421217
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('tf_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('username_key', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=True),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('token_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tf_users')),
    sa.UniqueConstraint('username_key', name=op.f('uq_tf_users_username_key'))
    )
    op.create_table('tf_experiment_permissions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('permission', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['tf_users.id'], name=op.f('fk_tf_experiment_permissions_user_id_tf_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tf_experiment_permissions')),
    sa.UniqueConstraint('experiment_id', 'user_id', name=op.f('uq_tf_experiment_permissions_experiment_id_user_id'))
    )
    with op.batch_alter_table('tf_experiment_permissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tf_experiment_permissions_experiment_id'), ['experiment_id'], unique=False)

    op.create_table('tf_registered_model_permissions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('permission', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['tf_users.id'], name=op.f('fk_tf_registered_model_permissions_user_id_tf_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tf_registered_model_permissions')),
    sa.UniqueConstraint('name', 'user_id', name=op.f('uq_tf_registered_model_permissions_name_user_id'))
    )
    with op.batch_alter_table('tf_registered_model_permissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tf_registered_model_permissions_name'), ['name'], unique=False)

    op.create_table('tf_revoked_tokens',
    sa.Column('jti', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['tf_users.id'], name=op.f('fk_tf_revoked_tokens_user_id_tf_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_tf_revoked_tokens'))
    )



def downgrade() -> None:
    
    op.drop_table('tf_revoked_tokens')
    with op.batch_alter_table('tf_registered_model_permissions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tf_registered_model_permissions_name'))

    op.drop_table('tf_registered_model_permissions')
    with op.batch_alter_table('tf_experiment_permissions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tf_experiment_permissions_experiment_id'))

    op.drop_table('tf_experiment_permissions')
    op.drop_table('tf_users')

