"""Every list in a request is capped, in embedded mode and over HTTP alike (issue 18): the
requests that held the server for minutes (100,000 order_by entries) or took 100,000 tags are
refused with 400 naming the limit, and nothing is stored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from modelyard.domain.validation import (
    MAX_CREATE_TAGS,
    MAX_FILTER_COMPARISONS,
    MAX_ORDER_BY,
    MAX_SEARCH_EXPERIMENTS,
)
from modelyard.errors import InvalidArgument, InvalidFilter
from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS


def test_order_by_is_capped(backend: Any) -> None:
    exp = backend.create_experiment("capped").experiment_id
    backend.create_run(exp, run_name="r", tags={}, start_time=1)
    keys = [f"metrics.m{i}" for i in range(MAX_ORDER_BY)]
    assert len(backend.search_runs([exp], order_by=keys)) == 1  # at the limit: fine
    for count in (MAX_ORDER_BY + 1, 100_000):
        with pytest.raises(InvalidFilter) as info:
            backend.search_runs([exp], order_by=[f"metrics.m{i}" for i in range(count)])
        assert info.value.field == "order_by"
        assert f"the limit is {MAX_ORDER_BY}" in info.value.message


def test_experiment_ids_of_a_search_are_capped(backend: Any) -> None:
    exp = backend.create_experiment("scope").experiment_id
    ids = [exp] * MAX_SEARCH_EXPERIMENTS
    assert len(backend.search_runs(ids)) == 0
    assert backend.count_runs(ids) == 0
    too_many = [str(i) for i in range(MAX_SEARCH_EXPERIMENTS + 1)]
    for call in (backend.search_runs, backend.count_runs):
        with pytest.raises(InvalidArgument) as info:
            call(too_many)
        assert info.value.field == "experiment_ids"
        assert str(MAX_SEARCH_EXPERIMENTS) in info.value.message


def test_tags_given_at_creation_are_capped(backend: Any) -> None:
    many = {f"t{i}": "v" for i in range(MAX_CREATE_TAGS + 1)}
    before = [e.name for e in backend.list_experiments(view="all")]
    with pytest.raises(InvalidArgument) as info:
        backend.create_experiment("tagged", tags=many)
    assert info.value.field == "tags" and str(MAX_CREATE_TAGS) in info.value.message
    assert [e.name for e in backend.list_experiments(view="all")] == before
    with pytest.raises(InvalidArgument) as info:
        backend.create_run("0", run_name="tagged", tags=many, start_time=1)
    assert info.value.field == "tags"
    assert len(backend.search_runs(["0"])) == 0
    exp = backend.create_experiment("tagged", tags=dict(list(many.items())[:MAX_CREATE_TAGS]))
    assert len(exp.tags) == MAX_CREATE_TAGS


def test_a_filter_of_the_most_comparisons_is_answered(backend: Any) -> None:
    """As many comparisons as allowed, on as many different metrics, params and tags: an
    answer, not a database error; one more is refused (200 AND-ed comparisons held PostgreSQL
    15 s planning the query)."""
    exp = backend.create_experiment("wide").experiment_id
    backend.create_run(exp, run_name="r", tags={}, start_time=1)

    def parts(n: int) -> list[str]:
        return [f"metrics.m{i} > 0" if i % 3 == 0 else f"params.p{i} = 'x'" if i % 3 == 1
                else f"tags.t{i} = 'y'" for i in range(n)]

    for joiner in (" and ", " or "):
        assert len(backend.search_runs([exp], filter=joiner.join(parts(MAX_FILTER_COMPARISONS)))
                   ) == 0
        with pytest.raises(InvalidFilter) as info:
            backend.search_runs([exp], filter=joiner.join(parts(MAX_FILTER_COMPARISONS + 1)))
        assert info.value.field == "filter"
        assert f"more than {MAX_FILTER_COMPARISONS} comparisons" in info.value.message


def test_the_100000_entry_order_by_request_is_a_400(server: Any) -> None:
    body = {"order_by": [f"metrics.m{i} DESC" for i in range(100_000)]}
    with httpx.Client(base_url=server.url, timeout=60, event_hooks=CLIENT_HOOKS) as api:
        resp = api.post(r.SEARCH_RUNS.path, json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["field"] == "order_by"
        assert api.get(r.HEALTH.path).status_code == 200
