"""Runs, their params, tags and metric histories in SQL."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from modelyard.domain.entities import (
    LifecycleStage,
    LogBatch,
    Metric,
    NewRun,
    Run,
    RunEnd,
    RunInfo,
    RunStatus,
    ViewType,
)
from modelyard.domain.history import HistoryColumns
from modelyard.domain.paging import Page
from modelyard.domain.search import Expr, OrderKey
from modelyard.errors import (
    Conflict,
    ExperimentNotFound,
    InvalidState,
    NotFound,
    ParamOverwrite,
    RunNotFound,
)
from modelyard.stores.sql import history
from modelyard.stores.sql import schema as s
from modelyard.stores.sql.artifact_index import write_manifest
from modelyard.stores.sql.base import SqlBase
from modelyard.stores.sql.convert import to_metric, to_run_info
from modelyard.stores.sql.search_pages import SearchScope, count_run_rows, search_run_rows


def load_runs(conn: Connection, infos: Sequence[RunInfo]) -> list[Run]:
    """Attach params, latest metrics and tags to run infos with three queries in all."""
    ids = [i.run_id for i in infos]
    params: dict[str, dict[str, str]] = defaultdict(dict)
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    metrics: dict[str, dict[str, Metric]] = defaultdict(dict)
    # Chunked so the IN list stays well inside every driver's parameter limit.
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for r in conn.execute(select(s.params).where(s.params.c.run_id.in_(chunk))):
            params[r.run_id][r.key] = r.value
        for r in conn.execute(select(s.tags).where(s.tags.c.run_id.in_(chunk))):
            tags[r.run_id][r.key] = r.value
        for r in conn.execute(select(s.latest_metrics).where(s.latest_metrics.c.run_id.in_(chunk))):
            metrics[r.run_id][r.key] = to_metric(r)
    return [Run(i, params[i.run_id], metrics[i.run_id], tags[i.run_id]) for i in infos]


def _latest_per_key(points: Sequence[Metric]) -> list[Metric]:
    """The latest point of each key, in key order (so that concurrent writers lock the keys'
    ``latest_metrics`` rows in one order and never deadlock)."""
    best: dict[str, Metric] = {}
    for m in points:
        cur = best.get(m.key)
        if cur is None or m.sort_key() > cur.sort_key():
            best[m.key] = m
    return [best[k] for k in sorted(best)]


_METRIC_COLUMNS = ("run_id", "key", "value", "is_nan", "step", "timestamp")
_LATEST_COLUMNS = (*_METRIC_COLUMNS, "pending")


def _metric_row(run_id: str, m: Metric) -> tuple[object, ...]:
    value = m.value
    nan = value != value  # NaN is the only float unequal to itself
    return (run_id, m.key, None if nan else value, nan, m.step, m.timestamp)


class SqlRunStore(SqlBase):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._latest_upsert = self._latest_statement()

    def _latest_statement(self) -> Any:
        stmt = self._insert(s.latest_metrics)
        new, old = stmt.excluded, s.latest_metrics.c
        # NaN is stored as NULL: it ranks below every number when steps and timestamps tie.
        newer = or_(
            new.step > old.step,
            and_(new.step == old.step, new.timestamp > old.timestamp),
            and_(
                new.step == old.step,
                new.timestamp == old.timestamp,
                new.value.is_not(None),
                or_(old.value.is_(None), new.value > old.value),
            ),
        )
        # No WHERE: the count of rows waiting to be packed grows with every batch, newer or not.
        set_: dict[str, Any] = {c: case((newer, getattr(new, c)), else_=getattr(old, c))
                                for c in ("value", "is_nan", "step", "timestamp")}
        set_["pending"] = old.pending + new.pending
        return stmt.on_conflict_do_update(index_elements=["run_id", "key"], set_=set_)

    # ------------------------------------------------------------------ lifecycle

    def _info(self, conn: Connection, run_id: str) -> RunInfo:
        row = conn.execute(select(s.runs).where(s.runs.c.run_id == run_id)).first()
        if row is None:
            raise RunNotFound(f"run {run_id!r} does not exist", field="run_id")
        return to_run_info(row)

    def _active_info(self, conn: Connection, run_id: str) -> RunInfo:
        info = self._info(conn, run_id)
        if info.lifecycle_stage is not LifecycleStage.ACTIVE:
            raise InvalidState(
                f"run {run_id} is deleted; restore it before changing it", field="run_id"
            )
        return info

    def _insert_run(self, conn: Connection, run_id: str, new: NewRun,
                    tags: dict[str, str], end: RunEnd | None = None) -> bool:
        """Insert a RUNNING run (or one already ended with ``end``), or accept a repeat of the
        same creation (a retry).

        Returns:
            True when the run was created now, False when it existed with these values.
        Raises:
            ExperimentNotFound; InvalidState (deleted experiment); RunNotFound (parent);
            Conflict (the id is taken by a run created with other values).
        """
        exp = conn.execute(
            select(s.experiments.c.lifecycle_stage).where(
                s.experiments.c.experiment_id == int(new.experiment_id)
            )
        ).first()
        if exp is None:
            raise ExperimentNotFound(
                f"experiment {new.experiment_id} does not exist", field="experiment_id"
            )
        if exp.lifecycle_stage != LifecycleStage.ACTIVE.value:
            raise InvalidState(
                f"experiment {new.experiment_id} is deleted; restore it to add runs",
                field="experiment_id",
            )
        if new.parent_run_id is not None:
            self._info(conn, new.parent_run_id)
        inserted = conn.execute(
            self._insert(s.runs).values(
                run_id=run_id,
                experiment_id=int(new.experiment_id),
                run_name=new.run_name,
                user_id=new.user_id,
                status=RunStatus.RUNNING.value if end is None else end.status.value,
                start_time=new.start_time,
                end_time=None if end is None else end.end_time,
                lifecycle_stage=LifecycleStage.ACTIVE.value,
                parent_run_id=new.parent_run_id,
            ).on_conflict_do_nothing(index_elements=["run_id"]).returning(s.runs.c.run_id)
        ).first()
        if inserted is None:
            self._same_creation(conn, run_id, new, tags)
            return False
        if tags:
            conn.execute(
                s.tags.insert(),
                [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()],
            )
        return True

    def _same_creation(self, conn: Connection, run_id: str, new: NewRun,
                       tags: dict[str, str]) -> None:
        """Raises Conflict unless the existing run ``run_id`` was created as ``new`` says."""
        info = self._info(conn, run_id)
        stored = NewRun(info.experiment_id, info.run_name, info.user_id, info.start_time,
                        info.parent_run_id)
        if stored != new:
            raise Conflict(f"run {run_id} already exists with other values; a create may be "
                           "repeated only with the same values", field="run_id")
        if tags:
            held = {key: value for key, value in conn.execute(
                select(s.tags.c.key, s.tags.c.value).where(
                    s.tags.c.run_id == run_id, s.tags.c.key.in_(list(tags))))}
            if held != tags:
                raise Conflict(f"run {run_id} already exists with other tags; a create may be "
                               "repeated only with the same values", field="run_id")

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
        new = NewRun(str(int(experiment_id)), run_name, user_id, start_time, parent_run_id)
        for attempt in (1, 2):
            try:
                with self._write() as conn:
                    if not self._insert_run(conn, run_id, new, tags):
                        return load_runs(conn, [self._info(conn, run_id)])[0]
                break
            except IntegrityError:
                # A concurrent request created it between our read and our insert (PostgreSQL;
                # SQLite writers are serialised): read it again, as a repeat.
                if attempt == 2:
                    raise
        # Built from what was just written: a new run has no params or metrics yet.
        info = RunInfo(run_id=run_id, experiment_id=new.experiment_id, run_name=run_name,
                       user_id=user_id, status=RunStatus.RUNNING, start_time=start_time,
                       end_time=None, lifecycle_stage=LifecycleStage.ACTIVE,
                       parent_run_id=parent_run_id)
        return Run(info, {}, {}, dict(tags))

    def get_run(self, run_id: str) -> Run:
        with self._read() as conn:
            return load_runs(conn, [self._info(conn, run_id)])[0]

    def update_run(
        self,
        run_id: str,
        *,
        status: RunStatus | None,
        end_time: int | None,
        run_name: str | None,
    ) -> Run:
        values: dict[str, object] = {}
        if status is not None:
            values["status"] = status.value
            if not status.is_terminal:
                values["end_time"] = None  # a run that runs again (resumed) has not ended
        if end_time is not None:
            values["end_time"] = end_time
        if run_name is not None:
            values["run_name"] = run_name
        with self._write() as conn:
            self._info(conn, run_id)
            if values:
                conn.execute(update(s.runs).where(s.runs.c.run_id == run_id).values(**values))
            return load_runs(conn, [self._info(conn, run_id)])[0]

    def set_run_lifecycle(self, run_id: str, *, stage: LifecycleStage, now: int) -> None:
        with self._write() as conn:
            info = self._info(conn, run_id)
            if info.lifecycle_stage is stage:
                # Deleting twice must not restart the gc retention clock.
                raise InvalidState(f"run {run_id} is already {stage.value}", field="run_id")
            if stage is LifecycleStage.ACTIVE:
                exp = conn.execute(
                    select(s.experiments.c.lifecycle_stage).where(
                        s.experiments.c.experiment_id == int(info.experiment_id)
                    )
                ).scalar_one()
                if exp != LifecycleStage.ACTIVE.value:
                    raise InvalidState(
                        f"run {run_id} belongs to deleted experiment {info.experiment_id}; "
                        "restore the experiment first",
                        field="run_id",
                    )
            deleted = now if stage is LifecycleStage.DELETED else None
            conn.execute(
                update(s.runs)
                .where(s.runs.c.run_id == run_id)
                .values(lifecycle_stage=stage.value, deleted_time=deleted)
            )

    # ------------------------------------------------------------------ logging

    def log_batch(self, run_id: str, batch: LogBatch, *, batch_id: str | None,
                  create: NewRun | None = None, end: RunEnd | None = None,
                  release_leases: Sequence[str] = ()) -> bool:
        kwargs: dict[str, Any] = {"batch_id": batch_id, "create": create, "end": end,
                                  "release_leases": release_leases}
        try:
            return self._log_batch(run_id, batch, **kwargs)
        except IntegrityError:
            if create is None:
                raise
            # Two first batches of one new run at once: the other created it; ours goes on.
            return self._log_batch(run_id, batch, **kwargs)

    def _log_batch(self, run_id: str, batch: LogBatch, *, batch_id: str | None,
                   create: NewRun | None, end: RunEnd | None,
                   release_leases: Sequence[str]) -> bool:
        with self._write() as conn:
            # A run this batch creates is new: nothing of it can be deleted, conflict or be
            # due for packing, and its end is written with it.
            fresh = create is not None and self._insert_run(conn, run_id, create, {}, end)
            if not fresh:
                self._active_info(conn, run_id)
            if batch_id is not None:
                # RETURNING, not rowcount: SQLAlchemy does not report rowcount for INSERT (it is
                # -1 on psycopg), which let every retry on PostgreSQL be stored again.
                claimed = conn.execute(
                    self._insert(s.ingested_batches)
                    .values(batch_id=batch_id, run_id=run_id, created_time=_now_ms())
                    .on_conflict_do_nothing(index_elements=["batch_id"])
                    .returning(s.ingested_batches.c.batch_id)
                ).first()
                if claimed is None:
                    return False
            if batch.params:
                self._write_params(conn, run_id, batch, check=not fresh)
            if batch.tags:
                last = {t.key: t.value for t in batch.tags}  # one row per key per statement
                stmt = self._insert(s.tags)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["run_id", "key"], set_={"value": stmt.excluded.value}
                    ),
                    [{"run_id": run_id, "key": k, "value": v} for k, v in last.items()],
                )
            if batch.metrics:
                self._log_metrics(conn, run_id, batch.metrics, fresh=fresh)
            if batch.artifacts or release_leases:
                write_manifest(conn, self._insert(s.artifacts), run_id, batch.artifacts,
                               release_leases=release_leases)
            if end is not None and not fresh:
                conn.execute(update(s.runs).where(s.runs.c.run_id == run_id).values(
                    status=end.status.value, end_time=end.end_time))
        return True

    def _log_metrics(self, conn: Connection, run_id: str, points: Sequence[Metric], *,
                     fresh: bool = False) -> None:
        """Few points of a key become rows, many a chunk (``stores.sql.history``). A ``fresh``
        run holds only this batch's rows: a key is due for packing only if it wrote a chunk."""
        direct, as_rows, added = history.split_batch(points)
        if as_rows:
            self._append(conn, s.metrics, _METRIC_COLUMNS,
                         [_metric_row(run_id, m) for m in as_rows])
        latest = _latest_per_key(points)
        self._bulk(conn, self._latest_upsert, _LATEST_COLUMNS,
                   [(*_metric_row(run_id, m), added.get(m.key, 0)) for m in latest])
        if not fresh or direct:
            history.pack_due(conn, run_id, direct, {m.key for m in latest})

    def _write_params(self, conn: Connection, run_id: str, batch: LogBatch, *,
                      check: bool = True) -> None:
        conn.execute(
            self._insert(s.params).on_conflict_do_nothing(index_elements=["run_id", "key"]),
            [{"run_id": run_id, "key": k, "value": v}
             for k, v in {p.key: p.value for p in batch.params}.items()],
        )
        if not check:  # a new run held no params before this batch
            return
        # After the insert (inside the same transaction) every key has exactly one stored value:
        # any difference from what was sent is an overwrite attempt, and rolls the batch back.
        wanted = {p.key: p.value for p in batch.params}
        stored = conn.execute(
            select(s.params.c.key, s.params.c.value).where(
                s.params.c.run_id == run_id, s.params.c.key.in_(list(wanted))
            )
        )
        for key, value in stored:
            if wanted[key] != value:
                raise ParamOverwrite(
                    f"param {key!r} was already logged with value {value[:100]!r}; params are "
                    f"immutable, refusing new value {wanted[key][:100]!r}",
                    field=f"params.{key}",
                )

    def delete_tag(self, run_id: str, key: str) -> None:
        with self._write() as conn:
            self._active_info(conn, run_id)
            result = conn.execute(
                delete(s.tags).where(s.tags.c.run_id == run_id, s.tags.c.key == key)
            )
            if result.rowcount == 0:
                raise NotFound(f"run {run_id} has no tag {key!r}", field="key")

    def get_metric_history(
        self, run_id: str, key: str, *, max_points: int | None = None
    ) -> list[Metric]:
        with self._snapshot() as conn:
            self._info(conn, run_id)
            if max_points is None:
                cols = history.full_history(conn, run_id, key)
            else:
                cols = history.downsample(conn, run_id, key, max_points)
        return cols.to_points(key)

    def iter_metric_history(
        self, run_id: str, key: str, *, page_size: int = history.PAGE_SIZE
    ) -> Iterator[HistoryColumns]:
        with self._read() as conn:
            self._info(conn, run_id)  # refused now, not at the first page
        return history.history_pages(self._snapshot, self._read, run_id, key,
                                     page_size=page_size)

    # ------------------------------------------------------------------ search

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
        scope = SearchScope(experiment_ids, view)
        with self._read() as conn:
            infos, token = search_run_rows(
                conn,
                scope,
                filter_expr=filter_expr,
                order_by=order_by,
                max_results=max_results,
                page_token=page_token,
            )
            # counted in the same read transaction: the total agrees with the page
            total = count_run_rows(conn, scope, filter_expr) if include_total else None
            return Page(load_runs(conn, infos), token, total)

    def count_runs(
        self, experiment_ids: Sequence[str] | None, *, filter_expr: Expr | None, view: ViewType
    ) -> int:
        with self._read() as conn:
            return count_run_rows(conn, SearchScope(experiment_ids, view), filter_expr)


def _now_ms() -> int:
    return int(time.time() * 1000)
