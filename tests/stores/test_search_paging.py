"""Search order, keyset paging, counts and cross-experiment scope, on SQLite and PostgreSQL.

The SQL result of every random query is compared with a pure-Python model: the filter (the
evaluator of ``support.search_model``, the contract suite's too), the order (missing values
last, ties by run id in the first key's direction), page after page, with and without a small
condition driving the query.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import random
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.domain.entities import LifecycleStage, Metric, RunStatus, ViewType
from modelyard.domain.search import Expr, parse_filter, render
from modelyard.stores.sql import SqlStores, search_pages
from support.search_model import evaluate, filters, run_specs, write_specs
from support.stores import log, new_exp, new_run, search

ORDER_FIELDS = ["metrics.m1", "metrics.m2", "params.p1", "tags.t1", "attributes.start_time",
                "attributes.end_time", "attributes.run_name", "attributes.status"]


@pytest.fixture(params=["probed", "never-driven"])
def driver_cap(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both ways of running a filter: a small condition may drive the query, or never."""
    if request.param == "never-driven":
        monkeypatch.setattr(search_pages, "DRIVER_CAP", 0)
    yield request.param


def _value(data: dict[str, dict[str, object]], field: str) -> object:
    kind, key = field.split(".", 1)
    value = data[kind].get(key)
    if isinstance(value, float) and math.isnan(value):
        return None  # NaN sorts with the missing values
    return value


def model_order(model: dict[str, dict[str, dict[str, object]]], ids: Sequence[str],
                order: Sequence[str]) -> list[str]:
    keys = [(o.split()[0], not o.endswith(" DESC")) for o in order] or [
        ("attributes.start_time", False)]

    def compare(a: str, b: str) -> int:
        for field, ascending in keys:
            va, vb = _value(model[a], field), _value(model[b], field)
            if va is None or vb is None:
                if va is None and vb is None:
                    continue
                return 1 if va is None else -1  # missing last in both directions
            if va != vb:
                less = va < vb  # type: ignore[operator]
                return (-1 if less else 1) * (1 if ascending else -1)
        return (-1 if a < b else 1) * (1 if keys[0][1] else -1)

    return sorted(ids, key=functools.cmp_to_key(compare))


def every_page(stores: SqlStores, exps: Sequence[str] | None, flt: Expr | str | None,
               order: Sequence[str], size: int) -> list[str]:
    out: list[str] = []
    token = None
    for _ in range(1000):
        page = search(stores, exps, flt, order, max_results=size, token=token)  # type: ignore[arg-type]
        out += [r.id for r in page]
        token = page.next_page_token
        if token is None:
            return out
        assert len(page) == size  # only the last page is short
    raise AssertionError("paging never ended")


orders = st.lists(st.sampled_from(ORDER_FIELDS), max_size=2, unique=True).flatmap(
    lambda fields: st.tuples(*[st.sampled_from([f, f + " DESC"]) for f in fields]).map(list))


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(run_specs(), max_size=7), expr=st.none() | filters, order=orders,
       size=st.integers(1, 4))
def test_pages_agree_with_the_python_model(
    stores: SqlStores, driver_cap: str, specs: list[dict[str, object]], expr: Expr | None,
    order: list[str], size: int,
) -> None:
    exp = new_exp(stores)
    model = write_specs(stores, exp, specs)
    matching = [r for r, data in model.items() if expr is None or evaluate(expr, data)]
    expected = model_order(model, matching, order)
    where = "" if expr is None else render(expr)
    assert every_page(stores, [exp], expr, order, size) == expected, (where, order, size)
    assert stores.runs.count_runs([exp], filter_expr=expr, view=ViewType.ACTIVE_ONLY) == len(
        expected)
    page = stores.runs.search_runs([exp], filter_expr=expr, order_by=parse_order(order),
                                   view=ViewType.ACTIVE_ONLY, max_results=size,
                                   page_token=None, include_total=True)
    assert page.total == len(expected)


def parse_order(order: Sequence[str]) -> list:  # type: ignore[type-arg]
    from modelyard.domain.search import parse_order_by

    return parse_order_by(list(order))


@pytest.mark.parametrize("order", [[], ["metrics.m DESC"], ["metrics.m"], ["params.p DESC"],
                                   ["tags.t", "metrics.m DESC"], ["attributes.end_time"]])
def test_paging_is_stable_while_runs_are_inserted(stores: SqlStores, driver_cap: str,
                                                  order: list[str]) -> None:
    """Runs inserted between pages (sorting before and after the cursor) never make a page
    repeat a run or skip one that existed when paging began."""
    exp = new_exp(stores)
    rng = random.Random(11)

    def add(n: int) -> str:
        r = new_run(stores, exp=exp, start=rng.randrange(50))
        metrics = [] if rng.random() < 0.2 else [Metric("m", float(rng.randrange(8)), 0, 0)]
        tags = {} if rng.random() < 0.3 else {"t": rng.choice("xyz")}
        log(stores, r, metrics=metrics, params={"p": str(rng.randrange(5))}, tags=tags)
        if rng.random() < 0.5:
            stores.runs.update_run(r, status=RunStatus.FINISHED, end_time=rng.randrange(99),
                                   run_name=None)
        return r

    before = {add(n) for n in range(40)}
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = search(stores, [exp], "params.p != '9'", order, max_results=6, token=token)
        seen += [r.id for r in page]
        token = page.next_page_token
        pages += 1
        if token is None:
            break
        for n in range(3):  # concurrent writers, between two page fetches
            add(n)
    assert pages >= 7
    assert len(seen) == len(set(seen)), "a run was returned twice"
    assert before <= set(seen), f"{len(before - set(seen))} runs were skipped"


def test_search_across_experiments_and_all_of_them(stores: SqlStores) -> None:
    a, b = new_exp(stores), new_exp(stores)
    gone = new_exp(stores)
    runs = {}
    for exp, n in ((a, 3), (b, 2), (gone, 2), ("0", 1)):
        for i in range(n):
            r = new_run(stores, exp=exp, start=i)
            log(stores, r, metrics=[Metric("acc", i / 10, 0, 0)])
            runs[r] = exp
    stores.experiments.set_experiment_lifecycle(gone, stage=LifecycleStage.DELETED, now=5)
    both = search(stores, [a, b], "metrics.acc >= 0", ["metrics.acc DESC"])
    assert {r.info.experiment_id for r in both} == {a, b}
    assert all(runs[r.id] == r.info.experiment_id for r in both)  # each says where it is
    assert len(both) == 5
    everything = search(stores, None, "metrics.acc >= 0")  # type: ignore[arg-type]
    assert {r.id for r in everything} == {r for r, e in runs.items() if e != gone}
    deleted_too = stores.runs.search_runs(None, filter_expr=parse_filter("metrics.acc >= 0"),
                                          order_by=[], view=ViewType.ALL, max_results=100,
                                          page_token=None)
    assert {r.id for r in deleted_too} == set(runs)
    assert stores.runs.count_runs(None, filter_expr=None, view=ViewType.ALL) == len(runs)
    assert stores.runs.count_runs([a, b], filter_expr=parse_filter("metrics.acc > 0.05"),
                                  view=ViewType.ACTIVE_ONLY) == 3
    # paging across experiments covers each run once
    assert sorted(every_page(stores, [a, b, "0"], None, ["metrics.acc"], 2)) == sorted(
        r for r, e in runs.items() if e in (a, b, "0"))


@pytest.mark.parametrize("forged", [
    [1.5, "x"],  # a float where the start time (an integer) goes
    [None, "x"],  # start time is never missing
    ["1", "x"],
    [1],  # too short
    [1, "x", "y"],  # too long
    [1, 5],  # run id not a string
])
def test_forged_cursors_are_refused_before_reaching_the_database(
    stores: SqlStores, forged: list[object]
) -> None:
    from modelyard.errors import InvalidArgument

    exp = new_exp(stores)
    for i in range(3):
        new_run(stores, exp=exp, start=i)
    real = search(stores, [exp], None, [], max_results=1).next_page_token
    assert real is not None
    # the token's own query binding, with forged sort values
    data = json.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))
    data["k"] = forged
    token = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    with pytest.raises(InvalidArgument) as exc:
        search(stores, [exp], None, [], max_results=1, token=token)
    assert exc.value.field == "page_token"
