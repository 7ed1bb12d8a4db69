"""Garbage collection: purge soft-deleted runs and experiments, then unreferenced blobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelyard.domain.entities import GcReport
from modelyard.errors import InvalidArgument

if TYPE_CHECKING:
    from modelyard.artifacts.blobs import BlobStore
    from modelyard.stores.protocols import Maintenance


def collect_garbage(
    maintenance: Maintenance,
    blobs: BlobStore,
    *,
    older_than_ms: int,
    now_ms: int,
    dry_run: bool = True,
) -> GcReport:
    """Purge what was soft-deleted more than ``older_than_ms`` ago and every blob that no
    remaining manifest names.

    On a dry run nothing is changed and the report says what would be freed.
    """
    if older_than_ms < 0:
        raise InvalidArgument("older_than must not be negative", field="older_than")
    run_ids, exp_ids = maintenance.deleted_before(cutoff=now_ms - older_than_ms)
    if not dry_run:
        maintenance.purge(run_ids=run_ids, experiment_ids=exp_ids)
    # On a dry run the doomed runs still hold their references: leave them out of the count.
    referenced = maintenance.referenced_digests(excluding_runs=run_ids if dry_run else ())
    freed = 0
    count = 0
    for ref in blobs.iter_digests():
        if ref.digest in referenced:
            continue
        count += 1
        freed += ref.size if dry_run else blobs.delete(ref.digest)
    return GcReport(
        runs=tuple(run_ids), experiments=tuple(exp_ids), blobs=count, bytes_freed=freed,
        dry_run=dry_run,
    )
