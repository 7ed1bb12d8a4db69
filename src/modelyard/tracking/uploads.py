"""Resumable multipart uploads: the use cases behind ``/runs/{run_id}/uploads``.

A client opens a session for (run, path, size), sends parts in any order and any number of
times (a part re-sent with the same bytes is acknowledged again), asks which parts the server
holds, and completes: every part present, the whole hashed, the client's digest compared, the
blob published and named in the manifest. Session state lives in the blob store
(:mod:`modelyard.artifacts.uploads`), so every replica and every restart sees it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelyard.artifacts.hashing import validate_digest
from modelyard.artifacts.paths import normalize_artifact_path
from modelyard.artifacts.uploads import (
    DEFAULT_PART_SIZE,
    PartWriter,
    UploadArea,
    UploadSession,
    validate_upload_id,
)
from modelyard.domain import validation as v
from modelyard.domain.entities import ArtifactEntry
from modelyard.errors import Conflict, InvalidArgument, NotFound
from modelyard.tracking.artifact_writes import publish_artifact, require_active_run

if TYPE_CHECKING:
    from modelyard.artifacts.protocol import BlobStore
    from modelyard.stores.protocols import ArtifactIndex, RunStore


@dataclass(frozen=True, slots=True)
class UploadState:
    """A session and what the server holds of it."""

    session: UploadSession
    parts: tuple[int, ...]
    artifact: ArtifactEntry | None = None  # set once complete


def _digits(value: object, field: str) -> int:
    # isascii(): str.isdigit() also accepts '²', which int() refuses
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() \
            or len(value) > 18:
        raise InvalidArgument(f"{field} must be a whole number", field=field)
    return int(value)


class UploadService:
    """Multipart upload use cases over the run store, the manifest index and the blob store."""

    def __init__(self, *, runs: RunStore, artifact_index: ArtifactIndex, blobs: BlobStore,
                 area: UploadArea, clock: Callable[[], int]) -> None:
        self._runs = runs
        self._index = artifact_index
        self._blobs = blobs
        self._area = area
        self._clock = clock

    def _session(self, run_id: str, upload_id: str) -> UploadSession:
        run_id = v.validate_run_id(run_id)
        upload_id = validate_upload_id(upload_id)
        try:
            session = self._area.get(upload_id)
        except NotFound:
            session = None
        if session is None or session.run_id != run_id:
            # An unknown run is RUN_NOT_FOUND, as on every run route; another run's upload is
            # the same 404 as one that does not exist. (A matching session needs no database
            # read per part: completion checks the run is still active.)
            self._runs.get_run(run_id)
            raise self._area.not_found(upload_id)
        return session

    def _state(self, session: UploadSession) -> UploadState:
        result = self._area.result(session)
        if result is not None:
            entry = ArtifactEntry(str(result["path"]), str(result["digest"]),
                                  int(result["size"]))
            return UploadState(session, tuple(range(1, session.part_count + 1)), entry)
        return UploadState(session, tuple(self._area.acknowledged(session)))

    def create(self, run_id: str, path: str, *, size: int, part_size: int | None = None,
               digest: str | None = None) -> UploadState:
        """Open a session for ``size`` bytes at artifact ``path`` of an active run.

        Raises:
            RunNotFound; InvalidState (run deleted); InvalidArgument / UnsafePath (bad path,
            size, part size or digest).
        """
        run_id = v.validate_run_id(run_id)
        clean = normalize_artifact_path(path)
        if digest is not None:
            validate_digest(digest)
        require_active_run(self._runs, run_id)
        session = self._area.create(
            run_id=run_id, path=clean, size=size,
            part_size=DEFAULT_PART_SIZE if part_size is None else part_size,
            digest=digest, now_ms=self._clock(),
        )
        return UploadState(session, ())

    def status(self, run_id: str, upload_id: str) -> UploadState:
        """Raises: NotFound (unknown id, or another run's), InvalidArgument (malformed id)."""
        return self._state(self._session(run_id, upload_id))

    def open_part(self, run_id: str, upload_id: str, part_number: object, *,
                  content_length: object) -> PartWriter:
        """Get ready to receive one part; the caller writes, commits and always closes it.

        Raises:
            NotFound; InvalidArgument (part number out of range, Content-Length missing or
            not the part's length); Conflict (the upload is complete, or the same part is
            being received by another request).
        """
        session = self._session(run_id, upload_id)
        number = session.check_part(_digits(part_number, "part_number"))
        _, length = session.part_span(number)
        if content_length is None:
            raise InvalidArgument("a part needs a Content-Length header (chunked bodies are "
                                  "not accepted)", field="Content-Length")
        declared = _digits(content_length, "Content-Length")
        if declared != length:
            raise InvalidArgument(
                f"part {number} of this upload is exactly {length} bytes; Content-Length "
                f"says {declared}", field="Content-Length")
        return self._area.open_part(session, number)

    def complete(self, run_id: str, upload_id: str, *,
                 digest: str | None = None) -> ArtifactEntry:
        """Verify and publish the upload; idempotent (a retry returns the same entry).

        Raises:
            NotFound; Conflict (parts missing: the message lists them); InvalidArgument
            (the bytes do not hash to the declared digest: the upload is discarded and
            nothing is stored); RunNotFound / InvalidState (the run went away).
        """
        session = self._session(run_id, upload_id)
        declared = {d for d in (session.digest, digest) if d is not None}
        for d in declared:
            validate_digest(d)
        if len(declared) > 1:
            raise InvalidArgument("the digest given at completion differs from the one given "
                                  "when the upload was created", field="digest")
        done = self._state(session).artifact
        if done is not None:
            return done
        require_active_run(self._runs, session.run_id)  # before the parts are assembled
        try:
            staged = self._area.stage(session)
        except (NotFound, Conflict):
            # A concurrent completion may have got there first: it records the result before
            # it removes the staging file and the part markers this one then misses.
            done = self._state(session).artifact
            if done is None:
                raise
            return done
        if declared and staged.ref.digest not in declared:
            self._blobs.discard(staged)
            with contextlib.suppress(Exception):
                self._area.abort(session.upload_id)
            raise InvalidArgument(
                f"the uploaded bytes hash to {staged.ref.digest}, not to the declared digest "
                f"{declared.pop()}; the upload was discarded and nothing was stored",
                field="digest")
        entry = publish_artifact(self._index, self._blobs, run_id=session.run_id,
                                 path=session.path, staged=staged, now=self._clock())
        self._area.finish(session, {"path": entry.path, "digest": entry.digest,
                                    "size": entry.size})
        return entry

    def abort(self, run_id: str, upload_id: str) -> None:
        """Drop a session and its staged bytes. Raises: NotFound."""
        session = self._session(run_id, upload_id)
        self._area.abort(session.upload_id)
