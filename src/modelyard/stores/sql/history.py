"""Metric histories in SQL: appended as rows, packed into chunks, read as numpy columns.

A history lives in two tiers (``schema.MetricRow``, ``schema.MetricChunkRow``). A batch that
brings a key few points appends them as rows; once a key holds ``pack_threshold(key)`` rows
(2,048 to 4,095, spread by key so that keys logged together are not all packed by the same
batch) they are packed into one chunk and deleted. A batch that brings a key ``PACK_AT`` points
or more writes them as chunks directly, taking the key's rows along. So every row of a history
is newer than its chunks, a history holds at most ~4,000 rows, and reading a million points
means reading a few hundred blobs instead of a million rows.

On PostgreSQL the key's ``latest_metrics`` row, upserted before any packing, serialises the
writers of one history: a packer takes (``DELETE ... RETURNING``) every committed row of it, and
rows another writer has appended but not yet committed stay rows, counted in ``pending`` when
that writer's upsert, which waits for the lock, commits them.

Reading (``full_history``, ``downsample``, ``history_pages``) first takes the list of chunks and
the rows in one snapshot (REPEATABLE READ on PostgreSQL), then the chunks' bytes, asked by run,
key and id (chunks are immutable, so later transactions may fetch them); ``stores.sql.chunks``
merges the parts, ``stores.sql.downsample`` downsamples them.
"""

from __future__ import annotations

import gc
import json
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

import numpy as np
from sqlalchemy import Connection, bindparam, delete, select, text, update

from modelyard.domain.entities import Metric
from modelyard.domain.history import HistoryColumns, bucket_count
from modelyard.errors import RunNotFound
from modelyard.stores.sql import schema as s
from modelyard.stores.sql.chunks import (
    EMPTY,
    Part,
    concat,
    in_history_order,
    merge,
    overlap_groups,
    pack,
    split,
    unpack,
)
from modelyard.stores.sql.downsample import Downsampler

PACK_AT = 2048
"""Rows of one key that are packed into a chunk (plus up to as many again, by key)."""
CHUNK_MAX = 65536
"""Points in one chunk at most (1.5 MiB)."""
PAGE_SIZE = 65536
"""Points per page of a streamed history."""
FETCH_POINTS = 1 << 18
"""Points whose chunks are fetched by one query (6 MiB): small enough to stay in memory the
allocator keeps, which fresh pages (a page fault each) would cost more than the queries."""

_m, _c, _l = s.metrics.c, s.metric_chunks.c, s.latest_metrics.c


def _where(cols: Any) -> Any:
    # Bind names unlike the column names, which an UPDATE reserves for its SET clause.
    return (cols.run_id == bindparam("run")) & (cols.key == bindparam("metric"))


_CHUNK_LIST = (select(_c.chunk_id, _c.n, _c.first_step, _c.last_step, _c.nan_count)
               .where(_where(_c)).order_by(_c.chunk_id))
_ROWS = select(_m.id, _m.step, _m.timestamp, _m.value).where(_where(_m)).order_by(_m.id)
# Packing takes the rows it deletes; RETURNING promises no order, so they are sorted by id.
_TAKE_ROWS = delete(s.metrics).where(_where(_m)).returning(
    _m.id, _m.step, _m.timestamp, _m.value)
# The ids arrive as one parameter: a JSON array (SQLite) or an array (PostgreSQL). Asked by
# run and key too, so an id can never name another history's chunk.
_CHUNK_DATA = {
    "sqlite": text("SELECT chunk_id, data FROM metric_chunks WHERE run_id = :run "
                   "AND key = :metric AND chunk_id IN (SELECT value FROM json_each(:ids))"),
    "postgresql": text("SELECT chunk_id, data FROM metric_chunks WHERE run_id = :run "
                       "AND key = :metric AND chunk_id = ANY(CAST(:ids AS BIGINT[]))"),
}
_DUE = select(_l.key, _l.pending).where(_l.run_id == bindparam("run"),
                                       _l.pending >= bindparam("least"))
_PACKED = update(s.latest_metrics).where(_where(_l)).values(
    pending=_l.pending - bindparam("packed"))


def pack_threshold(key: str) -> int:
    """How many rows of ``key`` trigger packing: from ``PACK_AT`` to twice that, by key."""
    return PACK_AT + zlib.crc32(key.encode()) % PACK_AT


# ---------------------------------------------------------------------------- writing


def split_batch(
    points: Sequence[Metric],
) -> tuple[dict[str, list[Metric]], list[Metric], dict[str, int]]:
    """The keys a batch brings enough points of to write as chunks (with their points), the
    points to append as rows (in logging order), and how many rows each key gets."""
    by_key: dict[str, list[Metric]] = {}
    for m in points:
        by_key.setdefault(m.key, []).append(m)
    direct = {k: v for k, v in by_key.items() if len(v) >= PACK_AT}
    added = {k: len(v) for k, v in by_key.items() if k not in direct}
    if not direct:
        return direct, list(points), added
    return direct, [m for m in points if m.key not in direct], added


def pack_due(conn: Connection, run_id: str, direct: dict[str, list[Metric]],
             keys: Collection[str]) -> None:
    """Write ``direct``'s points as chunks (with their keys' rows) and pack the rows of every
    key of ``keys`` (the batch's) that reached its threshold.

    Call after the batch's ``latest_metrics`` upsert: on PostgreSQL it holds the lock on each
    of ``keys`` that keeps other writers of those histories out until this one commits.
    """
    due = _all(conn, _DUE, {"run": run_id, "least": 1 if direct else PACK_AT})
    chunks: list[dict[str, Any]] = []
    unpacked = dict(direct)
    for key, pending in due:
        if key in direct or (key in keys and pending >= pack_threshold(key)):
            chunks += _pack_rows(conn, run_id, key, unpacked.pop(key, None))
    for key, points in unpacked.items():
        cols = HistoryColumns.from_points(points)
        chunks += _chunk_rows(run_id, key, in_history_order(cols))
    if chunks:
        conn.execute(s.metric_chunks.insert(), chunks)


def _pack_rows(conn: Connection, run_id: str, key: str,
               more: list[Metric] | None) -> list[dict[str, Any]]:
    """Take the key's rows (all committed ones: this transaction holds the key's lock) and
    ``more`` after them: the chunks they make."""
    series = {"run": run_id, "metric": key}
    rows = sorted(_all(conn, _TAKE_ROWS, series))
    taken = [_row_columns(rows)]
    if more:
        taken.append(HistoryColumns.from_points(more))
    if rows:
        conn.execute(_PACKED, {**series, "packed": len(rows)})
    return _chunk_rows(run_id, key, in_history_order(concat(taken)))


def _chunk_rows(run_id: str, key: str, cols: HistoryColumns) -> list[dict[str, Any]]:
    """``cols`` (in history order) as ``metric_chunks`` rows of at most ``CHUNK_MAX`` points."""
    rows = []
    for piece in split(cols, CHUNK_MAX):
        n, first_step, last_step, nan_count = _summary(piece)
        rows.append({"run_id": run_id, "key": key, "n": n, "first_step": first_step,
                     "last_step": last_step, "nan_count": nan_count, "data": pack(piece)})
    return rows


def _summary(cols: HistoryColumns) -> tuple[int, int, int, int]:
    """Points, first and last step, NaN count of non-empty columns in history order."""
    return (len(cols), int(cols.steps[0]), int(cols.steps[-1]),
            int(np.count_nonzero(np.isnan(cols.values))))


def _row_columns(rows: Sequence[tuple[Any, ...]]) -> HistoryColumns:
    if not rows:
        return EMPTY
    _ids, steps, stamps, values = zip(*rows, strict=True)
    # NULL (a NaN) becomes NaN in a float64 array.
    return HistoryColumns(np.array(steps, np.int64), np.array(stamps, np.int64),
                          np.array(values, np.float64))


# ---------------------------------------------------------------------------- reading

Fetch = Callable[[Sequence[Part]], dict[int, HistoryColumns]]


def _list_parts(conn: Connection, run_id: str, key: str) -> list[Part]:
    """The history's chunks in logging order, then its rows (read now).

    ``conn`` must hold one snapshot for both statements (``SqlBase._snapshot``): a packing
    committed between them would leave its points in neither.
    """
    series = {"run": run_id, "metric": key}
    found = [Part(rank, *row) for rank, row in enumerate(_all(conn, _CHUNK_LIST, series))]
    cols = in_history_order(_row_columns(_all(conn, _ROWS, series)))
    if len(cols):
        found.append(Part(len(found), None, *_summary(cols), cols=cols))
    return found


def _load(conn: Connection, run_id: str, key: str, wanted: Sequence[Part]
         ) -> dict[int, HistoryColumns]:
    """Each part's columns by rank, its chunks fetched from the database.

    Raises:
        RunNotFound: a chunk is gone (the run was purged since the parts were listed).
    """
    out = {p.rank: p.cols for p in wanted if p.cols is not None}
    ids = {p.chunk_id: p for p in wanted if p.chunk_id is not None}
    if not ids:
        return out
    listed = list(ids)
    pg = conn.dialect.name == "postgresql"
    args = {"run": run_id, "metric": key, "ids": listed if pg else json.dumps(listed)}
    for chunk_id, data in _all(conn, _CHUNK_DATA[conn.dialect.name], args):
        part = ids.pop(chunk_id)
        out[part.rank] = unpack(bytes(data), part.n)
    if ids:
        raise RunNotFound("the run was purged while its metric history was being read",
                          field="run_id")
    return out


def _pieces(listed: Sequence[Part], fetch: Fetch) -> Iterator[HistoryColumns]:
    """The history in order, as pieces of about ``FETCH_POINTS`` points: consecutive overlap
    groups (``chunks.overlap_groups``), each merged, joined; ``fetch`` loads their parts."""
    groups = overlap_groups(listed)
    while groups:
        take, size = 0, 0
        while take < len(groups) and (take == 0 or size < FETCH_POINTS):
            size += sum(p.n for p in groups[take])
            take += 1
        batch, groups = groups[:take], groups[take:]
        loaded = fetch([p for g in batch for p in g])
        yield concat([merge([loaded[p.rank] for p in g]) for g in batch])


def full_history(conn: Connection, run_id: str, key: str) -> HistoryColumns:
    """Every point of one history, in history order (``conn``: one snapshot)."""
    return _whole(conn, run_id, key, _list_parts(conn, run_id, key))


def _whole(conn: Connection, run_id: str, key: str, listed: Sequence[Part]) -> HistoryColumns:
    return concat(list(_pieces(listed, lambda ps: _load(conn, run_id, key, ps))))


def downsample(conn: Connection, run_id: str, key: str, max_points: int) -> HistoryColumns:
    """At most ``max_points`` points keeping the history's shape (``domain.history``;
    ``conn``: one snapshot)."""
    listed = _list_parts(conn, run_id, key)
    if sum(p.n for p in listed) <= max_points:
        return _whole(conn, run_id, key, listed)
    has_nan = any(p.nan_count for p in listed)
    sampler = Downsampler(min(p.first_step for p in listed), max(p.last_step for p in listed),
                          bucket_count(max_points, has_nan=has_nan))
    # Pieces come in history order, so a point's place in them is a valid tie-breaking order.
    order = 0
    for piece in _pieces(listed, lambda ps: _load(conn, run_id, key, ps)):
        sampler.feed(piece, order)
        order += len(piece)
    return sampler.result()


def history_pages(
    snapshot: Callable[[], AbstractContextManager[Connection]],
    read: Callable[[], AbstractContextManager[Connection]],
    run_id: str,
    key: str,
    *,
    page_size: int,
) -> Iterator[HistoryColumns]:
    """The full history in pages of at most ``page_size`` points, as it was when the first
    page was asked for (its parts are listed in one ``snapshot``). Chunks never change, so
    they are fetched in short ``read`` transactions of their own as the pages are consumed:
    no connection is held while the caller writes a page out, and memory holds one fetch
    (about ``FETCH_POINTS`` points) or one group of chunks whose steps overlap."""
    with snapshot() as conn:
        listed = _list_parts(conn, run_id, key)

    def fetch(wanted: Sequence[Part]) -> dict[int, HistoryColumns]:
        with read() as conn:
            return _load(conn, run_id, key, wanted)

    for piece in _pieces(listed, fetch):
        yield from split(piece, page_size)


# ---------------------------------------------------------------------------- the driver

_compiled: dict[tuple[str, int], tuple[str, tuple[str, ...] | None]] = {}


def _all(conn: Connection, stmt: Any, params: dict[str, Any]) -> list[Any]:
    """Run ``stmt`` on the driver's own cursor inside ``conn``'s transaction: plain tuples,
    without SQLAlchemy's per-row result objects; PostgreSQL answers in its binary format
    (a chunk's bytes as they are, not as hex text)."""
    key = (conn.dialect.name, id(stmt))
    found = _compiled.get(key)
    if found is None:
        compiled = stmt.compile(dialect=conn.dialect)
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        found = _compiled[key] = (str(compiled), order)
    sql, order = found
    args: Any = params if order is None else [params[k] for k in order]
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql":
            cursor.execute(sql, args, binary=True)
        else:
            cursor.execute(sql, args)
        with _gc_paused():
            return cast(list[Any], cursor.fetchall())
    finally:
        cursor.close()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a large fetch: it would otherwise run every
    few hundred rows over tuples that cannot form cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
