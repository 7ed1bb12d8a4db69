"""Making a staged blob an artifact without ever letting garbage collection take it.

The protocol (``docs/artifacts.md`` explains why each step is where it is):

1. the bytes are in a durable temp object, hashed (``BlobStore.stage_stream`` or an upload);
2. a lease on the digest is committed;
3. ``publish``: the object gets the temp object's bytes under its digest unless it is already
   stored (a hard link on a local disk: no copy); the temp object is kept either way;
4. one transaction adds the manifest row and drops the lease;
5. ``settle``: if the object vanished meanwhile (a collection claimed it, from before our lease
   or our manifest row was visible to it), the kept temp object takes its place; then the
   temp name goes. When this returns the object exists, and no collection removes it while
   the manifest names it.

A collection claims an unreferenced object by renaming it, then re-reads manifests and leases
in one snapshot, and puts it back if either names it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from modelyard.domain.entities import ArtifactEntry, LifecycleStage
from modelyard.errors import InvalidState

if TYPE_CHECKING:
    from modelyard.artifacts.protocol import BlobStore, StagedBlob
    from modelyard.stores.protocols import ArtifactIndex, RunStore


def require_active_run(runs: RunStore, run_id: str) -> None:
    """Refuse an artifact write to a run that is gone or deleted before any byte is stored
    (the manifest refuses it again, for a run deleted meanwhile: step 4).

    Raises:
        RunNotFound; InvalidState (the run is deleted).
    """
    if runs.get_run(run_id).info.lifecycle_stage is not LifecycleStage.ACTIVE:
        raise InvalidState(f"run {run_id} is deleted", field="run_id")


def publish_artifact(index: ArtifactIndex, blobs: BlobStore, *, run_id: str, path: str,
                     staged: StagedBlob, now: int) -> ArtifactEntry:
    """Name ``staged`` at ``path`` in the run's manifest (steps 2-5 above).

    Raises:
        RunNotFound, InvalidState: the run is gone or deleted (the lease is dropped and the
            temp object discarded; an object already renamed into place is left for gc).
    """
    entry = ArtifactEntry(path, staged.ref.digest, staged.ref.size)
    try:
        lease = index.add_lease(entry.digest, now=now)
    except BaseException:
        blobs.discard(staged)
        raise
    try:
        blobs.publish(staged)
        index.put_artifacts(run_id, [entry], release_lease=lease)
    except BaseException:
        with contextlib.suppress(Exception):  # a stale lease only delays gc by a day
            index.drop_lease(lease)
        blobs.discard(staged)
        raise
    blobs.settle(staged)
    return entry
