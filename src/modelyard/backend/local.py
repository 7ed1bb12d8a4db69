"""The embedded backend: the tracking service in-process over a SQLite (or any) database."""

from __future__ import annotations

from pathlib import Path

from modelyard.artifacts.blobs import FsspecBlobStore
from modelyard.backend.files import read_chunks, write_verified
from modelyard.domain.entities import ArtifactEntry
from modelyard.settings import Settings
from modelyard.stores.sql import SqlStores, open_sql_stores
from modelyard.tracking.service import TrackingService


class LocalBackend(TrackingService):
    """The service itself, plus file transfer and a ``close``."""

    def __init__(self, settings: Settings) -> None:
        self._stores: SqlStores = open_sql_stores(settings.db_url)
        super().__init__(
            experiments=self._stores.experiments,
            runs=self._stores.runs,
            artifact_index=self._stores.artifacts,
            blobs=FsspecBlobStore(settings.artifacts_url),
        )

    def upload_file(self, run_id: str, artifact_path: str, local_file: Path) -> ArtifactEntry:
        return self.put_artifact(run_id, artifact_path, read_chunks(local_file))

    def upload_bytes(self, run_id: str, artifact_path: str, data: bytes) -> ArtifactEntry:
        return self.put_artifact(run_id, artifact_path, [data])

    def download_file(self, run_id: str, artifact_path: str, dest: Path) -> ArtifactEntry:
        entry, chunks = self.open_artifact(run_id, artifact_path)
        write_verified(chunks, dest, digest=entry.digest)
        return entry

    def close(self) -> None:
        self._stores.close()
