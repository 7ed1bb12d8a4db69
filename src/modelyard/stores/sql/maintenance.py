"""Garbage-collection queries: what is soft-deleted, purging it, and which blobs are in use."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from modelyard.domain.entities import LifecycleStage
from modelyard.stores.sql import schema as s
from modelyard.stores.sql.base import SqlBase

_RUN_CHILDREN = (s.metrics, s.latest_metrics, s.params, s.tags, s.artifacts, s.ingested_batches)


class SqlMaintenance(SqlBase):
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

    def purge(self, *, run_ids: Sequence[str], experiment_ids: Sequence[str]) -> None:
        with self._write() as conn:
            for start in range(0, len(run_ids), 500):
                chunk = list(run_ids[start : start + 500])
                for table in _RUN_CHILDREN:
                    conn.execute(delete(table).where(table.c.run_id.in_(chunk)))
                conn.execute(delete(s.runs).where(s.runs.c.run_id.in_(chunk)))
            exp_ids = [int(e) for e in experiment_ids]
            if exp_ids:
                conn.execute(
                    delete(s.experiment_tags).where(
                        s.experiment_tags.c.experiment_id.in_(exp_ids)
                    )
                )
                conn.execute(
                    delete(s.experiments).where(s.experiments.c.experiment_id.in_(exp_ids))
                )

    def referenced_digests(self, *, excluding_runs: Sequence[str] = ()) -> set[str]:
        query = select(s.artifacts.c.digest).distinct()
        if excluding_runs:
            query = query.where(s.artifacts.c.run_id.not_in(list(excluding_runs)))
        with self._read() as conn:
            return set(conn.execute(query).scalars())
