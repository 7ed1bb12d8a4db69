"""The relational schema. It changes only through Alembic migrations (``migrations/``).

Rows never leave ``modelyard.stores.sql``: the store converts them to domain entities.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT in PostgreSQL, INTEGER (the rowid alias, so it autoincrements) in SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ExperimentRow(Base):
    __tablename__ = "experiments"
    experiment_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    lifecycle_stage: Mapped[str] = mapped_column(String(16), default="active")
    creation_time: Mapped[int] = mapped_column(BigInteger)
    last_update_time: Mapped[int] = mapped_column(BigInteger)
    deleted_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # What the name looks like: the SHA-256 (hex) of its UTS #39 skeleton
    # (``experiments.name_skeleton()`` in this package), so that names that look alike collide.
    name_skeleton: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        # Only an active experiment holds its name: a deleted one no longer blocks it.
        Index("uq_experiments_active_name", "name", unique=True,
              sqlite_where=text("lifecycle_stage = 'active'"),
              postgresql_where=text("lifecycle_stage = 'active'")),
        Index("ix_experiments_name", "name", "lifecycle_stage"),
        # No two active experiments look alike. A deleted one keeps its skeleton, so that
        # the store can refuse a look-alike of it too (which its restore would collide with).
        Index("uq_experiments_active_name_skeleton", "name_skeleton", unique=True,
              sqlite_where=text("lifecycle_stage = 'active'"),
              postgresql_where=text("lifecycle_stage = 'active'")),
        Index("ix_experiments_name_skeleton", "name_skeleton", "name"),
    )


class ExperimentTagRow(Base):
    __tablename__ = "experiment_tags"
    experiment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("experiments.experiment_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RunRow(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("experiments.experiment_id", ondelete="CASCADE")
    )
    run_name: Mapped[str] = mapped_column(String(250))
    user_id: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    start_time: Mapped[int] = mapped_column(BigInteger)
    end_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lifecycle_stage: Mapped[str] = mapped_column(String(16))
    parent_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    deleted_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        Index("ix_runs_experiment_stage_start", "experiment_id", "lifecycle_stage", "start_time"),
        Index("ix_runs_parent", "parent_run_id"),
    )


def _run_fk() -> ForeignKey:
    return ForeignKey("runs.run_id", ondelete="CASCADE")


class ParamRow(Base):
    __tablename__ = "params"
    run_id: Mapped[str] = mapped_column(String(32), _run_fk(), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_params_key_value", "key", "value", "run_id"),)


class TagRow(Base):
    __tablename__ = "tags"
    run_id: Mapped[str] = mapped_column(String(32), _run_fk(), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_tags_key_value", "key", "value", "run_id"),)


class MetricRow(Base):
    """The newest points of a metric's history, one row each, in logging order (``id``).

    A history lives in two tiers: these rows, cheap to append a few points at a time, and
    :class:`MetricChunkRow` packs of thousands of points that are cheap to read. Once a history
    has enough rows they are packed into a chunk and deleted (``stores.sql.history``); every
    row is newer than every chunk of its history. NaN is stored as value NULL with is_nan true,
    because SQLite turns NaN into NULL anyway and PostgreSQL orders NaN above every number."""

    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), _run_fk())
    key: Mapped[str] = mapped_column(String(250))
    value: Mapped[float | None] = mapped_column(Float(precision=53), nullable=True)
    is_nan: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_metrics_series", "run_id", "key", "id"),)


class MetricChunkRow(Base):
    """A packed, immutable piece of a metric's history: ``n`` points sorted in history order
    (step, timestamp, logging order) as three little-endian columns in ``data``: int64 steps,
    int64 timestamps, float64 values (NaN as NaN). ``chunk_id`` is the logging order of the
    chunks of one history; the step range and NaN count let a reader plan without the data."""

    __tablename__ = "metric_chunks"
    chunk_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), _run_fk())
    key: Mapped[str] = mapped_column(String(250))
    n: Mapped[int] = mapped_column(Integer)
    first_step: Mapped[int] = mapped_column(BigInteger)
    last_step: Mapped[int] = mapped_column(BigInteger)
    nan_count: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    # AUTOINCREMENT on SQLite: ids of purged chunks are never handed out again, so a reader
    # holding a list of chunk ids can never be given another history's chunk.
    __table_args__ = (Index("ix_metric_chunks_series", "run_id", "key", "chunk_id"),
                      {"sqlite_autoincrement": True})


class LatestMetricRow(Base):
    """The latest value per (run, key): highest step, then timestamp, then value; and how many
    of the history's points are still rows (``pending``), which decides when to pack them."""

    __tablename__ = "latest_metrics"
    run_id: Mapped[str] = mapped_column(String(32), _run_fk(), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float(precision=53), nullable=True)
    is_nan: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    pending: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    __table_args__ = (Index("ix_latest_metrics_key_value", "key", "value", "run_id"),)


class ArtifactRow(Base):
    """A run's artifact manifest: relative path -> blob digest and size."""

    __tablename__ = "artifacts"
    run_id: Mapped[str] = mapped_column(String(32), _run_fk(), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_time: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_artifacts_digest", "digest"),)


class IngestedBatchRow(Base):
    """Client-supplied batch ids already stored, so a retried batch is never stored twice."""

    __tablename__ = "ingested_batches"
    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), _run_fk())
    created_time: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_ingested_batches_run", "run_id"),)


class BlobLeaseRow(Base):
    """A blob an upload has written and is about to name in a manifest. Garbage collection
    never deletes a leased blob, so an upload in flight cannot lose its bytes."""

    __tablename__ = "blob_leases"
    lease_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    created_time: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_blob_leases_digest", "digest"),)


experiments = cast(Table, ExperimentRow.__table__)
experiment_tags = cast(Table, ExperimentTagRow.__table__)
runs = cast(Table, RunRow.__table__)
params = cast(Table, ParamRow.__table__)
tags = cast(Table, TagRow.__table__)
metrics = cast(Table, MetricRow.__table__)
metric_chunks = cast(Table, MetricChunkRow.__table__)
latest_metrics = cast(Table, LatestMetricRow.__table__)
artifacts = cast(Table, ArtifactRow.__table__)
ingested_batches = cast(Table, IngestedBatchRow.__table__)
blob_leases = cast(Table, BlobLeaseRow.__table__)
