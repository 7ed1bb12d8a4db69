"""Run artifact manifests in SQL: relative path -> (digest, size); and blob leases.

A lease names a blob an upload has written and is about to put in a manifest; garbage
collection leaves leased blobs alone. ``put_artifacts`` can release the lease in the same
transaction that adds the manifest row, so the blob is never unprotected in between.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, select

from modelyard.domain.entities import ArtifactEntry, LifecycleStage
from modelyard.errors import ArtifactNotFound, InvalidState, RunNotFound
from modelyard.stores.sql import schema as s
from modelyard.stores.sql.base import SqlBase


def _run_stage(conn: Connection, run_id: str) -> str:
    stage = conn.execute(
        select(s.runs.c.lifecycle_stage).where(s.runs.c.run_id == run_id)
    ).scalar_one_or_none()
    if stage is None:
        raise RunNotFound(f"run {run_id!r} does not exist", field="run_id")
    return str(stage)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def write_manifest(conn: Connection, insert: Any, run_id: str,
                   entries: Sequence[ArtifactEntry], *, release_leases: Sequence[str] = ()
                   ) -> None:
    """Add or replace manifest rows (``insert``: the dialect's INSERT of ``artifacts``) and
    drop ``release_leases``, inside the caller's transaction."""
    if release_leases:
        conn.execute(delete(s.blob_leases).where(s.blob_leases.c.lease_id.in_(release_leases)))
    now = int(time.time() * 1000)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["run_id", "path"],
            set_={"digest": insert.excluded.digest, "size": insert.excluded.size,
                  "created_time": insert.excluded.created_time},
        ),
        [
            {"run_id": run_id, "path": e.path, "digest": e.digest, "size": e.size,
             "created_time": now}
            for e in entries
        ],
    )


class SqlArtifactIndex(SqlBase):
    def add_lease(self, digest: str, *, now: int) -> str:
        return self.add_leases([digest], now=now)[0]

    def add_leases(self, digests: Sequence[str], *, now: int) -> list[str]:
        lease_ids = [secrets.token_hex(16) for _ in digests]
        with self._write() as conn:
            conn.execute(s.blob_leases.insert(), [
                {"lease_id": lease_id, "digest": digest, "created_time": now}
                for lease_id, digest in zip(lease_ids, digests, strict=True)])
        return lease_ids

    def drop_lease(self, lease_id: str) -> None:
        self.drop_leases([lease_id])

    def drop_leases(self, lease_ids: Sequence[str]) -> None:
        with self._write() as conn:
            conn.execute(delete(s.blob_leases).where(s.blob_leases.c.lease_id.in_(lease_ids)))

    def put_artifacts(self, run_id: str, entries: Sequence[ArtifactEntry], *,
                      release_lease: str | None = None) -> None:
        with self._write() as conn:
            if _run_stage(conn, run_id) != LifecycleStage.ACTIVE.value:
                raise InvalidState(f"run {run_id} is deleted", field="run_id")
            write_manifest(conn, self._insert(s.artifacts), run_id, entries,
                           release_leases=() if release_lease is None else (release_lease,))

    def list_artifacts(self, run_id: str, *, prefix: str) -> list[ArtifactEntry]:
        a = s.artifacts.c
        with self._read() as conn:
            _run_stage(conn, run_id)
            query = select(a.path, a.digest, a.size).where(a.run_id == run_id)
            if prefix:
                query = query.where(
                    (a.path == prefix) | a.path.like(_escape_like(prefix) + "/%", escape="\\")
                )
            rows = conn.execute(query.order_by(a.path))
            return [ArtifactEntry(r.path, r.digest, int(r.size)) for r in rows]

    def get_artifact(self, run_id: str, path: str) -> ArtifactEntry:
        a = s.artifacts.c
        with self._read() as conn:
            _run_stage(conn, run_id)
            row = conn.execute(
                select(a.path, a.digest, a.size).where(a.run_id == run_id, a.path == path)
            ).first()
            if row is None:
                raise ArtifactNotFound(f"run {run_id} has no artifact {path!r}", field="path")
            return ArtifactEntry(row.path, row.digest, int(row.size))
