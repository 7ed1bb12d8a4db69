"""Garbage-collection queries: what is soft-deleted, purging it (counting the rows), which blobs
are in use (named by a referrer, ``stores.sql.referrers``, or leased by an upload in flight),
and stale leases."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, exists, func, literal, or_, select

from modelyard.domain.entities import LifecycleStage
from modelyard.stores.sql import schema as s
from modelyard.stores.sql.base import SqlBase
from modelyard.stores.sql.referrers import REFERRERS, BlobReferrer

# Everything that hangs off a run, by the name reported for it.
_RUN_CHILDREN: tuple[tuple[str, Table], ...] = (
    ("metrics", s.metrics), ("metric_chunks", s.metric_chunks),
    ("latest_metrics", s.latest_metrics), ("params", s.params),
    ("tags", s.tags), ("artifacts", s.artifacts), ("ingested_batches", s.ingested_batches),
)
_CHUNK = 500


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[i : i + _CHUNK]) for i in range(0, len(ids), _CHUNK)]


class SqlMaintenance(SqlBase):
    def __init__(self, engine: Engine,
                 referrers: Sequence[BlobReferrer] = REFERRERS) -> None:
        super().__init__(engine)
        self.referrers = tuple(referrers)

    def deleted_before(self, *, cutoff: int) -> tuple[list[str], list[str]]:
        deleted = LifecycleStage.DELETED.value
        with self._read() as conn:
            exp_ids = [
                str(r)
                for r in conn.execute(
                    select(s.experiments.c.experiment_id).where(
                        s.experiments.c.lifecycle_stage == deleted,
                        s.experiments.c.deleted_time < cutoff,
                    )
                ).scalars()
            ]
            run_ids = list(
                conn.execute(
                    select(s.runs.c.run_id).where(
                        (
                            (s.runs.c.lifecycle_stage == deleted)
                            & (s.runs.c.deleted_time < cutoff)
                        )
                        | s.runs.c.experiment_id.in_([int(e) for e in exp_ids])
                    )
                ).scalars()
            )
        return run_ids, exp_ids

    def count_rows(self, *, run_ids: Sequence[str],
                   experiment_ids: Sequence[str]) -> dict[str, int]:
        def count(conn: Connection, table: Table, where: Any) -> int:
            return int(conn.execute(
                select(func.count()).select_from(table).where(where)).scalar_one())

        with self._read() as conn:
            return _per_table(conn, run_ids, experiment_ids, count)

    def purge(self, *, run_ids: Sequence[str],
              experiment_ids: Sequence[str]) -> dict[str, int]:
        def remove(conn: Connection, table: Table, where: Any) -> int:
            return int(conn.execute(delete(table).where(where)).rowcount)

        with self._write() as conn:
            return _per_table(conn, run_ids, experiment_ids, remove)

    def referenced_digests(self, *, excluding_runs: Sequence[str] = ()) -> set[str]:
        """Every digest a referrer names (rows of ``excluding_runs`` left out)."""
        found: set[str] = set()
        with self._snapshot() as conn:
            for ref in self.referrers:
                query = select(ref.digest).distinct()
                if excluding_runs and ref.run_id is not None:
                    query = query.where(ref.run_id.not_in(list(excluding_runs)))
                found.update(conn.execute(query).scalars())
        return found

    def leased_digests(self, *, since: int) -> set[str]:
        query = select(s.blob_leases.c.digest).where(s.blob_leases.c.created_time >= since)
        with self._read() as conn:
            return set(conn.execute(query.distinct()).scalars())

    def blob_in_use(self, digest: str, *, leases_since: int) -> bool:
        # ONE statement, so both tables are read in one snapshot: an upload that commits its
        # manifest row and drops its lease at once can never fall between two reads.
        named = [exists().where(ref.digest == digest) for ref in self.referrers]
        leased = exists().where(s.blob_leases.c.digest == digest,
                                s.blob_leases.c.created_time >= leases_since)
        with self._read() as conn:
            return bool(conn.execute(select(literal(True)).where(or_(*named, leased))).first())

    def drop_leases(self, *, before: int, dry_run: bool = False) -> int:
        stale = s.blob_leases.c.created_time < before
        if dry_run:
            with self._read() as conn:
                return int(conn.execute(
                    select(func.count()).select_from(s.blob_leases).where(stale)).scalar_one())
        with self._write() as conn:
            return int(conn.execute(delete(s.blob_leases).where(stale)).rowcount)


def _per_table(conn: Connection, run_ids: Sequence[str], experiment_ids: Sequence[str],
               op: Callable[[Connection, Table, Any], int]) -> dict[str, int]:
    """Apply ``op`` (count or delete) to the rows of those runs and experiments, children
    before parents; rows touched per table."""
    counts = {"runs": 0, **{name: 0 for name, _ in _RUN_CHILDREN},
              "experiments": 0, "experiment_tags": 0}
    for chunk in _chunks(run_ids):
        for name, table in (*_RUN_CHILDREN, ("runs", s.runs)):
            counts[name] += op(conn, table, table.c.run_id.in_(chunk))
    exp_ids = [int(e) for e in experiment_ids]
    if exp_ids:
        for name, table in (("experiment_tags", s.experiment_tags),
                            ("experiments", s.experiments)):
            counts[name] = op(conn, table, table.c.experiment_id.in_(exp_ids))
    return counts
