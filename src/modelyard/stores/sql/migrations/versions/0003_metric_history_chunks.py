"""metric histories in two tiers: recent rows, packed chunks

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 01:00:00

``metric_chunks`` holds packed pieces of histories (see ``schema.MetricChunkRow``);
``metrics`` keeps only each history's newest points, found by (run_id, key, id);
``latest_metrics.pending`` counts them. Every history of 2,048 points or more is packed here,
so reading it is fast at once; smaller ones stay rows. The downgrade unpacks every chunk into
rows again. Both directions are self-contained: this file must keep working whatever the
application's code becomes.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

PACK_AT = 2048
CHUNK_MAX = 65536
_I64, _F64 = np.dtype("<i8"), np.dtype("<f8")

metrics = sa.table("metrics", sa.column("id"), sa.column("run_id"), sa.column("key"),
                   sa.column("value"), sa.column("is_nan"), sa.column("step"),
                   sa.column("timestamp"))
chunks = sa.table("metric_chunks", sa.column("chunk_id"), sa.column("run_id"),
                  sa.column("key"), sa.column("n"), sa.column("first_step"),
                  sa.column("last_step"), sa.column("nan_count"), sa.column("data"))
latest = sa.table("latest_metrics", sa.column("run_id"), sa.column("key"),
                  sa.column("pending"))


def upgrade() -> None:
    op.create_table('metric_chunks',
    sa.Column('chunk_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=250), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('first_step', sa.BigInteger(), nullable=False),
    sa.Column('last_step', sa.BigInteger(), nullable=False),
    sa.Column('nan_count', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.run_id'], name=op.f('fk_metric_chunks_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('chunk_id', name=op.f('pk_metric_chunks')),
    sqlite_autoincrement=True,
    )
    op.create_index('ix_metric_chunks_series', 'metric_chunks', ['run_id', 'key', 'chunk_id'])
    if op.get_bind().dialect.name == "postgresql":
        # Out of line, uncompressed: packed floats barely compress, and pglz would cost more
        # to write and to read than the bytes it saves (measured: 10x on insert).
        op.execute("ALTER TABLE metric_chunks ALTER COLUMN data SET STORAGE EXTERNAL")
    op.create_index('ix_metrics_series', 'metrics', ['run_id', 'key', 'id'])
    op.drop_index('ix_metrics_run_key_step', table_name='metrics')
    with op.batch_alter_table('latest_metrics', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pending', sa.Integer(), server_default=sa.text('0'),
                                      nullable=False))
    _pack_existing(op.get_bind())


def _pack_existing(conn: sa.Connection) -> None:
    """Count every history's rows (one statement), then pack each history of ``PACK_AT``
    points or more, ``CHUNK_MAX`` rows at a time in logging order (bounded memory)."""
    conn.execute(sa.text(
        "UPDATE latest_metrics SET pending = (SELECT count(*) FROM metrics m "
        "WHERE m.run_id = latest_metrics.run_id AND m.key = latest_metrics.key)"))
    big = conn.execute(sa.select(latest.c.run_id, latest.c.key)
                       .where(latest.c.pending >= PACK_AT)).all()
    for run_id, key in big:
        where = (metrics.c.run_id == run_id) & (metrics.c.key == key)
        after = None
        while True:
            query = sa.select(metrics.c.id, metrics.c.step, metrics.c.timestamp,
                              metrics.c.value).where(where)
            if after is not None:
                query = query.where(metrics.c.id > after)
            rows = conn.execute(query.order_by(metrics.c.id).limit(CHUNK_MAX)).all()
            if not rows:
                break
            after = rows[-1][0]
            steps = np.array([r[1] for r in rows], np.int64)
            stamps = np.array([r[2] for r in rows], np.int64)
            values = np.array([r[3] for r in rows], np.float64)  # NULL (NaN) becomes NaN
            order = np.lexsort((stamps, steps))  # stable: ties keep their logging order
            s, t, v = steps[order], stamps[order], values[order]
            conn.execute(chunks.insert().values(
                run_id=run_id, key=key, n=len(s), first_step=int(s[0]), last_step=int(s[-1]),
                nan_count=int(np.count_nonzero(np.isnan(v))),
                data=s.astype(_I64).tobytes() + t.astype(_I64).tobytes()
                + v.astype(_F64).tobytes()))
        conn.execute(metrics.delete().where(where))
        conn.execute(latest.update().where((latest.c.run_id == run_id) & (latest.c.key == key))
                     .values(pending=0))


def downgrade() -> None:
    conn = op.get_bind()
    series = conn.execute(sa.select(chunks.c.run_id, chunks.c.key).distinct()).all()
    for run_id, key in series:
        # Chunks hold the older points: they go first, then the rows, so ids keep the order.
        where = (metrics.c.run_id == run_id) & (metrics.c.key == key)
        rows = conn.execute(sa.select(metrics.c.run_id, metrics.c.key, metrics.c.step,
                                      metrics.c.timestamp, metrics.c.value, metrics.c.is_nan)
                            .where(where).order_by(metrics.c.id)).mappings().all()
        conn.execute(metrics.delete().where(where))
        listed = conn.execute(sa.select(chunks.c.chunk_id).where(
            (chunks.c.run_id == run_id) & (chunks.c.key == key)).order_by(chunks.c.chunk_id))
        for chunk_id in listed.scalars().all():
            n, data = conn.execute(sa.select(chunks.c.n, chunks.c.data)
                                   .where(chunks.c.chunk_id == chunk_id)).one()
            k = 8 * n
            conn.execute(metrics.insert(), [
                {"run_id": run_id, "key": key, "step": s, "timestamp": t,
                 "value": None if v != v else v, "is_nan": v != v}
                for s, t, v in zip(np.frombuffer(data, _I64, n, 0).tolist(),
                                   np.frombuffer(data, _I64, n, k).tolist(),
                                   np.frombuffer(data, _F64, n, 2 * k).tolist(), strict=True)])
        if rows:
            conn.execute(metrics.insert(), [dict(r) for r in rows])
    with op.batch_alter_table('latest_metrics', schema=None) as batch_op:
        batch_op.drop_column('pending')
    op.create_index('ix_metrics_run_key_step', 'metrics', ['run_id', 'key', 'step', 'timestamp'])
    op.drop_index('ix_metrics_series', table_name='metrics')
    op.drop_index('ix_metric_chunks_series', table_name='metric_chunks')
    op.drop_table('metric_chunks')
