"""experiment names that look alike: experiments.name_skeleton

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 23:30:00

``experiments.name_skeleton`` holds what each name looks like: the SHA-256 of its UTS #39
skeleton (``stores.sql.experiments.name_skeleton``). A unique index over active experiments
keeps two of them from looking alike; a plain one finds every experiment, deleted ones too,
with a given skeleton, which is how the store refuses a look-alike of a deleted experiment.

The backfill computes skeletons with the application's own function, not a copy: the column
must hold exactly what the running code computes. (A change of what a skeleton is comes with a
migration of its own that computes the column again.)

Existing experiments whose names already look alike keep working, each under its own name. In
every group of names with one skeleton, the experiments named like the oldest active one (else
the oldest one) get the skeleton; every experiment with another name of the group gets
``lookalike-<experiment id>`` instead, a value no digest equals (a digest is 64 hex digits)
and no other row has, so that none of them is refused anything it could do before: restoring,
renaming, deleting. A new name that looks like the group's is refused as any look-alike is:
it looks like the experiment that holds the skeleton. The downgrade drops the column (in
place: SQLite 3.35 or later).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op

from modelyard.stores.sql.experiments import name_skeleton

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

ACTIVE = sa.text("lifecycle_stage = 'active'")

experiments = sa.table("experiments", sa.column("experiment_id"), sa.column("name"),
                       sa.column("lifecycle_stage"), sa.column("name_skeleton"))


def upgrade() -> None:
    op.add_column('experiments', sa.Column('name_skeleton', sa.String(length=64), nullable=True))
    _backfill(op.get_bind())
    # On SQLite this recreates the table (the indexes with it, partial ones included);
    # migrate.upgrade turns foreign keys off meanwhile so that runs survive it.
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.alter_column('name_skeleton', existing_type=sa.String(length=64),
                              nullable=False)
    op.create_index('uq_experiments_active_name_skeleton', 'experiments', ['name_skeleton'],
                    unique=True, sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    op.create_index('ix_experiments_name_skeleton', 'experiments', ['name_skeleton', 'name'])


def _backfill(conn: sa.Connection) -> None:
    """Every experiment's skeleton; in a group of look-alikes, only the names of the one that
    keeps it get it (see the module docstring)."""
    rows = conn.execute(sa.select(experiments.c.experiment_id, experiments.c.name,
                                  experiments.c.lifecycle_stage)
                        .order_by(experiments.c.experiment_id)).all()
    groups: dict[str, list[Any]] = defaultdict(list)  # rows
    for row in rows:
        groups[name_skeleton(row.name)].append(row)
    values: list[dict[str, object]] = []
    for key, members in groups.items():
        keeper = next((r for r in members if r.lifecycle_stage == "active"), members[0])
        values.extend(
            {"b_id": r.experiment_id,
             "b_key": key if r.name == keeper.name else f"lookalike-{r.experiment_id}"}
            for r in members)
    if values:
        conn.execute(experiments.update()
                     .where(experiments.c.experiment_id == sa.bindparam("b_id"))
                     .values(name_skeleton=sa.bindparam("b_key")), values)


def downgrade() -> None:
    op.drop_index('ix_experiments_name_skeleton', table_name='experiments')
    op.drop_index('uq_experiments_active_name_skeleton', table_name='experiments')
    # Not in batch mode: recreating the table on SQLite would, with foreign keys on (as when
    # Alembic runs on its own), cascade-delete every run. SQLite 3.35+ drops a column in place.
    op.drop_column('experiments', 'name_skeleton')
