"""The persistence contracts the services depend on.

Each protocol is small and fully typed; ``modelyard.stores.sql`` implements all of them over
SQLAlchemy (SQLite and PostgreSQL). Services receive them injected and never build them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from modelyard.domain.entities import (
    ArtifactEntry,
    Experiment,
    LifecycleStage,
    LogBatch,
    Metric,
    Run,
    RunStatus,
    ViewType,
)
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
        """Raises: ExperimentNotFound, InvalidState (deleted experiment), RunNotFound (parent)."""

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

    def log_batch(self, run_id: str, batch: LogBatch, *, batch_id: str | None) -> bool:
        """Write metrics, params and tags in one transaction (all or nothing).

        Returns:
            False when ``batch_id`` was already stored (nothing written again), else True.
        Raises:
            RunNotFound; InvalidState (run deleted); ParamOverwrite (nothing written).
        """

    def delete_tag(self, run_id: str, key: str) -> None:
        """Raises: RunNotFound, NotFound (no such tag)."""

    def get_metric_history(self, run_id: str, key: str) -> list[Metric]:
        """Every point of one metric, ordered by step, timestamp. Raises: RunNotFound."""

    def search_runs(
        self,
        experiment_ids: Sequence[str],
        *,
        filter_expr: Expr | None,
        order_by: Sequence[OrderKey],
        view: ViewType,
        max_results: int,
        page_token: str | None,
    ) -> Page[Run]:
        """Runs matching the filter, compiled to SQL; stable order ending in run id."""


class ArtifactIndex(Protocol):
    def put_artifacts(self, run_id: str, entries: Sequence[ArtifactEntry]) -> None:
        """Add or replace manifest entries. Raises: RunNotFound, InvalidState."""

    def list_artifacts(self, run_id: str, *, prefix: str) -> list[ArtifactEntry]:
        """Entries at or below ``prefix`` ("" = all), ordered by path. Raises: RunNotFound."""

    def get_artifact(self, run_id: str, path: str) -> ArtifactEntry:
        """Raises: RunNotFound, ArtifactNotFound."""


class Maintenance(Protocol):
    def deleted_before(self, *, cutoff: int) -> tuple[list[str], list[str]]:
        """(run ids, experiment ids) soft-deleted before ``cutoff`` ms; runs include those of
        the experiments listed."""

    def purge(self, *, run_ids: Sequence[str], experiment_ids: Sequence[str]) -> None:
        """Remove those rows for good, with everything that hangs off them."""

    def referenced_digests(self, *, excluding_runs: Sequence[str] = ()) -> set[str]:
        """Every blob digest named by a manifest entry of a run not in ``excluding_runs``."""
