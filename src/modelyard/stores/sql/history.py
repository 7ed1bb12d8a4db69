"""Metric histories in SQL: downsampled inside the database, streamed in keyset pages.

Both read only the covering index ``ix_metrics_history`` (run_id, key, step, timestamp, id,
value), which is also the history order; NaN points (stored as NULL) are found through the
partial index ``ix_metrics_nan``. The downsampling rule is documented in
``modelyard.domain.history``; here is how each database computes it without sending every
point to Python:

- SQLite: per bucket, ``SELECT id, min(value)`` over the bucket's index range. With exactly one
  ``min()``/``max()`` SQLite takes a bare column from the row holding the extreme, replacing it
  only on a strictly better value, so it is the *first* such row in index (= history) order.
  One pass for the minima, one for the maxima.
- PostgreSQL: per bucket ``min(value), max(value)`` in one pass (a LATERAL join over the bucket
  ranges), then, per bucket and extreme, the first row in history order holding that value
  (an index scan that stops at the first match: half a bucket on average).

From ``PARALLEL_BUCKETS`` buckets on, the bucket list is split in two halves computed at once on
two connections (two cores; the driver releases the GIL while the database works), which halves
the time at a million points.

Rows are fetched with the driver's own cursor (plain tuples): at a million points the per-row
cost of result objects would dominate.
"""

from __future__ import annotations

import gc
import json
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

from sqlalchemy import Connection, TextClause, text

from modelyard.domain.entities import Metric
from modelyard.domain.history import HistoryColumns, bucket_count, step_buckets

# From this many buckets on, a downsample reads two halves of the history in parallel.
PARALLEL_BUCKETS = 64
# Points per page of a streamed history: ~3 MB of Python objects, 400 kB of Arrow.
PAGE_SIZE = 16384

Row = tuple[int, int, float | None, int]  # step, timestamp, value (NULL = NaN), id

_SELECT = "SELECT step, timestamp, value, id FROM metrics"
_HISTORY = "run_id = :run_id AND key = :key"
_ORDER = "ORDER BY step, timestamp, id"

_HEAD = text(f"{_SELECT} WHERE {_HISTORY} {_ORDER} LIMIT :n")
_LAST = text(f"{_SELECT} WHERE {_HISTORY} ORDER BY step DESC, timestamp DESC, id DESC LIMIT 1")
_ALL = text(f"{_SELECT} WHERE {_HISTORY} {_ORDER}")
_AFTER = text(
    f"{_SELECT} WHERE {_HISTORY} AND (step, timestamp, id) > (:step, :ts, :id) {_ORDER} LIMIT :n"
)
_HAS_NAN_PG = text(f"SELECT 1 FROM metrics WHERE {_HISTORY} AND value IS NULL LIMIT 1")
# SQLite's planner prefers the covering index to the partial one (which holds only the NaNs),
# scanning the whole history; it has to be told.
_NANS_SQLITE = "metrics INDEXED BY ix_metrics_nan"
_HAS_NAN_SQLITE = text(f"SELECT 1 FROM {_NANS_SQLITE} WHERE {_HISTORY} AND value IS NULL LIMIT 1")
_BY_ID_SQLITE = text(f"{_SELECT} WHERE id IN (SELECT value FROM json_each(:ids))")
_BY_ID_PG = text(f"{_SELECT} WHERE id = ANY(CAST(:ids AS BIGINT[]))")

# SQLite: the bucket ranges arrive as one JSON array [[low, high], ...].
_SQLITE_RANGE = "step BETWEEN json_extract(b.value, '$[0]') AND json_extract(b.value, '$[1]')"


def _sqlite_extreme(fn: str) -> str:
    # INDEXED BY: the bare ``id`` is the first extreme *in scan order*, so the scan order must
    # be the history order whatever the planner would prefer.
    return (
        f"(SELECT CASE WHEN v IS NULL THEN NULL ELSE id END FROM (SELECT id, {fn}(value) AS v "
        f"FROM metrics INDEXED BY ix_metrics_history WHERE {_HISTORY} AND {_SQLITE_RANGE}))"
    )


_SQLITE_EXTREMES = text(
    f"SELECT {_sqlite_extreme('min')}, {_sqlite_extreme('max')} FROM json_each(:bounds) AS b"
)
_SQLITE_NANS = text(
    f"SELECT (SELECT id FROM {_NANS_SQLITE} WHERE {_HISTORY} AND value IS NULL AND {_SQLITE_RANGE} "
    f"{_ORDER} LIMIT 1) FROM json_each(:bounds) AS b"
)

# PostgreSQL: the bucket ranges arrive as arrays, unnested side by side.
_PG_BUCKETS = "unnest(CAST(:lows AS BIGINT[]), CAST(:highs AS BIGINT[]))"
_PG_MIN_MAX = text(
    f"SELECT b.lo, b.hi, mm.lo_v, mm.hi_v FROM {_PG_BUCKETS} AS b(lo, hi) "
    f"CROSS JOIN LATERAL (SELECT min(value) AS lo_v, max(value) AS hi_v FROM metrics "
    f"WHERE {_HISTORY} AND step BETWEEN b.lo AND b.hi) AS mm WHERE mm.lo_v IS NOT NULL"
)
_PG_FIRST_WITH_VALUE = text(
    f"SELECT (SELECT id FROM metrics WHERE {_HISTORY} AND step BETWEEN b.lo AND b.hi "
    f"AND value = b.v {_ORDER} LIMIT 1) FROM unnest(CAST(:lows AS BIGINT[]), "
    "CAST(:highs AS BIGINT[]), CAST(:vals AS DOUBLE PRECISION[])) AS b(lo, hi, v)"
)
_PG_NANS = text(
    f"SELECT (SELECT id FROM metrics WHERE {_HISTORY} AND value IS NULL "
    f"AND step BETWEEN b.lo AND b.hi {_ORDER} LIMIT 1) FROM {_PG_BUCKETS} AS b(lo, hi)"
)

_compiled: dict[tuple[str, int], tuple[str, tuple[str, ...] | None]] = {}


def _fetch(conn: Connection, clause: TextClause, params: dict[str, Any]) -> list[Any]:
    """Run ``clause`` on the driver's cursor inside ``conn``'s transaction: plain tuples."""
    key = (conn.dialect.name, id(clause))
    found = _compiled.get(key)
    if found is None:
        compiled = clause.compile(dialect=conn.dialect)
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        found = _compiled[key] = (str(compiled), order)
    sql, order = found
    return _execute(conn, sql, params if order is None else [params[k] for k in order])


def _execute(conn: Connection, sql: str, args: Any) -> list[Any]:
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, args)
        with _gc_paused():
            return cast(list[Any], cursor.fetchall())
    finally:
        cursor.close()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector out of a large fetch: it would otherwise run every
    few hundred rows over tuples that cannot form cycles, halving the throughput."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _metric(key: str, row: Row) -> Metric:
    value = row[2]
    return Metric(key, math.nan if value is None else value, row[0], row[1])


def full_history(conn: Connection, run_id: str, key: str) -> list[Metric]:
    """Every point of one history, in history order."""
    rows = _fetch(conn, _ALL, {"run_id": run_id, "key": key})
    with _gc_paused():
        return [_metric(key, r) for r in rows]


def downsample(conn: Connection, run_id: str, key: str, max_points: int, *,
               helpers: threading.Semaphore | None = None) -> list[Metric]:
    """At most ``max_points`` points keeping the history's shape (``domain.history``).

    ``helpers`` limits how many downsamples at once may take a second connection (see
    :func:`_extremes`); None: never.
    """
    hist = {"run_id": run_id, "key": key}
    head: list[Row] = _fetch(conn, _HEAD, {**hist, "n": max_points + 1})
    if len(head) <= max_points:
        return [_metric(key, r) for r in head]
    first = head[0]
    last: Row = _fetch(conn, _LAST, hist)[0]
    pg = conn.dialect.name == "postgresql"
    has_nan = bool(_fetch(conn, _HAS_NAN_PG if pg else _HAS_NAN_SQLITE, hist))
    buckets = step_buckets(first[0], last[0], bucket_count(max_points, has_nan=has_nan))
    ids = _extremes(conn, hist, buckets, has_nan=has_nan,
                    find=_pg_extremes if pg else _sqlite_extremes, helpers=helpers)
    rows = {first[3]: first, last[3]: last}
    wanted = sorted(ids - rows.keys())
    if wanted:
        found = _fetch(conn, _BY_ID_PG if pg else _BY_ID_SQLITE,
                       {"ids": wanted if pg else json.dumps(wanted)})
        rows.update((r[3], r) for r in found)
    ordered = sorted(rows.values(), key=lambda r: (r[0], r[1], r[3]))
    return [_metric(key, r) for r in ordered]


Finder = Callable[..., set[int]]


def _extremes(conn: Connection, hist: dict[str, Any], buckets: Sequence[tuple[int, int]], *,
              has_nan: bool, find: Finder, helpers: threading.Semaphore | None) -> set[int]:
    """The ids of every bucket's extremes (and first NaN). Many buckets are split in two halves
    read at once on two connections: the database does the work, so the halves run in
    parallel (the driver releases the GIL while a statement runs).

    A downsample that holds one connection and waits for a second could, with enough of them
    at once, hold the whole pool and wait forever; so only as many as ``helpers`` allows go
    parallel, the others read both halves themselves.
    """
    if len(buckets) < PARALLEL_BUCKETS or helpers is None or not helpers.acquire(blocking=False):
        return find(conn, hist, buckets, has_nan=has_nan) if buckets else set()
    try:
        return _in_two_halves(conn, hist, buckets, has_nan=has_nan, find=find)
    finally:
        helpers.release()


def _in_two_halves(conn: Connection, hist: dict[str, Any], buckets: Sequence[tuple[int, int]],
                   *, has_nan: bool, find: Finder) -> set[int]:
    half = len(buckets) // 2

    def other_half() -> set[int]:
        with conn.engine.connect() as second:
            return find(second, hist, buckets[half:], has_nan=has_nan)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelyard-history") as pool:
        later = pool.submit(other_half)
        ids = find(conn, hist, buckets[:half], has_nan=has_nan)
        return ids | later.result()


def _sqlite_extremes(conn: Connection, hist: dict[str, Any],
                     buckets: Sequence[tuple[int, int]], *, has_nan: bool) -> set[int]:
    params = {**hist, "bounds": json.dumps(buckets)}
    ids = {i for row in _fetch(conn, _SQLITE_EXTREMES, params) for i in row if i is not None}
    if has_nan:
        ids |= {row[0] for row in _fetch(conn, _SQLITE_NANS, params) if row[0] is not None}
    return ids


def _pg_extremes(conn: Connection, hist: dict[str, Any],
                 buckets: Sequence[tuple[int, int]], *, has_nan: bool) -> set[int]:
    # The planner's JIT compiles these per-bucket plans for ~50 ms and wins nothing back.
    conn.exec_driver_sql("SET LOCAL jit = off")
    ranges = {"lows": [b[0] for b in buckets], "highs": [b[1] for b in buckets]}
    found = _fetch(conn, _PG_MIN_MAX, {**hist, **ranges})
    lows, highs, vals = [], [], []
    for lo, hi, lo_v, hi_v in found:
        for v in (lo_v, hi_v) if lo_v != hi_v else (lo_v,):
            lows.append(lo)
            highs.append(hi)
            vals.append(v)
    ids: set[int] = set()
    if vals:
        rows = _fetch(conn, _PG_FIRST_WITH_VALUE,
                      {**hist, "lows": lows, "highs": highs, "vals": vals})
        ids |= {r[0] for r in rows if r[0] is not None}
    if has_nan:
        ids |= {r[0] for r in _fetch(conn, _PG_NANS, {**hist, **ranges}) if r[0] is not None}
    return ids


def history_pages(
    read: Callable[[], AbstractContextManager[Connection]],
    run_id: str,
    key: str,
    *,
    page_size: int,
) -> Iterator[HistoryColumns]:
    """The full history in pages of ``page_size`` points, each read in its own short
    transaction and continued after the last (step, timestamp, id) seen: constant memory, no
    OFFSET, and no connection held while the caller writes a page out."""
    hist: dict[str, Any] = {"run_id": run_id, "key": key, "n": page_size}
    after: dict[str, Any] | None = None
    while True:
        with read() as conn:
            rows: list[Row] = (_fetch(conn, _HEAD, hist) if after is None
                               else _fetch(conn, _AFTER, {**hist, **after}))
        if not rows:
            return
        with _gc_paused():
            steps, stamps, values, _ids = zip(*rows, strict=True)
            page = HistoryColumns(steps, stamps, [math.nan if v is None else v for v in values])
        yield page
        if len(rows) < page_size:
            return
        step, ts, _value, row_id = rows[-1]
        after = {"step": step, "ts": ts, "id": row_id}
