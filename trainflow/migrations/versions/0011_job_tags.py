"""job tags: a job's tags and note, for the run table's housekeeping and text search

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


def downgrade() -> None:
    with op.batch_alter_table('tf_jobs', schema=None) as batch_op:
        batch_op.drop_column('note')
        batch_op.drop_column('tags')
