"""Compile the search AST (``modelyard.domain.search``) to SQL. Nothing is filtered in Python.

Each comparison on a metric, param or tag is a subquery over the indexed key/value table, so
the AST's ``and`` / ``or`` / ``not`` map straight onto SQL boolean operators. A comparison has
two SQL forms with the same meaning, and ``search_pages`` picks per query:

- ``run_id IN (SELECT run_id FROM kv WHERE key = ? AND value <op> ?)``: one range scan of the
  covering (key, value, run_id) index; best when every run is visited anyway (a full sort, a
  count) or when this comparison matches few runs and can drive the query;
- ``EXISTS (SELECT 1 FROM kv WHERE run_id = runs.run_id AND key = ? AND value <op> ?)``: one
  primary-key probe per candidate run; best when runs arrive in the requested order from an
  index and the query stops after one page.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, String, and_, cast, exists, not_, or_, select

from modelyard.domain.search import And, Comparison, Expr, FieldKind, Not
from modelyard.domain.validation import is_experiment_id
from modelyard.errors import InvalidFilter
from modelyard.stores.sql import schema as s

KV_TABLES = {
    FieldKind.METRIC: s.latest_metrics,
    FieldKind.PARAM: s.params,
    FieldKind.TAG: s.tags,
}


def attribute_column(key: str) -> Any:
    return s.runs.c[key]


def apply_op(column: Any, op: str, value: Any) -> ColumnElement[bool]:
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


def _attribute_value(key: str, value: Any) -> Any:
    if key == "experiment_id":
        # experiment ids are integers in the database, strings on the API
        def as_int(v: Any) -> int:
            if not is_experiment_id(str(v)):
                raise InvalidFilter(
                    f"filter: attributes.experiment_id must be digits, got {v!r}", field="filter"
                )
            return int(v)

        return tuple(as_int(v) for v in value) if isinstance(value, tuple) else as_int(value)
    if key in ("start_time", "end_time"):
        # milliseconds are integers; a number with a fraction is compared as it is (truncating
        # it made "start_time < 1000.5" miss 1000 and "start_time = 1000.5" match it)
        return int(value) if float(value).is_integer() else float(value)
    return value


def kv_subquery(cmp: Comparison) -> Any:
    """``SELECT run_id FROM <kv> WHERE key = ? [AND value <op> ?]`` for one comparison."""
    table = KV_TABLES[cmp.field.kind]
    query = select(table.c.run_id).where(table.c.key == cmp.field.key)
    if cmp.op in ("IS NULL", "IS NOT NULL"):
        return query
    return query.where(apply_op(table.c.value, cmp.op, cmp.value))


def compile_comparison(cmp: Comparison, *, correlated: bool = False) -> ColumnElement[bool]:
    field = cmp.field
    if field.kind is FieldKind.ATTRIBUTE:
        column = attribute_column(field.key)
        if cmp.op == "IS NULL":
            return column.is_(None)  # type: ignore[no-any-return]
        if cmp.op == "IS NOT NULL":
            return column.is_not(None)  # type: ignore[no-any-return]
        if field.key == "experiment_id" and cmp.op in ("LIKE", "ILIKE"):
            compared = apply_op(cast(column, String), cmp.op, cmp.value)
        else:
            compared = apply_op(column, cmp.op, _attribute_value(field.key, cmp.value))
        # A comparison with a missing value (end_time of a running run) is false, as it is for
        # a missing metric, param or tag, so that "not" of it is true (SQL's NULL is neither).
        return and_(column.is_not(None), compared) if column.nullable else compared
    negate = cmp.op == "IS NULL"  # "never logged" is "not present"
    if correlated:
        table = KV_TABLES[field.kind]
        probe = kv_subquery(cmp).where(table.c.run_id == s.runs.c.run_id)
        present: ColumnElement[bool] = exists(probe.with_only_columns(table.c.run_id))
    else:
        # run_id is never NULL, so NOT IN is exactly "not present"
        present = s.runs.c.run_id.in_(kv_subquery(cmp))
    return not_(present) if negate else present


def compile_filter(
    expr: Expr, *, correlated: bool = False, driver: Comparison | None = None
) -> ColumnElement[bool]:
    """The filter as SQL; ``driver`` (a top-level conjunct) always takes the IN form."""
    if isinstance(expr, Comparison):
        return compile_comparison(expr, correlated=correlated and expr is not driver)
    if isinstance(expr, Not):
        return not_(compile_filter(expr.item, correlated=correlated, driver=driver))
    parts = [compile_filter(e, correlated=correlated, driver=driver) for e in expr.items]
    return and_(*parts) if isinstance(expr, And) else or_(*parts)


def top_level_conjuncts(expr: Expr) -> list[Comparison]:
    """Comparisons every matching run must satisfy (the items of a top-level ``and``)."""
    items = expr.items if isinstance(expr, And) else (expr,)
    return [e for e in items if isinstance(e, Comparison)]
