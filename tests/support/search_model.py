"""A model of run search to hold the SQL against: a pure-Python evaluator of the filter AST,
and Hypothesis strategies for runs and filters (the contract suite and the paging tests use
both)."""

from __future__ import annotations

import math
import re

from hypothesis import strategies as st

from modelyard.domain.entities import Metric, RunStatus
from modelyard.domain.search import And, Comparison, Expr, Field, FieldKind, Not, Or
from modelyard.stores.sql import SqlStores
from support.stores import log, new_run

NAN, INF = math.nan, math.inf

# A pure-Python evaluator of the filter AST, per docs/search.md: a comparison on a metric,
# param or tag is false when the run lacks the key, and a NaN metric counts as missing for
# comparisons (but is present for IS NULL); LIKE's wildcards are % and _ (everything else,
# backslash included, is literal), case-sensitive; ILIKE is case-insensitive.


def _like(pattern: str, value: str, *, fold: bool) -> bool:
    if fold:
        pattern, value = pattern.lower(), value.lower()
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _compare(op: str, have: object, want: object) -> bool:
    if op == "=":
        return have == want
    if op == "!=":
        return have != want
    if op == ">":
        return have > want  # type: ignore[operator]
    if op == ">=":
        return have >= want  # type: ignore[operator]
    if op == "<":
        return have < want  # type: ignore[operator]
    if op == "<=":
        return have <= want  # type: ignore[operator]
    if op == "LIKE":
        return _like(want, have, fold=False)  # type: ignore[arg-type]
    if op == "ILIKE":
        return _like(want, have, fold=True)  # type: ignore[arg-type]
    if op == "IN":
        return have in want  # type: ignore[operator]
    if op == "NOT IN":
        return have not in want  # type: ignore[operator]
    raise AssertionError(op)


def evaluate(expr: Expr, run: dict[str, dict[str, object]]) -> bool:
    if isinstance(expr, And):
        return all(evaluate(e, run) for e in expr.items)
    if isinstance(expr, Or):
        return any(evaluate(e, run) for e in expr.items)
    if isinstance(expr, Not):
        return not evaluate(expr.item, run)
    values = run[expr.field.kind.value]
    present = values.get(expr.field.key) is not None
    if expr.op == "IS NULL":
        return not present
    if expr.op == "IS NOT NULL":
        return present
    have = values.get(expr.field.key)
    if have is None or (isinstance(have, float) and math.isnan(have)):
        return False
    return _compare(expr.op, have, expr.value)


_ALPHABET = "aA%_\\b"
texts = st.text(alphabet=_ALPHABET, max_size=3)
metric_values = st.sampled_from([-INF, -1.5, 0.0, 1.0, 2.5, INF, NAN])
thresholds = st.sampled_from([-1e308, -1.5, -0.5, 0.0, 1.0, 2.0, 2.5, 1e308])
times = st.integers(0, 4)
time_thresholds = st.sampled_from([-1e18, -0.5, 0.0, 1.5, 2.0, 3.5, 4.0, 1e18]) | times.map(float)


@st.composite
def run_specs(draw: st.DrawFn) -> dict[str, object]:
    def some(keys: list[str], values: st.SearchStrategy[object]) -> dict[str, object]:
        return {k: draw(values) for k in keys if draw(st.booleans())}

    metrics: dict[str, list[Metric]] = {}
    for key in ("m1", "m2"):
        if draw(st.booleans()):
            steps = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True))
            metrics[key] = [Metric(key, draw(metric_values), s, draw(times)) for s in steps]
    return {
        "metrics": metrics,
        "params": some(["p1", "p2"], texts),
        "tags": some(["t1", "t2"], texts),
        "run_name": draw(texts),
        "status": draw(st.sampled_from([s.value for s in RunStatus])),
        "start_time": draw(times),
        "end_time": draw(st.none() | times),
    }


@st.composite
def leaf(draw: st.DrawFn) -> Comparison:
    kind = draw(st.sampled_from(list(FieldKind)))
    if kind is FieldKind.METRIC:
        field = Field(kind, draw(st.sampled_from(["m1", "m2"])))
        op = draw(st.sampled_from(["=", "!=", ">", ">=", "<", "<=", "IS NULL", "IS NOT NULL"]))
        return Comparison(field, op, None if "NULL" in op else draw(thresholds))  # type: ignore[arg-type]
    if kind is FieldKind.ATTRIBUTE:
        key = draw(st.sampled_from(["run_name", "status", "start_time", "end_time"]))
        field = Field(kind, key)
        if key in ("start_time", "end_time"):
            ops = ["=", "!=", ">", ">=", "<", "<="] + (["IS NULL", "IS NOT NULL"]
                                                      if key == "end_time" else [])
            op = draw(st.sampled_from(ops))
            value = draw(time_thresholds)
            return Comparison(field, op, None if "NULL" in op else value)  # type: ignore[arg-type]
        values = texts if key == "run_name" else st.sampled_from(
            [s.value for s in RunStatus] + ["%ED", "running", "R_NNING"])
    else:
        field = Field(kind, draw(st.sampled_from(["p1", "p2"] if kind is FieldKind.PARAM
                                                 else ["t1", "t2"])))
        values = texts
    ops = ["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"]
    if kind is not FieldKind.ATTRIBUTE:
        ops += ["IS NULL", "IS NOT NULL"]
    op = draw(st.sampled_from(ops))
    if "NULL" in op:
        return Comparison(field, op, None)  # type: ignore[arg-type]
    if "IN" in op.split():
        return Comparison(field, op, tuple(draw(st.lists(values, min_size=1, max_size=3))))  # type: ignore[arg-type]
    return Comparison(field, op, draw(values))  # type: ignore[arg-type]


def _compound(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    many = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(many.map(And), many.map(Or), children.map(Not))


filters: st.SearchStrategy[Expr] = st.recursive(leaf(), _compound, max_leaves=6)


def _model(spec: dict[str, object]) -> dict[str, dict[str, object]]:
    latest = {k: max(points, key=lambda m: m.step).value
              for k, points in spec["metrics"].items()}  # type: ignore[attr-defined]
    return {
        "metrics": latest,
        "params": dict(spec["params"]),  # type: ignore[call-overload]
        "tags": dict(spec["tags"]),  # type: ignore[call-overload]
        "attributes": {k: spec[k] for k in ("run_name", "status", "start_time", "end_time")},
    }


def write_specs(stores: SqlStores, exp: str,
                specs: list[dict[str, object]]) -> dict[str, dict[str, dict[str, object]]]:
    """Write generated runs into ``exp``; their Python model, by run id."""
    model: dict[str, dict[str, dict[str, object]]] = {}
    for spec in specs:
        r = new_run(stores, exp=exp, name=spec["run_name"], start=spec["start_time"])  # type: ignore[arg-type]
        points = [m for ms in spec["metrics"].values() for m in ms]  # type: ignore[attr-defined]
        if points or spec["params"] or spec["tags"]:
            log(stores, r, metrics=points, params=spec["params"], tags=spec["tags"])  # type: ignore[arg-type]
        stores.runs.update_run(r, status=RunStatus(spec["status"]), end_time=spec["end_time"],  # type: ignore[arg-type]
                               run_name=None)
        model[r] = _model(spec)
    return model
