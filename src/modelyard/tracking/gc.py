"""Garbage collection: purge soft-deleted runs and experiments, free unreferenced blobs, sweep
abandoned uploads, temp files and leases; one audit line per collection.

Safe beside uploads in flight (``tracking.artifact_writes`` has the upload's side): a blob no
manifest names is first *claimed* (renamed into the trash, atomically), then manifests and
fresh leases are read again in one snapshot; if either names it now, it goes back. Claims a
crashed collection left in the trash are settled the same way at the start of the next one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from modelyard.domain.retention import ABANDONED_AFTER_MS, DAY_MS
from modelyard.domain.validation import MAX_INT64
from modelyard.errors import InvalidArgument

__all__ = ["ABANDONED_AFTER_MS", "DAY_MS", "GcReport", "collect_garbage"]

if TYPE_CHECKING:
    from modelyard.artifacts.protocol import BlobStore
    from modelyard.artifacts.uploads import UploadArea
    from modelyard.stores.protocols import Maintenance

audit = logging.getLogger("modelyard.audit")



@dataclass(frozen=True, slots=True)
class GcReport:
    """What a collection removed (or, on a dry run, would remove)."""

    dry_run: bool
    runs: tuple[str, ...]
    experiments: tuple[str, ...]
    rows: dict[str, int]  # by table: runs, metrics, params, tags, artifacts, ...
    blobs: int
    bytes_freed: int  # blobs only
    blobs_kept: int = 0  # claimed, then found in use by an upload in flight: put back
    uploads: int = 0  # abandoned upload sessions swept
    upload_bytes: int = 0
    temp_files: int = 0  # leftovers in the blob store's tmp/
    temp_bytes: int = 0
    leases: int = 0  # stale leases dropped
    trash_settled: int = 0  # claims a crashed collection had left

    @property
    def rows_freed(self) -> int:
        return sum(self.rows.values())

    @property
    def total_bytes(self) -> int:
        return self.bytes_freed + self.upload_bytes + self.temp_bytes

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["runs"], data["experiments"] = list(self.runs), list(self.experiments)
        data["rows_freed"] = self.rows_freed
        data["total_bytes_freed"] = self.total_bytes
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GcReport:
        """The report :meth:`to_json` wrote (derived totals are computed again)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["runs"], values["experiments"] = tuple(data["runs"]), tuple(data["experiments"])
        values["rows"] = {str(k): int(v) for k, v in data["rows"].items()}
        return cls(**values)


def collect_garbage(
    maintenance: Maintenance,
    blobs: BlobStore,
    *,
    older_than_ms: int,
    now_ms: int,
    dry_run: bool = True,
    uploads: UploadArea | None = None,
    abandoned_after_ms: int = ABANDONED_AFTER_MS,
) -> GcReport:
    """Purge what was soft-deleted more than ``older_than_ms`` ago, every blob no remaining
    manifest names (unless an upload in flight holds a lease on it), and what uploads that
    died left behind (sessions, temp files, leases idle for ``abandoned_after_ms``).

    On a dry run nothing is changed and the report says what would be freed. Either way one
    structured line goes to the ``modelyard.audit`` logger.

    Raises:
        InvalidArgument: an age that is not a non-negative whole number of milliseconds.
    """
    for value, name in ((older_than_ms, "older_than_ms"),
                        (abandoned_after_ms, "abandoned_after_ms")):
        # At most 2**63 - 1: the cutoff (now minus the age) must fit a database integer.
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT64:
            raise InvalidArgument(f"{name} must be a whole, non-negative number of "
                                  f"milliseconds (at most {MAX_INT64})", field=name)
    abandoned = now_ms - abandoned_after_ms
    run_ids, exp_ids = maintenance.deleted_before(cutoff=now_ms - older_than_ms)
    if dry_run:
        rows = maintenance.count_rows(run_ids=run_ids, experiment_ids=exp_ids)
    else:
        rows = maintenance.purge(run_ids=run_ids, experiment_ids=exp_ids)
    settled = 0 if dry_run else _settle_trash(maintenance, blobs, abandoned)
    # On a dry run the doomed runs still hold their references: leave them out of the count.
    referenced = maintenance.referenced_digests(excluding_runs=run_ids if dry_run else ())
    referenced |= maintenance.leased_digests(since=abandoned)
    freed = count = kept = 0
    for ref in blobs.iter_digests():
        if ref.digest in referenced:
            continue
        if dry_run:
            count += 1
            freed += ref.size
            continue
        claim = blobs.claim(ref.digest)
        if claim is None:
            continue  # gone already (another collection)
        if maintenance.blob_in_use(ref.digest, leases_since=abandoned):
            blobs.restore(claim)  # an upload named or leased it since the mark
            kept += 1
            continue
        count += 1
        freed += blobs.drop(claim)
    leases = maintenance.drop_leases(before=abandoned, dry_run=dry_run)
    temp_files, temp_bytes = blobs.sweep_temp(before=abandoned / 1000, dry_run=dry_run)
    sessions, upload_bytes = (0, 0) if uploads is None else uploads.sweep(
        before=abandoned / 1000, dry_run=dry_run)
    report = GcReport(
        dry_run=dry_run, runs=tuple(run_ids), experiments=tuple(exp_ids), rows=rows,
        blobs=count, bytes_freed=freed, blobs_kept=kept, uploads=sessions,
        upload_bytes=upload_bytes, temp_files=temp_files, temp_bytes=temp_bytes,
        leases=leases, trash_settled=settled,
    )
    audit.info("gc %s", json.dumps({"event": "gc", "older_than_ms": older_than_ms,
                                    "abandoned_after_ms": abandoned_after_ms,
                                    **report.to_json()}, sort_keys=True))
    return report


def _settle_trash(maintenance: Maintenance, blobs: BlobStore, abandoned: int) -> int:
    """Claims a crashed collection left: back if in use, else gone."""
    settled = 0
    for claim, digest in list(blobs.iter_claims()):
        if maintenance.blob_in_use(digest, leases_since=abandoned):
            blobs.restore(claim)
        else:
            blobs.drop(claim)
        settled += 1
    return settled
