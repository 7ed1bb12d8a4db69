"""Compile the search AST (``modelyard.domain.search``) to SQL. Nothing is filtered in Python.

Each comparison on a metric, param or tag becomes an ``EXISTS`` over the indexed key/value
table, so the AST's ``and`` / ``or`` / ``not`` map straight onto SQL boolean operators. Ordering
by a metric, param or tag is an outer join on the same tables (missing values sort last), and
every order ends with the run id so pages are stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    and_,
    cast,
    not_,
    or_,
    select,
)
from sqlalchemy.sql.expression import literal

from modelyard.domain.entities import RunInfo, ViewType
from modelyard.domain.paging import decode_token, encode_token, query_fingerprint
from modelyard.domain.search import (
    And,
    Comparison,
    Expr,
    Field,
    FieldKind,
    Not,
    OrderKey,
    render,
)
from modelyard.domain.validation import is_experiment_id
from modelyard.errors import InvalidFilter
from modelyard.stores.sql import schema as s
from modelyard.stores.sql.convert import to_run_info

_KV_TABLES = {
    FieldKind.METRIC: s.latest_metrics,
    FieldKind.PARAM: s.params,
    FieldKind.TAG: s.tags,
}


def _attribute_column(key: str) -> Any:
    return s.runs.c[key]


def _apply_op(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    if op == "=":
        return column == value  # type: ignore[no-any-return]
    if op == "!=":
        return column != value  # type: ignore[no-any-return]
    if op == ">":
        return column > value  # type: ignore[no-any-return]
    if op == ">=":
        return column >= value  # type: ignore[no-any-return]
    if op == "<":
        return column < value  # type: ignore[no-any-return]
    if op == "<=":
        return column <= value  # type: ignore[no-any-return]
    if op == "LIKE":
        return column.like(_literal_backslashes(value), escape="\\")  # type: ignore[no-any-return]
    if op == "ILIKE":
        return column.ilike(_literal_backslashes(value), escape="\\")  # type: ignore[no-any-return]
    if op == "IN":
        return column.in_(list(value))  # type: ignore[no-any-return]
    if op == "NOT IN":
        return column.not_in(list(value))  # type: ignore[no-any-return]
    raise InvalidFilter(f"filter: unsupported comparator {op}", field="filter")


def _literal_backslashes(pattern: str) -> str:
    # Only % and _ are wildcards. PostgreSQL treats a backslash in a LIKE pattern as an escape
    # and SQLite does not: escaping it explicitly makes it an ordinary character on both.
    return pattern.replace("\\", "\\\\")


def _attribute_value(field: Field, value: Any) -> Any:
    if field.key == "experiment_id":
        # experiment ids are integers in the database, strings on the API
        def as_int(v: Any) -> int:
            if not is_experiment_id(str(v)):
                raise InvalidFilter(
                    f"filter: attributes.experiment_id must be digits, got {v!r}", field="filter"
                )
            return int(v)

        return tuple(as_int(v) for v in value) if isinstance(value, tuple) else as_int(value)
    if field.key in ("start_time", "end_time"):
        # milliseconds are integers; a number with a fraction is compared as it is (truncating
        # it made "start_time < 1000.5" miss 1000 and "start_time = 1000.5" match it)
        return int(value) if float(value).is_integer() else float(value)
    return value


def compile_comparison(cmp: Comparison) -> ColumnElement[bool]:
    field = cmp.field
    if field.kind is FieldKind.ATTRIBUTE:
        column = _attribute_column(field.key)
        if cmp.op == "IS NULL":
            return column.is_(None)  # type: ignore[no-any-return]
        if cmp.op == "IS NOT NULL":
            return column.is_not(None)  # type: ignore[no-any-return]
        if field.key == "experiment_id" and cmp.op in ("LIKE", "ILIKE"):
            compared = _apply_op(cast(column, String), cmp.op, cmp.value)
        else:
            compared = _apply_op(column, cmp.op, _attribute_value(field, cmp.value))
        # A comparison with a missing value (end_time of a running run) is false, as it is for
        # a missing metric, param or tag, so that "not" of it is true (SQL's NULL is neither).
        return and_(column.is_not(None), compared) if column.nullable else compared
    # "run_id IN (SELECT run_id FROM <kv> WHERE key = ? AND value <op> ?)": a range scan of the
    # covering (key, value, run_id) index, about twice as fast on SQLite as a correlated EXISTS
    # probed once per run, and the same semi-join on PostgreSQL. run_id is never NULL, so
    # NOT IN is exactly "not present".
    table = _KV_TABLES[field.kind]
    with_key = select(table.c.run_id).where(table.c.key == field.key)
    if cmp.op == "IS NULL":
        return s.runs.c.run_id.not_in(with_key)
    if cmp.op == "IS NOT NULL":
        return s.runs.c.run_id.in_(with_key)
    matching = with_key.where(_apply_op(table.c.value, cmp.op, cmp.value))
    return s.runs.c.run_id.in_(matching)


def compile_filter(expr: Expr) -> ColumnElement[bool]:
    if isinstance(expr, Comparison):
        return compile_comparison(expr)
    if isinstance(expr, Not):
        return not_(compile_filter(expr.item))
    parts = [compile_filter(e) for e in expr.items]
    return and_(*parts) if isinstance(expr, And) else or_(*parts)


def _apply_order(query: Select[Any], order_by: Sequence[OrderKey]) -> Select[Any]:
    clauses: list[Any] = []
    for i, key in enumerate(order_by):
        if key.field.kind is FieldKind.ATTRIBUTE:
            column: Any = _attribute_column(key.field.key)
        else:
            alias = _KV_TABLES[key.field.kind].alias(f"order_{i}")
            query = query.outerjoin(
                alias, and_(alias.c.run_id == s.runs.c.run_id, alias.c.key == key.field.key)
            )
            column = alias.c.value
        # Missing values last in both directions, as users expect of a leaderboard.
        clauses.append(column.is_(None))
        clauses.append(column.asc() if key.ascending else column.desc())
    if not order_by:
        clauses.append(s.runs.c.start_time.desc())
    clauses.append(s.runs.c.run_id.asc())
    return query.order_by(*clauses)


def search_run_rows(
    conn: Connection,
    experiment_ids: Sequence[str],
    *,
    filter_expr: Expr | None,
    order_by: Sequence[OrderKey],
    view: ViewType,
    max_results: int,
    page_token: str | None,
) -> tuple[list[RunInfo], str | None]:
    """One page of matching run infos and the token for the next page."""
    fingerprint = query_fingerprint(
        sorted(experiment_ids),
        render(filter_expr) if filter_expr is not None else "",
        tuple((k.field.kind.value, k.field.key, k.ascending) for k in order_by),
        view.value,
    )
    offset = decode_token(page_token, fingerprint)
    ids = [int(e) for e in experiment_ids if is_experiment_id(e)]
    query = select(s.runs).where(
        s.runs.c.experiment_id.in_(ids) if ids else literal(False),
        s.runs.c.lifecycle_stage.in_([st.value for st in view.stages()]),
    )
    if filter_expr is not None:
        query = query.where(compile_filter(filter_expr))
    query = _apply_order(query, order_by).limit(max_results + 1).offset(offset)
    rows = conn.execute(query).all()
    token = (
        encode_token(offset + max_results, fingerprint) if len(rows) > max_results else None
    )
    return [to_run_info(r) for r in rows[:max_results]], token
