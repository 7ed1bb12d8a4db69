"""The one service interface the SDK calls; ``local`` and ``remote`` implement it.

Both raise the same ``modelyard.errors`` classes for the same mistakes; one SDK test-suite runs
against both to keep it so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from modelyard.domain.entities import (
    ArtifactEntry,
    Experiment,
    LogBatch,
    Metric,
    NewRun,
    Run,
    RunEnd,
    ViewType,
)
from modelyard.domain.history import HistoryFormat
from modelyard.domain.paging import Page
from modelyard.tracking.gc import GcReport


class Backend(Protocol):
    def create_experiment(
        self, name: str, *, description: str = "", tags: dict[str, str] | None = None
    ) -> Experiment: ...
    def get_experiment(self, experiment_id: str) -> Experiment: ...
    def get_experiment_by_name(self, name: str) -> Experiment: ...
    def list_experiments(
        self, *, view: ViewType | str = ..., max_results: int = ..., page_token: str | None = ...
    ) -> Page[Experiment]: ...
    def update_experiment(
        self, experiment_id: str, *, name: str | None = None, description: str | None = None
    ) -> Experiment: ...
    def delete_experiment(self, experiment_id: str) -> None: ...
    def restore_experiment(self, experiment_id: str, *, new_name: str | None = None) -> None: ...
    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None: ...

    def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = None,
        user_id: str = "unknown",
        start_time: int | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Run:
        """``run_id``: the caller's id (32 lowercase hex); a repeat with the same values is
        answered with the run (idempotent), other values are a Conflict."""
        ...
    def get_run(self, run_id: str) -> Run: ...
    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> Run: ...
    def delete_run(self, run_id: str) -> None: ...
    def restore_run(self, run_id: str) -> None: ...
    def log_batch(self, run_id: str, batch: LogBatch, *, batch_id: str | None = None,
                  create: NewRun | None = None, end: RunEnd | None = None) -> bool:
        """Write a batch atomically; ``create`` creates the run first (idempotent, as
        :meth:`create_run` with ``run_id``), ``end`` ends it last.

        Returns False when the batch id had already been stored (a retry).
        """
        ...
    def delete_tag(self, run_id: str, key: str) -> None: ...
    def get_metric_history(
        self, run_id: str, key: str, *, max_points: int | None = None
    ) -> list[Metric]:
        """Every point, or at most ``max_points`` keeping the shape (``domain.history``)."""
        ...
    def export_metric_history(
        self, run_id: str, key: str, dest: Path, *, format: HistoryFormat
    ) -> int:
        """Stream the full history into ``dest`` (temp file, then renamed) in ``format``.

        Returns:
            the number of bytes written.
        """
        ...
    def search_runs(
        self,
        experiment_ids: Sequence[str] | None,
        *,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        view: ViewType | str = ...,
        max_results: int = ...,
        page_token: str | None = None,
        include_total: bool = False,
    ) -> Page[Run]:
        """``experiment_ids`` None searches every experiment."""
        ...
    def count_runs(
        self,
        experiment_ids: Sequence[str] | None,
        *,
        filter: str | None = None,
        view: ViewType | str = ...,
    ) -> int: ...

    def upload_file(self, run_id: str, artifact_path: str, local_file: Path, *,
                    on_progress: Callable[[int], None] | None = None) -> ArtifactEntry:
        """Stream one local file into the run's artifacts at ``artifact_path``.

        Remote: large files go in resumable parts, several at once (``docs/artifacts.md``).
        ``on_progress`` is called with each number of bytes sent (from any thread).
        """
        ...
    def upload_bytes(self, run_id: str, artifact_path: str, data: bytes) -> ArtifactEntry:
        """Store small in-memory content (text, JSON) as one artifact."""
        ...
    def download_file(self, run_id: str, artifact_path: str, dest: Path, *,
                      digest: str | None = None,
                      on_progress: Callable[[int], None] | None = None) -> ArtifactEntry:
        """Stream one artifact to ``dest`` (written to a temp name, verified, then renamed).

        Remote: an interrupted download resumes with HTTP Range (also from another process
        when ``digest``, the expected one from the listing, is given).
        """
        ...
    def list_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]: ...

    def collect_garbage(self, *, older_than_ms: int, dry_run: bool = True,
                        abandoned_after_ms: int = ...) -> GcReport:
        """Purge what was deleted longer ago than ``older_than_ms`` and free unused blobs
        (``tracking.gc``); remote: the server collects in its own stores."""
        ...

    def close(self) -> None: ...
