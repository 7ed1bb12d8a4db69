"""Tracking use cases: experiments, runs, logging, search and artifacts.

The service validates every input with ``modelyard.domain.validation`` (the same rules in
embedded and server mode), generates ids, names and times, and calls the injected stores.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from modelyard.artifacts.paths import normalize_artifact_path
from modelyard.domain import validation as v
from modelyard.domain.entities import (
    ArtifactEntry,
    Experiment,
    LifecycleStage,
    LogBatch,
    Metric,
    Run,
    RunStatus,
    Tag,
    ViewType,
)
from modelyard.domain.history import HistoryColumns
from modelyard.domain.names import new_run_id, new_run_name
from modelyard.domain.paging import Page
from modelyard.domain.retention import ABANDONED_AFTER_MS
from modelyard.domain.search import parse_filter, parse_order_by
from modelyard.errors import ExperimentNotFound, InvalidArgument
from modelyard.tracking.artifact_writes import publish_artifact
from modelyard.tracking.gc import GcReport, collect_garbage

if TYPE_CHECKING:
    from modelyard.artifacts.protocol import BlobStore
    from modelyard.artifacts.uploads import UploadArea
    from modelyard.stores.protocols import ArtifactIndex, ExperimentStore, Maintenance, RunStore


_BATCH_ID_RE = re.compile(r"^(?=[-]*[A-Za-z0-9])[A-Za-z0-9-]{8,64}\Z")


def now_ms() -> int:
    return int(time.time() * 1000)


def _tags(tags: dict[str, str] | None, *, allow_system: bool = True) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        tag = v.validate_tag(Tag(key, value), allow_system=allow_system)
        out[tag.key] = tag.value
    return out


def _view(view: ViewType | str) -> ViewType:
    try:
        return ViewType(view)
    except ValueError:
        raise InvalidArgument(
            f"view must be one of {', '.join(x.value for x in ViewType)}", field="view"
        ) from None


def _experiment_scope(experiment_ids: Sequence[str] | None) -> list[str] | None:
    """Validated experiment ids; None means every experiment (an empty list is a mistake)."""
    if experiment_ids is None:
        return None
    if isinstance(experiment_ids, str) or not experiment_ids:
        raise InvalidArgument(
            "experiment_ids must be a non-empty list (omit it to search every experiment)",
            field="experiment_ids",
        )
    return [v.validate_experiment_id(e, field="experiment_ids") for e in experiment_ids]


class TrackingService:
    """Every tracking use case, over injected stores."""

    def __init__(
        self,
        *,
        experiments: ExperimentStore,
        runs: RunStore,
        artifact_index: ArtifactIndex,
        maintenance: Maintenance,
        blobs: BlobStore,
        upload_area: UploadArea | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._experiments = experiments
        self._runs = runs
        self._index = artifact_index
        self._maintenance = maintenance
        self._blobs = blobs
        self._upload_area = upload_area  # swept by garbage collection when given
        self._clock = clock

    # ------------------------------------------------------------------ experiments

    def create_experiment(
        self, name: str, *, description: str = "", tags: dict[str, str] | None = None
    ) -> Experiment:
        name = v.validate_experiment_name(name)
        exp_id = self._experiments.create_experiment(
            name, description=v.validate_description(description), tags=_tags(tags),
            now=self._clock(),
        )
        return self._experiments.get_experiment(exp_id)

    def get_experiment(self, experiment_id: str) -> Experiment:
        return self._experiments.get_experiment(v.validate_experiment_id(experiment_id))

    def get_experiment_by_name(self, name: str) -> Experiment:
        name = v.validate_experiment_name(name)
        exp = self._experiments.get_experiment_by_name(name)
        if exp is None:
            raise ExperimentNotFound(f"no experiment is named {name!r}", field="name")
        return exp

    def list_experiments(
        self,
        *,
        view: ViewType | str = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page[Experiment]:
        return self._experiments.list_experiments(
            view=_view(view), max_results=v.validate_max_results(max_results),
            page_token=page_token,
        )

    def update_experiment(
        self, experiment_id: str, *, name: str | None = None, description: str | None = None
    ) -> Experiment:
        experiment_id = v.validate_experiment_id(experiment_id)
        self._experiments.update_experiment(
            experiment_id,
            name=None if name is None else v.validate_experiment_name(name),
            description=None if description is None else v.validate_description(description),
            now=self._clock(),
        )
        return self._experiments.get_experiment(experiment_id)

    def delete_experiment(self, experiment_id: str) -> None:
        self._experiments.set_experiment_lifecycle(
            v.validate_experiment_id(experiment_id), stage=LifecycleStage.DELETED,
            now=self._clock(),
        )

    def restore_experiment(self, experiment_id: str, *, new_name: str | None = None) -> None:
        """Restore a deleted experiment and the runs deleted with it, optionally renaming it
        (needed when an active experiment has taken its name meanwhile)."""
        self._experiments.set_experiment_lifecycle(
            v.validate_experiment_id(experiment_id), stage=LifecycleStage.ACTIVE,
            now=self._clock(),
            new_name=None if new_name is None else v.validate_experiment_name(new_name),
        )

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        tag = v.validate_tag(Tag(key, value))
        self._experiments.set_experiment_tag(
            v.validate_experiment_id(experiment_id), tag.key, tag.value, now=self._clock()
        )

    # ------------------------------------------------------------------ runs

    def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = None,
        user_id: str = "unknown",
        start_time: int | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> Run:
        experiment_id = v.validate_experiment_id(experiment_id)
        name = new_run_name() if run_name is None else v.validate_run_name(run_name)
        user = v.canonical_name(user_id, field="user_id", limit=256)
        start = self._clock() if start_time is None else v.validate_int64(
            start_time, field="start_time"
        )
        parent = None if parent_run_id is None else v.validate_run_id(
            parent_run_id, field="parent_run_id"
        )
        return self._runs.create_run(
            run_id=new_run_id(), experiment_id=experiment_id, run_name=name, user_id=user,
            start_time=start, tags=_tags(tags), parent_run_id=parent,
        )

    def get_run(self, run_id: str) -> Run:
        return self._runs.get_run(v.validate_run_id(run_id))

    def update_run(
        self,
        run_id: str,
        *,
        status: RunStatus | str | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> Run:
        run_id = v.validate_run_id(run_id)
        new_status: RunStatus | None = None
        if status is not None:
            try:
                new_status = RunStatus(status)
            except ValueError:
                names = ", ".join(s.value for s in RunStatus)
                raise InvalidArgument(f"status must be one of {names}", field="status") from None
        if new_status is not None and new_status.is_terminal and end_time is None:
            end_time = self._clock()
        if end_time is not None:
            v.validate_int64(end_time, field="end_time")
        return self._runs.update_run(
            run_id, status=new_status, end_time=end_time,
            run_name=None if run_name is None else v.validate_run_name(run_name),
        )

    def delete_run(self, run_id: str) -> None:
        self._runs.set_run_lifecycle(
            v.validate_run_id(run_id), stage=LifecycleStage.DELETED, now=self._clock()
        )

    def restore_run(self, run_id: str) -> None:
        self._runs.set_run_lifecycle(
            v.validate_run_id(run_id), stage=LifecycleStage.ACTIVE, now=self._clock()
        )

    def log_batch(self, run_id: str, batch: LogBatch, *, batch_id: str | None = None) -> bool:
        """Validate the whole batch, then write it atomically.

        Returns:
            False when ``batch_id`` had been stored before (a retry), True otherwise.
        """
        run_id = v.validate_run_id(run_id)
        if batch_id is not None and (
            not isinstance(batch_id, str) or not 8 <= len(batch_id) <= 64
            or not _BATCH_ID_RE.match(batch_id)
        ):
            raise InvalidArgument("batch_id must be 8-64 letters, digits or '-'",
                                  field="batch_id")
        batch = v.validate_batch(batch)
        if not len(batch):
            self._runs.get_run(run_id)  # still 404 an unknown run
            return True
        return self._runs.log_batch(run_id, batch, batch_id=batch_id)

    def delete_tag(self, run_id: str, key: str) -> None:
        self._runs.delete_tag(v.validate_run_id(run_id), v.validate_key(key, field="key"))

    def get_metric_history(
        self, run_id: str, key: str, *, max_points: int | None = None
    ) -> list[Metric]:
        """Every point of one metric, or at most ``max_points`` (2-100,000) that keep its
        shape (the rule is in ``modelyard.domain.history``)."""
        return self._runs.get_metric_history(
            v.validate_run_id(run_id), v.validate_key(key, field="key"),
            max_points=None if max_points is None else v.validate_max_points(max_points),
        )

    def iter_metric_history(self, run_id: str, key: str) -> Iterator[HistoryColumns]:
        """The full history as column pages, streamed with constant memory.

        Raises:
            RunNotFound, InvalidArgument: at the call, before anything is read.
        """
        return self._runs.iter_metric_history(
            v.validate_run_id(run_id), v.validate_key(key, field="key")
        )

    def search_runs(
        self,
        experiment_ids: Sequence[str] | None,
        *,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        view: ViewType | str = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        page_token: str | None = None,
        include_total: bool = False,
    ) -> Page[Run]:
        """Runs of ``experiment_ids`` (None: every experiment) matching ``filter``, one page
        at a time; ``include_total`` also counts every match (``Page.total``)."""
        if not isinstance(include_total, bool):
            raise InvalidArgument("include_total must be true or false", field="include_total")
        return self._runs.search_runs(
            _experiment_scope(experiment_ids),
            filter_expr=parse_filter(filter),
            order_by=parse_order_by(list(order_by or ())),
            view=_view(view),
            max_results=v.validate_max_results(max_results),
            page_token=page_token,
            include_total=include_total,
        )

    def count_runs(
        self,
        experiment_ids: Sequence[str] | None,
        *,
        filter: str | None = None,
        view: ViewType | str = ViewType.ACTIVE_ONLY,
    ) -> int:
        """How many runs match, without fetching them."""
        return self._runs.count_runs(
            _experiment_scope(experiment_ids), filter_expr=parse_filter(filter), view=_view(view)
        )

    # ------------------------------------------------------------------ artifacts

    def put_artifact(self, run_id: str, path: str, chunks: Iterable[bytes]) -> ArtifactEntry:
        """Store one file's bytes as a blob, then name it in the run's manifest."""
        run_id = v.validate_run_id(run_id)
        clean = normalize_artifact_path(path)
        self._runs.get_run(run_id)  # refuse before spending I/O on an unknown run
        staged = self._blobs.stage_stream(chunks)
        # Leased while it is published, so a concurrent gc cannot take the blob.
        return publish_artifact(self._index, self._blobs, run_id=run_id, path=clean,
                                staged=staged, now=self._clock())

    def list_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]:
        prefix = normalize_artifact_path(path, allow_empty=True)
        return self._index.list_artifacts(v.validate_run_id(run_id), prefix=prefix)

    def get_artifact(self, run_id: str, path: str) -> ArtifactEntry:
        return self._index.get_artifact(v.validate_run_id(run_id), normalize_artifact_path(path))

    def open_artifact(self, run_id: str, path: str) -> tuple[ArtifactEntry, Iterator[bytes]]:
        """The manifest entry and a verifying stream of its bytes."""
        entry = self.get_artifact(run_id, path)
        return entry, self._blobs.open(entry.digest)

    def open_artifact_range(self, run_id: str, path: str, *, start: int,
                            length: int) -> Iterator[bytes]:
        """``length`` bytes of an artifact from offset ``start``; **not verified** (a part
        cannot be checked against the digest of the whole; the client checks the whole).

        Raises: ArtifactNotFound; InvalidArgument (the range lies outside the artifact).
        """
        entry = self.get_artifact(run_id, path)
        return self._blobs.open_range(entry.digest, start, length)

    # ------------------------------------------------------------------ maintenance

    def collect_garbage(self, *, older_than_ms: int, dry_run: bool = True,
                        abandoned_after_ms: int = ABANDONED_AFTER_MS) -> GcReport:
        """Purge what was deleted more than ``older_than_ms`` ago and free the blobs no run
        uses any more (``tracking.gc``); a dry run (the default) only reports.

        Raises:
            InvalidArgument: a negative or non-integer age (``tracking.gc``), a non-boolean
                ``dry_run``.
        """
        if not isinstance(dry_run, bool):
            raise InvalidArgument("dry_run must be true or false", field="dry_run")
        return collect_garbage(self._maintenance, self._blobs, uploads=self._upload_area,
                               older_than_ms=older_than_ms, now_ms=self._clock(),
                               dry_run=dry_run, abandoned_after_ms=abandoned_after_ms)
