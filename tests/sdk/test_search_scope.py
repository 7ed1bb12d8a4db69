"""Searching or counting the runs of an experiment that does not exist is ExperimentNotFound
naming the id (field experiment_ids), embedded and over HTTP, on each database, as the SDK and
CLI answer when they resolve an experiment; a deleted experiment or one without runs is no
error."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from modelyard.domain.entities import LogBatch, Metric
from modelyard.errors import ExperimentNotFound
from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS

UNKNOWN = "987654321"


def _exp_with_run(backend: Any, name: str) -> str:
    exp: str = backend.create_experiment(name).experiment_id
    run = backend.create_run(exp)
    backend.log_batch(run.info.run_id, LogBatch((Metric("m", 1.0, 0, 1),), (), ()))
    return exp


def _refused(call: Any, missing: str) -> None:
    with pytest.raises(ExperimentNotFound) as caught:
        call()
    assert caught.value.field == "experiment_ids"
    assert missing in caught.value.message


def test_unknown_experiment_is_not_found(backend: Any) -> None:
    exp = _exp_with_run(backend, "known")
    _refused(lambda: backend.search_runs([UNKNOWN]), UNKNOWN)
    _refused(lambda: backend.count_runs([UNKNOWN]), UNKNOWN)
    # Beside an experiment that has runs (the page proves only that one exists).
    _refused(lambda: backend.search_runs([exp, UNKNOWN]), UNKNOWN)
    _refused(lambda: backend.count_runs([exp, UNKNOWN], filter="metrics.m > 0"), UNKNOWN)
    _refused(lambda: backend.search_runs([exp, UNKNOWN], view="all", max_results=1,
                                         include_total=True), UNKNOWN)
    # The known one alone, and every experiment, answer as before.
    assert len(backend.search_runs([exp])) == 1
    assert backend.count_runs([exp]) == 1
    assert backend.count_runs(None) == 1


def test_existing_experiments_without_runs_and_deleted_ones_are_no_error(backend: Any) -> None:
    empty = backend.create_experiment("empty").experiment_id
    assert list(backend.search_runs([empty])) == []
    assert backend.count_runs([empty]) == 0
    gone = _exp_with_run(backend, "gone")
    backend.delete_experiment(gone)
    assert list(backend.search_runs([gone])) == []  # active runs only: none
    assert backend.count_runs([gone], view="deleted_only") == 1
    assert backend.count_runs([empty, gone, empty]) == 0  # an id twice is fine
    # The default experiment by another spelling of its id (1-18 digits).
    assert backend.count_runs(["0", "00"]) == 0


def test_many_experiments_are_checked_at_once(backend: Any) -> None:
    """Past a handful of ids the check lists experiments instead of looking each one up."""
    ids = [backend.create_experiment(f"e{i}").experiment_id for i in range(12)]
    assert backend.count_runs(ids) == 0
    assert list(backend.search_runs(ids)) == []
    _refused(lambda: backend.count_runs([*ids, UNKNOWN, "987654322"]), UNKNOWN)
    _refused(lambda: backend.search_runs([*ids[:5], UNKNOWN, *ids[5:]]), UNKNOWN)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_rest_answer_is_404_naming_the_field(server: Any) -> None:
    with httpx.Client(base_url=server.url, event_hooks=CLIENT_HOOKS) as api:
        for route in (r.SEARCH_RUNS, r.COUNT_RUNS):
            resp = api.post(route.path, json={"experiment_ids": ["0", UNKNOWN]})
            assert resp.status_code == 404, resp.text
            err = resp.json()["error"]
            assert err["code"] == "EXPERIMENT_NOT_FOUND"
            assert err["field"] == "experiment_ids" and UNKNOWN in err["message"]
