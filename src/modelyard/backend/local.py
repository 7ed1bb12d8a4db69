"""The embedded backend: the tracking service in-process over a SQLite (or any) database."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from modelyard.artifacts.blobs import FsspecBlobStore
from modelyard.artifacts.uploads import UploadArea
from modelyard.backend.files import read_chunks, write_verified
from modelyard.domain.entities import ArtifactEntry
from modelyard.domain.history import HistoryFormat
from modelyard.settings import Settings
from modelyard.stores.sql import SqlStores, open_sql_stores
from modelyard.tracking.service import TrackingService
from modelyard.wire.history_formats import encode_history


def _reporting(chunks: Iterable[bytes],
               on_progress: Callable[[int], None] | None) -> Iterable[bytes]:
    if on_progress is None:
        return chunks
    return _each_reported(chunks, on_progress)


def _each_reported(chunks: Iterable[bytes], on_progress: Callable[[int], None]
                   ) -> Iterator[bytes]:
    for chunk in chunks:
        on_progress(len(chunk))
        yield chunk


class LocalBackend(TrackingService):
    """The service itself, plus file transfer and a ``close``."""

    def __init__(self, settings: Settings, *, create_if_empty: bool = True) -> None:
        """``create_if_empty``: give an empty database the schema (else refuse it)."""
        self._stores: SqlStores = open_sql_stores(settings.db_url,
                                                  create_if_empty=create_if_empty)
        blobs = FsspecBlobStore(settings.artifacts_url)
        super().__init__(
            experiments=self._stores.experiments,
            runs=self._stores.runs,
            artifact_index=self._stores.artifacts,
            maintenance=self._stores.maintenance,
            blobs=blobs,
            upload_area=UploadArea(blobs),
        )

    def upload_file(self, run_id: str, artifact_path: str, local_file: Path, *,
                    on_progress: Callable[[int], None] | None = None) -> ArtifactEntry:
        # Embedded: straight into the blob store, one pass (no parts to resume).
        return self.put_artifact(run_id, artifact_path,
                                 _reporting(read_chunks(local_file), on_progress))

    def upload_bytes(self, run_id: str, artifact_path: str, data: bytes) -> ArtifactEntry:
        return self.put_artifact(run_id, artifact_path, [data])

    def download_file(self, run_id: str, artifact_path: str, dest: Path, *,
                      digest: str | None = None,
                      on_progress: Callable[[int], None] | None = None) -> ArtifactEntry:
        entry, chunks = self.open_artifact(run_id, artifact_path)
        write_verified(_reporting(chunks, on_progress), dest, digest=entry.digest)
        return entry

    def export_metric_history(
        self, run_id: str, key: str, dest: Path, *, format: HistoryFormat
    ) -> int:
        pages = self.iter_metric_history(run_id, key)
        return write_verified(encode_history(format, key, pages), dest, digest=None)

    def close(self) -> None:
        self._stores.close()
