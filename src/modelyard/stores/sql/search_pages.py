"""Run search: one page at a time with keyset cursors, and counts.

The order is the requested keys (missing values last in both directions) and then the run id
(in the first key's direction), a total order. A page token holds the sort values of the last
run returned; the next page is the runs strictly after it, so paging is stable while runs are
inserted (no OFFSET).

How a page is fetched depends on the query (``modelyard.stores.sql.search`` explains the two
SQL forms of a comparison):

- ordered by a metric, param or tag: runs that have the key are read in value order straight
  from the (key, value, run_id) index and stop after one page; runs without it come after,
  in a second query when the first group runs out;
- ordered by start time (the default): the same through the runs' (experiment, stage, start)
  index;
- when a top-level condition matches few runs (probed with a capped count), those drive the
  query and the handful of matches is sorted;
- otherwise (an order no index serves) every candidate is visited and sorted once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Float,
    Integer,
    Select,
    and_,
    false,
    func,
    or_,
    select,
    tuple_,
)

from modelyard.domain.entities import RunInfo, ViewType
from modelyard.domain.paging import CursorValue, decode_cursor, encode_cursor, query_fingerprint
from modelyard.domain.search import Comparison, Expr, Field, FieldKind, OrderKey, render
from modelyard.domain.validation import is_experiment_id
from modelyard.errors import InvalidArgument
from modelyard.stores.sql import schema as s
from modelyard.stores.sql.convert import to_run_info
from modelyard.stores.sql.search import (
    KV_TABLES,
    attribute_column,
    compile_filter,
    kv_subquery,
    top_level_conjuncts,
)

# A top-level condition matching fewer runs than this drives the query; counting stops here.
DRIVER_CAP = 10_000
_PROBED_OPS = frozenset({"=", "IN", ">", ">=", "<", "<=", "IS NOT NULL"})
_DEFAULT_ORDER = (OrderKey(Field(FieldKind.ATTRIBUTE, "start_time"), ascending=False),)


@dataclass(frozen=True, slots=True)
class _Slot:
    """One sort key as SQL: its column, direction, whether it can be missing, its type."""

    column: Any
    ascending: bool
    nullable: bool
    kind: type  # int, float or str: what a cursor value for it must be


@dataclass(frozen=True, slots=True)
class SearchScope:
    experiment_ids: Sequence[str] | None  # None: every experiment
    view: ViewType

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [
            s.runs.c.lifecycle_stage.in_([st.value for st in self.view.stages()])
        ]
        if self.experiment_ids is not None:
            ids = [int(e) for e in self.experiment_ids if is_experiment_id(e)]
            clauses.append(s.runs.c.experiment_id.in_(ids) if ids else false())
        return clauses


def _kind_of(column: Any) -> type:
    if isinstance(column.type, (Integer, BigInteger)):
        return int
    if isinstance(column.type, Float):
        return float
    return str


def _order_keys(order_by: Sequence[OrderKey]) -> tuple[OrderKey, ...]:
    return tuple(order_by) if order_by else _DEFAULT_ORDER


def _slots(
    query: Select[Any], keys: Sequence[OrderKey], *, first: int = 0
) -> tuple[Select[Any], list[_Slot]]:
    """Join what the keys need (outer joins: a run without the key is kept) and name them."""
    slots: list[_Slot] = []
    for i, key in enumerate(keys, start=first):
        if key.field.kind is FieldKind.ATTRIBUTE:
            column: Any = attribute_column(key.field.key)
            slots.append(_Slot(column, key.ascending, bool(column.nullable), _kind_of(column)))
            continue
        alias = KV_TABLES[key.field.kind].alias(f"order_{i}")
        query = query.outerjoin(
            alias, and_(alias.c.run_id == s.runs.c.run_id, alias.c.key == key.field.key)
        )
        slots.append(_Slot(alias.c.value, key.ascending, True, _kind_of(alias.c.value)))
    return query, slots


def _order_clauses(slots: Sequence[_Slot], ids: Any, ids_ascending: bool) -> list[Any]:
    clauses: list[Any] = []
    for slot in slots:
        if slot.nullable:
            clauses.append(slot.column.is_(None))  # missing values last, either direction
        clauses.append(slot.column.asc() if slot.ascending else slot.column.desc())
    clauses.append(ids.asc() if ids_ascending else ids.desc())
    return clauses


def _after(slots: Sequence[_Slot], values: Sequence[CursorValue], run_id: str,
           ids: Any, ids_ascending: bool) -> Any:
    """Rows strictly after the cursor row in the order of ``slots`` then run id."""
    if all(not s.nullable and s.ascending is ids_ascending for s in slots):
        # One direction throughout: a row-value comparison, which both databases answer with
        # a range of the index instead of the OR expansion below.
        row, cursor = tuple_(*(s.column for s in slots), ids), tuple_(*values, run_id)
        return row > cursor if ids_ascending else row < cursor
    branches: list[Any] = []
    equal: list[Any] = []
    for slot, value in zip(slots, values, strict=True):
        if value is None:
            # nothing sorts after a missing value but other missing values
            equal.append(slot.column.is_(None))
            continue
        beyond = slot.column > value if slot.ascending else slot.column < value
        if slot.nullable:
            beyond = or_(beyond, slot.column.is_(None))
        branches.append(and_(*equal, beyond))
        equal.append(slot.column == value)
    beyond_id = ids > run_id if ids_ascending else ids < run_id
    branches.append(and_(*equal, beyond_id))
    return or_(*branches)


def _check_cursor(cursor: list[CursorValue], slots: Sequence[_Slot]) -> tuple[list[Any], str]:
    """The cursor's sort values (typed for their columns) and run id; refuse a forged one."""
    bad = InvalidArgument("page_token is malformed", field="page_token")
    if len(cursor) != len(slots) + 1:
        raise bad
    *values, run_id = cursor
    if not isinstance(run_id, str) or len(run_id) > 32:
        raise bad
    typed: list[Any] = []
    for slot, value in zip(slots, values, strict=True):
        if value is None:
            if not slot.nullable:
                raise bad
            typed.append(None)
        elif slot.kind is float and isinstance(value, (int, float)):
            typed.append(float(value))
        elif isinstance(value, slot.kind):
            typed.append(value)
        else:
            raise bad
    return typed, run_id


def _probe_driver(conn: Connection, filter_expr: Expr) -> Comparison | None:
    """The top-level condition matching the fewest runs, if that is under ``DRIVER_CAP``."""
    best: tuple[int, Comparison] | None = None
    for cmp in top_level_conjuncts(filter_expr):
        if cmp.field.kind is FieldKind.ATTRIBUTE or cmp.op not in _PROBED_OPS:
            continue
        capped = kv_subquery(cmp).limit(DRIVER_CAP).subquery()
        count = int(conn.execute(select(func.count()).select_from(capped)).scalar_one())
        if count < DRIVER_CAP and (best is None or count < best[0]):
            best = (count, cmp)
    return None if best is None else best[1]


def _index_ordered(keys: Sequence[OrderKey]) -> bool:
    first = keys[0].field
    return first.kind is not FieldKind.ATTRIBUTE or first.key == "start_time"


@dataclass(frozen=True, slots=True)
class _Plan:
    correlated: bool  # EXISTS probes (runs arrive in order) or IN lists (everything visited)
    driver: Comparison | None
    grouped: bool  # read runs having the first (metric/param/tag) key from its index first


def _plan(conn: Connection, filter_expr: Expr | None, keys: Sequence[OrderKey]) -> _Plan:
    driver = _probe_driver(conn, filter_expr) if filter_expr is not None else None
    if driver is not None:
        return _Plan(correlated=True, driver=driver, grouped=False)
    if not _index_ordered(keys):
        return _Plan(correlated=False, driver=None, grouped=False)
    return _Plan(correlated=True, driver=None,
                 grouped=keys[0].field.kind is not FieldKind.ATTRIBUTE)


def _filtered(query: Select[Any], scope: SearchScope, filter_expr: Expr | None,
              plan: _Plan) -> Select[Any]:
    query = query.where(*scope.where())
    if filter_expr is not None:
        query = query.where(
            compile_filter(filter_expr, correlated=plan.correlated, driver=plan.driver)
        )
    return query


def _fetch(conn: Connection, query: Select[Any], slots: Sequence[_Slot],
           after: tuple[list[Any], str] | None, limit: int, ids_ascending: bool,
           ids: Any = s.runs.c.run_id) -> list[Any]:
    """``ids`` is the run id column to order by: in a join, the one of the table whose index
    delivers the order (SQLite does not infer that two joined columns sort alike)."""
    labelled = [slot.column.label(f"sort_{i}") for i, slot in enumerate(slots)]
    query = query.add_columns(*labelled)
    if after is not None:
        query = query.where(_after(slots, *after, ids, ids_ascending))
    order = _order_clauses(slots, ids, ids_ascending)
    return list(conn.execute(query.order_by(*order).limit(limit)).all())


def _cursor_of(row: Any, n_slots: int) -> list[CursorValue]:
    values: list[CursorValue] = [getattr(row, f"sort_{i}") for i in range(n_slots)]
    return [*values, row.run_id]


def search_run_rows(
    conn: Connection,
    scope: SearchScope,
    *,
    filter_expr: Expr | None,
    order_by: Sequence[OrderKey],
    max_results: int,
    page_token: str | None,
) -> tuple[list[RunInfo], str | None]:
    """One page of matching run infos and the token for the next page."""
    keys = _order_keys(order_by)
    fingerprint = query_fingerprint(
        None if scope.experiment_ids is None else sorted(scope.experiment_ids),
        render(filter_expr) if filter_expr is not None else "",
        tuple((k.field.kind.value, k.field.key, k.ascending) for k in keys),
        scope.view.value,
    )
    cursor = decode_cursor(page_token, fingerprint)
    plan = _plan(conn, filter_expr, keys)
    # Ties are broken by run id in the first key's direction: that is the order of the key's
    # (key, value, run_id) index read either way, so no sort is needed for a single key.
    ids_ascending = keys[0].ascending
    want = max_results + 1
    if not plan.grouped:
        query, slots = _slots(select(s.runs), keys)
        after = None if cursor is None else _check_cursor(cursor, slots)
        rows = _fetch(conn, _filtered(query, scope, filter_expr, plan), slots, after, want,
                      ids_ascending)
        return _page(rows, len(slots), max_results, fingerprint)

    # Ordered by a metric, param or tag: first the runs that have it, in index order...
    first, rest = keys[0], keys[1:]
    table = KV_TABLES[first.field.kind]
    having = table.alias("order_0")
    query, rest_slots = _slots(
        select(s.runs).join(having, having.c.run_id == s.runs.c.run_id)
        .where(having.c.key == first.field.key, having.c.value.is_not(None)),
        rest, first=1,
    )
    slots = [_Slot(having.c.value, first.ascending, True, _kind_of(having.c.value)),
             *rest_slots]
    after = None if cursor is None else _check_cursor(cursor, slots)
    rows = []
    if after is None or after[0][0] is not None:
        group_slots = [_Slot(having.c.value, first.ascending, False, slots[0].kind), *rest_slots]
        rows = _fetch(conn, _filtered(query, scope, filter_expr, plan), group_slots, after, want,
                      ids_ascending, having.c.run_id)
    if len(rows) < want:
        # ...then the runs that never logged it (or whose latest value is NaN)
        missing, rest_slots = _slots(select(s.runs), rest, first=1)
        missing = missing.where(s.runs.c.run_id.not_in(
            select(table.c.run_id).where(table.c.key == first.field.key,
                                         table.c.value.is_not(None))
        ))
        rest_after = None if after is None or after[0][0] is not None else (
            after[0][1:], after[1])
        more = _fetch(conn, _filtered(missing, scope, filter_expr, plan), rest_slots,
                      rest_after, want - len(rows), ids_ascending)
        rows += [_Prefixed(r) for r in more]
    return _page(rows, len(slots), max_results, fingerprint)


class _Prefixed:
    """A row of the missing-key group, seen with the (missing) first sort value prepended."""

    def __init__(self, row: Any) -> None:
        self._row = row

    def __getattr__(self, name: str) -> Any:
        if name.startswith("sort_"):
            i = int(name[5:])
            return None if i == 0 else getattr(self._row, f"sort_{i - 1}")
        return getattr(self._row, name)


def _page(rows: list[Any], n_slots: int, max_results: int,
          fingerprint: str) -> tuple[list[RunInfo], str | None]:
    page = rows[:max_results]
    token = None
    if len(rows) > max_results and page:
        token = encode_cursor(_cursor_of(page[-1], n_slots), fingerprint)
    return [to_run_info(r) for r in page], token


def count_run_rows(conn: Connection, scope: SearchScope, filter_expr: Expr | None) -> int:
    """How many runs match (every candidate is visited: the IN form of each condition)."""
    query = select(func.count()).select_from(s.runs).where(*scope.where())
    if filter_expr is not None:
        query = query.where(compile_filter(filter_expr))
    return int(conn.execute(query).scalar_one())
