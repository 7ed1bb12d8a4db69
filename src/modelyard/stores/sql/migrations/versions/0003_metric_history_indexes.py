"""metric histories read from covering indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:00:00

``ix_metrics_history`` (run_id, key, step, timestamp, id, value) replaces
``ix_metrics_run_key_step``: the history order with the value inside the index, so a history
is read or downsampled from the index alone. ``ix_metrics_nan`` holds only NaN points (stored
as NULL), so finding a history's NaNs is a seek.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

NAN = sa.text("value IS NULL")


def upgrade() -> None:
    op.create_index('ix_metrics_history', 'metrics',
                    ['run_id', 'key', 'step', 'timestamp', 'id', 'value'])
    op.create_index('ix_metrics_nan', 'metrics', ['run_id', 'key', 'step', 'timestamp', 'id'],
                    sqlite_where=NAN, postgresql_where=NAN)
    op.drop_index('ix_metrics_run_key_step', table_name='metrics')


def downgrade() -> None:
    op.create_index('ix_metrics_run_key_step', 'metrics', ['run_id', 'key', 'step', 'timestamp'])
    op.drop_index('ix_metrics_nan', table_name='metrics')
    op.drop_index('ix_metrics_history', table_name='metrics')
