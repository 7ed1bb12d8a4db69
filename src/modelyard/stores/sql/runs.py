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
    Run,
    RunInfo,
    RunStatus,
    ViewType,
)
from modelyard.domain.history import HistoryColumns
from modelyard.domain.paging import Page
from modelyard.domain.search import Expr, OrderKey
from modelyard.errors import (
    ExperimentNotFound,
    InvalidState,
    NotFound,
    ParamOverwrite,
    RunNotFound,
)
from modelyard.stores.sql import history
from modelyard.stores.sql import schema as s
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
        with self._write() as conn:
            exp = conn.execute(
                select(s.experiments.c.lifecycle_stage).where(
                    s.experiments.c.experiment_id == int(experiment_id)
                )
            ).first()
            if exp is None:
                raise ExperimentNotFound(
                    f"experiment {experiment_id} does not exist", field="experiment_id"
                )
            if exp.lifecycle_stage != LifecycleStage.ACTIVE.value:
                raise InvalidState(
                    f"experiment {experiment_id} is deleted; restore it to add runs",
                    field="experiment_id",
                )
            if parent_run_id is not None:
                self._info(conn, parent_run_id)
            try:
                conn.execute(
                    s.runs.insert().values(
                        run_id=run_id,
                        experiment_id=int(experiment_id),
                        run_name=run_name,
                        user_id=user_id,
                        status=RunStatus.RUNNING.value,
                        start_time=start_time,
                        end_time=None,
                        lifecycle_stage=LifecycleStage.ACTIVE.value,
                        parent_run_id=parent_run_id,
                    )
                )
            except IntegrityError:
                raise InvalidState(f"run {run_id} already exists", field="run_id") from None
            if tags:
                conn.execute(
                    s.tags.insert(),
                    [{"run_id": run_id, "key": k, "value": v} for k, v in tags.items()],
                )
        # Built from what was just written: a new run has no params or metrics yet.
        info = RunInfo(run_id=run_id, experiment_id=str(int(experiment_id)), run_name=run_name,
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

    def log_batch(self, run_id: str, batch: LogBatch, *, batch_id: str | None) -> bool:
        with self._write() as conn:
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
                self._write_params(conn, run_id, batch)
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
                self._log_metrics(conn, run_id, batch.metrics)
        return True

    def _log_metrics(self, conn: Connection, run_id: str, points: Sequence[Metric]) -> None:
        """Few points of a key become rows, many a chunk (``stores.sql.history``)."""
        direct, as_rows, added = history.split_batch(points)
        if as_rows:
            self._append(conn, s.metrics, _METRIC_COLUMNS,
                         [_metric_row(run_id, m) for m in as_rows])
        latest = _latest_per_key(points)
        self._bulk(conn, self._latest_upsert, _LATEST_COLUMNS,
                   [(*_metric_row(run_id, m), added.get(m.key, 0)) for m in latest])
        history.pack_due(conn, run_id, direct, {m.key for m in latest})

    def _write_params(self, conn: Connection, run_id: str, batch: LogBatch) -> None:
        conn.execute(
            self._insert(s.params).on_conflict_do_nothing(index_elements=["run_id", "key"]),
            [{"run_id": run_id, "key": k, "value": v}
             for k, v in {p.key: p.value for p in batch.params}.items()],
        )
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
