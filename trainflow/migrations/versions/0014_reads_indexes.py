"""reads: indexes for MLflow's run search order and metric history (issue 14)

MLflow orders a search by ``start_time DESC, run_uuid`` within the experiments asked for, and a
metric history by ``timestamp, step, value`` within one run and key; its schema has an index
for neither. Without the first, every page (and every page after it: page tokens are offsets)
sorts all of an experiment's runs. Without the second, SQLite reads a run's history through
the metrics primary key, which starts with the key, so it walks that key's points in every run.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        'tf_ix_runs_experiment_order', 'runs', ['experiment_id', sa.text('start_time DESC'), 'run_uuid']
    )
    op.create_index(
        'tf_ix_metrics_history', 'metrics', ['run_uuid', 'key', 'timestamp', 'step', 'value', 'is_nan']
    )


def downgrade() -> None:
    op.drop_index('tf_ix_metrics_history', table_name='metrics')
    op.drop_index('tf_ix_runs_experiment_order', table_name='runs')
