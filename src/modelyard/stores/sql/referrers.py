"""What keeps a blob alive: every table whose rows name blobs by digest.

Garbage collection frees a blob only when no referrer names it (and no upload in flight holds
a lease on it). Run manifests are the first referrer; each capability that stores blobs adds
its own here (registry model versions, deployments, dataset versions), so that none of them
has to teach gc about itself, and none is forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, Table

from modelyard.stores.sql import schema as s


@dataclass(frozen=True, slots=True)
class BlobReferrer:
    """Rows of ``table`` name blobs in ``digest``. ``run_id``: when the rows belong to a run,
    the column naming it (a dry run of gc counts the blobs of the runs it would purge as
    freed)."""

    name: str
    table: Table
    digest: Column[str]
    run_id: Column[str] | None = None


RUN_ARTIFACTS = BlobReferrer("run artifacts", s.artifacts, s.artifacts.c.digest,
                             run_id=s.artifacts.c.run_id)

#: Every referrer of the schema: a capability that names blobs adds its table here.
REFERRERS: tuple[BlobReferrer, ...] = (RUN_ARTIFACTS,)
