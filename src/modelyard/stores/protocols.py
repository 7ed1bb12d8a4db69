"""The persistence contracts the services depend on.

Each protocol is small and fully typed; ``modelyard.stores.sql`` implements all of them over
SQLAlchemy (SQLite and PostgreSQL). Services receive them injected and never build them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from modelyard.domain.entities import (
    ArtifactEntry,
    Experiment,
    LifecycleStage,
    LogBatch,
    Metric,
    NewRun,
    Run,
    RunEnd,
    RunStatus,
    ViewType,
)
from modelyard.domain.history import HistoryColumns
from modelyard.domain.paging import Page
from modelyard.domain.search import Expr, OrderKey


class ExperimentStore(Protocol):
    def create_experiment(
        self, name: str, *, description: str, tags: dict[str, str], now: int
    ) -> str:
        """Create an active experiment.

        Returns:
            the new experiment id.
        Raises:
            AlreadyExists: an active experiment already has this name (a deleted one does not
                block it).
        """

    def get_experiment(self, experiment_id: str) -> Experiment:
        """Raises: ExperimentNotFound."""

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        """The active experiment with exactly this name, else the most recently deleted one
        that had it, else None."""

    def list_experiments(
        self, *, view: ViewType, max_results: int, page_token: str | None
    ) -> Page[Experiment]:
        """Experiments ordered by id."""

    def update_experiment(
        self, experiment_id: str, *, name: str | None, description: str | None, now: int
    ) -> None:
        """Rename and/or re-describe. Raises: ExperimentNotFound, AlreadyExists."""

    def set_experiment_lifecycle(
        self, experiment_id: str, *, stage: LifecycleStage, now: int, new_name: str | None = None
    ) -> None:
        """Soft-delete or restore (renaming it to ``new_name`` when given). Only active
        experiments hold their names.

        Raises: ExperimentNotFound, InvalidState (already there), AlreadyExists (restoring
        while an active experiment has the name).
        """

    def set_experiment_tag(self, experiment_id: str, key: str, value: str, *, now: int) -> None:
        """Raises: ExperimentNotFound."""

    def missing_experiments(self, experiment_ids: Sequence[str]) -> list[str]:
        """Those of ``experiment_ids`` that name no experiment (a deleted one exists), in the
        order given."""


class RunStore(Protocol):
    def create_run(
        self,
        *,
        run_id: str,
        experiment_id: str,
        run_name: str,
        user_id: str,
        start_time: int,
        tags: dict[str, str],
        parent_run_id: str | None,
    ) -> Run:
        """Create a RUNNING run with the caller's id; a repeat with the same values (a retry)
        returns the run as it is now.

        Raises: ExperimentNotFound, InvalidState (deleted experiment), RunNotFound (parent),
        Conflict (the id is taken by a run created with other values).
        """

    def get_run(self, run_id: str) -> Run:
        """The run with params, latest metrics and tags. Raises: RunNotFound."""

    def update_run(
        self,
        run_id: str,
        *,
        status: RunStatus | None,
        end_time: int | None,
        run_name: str | None,
    ) -> Run:
        """Raises: RunNotFound."""

    def set_run_lifecycle(self, run_id: str, *, stage: LifecycleStage, now: int) -> None:
        """Soft-delete or restore. Raises: RunNotFound."""

    def log_batch(self, run_id: str, batch: LogBatch, *, batch_id: str | None,
                  create: NewRun | None = None, end: RunEnd | None = None,
                  release_leases: Sequence[str] = ()) -> bool:
        """Write metrics, params, tags and the manifest rows of ``batch.artifacts`` in one
        transaction (all or nothing): first creating the run when ``create`` is given (as
        :meth:`create_run`, idempotent), last ending it when ``end`` is given; the blob
        leases ``release_leases`` are dropped in the same transaction.

        Returns:
            False when ``batch_id`` was already stored (nothing written again), else True.
        Raises:
            RunNotFound; InvalidState (run deleted); ParamOverwrite (nothing written); what
            :meth:`create_run` raises, for ``create``.
        """

    def delete_tag(self, run_id: str, key: str) -> None:
        """Raises: RunNotFound, NotFound (no such tag)."""

    def get_metric_history(
        self, run_id: str, key: str, *, max_points: int | None = None
    ) -> list[Metric]:
        """One metric's points in history order (step, timestamp, logging order).

        Args:
            max_points: None for every point; else at most this many (>= 2), downsampled by
                the rule in ``modelyard.domain.history`` without a Python object per point.
        Returns:
            the points; [] for a key the run never logged.
        Raises:
            RunNotFound.
        """

    def iter_metric_history(
        self, run_id: str, key: str, *, page_size: int = ...
    ) -> Iterator[HistoryColumns]:
        """Every point of one metric in history order, as column pages of at most
        ``page_size`` points: the history as it was when the first page was asked for, read
        in short transactions as the pages are consumed (bounded memory for any length).

        Raises:
            RunNotFound: at the call, before the first page is read.
        """

    def search_runs(
        self,
        experiment_ids: Sequence[str] | None,
        *,
        filter_expr: Expr | None,
        order_by: Sequence[OrderKey],
        view: ViewType,
        max_results: int,
        page_token: str | None,
        include_total: bool = False,
    ) -> Page[Run]:
        """Runs matching the filter, compiled to SQL, in ``experiment_ids`` (None: every
        experiment). The order ends in run id; page tokens are keyset cursors, so paging is
        stable under concurrent inserts. ``include_total`` also counts every match.

        Raises: InvalidArgument (a malformed page token or one of another query).
        """

    def count_runs(
        self, experiment_ids: Sequence[str] | None, *, filter_expr: Expr | None, view: ViewType
    ) -> int:
        """How many runs match, without fetching them."""


class ArtifactIndex(Protocol):
    def put_artifacts(self, run_id: str, entries: Sequence[ArtifactEntry], *,
                      release_lease: str | None = None) -> None:
        """Add or replace manifest entries; in the same transaction, drop the lease
        ``release_lease`` (if given). Raises: RunNotFound, InvalidState (nothing changed)."""

    def add_lease(self, digest: str, *, now: int) -> str:
        """Record (and commit) that an upload is about to name blob ``digest`` in a manifest,
        so garbage collection keeps it. Returns: the new lease id."""

    def add_leases(self, digests: Sequence[str], *, now: int) -> list[str]:
        """:meth:`add_lease` for several blobs in one transaction. Returns: the lease ids, in
        the order of ``digests``."""

    def drop_lease(self, lease_id: str) -> None:
        """Remove a lease (absent is fine): the upload gave up."""

    def drop_leases(self, lease_ids: Sequence[str]) -> None:
        """Remove several leases (absent ones are fine) in one transaction."""

    def list_artifacts(self, run_id: str, *, prefix: str) -> list[ArtifactEntry]:
        """Entries at or below ``prefix`` ("" = all), ordered by path. Raises: RunNotFound."""

    def get_artifact(self, run_id: str, path: str) -> ArtifactEntry:
        """Raises: RunNotFound, ArtifactNotFound."""


class Maintenance(Protocol):
    def deleted_before(self, *, cutoff: int) -> tuple[list[str], list[str]]:
        """(run ids, experiment ids) soft-deleted before ``cutoff`` ms; runs include those of
        the experiments listed."""

    def count_rows(self, *, run_ids: Sequence[str],
                   experiment_ids: Sequence[str]) -> dict[str, int]:
        """The rows :meth:`purge` would remove, by table name (runs, metrics, latest_metrics,
        params, tags, artifacts, ingested_batches, experiments, experiment_tags)."""

    def purge(self, *, run_ids: Sequence[str],
              experiment_ids: Sequence[str]) -> dict[str, int]:
        """Remove those rows for good, with everything that hangs off them, in one
        transaction. Returns: the rows removed, by table name (as :meth:`count_rows`)."""

    def referenced_digests(self, *, excluding_runs: Sequence[str] = ()) -> set[str]:
        """Every blob digest named by a manifest entry of a run not in ``excluding_runs``."""

    def leased_digests(self, *, since: int) -> set[str]:
        """Digests of the leases created at or after ``since`` (ms)."""

    def blob_in_use(self, digest: str, *, leases_since: int) -> bool:
        """Whether a manifest names ``digest`` or a lease created at or after
        ``leases_since`` holds it, read in one snapshot of both."""

    def drop_leases(self, *, before: int, dry_run: bool = False) -> int:
        """Remove leases created before ``before`` (ms; uploads that died). Returns: how
        many (that would be, on a dry run)."""
