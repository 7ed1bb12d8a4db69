"""deleted experiments free their names; blob leases for garbage collection

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 21:00:00

The unique constraint on experiments.name becomes a unique index over active experiments only,
so a deleted experiment no longer blocks its name. ``blob_leases`` records blobs an upload has
written but not yet named in a manifest, which garbage collection must not delete.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

ACTIVE = sa.text("lifecycle_stage = 'active'")


def upgrade() -> None:
    # On SQLite this recreates the table; migrate.upgrade turns foreign keys off meanwhile so
    # that dropping the old table does not cascade into runs.
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.drop_constraint('uq_experiments_name', type_='unique')
    op.create_index('uq_experiments_active_name', 'experiments', ['name'], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    op.create_index('ix_experiments_name', 'experiments', ['name', 'lifecycle_stage'])
    op.create_table('blob_leases',
    sa.Column('lease_id', sa.String(length=32), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('created_time', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('lease_id', name=op.f('pk_blob_leases'))
    )
    op.create_index('ix_blob_leases_digest', 'blob_leases', ['digest'])


def downgrade() -> None:
    op.drop_index('ix_blob_leases_digest', table_name='blob_leases')
    op.drop_table('blob_leases')
    op.drop_index('ix_experiments_name', table_name='experiments')
    op.drop_index('uq_experiments_active_name', table_name='experiments')
    # Fails (IntegrityError) while two experiments share a name, as it must.
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_experiments_name', ['name'])
