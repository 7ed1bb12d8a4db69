"""Tracking use cases: experiments, runs, logging, search and artifacts.

The service validates every input with ``modelyard.domain.validation`` (the same rules in
embedded and server mode), generates ids, names and times, and calls the injected stores.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from modelyard.artifacts.hashing import validate_digest
from modelyard.artifacts.paths import normalize_artifact_path
from modelyard.domain import validation as v
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
    Tag,
    ViewType,
)
from modelyard.domain.history import HistoryColumns
from modelyard.domain.names import new_run_id, new_run_name
from modelyard.domain.paging import Page
from modelyard.domain.retention import ABANDONED_AFTER_MS
from modelyard.domain.search import parse_filter, parse_order_by
from modelyard.errors import ArtifactNotFound, ExperimentNotFound, InvalidArgument
from modelyard.tracking.artifact_writes import publish_artifact, require_active_run
from modelyard.tracking.gc import GcReport, collect_garbage

if TYPE_CHECKING:
    from modelyard.artifacts.protocol import BlobStore
    from modelyard.artifacts.uploads import UploadArea
    from modelyard.stores.protocols import ArtifactIndex, ExperimentStore, Maintenance, RunStore


_BATCH_ID_RE = re.compile(r"^(?=[-]*[A-Za-z0-9])[A-Za-z0-9-]{8,64}\Z")


def now_ms() -> int:
    return int(time.time() * 1000)


def _tags(tags: dict[str, str] | None, *, allow_system: bool = True) -> dict[str, str]:
    """The tags given at creation (of an experiment or a run), checked."""
    if tags is not None and len(tags) > v.MAX_CREATE_TAGS:
        raise InvalidArgument(f"{len(tags)} tags given; the limit is {v.MAX_CREATE_TAGS} "
                              "(set more afterwards, in batches)", field="tags")
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        tag = v.validate_tag(Tag(key, value), allow_system=allow_system)
        out[tag.key] = tag.value
    return out


def _stored_entry(entry: ArtifactEntry) -> ArtifactEntry:
    """A manifest entry naming a stored blob, checked: a safe path, a digest, a size."""
    return ArtifactEntry(
        normalize_artifact_path(entry.path),
        validate_digest(entry.digest, field=f"artifacts.{entry.path}"),
        v.validate_int64(entry.size, field=f"artifacts.{entry.path}"),
    )


def _view(view: ViewType | str) -> ViewType:
    try:
        return ViewType(view)
    except ValueError:
        raise InvalidArgument(
            f"view must be one of {', '.join(x.value for x in ViewType)}", field="view"
        ) from None


def _experiment_scope(experiment_ids: Sequence[str] | None) -> list[str] | None:
    """Validated experiment ids, each once; None means every experiment (an empty list is a
    mistake)."""
    if experiment_ids is None:
        return None
    if isinstance(experiment_ids, str) or not experiment_ids:
        raise InvalidArgument(
            "experiment_ids must be a non-empty list (omit it to search every experiment)",
            field="experiment_ids",
        )
    if len(experiment_ids) > v.MAX_SEARCH_EXPERIMENTS:
        raise InvalidArgument(f"{len(experiment_ids)} experiment_ids given; the limit is "
                              f"{v.MAX_SEARCH_EXPERIMENTS}", field="experiment_ids")
    return list(dict.fromkeys(
        v.validate_experiment_id(e, field="experiment_ids") for e in experiment_ids))


def _require_experiments(store: ExperimentStore, scope: list[str] | None,
                         seen: Iterable[str] = ()) -> None:
    """Refuse a search or count over an experiment that does not exist (a deleted one does),
    as the SDK and CLI do when they resolve names: without this, an unknown id reads as an
    experiment without runs.

    Args:
        seen: experiment ids of runs the search just read: they exist, at no cost. A search
            that finds runs in its only experiment (the usual one) queries nothing more.
    Raises:
        ExperimentNotFound: naming the first unknown id (field ``experiment_ids``).
    """
    if scope is None:
        return
    known = {int(e) for e in seen}
    wanted = [e for e in scope if int(e) not in known]  # 1-18 digits: "007" is 7
    missing = store.missing_experiments(wanted) if wanted else []
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ExperimentNotFound(f"experiment {missing[0]} does not exist{more}",
                                 field="experiment_ids")


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
        run_id: str | None = None,
    ) -> Run:
        """Create a RUNNING run. ``run_id`` (32 lowercase hex) lets the client choose the id;
        repeating such a create with the same values answers with the run as it is.

        Raises: InvalidArgument; ExperimentNotFound; InvalidState (deleted experiment);
        RunNotFound (parent); Conflict (the id is taken by a run created otherwise).
        """
        new = v.validate_new_run(NewRun(
            experiment_id=experiment_id,
            run_name=new_run_name() if run_name is None else run_name,
            user_id=user_id,
            start_time=self._clock() if start_time is None else start_time,
            parent_run_id=parent_run_id,
        ))
        return self._runs.create_run(
            run_id=new_run_id() if run_id is None else v.validate_run_id(run_id),
            experiment_id=new.experiment_id, run_name=new.run_name, user_id=new.user_id,
            start_time=new.start_time, tags=_tags(tags), parent_run_id=new.parent_run_id,
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
        new_status = None if status is None else v.run_status(status)
        if new_status is not None and new_status.is_terminal and end_time is None:
            end_time = self._clock()
        if end_time is not None:
            end_time = v.validate_int64(end_time, field="end_time")
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

    def log_batch(self, run_id: str, batch: LogBatch, *, batch_id: str | None = None,
                  create: NewRun | None = None, end: RunEnd | None = None) -> bool:
        """Validate the whole batch, then write it atomically: creating the run first when
        ``create`` is given (the client chose ``run_id``; idempotent as :meth:`create_run`),
        ending it last when ``end`` is given. So a short run costs one request.

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
        create = None if create is None else v.validate_new_run(create)
        end = None if end is None else v.validate_run_end(end)
        if not len(batch) and create is None and end is None:
            self._runs.get_run(run_id)  # still 404 an unknown run
            return True
        if not batch.artifacts:
            return self._runs.log_batch(run_id, batch, batch_id=batch_id, create=create,
                                        end=end)
        batch = replace(batch, artifacts=tuple(_stored_entry(e) for e in batch.artifacts))
        leases = self._lease_stored(batch.artifacts)
        try:
            stored = self._runs.log_batch(run_id, batch, batch_id=batch_id, create=create,
                                          end=end, release_leases=leases)
        except BaseException:
            self._drop_leases(leases)
            raise
        if not stored:  # a retry: the first one named them and dropped its own leases
            self._drop_leases(leases)
        return stored

    def _lease_stored(self, entries: Sequence[ArtifactEntry]) -> list[str]:
        """Lease each entry's blob, then check the store holds it with that size: a lease
        committed first means no collection can take it before the manifest names it
        (``tracking.artifact_writes`` explains the protocol).

        Raises:
            ArtifactNotFound: naming the path (``artifacts.PATH``) whose blob is not held.
        """
        leases = self._index.add_leases([e.digest for e in entries], now=self._clock())
        try:
            for e in entries:
                if not self._blobs.exists(e.digest) or self._blobs.size(e.digest) != e.size:
                    raise ArtifactNotFound(
                        f"no stored blob {e.digest} of {e.size} bytes to name as artifact "
                        f"{e.path!r}; upload the file instead", field=f"artifacts.{e.path}")
        except BaseException:
            self._drop_leases(leases)
            raise
        return leases

    def _drop_leases(self, leases: Sequence[str]) -> None:
        with contextlib.suppress(Exception):  # a stale lease only delays gc by a day
            self._index.drop_leases(leases)

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
        scope = _experiment_scope(experiment_ids)
        page = self._runs.search_runs(
            scope,
            filter_expr=parse_filter(filter),
            order_by=parse_order_by(list(order_by or ())),
            view=_view(view),
            max_results=v.validate_max_results(max_results),
            page_token=page_token,
            include_total=include_total,
        )
        # Checked after the search: the runs it found prove their experiments exist.
        _require_experiments(self._experiments, scope, (r.info.experiment_id for r in page))
        return page

    def count_runs(
        self,
        experiment_ids: Sequence[str] | None,
        *,
        filter: str | None = None,
        view: ViewType | str = ViewType.ACTIVE_ONLY,
    ) -> int:
        """How many runs match, without fetching them."""
        scope = _experiment_scope(experiment_ids)
        count = self._runs.count_runs(scope, filter_expr=parse_filter(filter), view=_view(view))
        # A run counted in the only experiment asked for proves that it exists.
        _require_experiments(self._experiments, scope,
                             scope if scope is not None and len(scope) == 1 and count else ())
        return count

    # ------------------------------------------------------------------ artifacts

    def put_artifact(self, run_id: str, path: str, chunks: Iterable[bytes]) -> ArtifactEntry:
        """Store one file's bytes as a blob, then name it in the run's manifest."""
        run_id = v.validate_run_id(run_id)
        clean = normalize_artifact_path(path)
        require_active_run(self._runs, run_id)  # before spending I/O on it
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
