"""One behavioural suite over the store protocols, run against SQLite and PostgreSQL.

Every test takes ``stores`` (``tests/conftest.py``, built on the ``db_url`` fixture), so each
runs once per database; nothing here knows which one it is talking to. The last section checks
the SQL search compiler against a pure-Python evaluator of the same filter AST with Hypothesis.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.domain.entities import (
    ArtifactEntry,
    LifecycleStage,
    LogBatch,
    Metric,
    NewRun,
    Param,
    Run,
    RunEnd,
    RunStatus,
    Tag,
    ViewType,
)
from modelyard.domain.paging import Page
from modelyard.domain.search import (
    Expr,
    parse_filter,
    render,
)
from modelyard.errors import (
    AlreadyExists,
    ArtifactNotFound,
    Conflict,
    ExperimentNotFound,
    InvalidArgument,
    InvalidFilter,
    InvalidState,
    NotFound,
    ParamOverwrite,
    RunNotFound,
)
from modelyard.stores.sql import SqlStores, schema
from support.search_model import evaluate, filters, run_specs, write_specs
from support.stores import log, new_exp, new_run, rid, search

ACTIVE, DELETED = LifecycleStage.ACTIVE, LifecycleStage.DELETED
NAN, INF = math.nan, math.inf


def all_pages(stores: SqlStores, exps: Sequence[str], flt: str | None, order: Sequence[str],
              size: int, view: ViewType = ViewType.ACTIVE_ONLY) -> list[str]:
    out: list[str] = []
    token: str | None = None
    for _ in range(10_000):
        page = search(stores, exps, flt, order, view=view, max_results=size, token=token)
        assert len(page) <= size
        out.extend(r.id for r in page)
        token = page.next_page_token
        if token is None:
            return out
        assert len(page) == size  # only the last page is short
    raise AssertionError("paging never ended")


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# =========================================================================== experiments


def test_default_experiment_exists(stores: SqlStores) -> None:
    default = stores.experiments.get_experiment("0")
    assert default.experiment_id == "0"
    assert default.name == "Default"
    assert default.lifecycle_stage is ACTIVE
    by_name = stores.experiments.get_experiment_by_name("Default")
    assert by_name is not None and by_name.experiment_id == "0"
    listed = stores.experiments.list_experiments(view=ViewType.ACTIVE_ONLY, max_results=10,
                                                 page_token=None)
    assert [e.experiment_id for e in listed] == ["0"]


def test_experiment_create_get_and_by_name(stores: SqlStores) -> None:
    exp_id = stores.experiments.create_experiment(
        "churn", description="predict churn", tags={"team": "ml", "prio": "1"}, now=1234
    )
    assert exp_id.isdigit() and exp_id != "0"
    exp = stores.experiments.get_experiment(exp_id)
    assert (exp.experiment_id, exp.name, exp.description) == (exp_id, "churn", "predict churn")
    assert exp.lifecycle_stage is ACTIVE
    assert exp.creation_time == exp.last_update_time == 1234
    assert exp.deleted_time is None
    assert dict(exp.tags) == {"team": "ml", "prio": "1"}
    assert stores.experiments.get_experiment_by_name("churn") == exp
    assert stores.experiments.get_experiment_by_name("Churn") is None  # names are exact
    assert stores.experiments.get_experiment_by_name("nope") is None
    for missing in ("999999", "abc", "", "-1"):
        with pytest.raises(ExperimentNotFound):
            stores.experiments.get_experiment(missing)


def test_active_experiment_names_are_unique(stores: SqlStores) -> None:
    new_exp(stores, "dup")
    with pytest.raises(AlreadyExists) as exc:
        new_exp(stores, "dup")
    assert exc.value.field == "name"
    # the failed creation left nothing behind
    page = stores.experiments.list_experiments(view=ViewType.ALL, max_results=100,
                                               page_token=None)
    assert [e.name for e in page] == ["Default", "dup"]


def test_a_deleted_experiment_frees_its_name(stores: SqlStores) -> None:
    old = new_exp(stores, "dup")
    run = stores.runs.create_run(run_id="a" * 32, experiment_id=old, run_name="r", user_id="u",
                                 start_time=1, tags={}, parent_run_id=None)
    stores.experiments.set_experiment_lifecycle(old, stage=DELETED, now=5)
    assert stores.experiments.get_experiment_by_name("dup").experiment_id == old  # deleted one
    new = new_exp(stores, "dup")
    assert new != old
    # the name now means the active experiment; the deleted one keeps its name and runs
    assert stores.experiments.get_experiment_by_name("dup").experiment_id == new
    gone = stores.experiments.get_experiment(old)
    assert (gone.name, gone.lifecycle_stage) == ("dup", DELETED)
    assert stores.runs.get_run(run.info.run_id).info.experiment_id == old
    # a second deletion: the name can be reused again, and by-name finds the newest deleted one
    stores.experiments.set_experiment_lifecycle(new, stage=DELETED, now=9)
    assert stores.experiments.get_experiment_by_name("dup").experiment_id == new
    third = new_exp(stores, "dup")

    # restoring while the name is taken is a conflict that says what to do; nothing changes
    with pytest.raises(AlreadyExists) as exc:
        stores.experiments.set_experiment_lifecycle(old, stage=ACTIVE, now=11)
    assert exc.value.field == "name"
    assert "new_name" in str(exc.value) and f"id {third}" in str(exc.value)
    assert stores.experiments.get_experiment(old).lifecycle_stage is DELETED
    assert stores.runs.get_run(run.info.run_id).info.lifecycle_stage is DELETED

    # a new name that is taken too is refused the same way
    with pytest.raises(AlreadyExists):
        stores.experiments.set_experiment_lifecycle(old, stage=ACTIVE, now=11, new_name="dup")
    # restoring under a free name brings it and its runs back, renamed
    stores.experiments.set_experiment_lifecycle(old, stage=ACTIVE, now=12, new_name="dup-old")
    back = stores.experiments.get_experiment(old)
    assert (back.name, back.lifecycle_stage) == ("dup-old", ACTIVE)
    assert stores.runs.get_run(run.info.run_id).info.lifecycle_stage is ACTIVE
    # renaming onto an active name is still refused
    with pytest.raises(AlreadyExists):
        stores.experiments.update_experiment(old, name="dup", description=None, now=13)


def test_list_experiments_pages_and_views(stores: SqlStores) -> None:
    ids = ["0"] + [new_exp(stores, f"e{i}") for i in range(11)]
    deleted = ids[3::4]
    for e in deleted:
        stores.experiments.set_experiment_lifecycle(e, stage=DELETED, now=7)

    def listing(view: ViewType, size: int) -> list[str]:
        out: list[str] = []
        token = None
        while True:
            page = stores.experiments.list_experiments(view=view, max_results=size,
                                                       page_token=token)
            out.extend(e.experiment_id for e in page)
            token = page.next_page_token
            if token is None:
                return out

    by_id = sorted(ids, key=int)
    for size in (1, 3, 5, 12, 50):
        assert listing(ViewType.ALL, size) == by_id
        assert listing(ViewType.ACTIVE_ONLY, size) == [e for e in by_id if e not in deleted]
        assert listing(ViewType.DELETED_ONLY, size) == sorted(deleted, key=int)
    # exactly one full page: no token
    exact = stores.experiments.list_experiments(view=ViewType.ALL, max_results=len(ids),
                                                page_token=None)
    assert exact.next_page_token is None
    # a token belongs to its listing
    first = stores.experiments.list_experiments(view=ViewType.ALL, max_results=2,
                                                page_token=None)
    assert first.next_page_token is not None
    with pytest.raises(InvalidArgument):
        stores.experiments.list_experiments(view=ViewType.ACTIVE_ONLY, max_results=2,
                                            page_token=first.next_page_token)
    with pytest.raises(InvalidArgument):
        stores.experiments.list_experiments(view=ViewType.ALL, max_results=2,
                                            page_token="garbage")
    # page tags are attached to the right experiments
    tagged = new_exp(stores, "tagged", tags={"k": "v"})
    listed = {e.experiment_id: e for e in stores.experiments.list_experiments(
        view=ViewType.ALL, max_results=100, page_token=None)}
    assert dict(listed[tagged].tags) == {"k": "v"}
    assert dict(listed["0"].tags) == {}


def test_update_experiment(stores: SqlStores) -> None:
    a = new_exp(stores, "a", description="old", now=10)
    b = new_exp(stores, "b")
    stores.experiments.update_experiment(a, name="a2", description=None, now=20)
    exp = stores.experiments.get_experiment(a)
    assert (exp.name, exp.description, exp.last_update_time) == ("a2", "old", 20)
    assert exp.creation_time == 10
    stores.experiments.update_experiment(a, name=None, description="new", now=30)
    exp = stores.experiments.get_experiment(a)
    assert (exp.name, exp.description, exp.last_update_time) == ("a2", "new", 30)
    stores.experiments.update_experiment(a, name="a2", description=None, now=40)  # same name
    with pytest.raises(AlreadyExists) as exc:
        stores.experiments.update_experiment(a, name="b", description="lost", now=50)
    assert "'b'" in exc.value.message
    exp = stores.experiments.get_experiment(a)
    assert (exp.name, exp.description, exp.last_update_time) == ("a2", "new", 40)
    assert stores.experiments.get_experiment(b).name == "b"
    assert stores.experiments.get_experiment_by_name("a") is None
    with pytest.raises(ExperimentNotFound):
        stores.experiments.update_experiment("424242", name="x", description=None, now=1)


def test_delete_and_restore_experiment_carries_its_runs(stores: SqlStores) -> None:
    exp = new_exp(stores)
    other = new_exp(stores)
    r1, r2, early = new_run(stores, 1, exp=exp), new_run(stores, 2, exp=exp), new_run(
        stores, 3, exp=exp)
    elsewhere = new_run(stores, 4, exp=other)
    stores.runs.set_run_lifecycle(early, stage=DELETED, now=50)  # deleted on its own, before

    stores.experiments.set_experiment_lifecycle(exp, stage=DELETED, now=100)
    e = stores.experiments.get_experiment(exp)
    assert e.lifecycle_stage is DELETED and e.deleted_time == 100 and e.last_update_time == 100
    for r in (r1, r2):
        info = stores.runs.get_run(r).info
        assert info.lifecycle_stage is DELETED and info.deleted_time == 100
    assert stores.runs.get_run(early).info.deleted_time == 50
    assert stores.runs.get_run(elsewhere).info.lifecycle_stage is ACTIVE
    assert search(stores, [exp]).items == []
    assert {r.id for r in search(stores, [exp], view=ViewType.DELETED_ONLY)} == {r1, r2, early}

    # a deleted experiment takes no new runs, and its runs cannot be restored alone
    with pytest.raises(InvalidState):
        new_run(stores, 5, exp=exp)
    with pytest.raises(RunNotFound):
        stores.runs.get_run(rid(5))
    with pytest.raises(InvalidState):
        stores.runs.set_run_lifecycle(r1, stage=ACTIVE, now=110)
    with pytest.raises(InvalidState):
        stores.experiments.set_experiment_lifecycle(exp, stage=DELETED, now=120)

    stores.experiments.set_experiment_lifecycle(exp, stage=ACTIVE, now=200)
    e = stores.experiments.get_experiment(exp)
    assert e.lifecycle_stage is ACTIVE and e.deleted_time is None
    for r in (r1, r2):
        info = stores.runs.get_run(r).info
        assert info.lifecycle_stage is ACTIVE and info.deleted_time is None
    # the run deleted before the experiment stays deleted
    assert stores.runs.get_run(early).info.lifecycle_stage is DELETED
    with pytest.raises(InvalidState) as exc:
        stores.experiments.set_experiment_lifecycle(exp, stage=ACTIVE, now=300)
    assert "already active" in exc.value.message
    with pytest.raises(ExperimentNotFound):
        stores.experiments.set_experiment_lifecycle("987654", stage=DELETED, now=1)


def test_missing_experiments(stores: SqlStores) -> None:
    a, b = new_exp(stores, "a"), new_exp(stores, "b")
    stores.experiments.set_experiment_lifecycle(b, stage=DELETED, now=1)
    assert stores.experiments.missing_experiments([a, "0", b]) == []  # a deleted one exists
    assert stores.experiments.missing_experiments(["777", a, "778"]) == ["777", "778"]
    many = [str(10_000 + i) for i in range(1_200)]  # more than one IN list
    assert stores.experiments.missing_experiments([*many, a]) == many
    assert stores.experiments.missing_experiments([]) == []


def test_experiment_tags(stores: SqlStores) -> None:
    exp = new_exp(stores, tags={"a": "1"}, now=1)
    stores.experiments.set_experiment_tag(exp, "b", "2", now=5)
    stores.experiments.set_experiment_tag(exp, "a", "changed", now=6)
    e = stores.experiments.get_experiment(exp)
    assert dict(e.tags) == {"a": "changed", "b": "2"}
    assert e.last_update_time == 6
    assert dict(stores.experiments.get_experiment("0").tags) == {}
    with pytest.raises(ExperimentNotFound):
        stores.experiments.set_experiment_tag("31337", "a", "1", now=1)


# =========================================================================== runs


def test_a_batch_can_create_and_end_its_run(stores: SqlStores) -> None:
    exp = new_exp(stores)
    create = NewRun(exp, "one-shot", "ana", 100)
    batch = LogBatch(metrics=(Metric("m", 0.5, 0, 1),), params=(Param("p", "1"),),
                     tags=(Tag("t", "x"),))
    assert stores.runs.log_batch(rid(1), batch, batch_id="b-000001", create=create,
                                 end=RunEnd(RunStatus.FINISHED, 200))
    got = stores.runs.get_run(rid(1))
    assert (got.name, got.user_id, got.start_time) == ("one-shot", "ana", 100)
    assert (got.status, got.end_time) == (RunStatus.FINISHED, 200)
    assert (got.params, got.tags, got.metrics) == ({"p": "1"}, {"t": "x"}, {"m": 0.5})
    # The same first batch again (its answer was lost): a duplicate, nothing written twice.
    assert not stores.runs.log_batch(rid(1), batch, batch_id="b-000001", create=create,
                                     end=RunEnd(RunStatus.FINISHED, 200))
    assert [m.step for m in stores.runs.get_metric_history(rid(1), "m")] == [0]
    # A later batch with the same creation goes on; its end ends the run again.
    assert stores.runs.log_batch(rid(1), LogBatch(metrics=(Metric("m", 0.7, 1, 2),)),
                                 batch_id="b-000002", create=create,
                                 end=RunEnd(RunStatus.FAILED, 300))
    got = stores.runs.get_run(rid(1))
    assert (got.status, got.end_time, got.metrics) == (RunStatus.FAILED, 300, {"m": 0.7})
    with pytest.raises(Conflict):  # another creation under the same id
        stores.runs.log_batch(rid(1), batch, batch_id="b-000003",
                              create=NewRun(exp, "other", "ana", 100))
    with pytest.raises(ExperimentNotFound):
        stores.runs.log_batch(rid(2), batch, batch_id=None, create=NewRun("777777", "r", "u", 1))
    with pytest.raises(RunNotFound):
        stores.runs.get_run(rid(2))  # nothing of the refused batch was written
    stores.experiments.set_experiment_lifecycle(exp, stage=DELETED, now=5)
    with pytest.raises(InvalidState):
        stores.runs.log_batch(rid(3), batch, batch_id=None, create=NewRun(exp, "r", "u", 1))


def test_a_batch_names_stored_blobs_and_drops_their_leases(stores: SqlStores) -> None:
    run = new_run(stores, 1)
    leases = stores.artifacts.add_leases(["a" * 64, "b" * 64], now=int(time.time() * 1000))
    assert len(set(leases)) == 2
    assert stores.maintenance.leased_digests(since=0) == {"a" * 64, "b" * 64}
    entries = (ArtifactEntry("env/req.txt", "a" * 64, 3), ArtifactEntry("diff.patch", "b" * 64, 4))
    stores.runs.log_batch(run, LogBatch(artifacts=entries), batch_id=None, release_leases=leases)
    assert stores.artifacts.list_artifacts(run, prefix="") == sorted(entries, key=lambda e: e.path)
    assert stores.maintenance.leased_digests(since=0) == set()  # in the same transaction
    more = stores.artifacts.add_leases(["c" * 64], now=int(time.time() * 1000))
    stores.artifacts.drop_leases([*more, "not-a-lease"])
    assert stores.maintenance.leased_digests(since=0) == set()


def test_run_create_and_get(stores: SqlStores) -> None:
    exp = new_exp(stores)
    parent = new_run(stores, 1, exp=exp, name="parent", user="alice", start=111,
                     tags={"t": "v", "modelyard.source": "x"})
    run = stores.runs.get_run(parent)
    info = run.info
    assert (info.run_id, info.experiment_id, info.run_name, info.user_id) == (
        parent, exp, "parent", "alice")
    assert info.status is RunStatus.RUNNING
    assert (info.start_time, info.end_time, info.parent_run_id) == (111, None, None)
    assert info.lifecycle_stage is ACTIVE
    assert dict(run.tags) == {"t": "v", "modelyard.source": "x"}
    assert dict(run.params) == {} and dict(run.latest_metrics) == {}

    child = stores.runs.create_run(run_id=rid(2), experiment_id=exp, run_name="child",
                                   user_id="bob", start_time=222, tags={},
                                   parent_run_id=parent)
    assert child.parent_run_id == parent and child.id == rid(2)
    assert stores.runs.get_run(rid(2)) == child

    with pytest.raises(RunNotFound):
        stores.runs.get_run(rid(99))
    with pytest.raises(ExperimentNotFound):
        new_run(stores, 3, exp="777777")
    with pytest.raises(RunNotFound):
        new_run(stores, 4, exp=exp, parent=rid(98))
    with pytest.raises(RunNotFound):
        stores.runs.get_run(rid(4))  # nothing was created
    with pytest.raises(Conflict):
        new_run(stores, 1, exp=exp)  # the id is taken by a run created otherwise
    assert stores.runs.get_run(parent).name == "parent"
    # The same creation again (a retry whose answer was lost) answers with the run as it is.
    again = new_run(stores, 1, exp=exp, name="parent", user="alice", start=111,
                    tags={"t": "v", "modelyard.source": "x"})
    assert again == rid(1)
    assert stores.runs.get_run(parent) == run
    with pytest.raises(Conflict):  # same values but other tags: not a repeat
        new_run(stores, 1, exp=exp, name="parent", user="alice", start=111, tags={"t": "w"})


def test_update_run(stores: SqlStores) -> None:
    r = new_run(stores, 1, name="before")
    out = stores.runs.update_run(r, status=RunStatus.FINISHED, end_time=999, run_name=None)
    assert (out.status, out.end_time, out.name) == (RunStatus.FINISHED, 999, "before")
    out = stores.runs.update_run(r, status=None, end_time=None, run_name="after")
    assert (out.status, out.end_time, out.name) == (RunStatus.FINISHED, 999, "after")
    out = stores.runs.update_run(r, status=None, end_time=None, run_name=None)
    assert stores.runs.get_run(r) == out
    with pytest.raises(RunNotFound):
        stores.runs.update_run(rid(2), status=RunStatus.FAILED, end_time=None, run_name=None)


def test_delete_and_restore_run(stores: SqlStores) -> None:
    r = new_run(stores, 1)
    log(stores, r, tags={"t": "1"})
    stores.runs.set_run_lifecycle(r, stage=DELETED, now=42)
    info = stores.runs.get_run(r).info  # still readable
    assert info.lifecycle_stage is DELETED and info.deleted_time == 42
    with pytest.raises(InvalidState):
        log(stores, r, params={"p": "1"})
    with pytest.raises(InvalidState):
        stores.runs.delete_tag(r, "t")
    with pytest.raises(InvalidState):
        stores.artifacts.put_artifacts(r, [ArtifactEntry("a", "d" * 64, 1)])
    stores.runs.set_run_lifecycle(r, stage=ACTIVE, now=43)
    info = stores.runs.get_run(r).info
    assert info.lifecycle_stage is ACTIVE and info.deleted_time is None
    assert log(stores, r, params={"p": "1"})
    with pytest.raises(RunNotFound):
        stores.runs.set_run_lifecycle(rid(2), stage=DELETED, now=1)


def test_log_batch_is_all_or_nothing(stores: SqlStores) -> None:
    r = new_run(stores, 1)
    assert log(stores, r, metrics=[Metric("m", 1.0, 0, 10)], params={"p": "1"},
               tags={"t": "old"})
    with pytest.raises(ParamOverwrite) as exc:
        log(stores, r,
            metrics=[Metric("m", 5.0, 1, 20), Metric("n", 2.0, 0, 20)],
            params=[("fresh", "x"), ("p", "2")],
            tags={"t": "new", "u": "1"},
            batch_id="batch-0001")
    assert exc.value.field == "params.p"
    assert "'p'" in exc.value.message
    run = stores.runs.get_run(r)
    assert dict(run.params) == {"p": "1"}
    assert dict(run.tags) == {"t": "old"}
    assert set(run.latest_metrics) == {"m"} and run.latest_metrics["m"].value == 1.0
    assert [m.value for m in stores.runs.get_metric_history(r, "m")] == [1.0]
    assert stores.runs.get_metric_history(r, "n") == []
    # the batch id of the refused batch was not consumed: a corrected retry is stored
    assert log(stores, r, metrics=[Metric("n", 2.0, 0, 20)], params={"p": "1"},
               batch_id="batch-0001")
    assert stores.runs.get_run(r).metrics == {"m": 1.0, "n": 2.0}


def test_same_param_same_value_is_fine(stores: SqlStores) -> None:
    r = new_run(stores, 1)
    assert log(stores, r, params={"p": "1", "q": "x"})
    assert log(stores, r, params={"p": "1"})
    assert log(stores, r, params=[("p", "1"), ("p", "1"), ("r", "new")])
    assert dict(stores.runs.get_run(r).params) == {"p": "1", "q": "x", "r": "new"}
    with pytest.raises(ParamOverwrite):
        log(stores, r, params={"q": "X"})  # params are case-sensitive and immutable


def test_batch_id_makes_a_retry_harmless(stores: SqlStores) -> None:
    r = new_run(stores, 1)
    batch = {"metrics": [Metric("m", float(i), i, i) for i in range(5)],
             "params": {"p": "1"}, "tags": {"t": "first"}}
    assert log(stores, r, **batch, batch_id="0f0f0f0f-aaaa") is True  # type: ignore[arg-type]
    assert log(stores, r, **batch, batch_id="0f0f0f0f-aaaa") is False  # type: ignore[arg-type]
    # a batch id seen before writes nothing, whatever the batch holds now
    assert log(stores, r, metrics=[Metric("m", 99.0, 99, 99)], tags={"t": "second"},
               params={"p": "2"}, batch_id="0f0f0f0f-aaaa") is False
    assert len(stores.runs.get_metric_history(r, "m")) == 5
    run = stores.runs.get_run(r)
    assert run.tags["t"] == "first" and run.metrics["m"] == 4.0
    # without an id, or with a new one, batches are always written
    assert log(stores, r, metrics=[Metric("m", 5.0, 5, 5)])
    assert log(stores, r, metrics=[Metric("m", 5.0, 5, 5)])
    assert log(stores, r, metrics=[Metric("m", 6.0, 6, 6)], batch_id="0f0f0f0f-bbbb")
    assert len(stores.runs.get_metric_history(r, "m")) == 8


def test_run_tags_upsert_and_delete(stores: SqlStores) -> None:
    r = new_run(stores, 1, tags={"a": "0"})
    log(stores, r, tags=[("a", "1"), ("b", "x"), ("a", "2"), ("b", "y"), ("a", "3")])
    assert dict(stores.runs.get_run(r).tags) == {"a": "3", "b": "y"}  # last one wins
    log(stores, r, tags={"a": "4"})
    assert dict(stores.runs.get_run(r).tags) == {"a": "4", "b": "y"}
    stores.runs.delete_tag(r, "a")
    assert dict(stores.runs.get_run(r).tags) == {"b": "y"}
    with pytest.raises(NotFound) as exc:
        stores.runs.delete_tag(r, "a")
    assert exc.value.field == "key"
    with pytest.raises(RunNotFound):
        stores.runs.delete_tag(rid(2), "b")
    with pytest.raises(RunNotFound):
        log(stores, rid(2), tags={"a": "1"})


def _latest(stores: SqlStores, r: str, key: str = "m") -> Metric:
    return stores.runs.get_run(r).latest_metrics[key]


@pytest.mark.parametrize("one_batch", [False, True], ids=["batches", "one-batch"])
def test_latest_metric_rules(stores: SqlStores, one_batch: bool) -> None:
    """Whether points arrive one batch each or all in one batch, the run shows the same latest
    point: highest step, then latest timestamp, then highest value (NaN lowest)."""
    cases: list[tuple[str, list[Metric], tuple[float, int, int]]] = [
        ("higher step wins even with a lower value",
         [Metric("m", 10.0, 1, 100), Metric("m", 5.0, 2, 100)], (5.0, 2, 100)),
        ("a lower step logged later does not replace it",
         [Metric("m", 5.0, 2, 100), Metric("m", 100.0, 1, 900)], (5.0, 2, 100)),
        ("same step: the later timestamp wins",
         [Metric("m", 3.0, 2, 200), Metric("m", 1.0, 2, 300), Metric("m", 9.0, 2, 250)],
         (1.0, 2, 300)),
        ("same step and timestamp: the higher value wins",
         [Metric("m", 1.0, 2, 300), Metric("m", 7.0, 2, 300), Metric("m", 4.0, 2, 300)],
         (7.0, 2, 300)),
        ("NaN is stored and returned as NaN",
         [Metric("m", 1.0, 0, 1), Metric("m", NAN, 1, 1)], (NAN, 1, 1)),
        ("a number beats NaN at the same step and time",
         [Metric("m", NAN, 1, 1), Metric("m", -1e300, 1, 1)], (-1e300, 1, 1)),
        ("NaN does not beat a number at the same step and time",
         [Metric("m", 2.0, 1, 1), Metric("m", NAN, 1, 1)], (2.0, 1, 1)),
        ("-inf is a number and beats NaN too",
         [Metric("m", NAN, 1, 1), Metric("m", -INF, 1, 1)], (-INF, 1, 1)),
        ("-inf is a number and beats NaN, in either order",
         [Metric("m", -INF, 1, 1), Metric("m", NAN, 1, 1)], (-INF, 1, 1)),
        ("+inf faithful", [Metric("m", 1.0, 0, 0), Metric("m", INF, 1, 0)], (INF, 1, 0)),
        ("-inf faithful", [Metric("m", 1.0, 0, 0), Metric("m", -INF, 1, 0)], (-INF, 1, 0)),
        ("negative steps and timestamps",
         [Metric("m", 1.0, -5, -10), Metric("m", 2.0, -6, 10)], (1.0, -5, -10)),
        ("64-bit extremes",
         [Metric("m", 1.0, 2**63 - 1, -(2**63)), Metric("m", 2.0, 2**63 - 2, 2**63 - 1)],
         (1.0, 2**63 - 1, -(2**63))),
    ]
    failures = []
    for n, (label, points, (value, step, ts)) in enumerate(cases):
        r = new_run(stores, n + 1)
        if one_batch:
            log(stores, r, metrics=points)
        else:
            for p in points:
                log(stores, r, metrics=[p])
        got = _latest(stores, r)
        if not (same_float(got.value, value) and (got.step, got.timestamp) == (step, ts)):
            failures.append((label, got))
        history = stores.runs.get_metric_history(r, "m")
        assert len(history) == len(points), label
        assert sorted((m.step, m.timestamp) for m in history) == sorted(
            (m.step, m.timestamp) for m in points), label
    assert not failures


def test_metric_values_are_faithful_in_history(stores: SqlStores) -> None:
    r = new_run(stores, 1)
    values = [NAN, INF, -INF, 0.0, -0.0, 1e-308, 5e-324, 1.7976931348623157e308, -1.5,
              0.1 + 0.2, 123456789.123456789]
    log(stores, r, metrics=[Metric("v", x, i, i) for i, x in enumerate(values)])
    history = stores.runs.get_metric_history(r, "v")
    assert len(history) == len(values)
    for m, x in zip(history, values, strict=True):
        assert same_float(m.value, x), (m, x)
        assert type(m.value) is float
    assert math.copysign(1.0, history[4].value) in (-1.0, 1.0)  # -0.0 == 0.0 either way
    assert stores.runs.get_run(r).latest_metrics["v"].value == 123456789.123456789


def test_metric_history_order_and_completeness(stores: SqlStores) -> None:
    r = new_run(stores, 1)
    other = new_run(stores, 2)
    rng = random.Random(7)
    points = [Metric("loss", rng.uniform(-1e6, 1e6), step, rng.randrange(10**12))
              for step in range(20_000)]
    # NaN and infinities among them, and a few repeated steps with distinct timestamps
    points[5] = Metric("loss", NAN, 5, points[5].timestamp)
    points[6] = Metric("loss", INF, 6, points[6].timestamp)
    points[7] = Metric("loss", -INF, 7, points[7].timestamp)
    points[9] = Metric("loss", 1.0, 8, points[8].timestamp + 1)
    shuffled = points[:]
    rng.shuffle(shuffled)
    log(stores, r, metrics=shuffled[:10_000])
    log(stores, r, metrics=shuffled[10_000:])
    log(stores, other, metrics=[Metric("loss", 1.0, 0, 0)])
    log(stores, r, metrics=[Metric("acc", 1.0, 0, 0)])

    history = stores.runs.get_metric_history(r, "loss")
    expected = sorted(points, key=lambda m: (m.step, m.timestamp))
    assert len(history) == 20_000
    assert [(m.step, m.timestamp) for m in history] == [(m.step, m.timestamp) for m in expected]
    assert all(same_float(a.value, b.value) for a, b in zip(history, expected, strict=True))
    assert all(m.key == "loss" for m in history)
    assert stores.runs.get_metric_history(r, "nope") == []
    with pytest.raises(RunNotFound):
        stores.runs.get_metric_history(rid(3), "loss")
    last = max(points, key=lambda m: (m.step, m.timestamp))
    assert _latest(stores, r, "loss").step == last.step


# =========================================================================== search

# The corpus: five active runs (plus a deleted one, and one in another experiment).
#   name   acc    loss   lr      opt    team    note      status    start  end   user
#   alpha  0.9    0.1    '0.1'   Adam   ml      '50%_off' FINISHED  1000   2000  alice
#   beta   0.5    NaN    '0.01'  adam   ML      -         RUNNING   2000   -     bob
#   gamma  0.7    -      '0.1'   -      data    'a\b'     FAILED    3000   3500  alice
#   delta  -      -      -       SGD    -       -         FINISHED  4000   9000  carol
#   eps    inf    -inf   '1e-3'  -      ml      'x'       KILLED    5000   5001  dave
#   zeta   0.99   (deleted)
CORPUS = {
    "alpha": dict(n=1, metrics={"acc": 0.9, "loss": 0.1}, params={"lr": "0.1", "opt": "Adam"},
                  tags={"team": "ml", "note": "50%_off"}, status="FINISHED", start=1000,
                  end=2000, user="alice"),
    "beta": dict(n=2, metrics={"acc": 0.5, "loss": NAN}, params={"lr": "0.01", "opt": "adam"},
                 tags={"team": "ML"}, status="RUNNING", start=2000, end=None, user="bob"),
    "gamma": dict(n=3, metrics={"acc": 0.7}, params={"lr": "0.1"},
                  tags={"team": "data", "note": "a\\b"}, status="FAILED", start=3000,
                  end=3500, user="alice"),
    "delta": dict(n=4, metrics={}, params={"opt": "SGD"}, tags={}, status="FINISHED",
                  start=4000, end=9000, user="carol"),
    "eps": dict(n=5, metrics={"acc": INF, "loss": -INF}, params={"lr": "1e-3"},
                tags={"team": "ml", "note": "x"}, status="KILLED", start=5000, end=5001,
                user="dave"),
}


@pytest.fixture
def corpus(stores: SqlStores) -> tuple[str, dict[str, str]]:
    exp = new_exp(stores, "search")
    ids: dict[str, str] = {}
    for name, spec in CORPUS.items():
        r = new_run(stores, spec["n"], exp=exp, name=name, user=spec["user"],  # type: ignore[arg-type]
                    start=spec["start"])  # type: ignore[arg-type]
        # an older point first: filters see the latest value only
        log(stores, r, metrics=[Metric(k, -7.0, 0, 0) for k in spec["metrics"]])  # type: ignore[attr-defined]
        log(stores, r, metrics=[Metric(k, x, 1, 0) for k, x in spec["metrics"].items()],  # type: ignore[attr-defined]
            params=spec["params"], tags=spec["tags"])  # type: ignore[arg-type]
        stores.runs.update_run(r, status=RunStatus(spec["status"]), end_time=spec["end"],  # type: ignore[arg-type]
                               run_name=None)
        ids[name] = r
    zeta = new_run(stores, 6, exp=exp, name="zeta", start=6000)
    log(stores, zeta, metrics=[Metric("acc", 0.99, 0, 0)], params={"lr": "0.1"})
    stores.runs.set_run_lifecycle(zeta, stage=DELETED, now=1)
    ids["zeta"] = zeta
    outsider = new_run(stores, 7, name="outsider")  # in experiment 0
    log(stores, outsider, metrics=[Metric("acc", 0.95, 0, 0)], params={"lr": "0.1"})
    ids["outsider"] = outsider
    return exp, ids


def _names(page: Page[Run]) -> list[str]:
    return [r.name for r in page]


FILTERS: list[tuple[str, set[str]]] = [
    # metrics: every comparator, NaN treated as missing, infinities as numbers
    ("metrics.acc > 0.7", {"alpha", "eps"}),
    ("metrics.acc >= 0.7", {"alpha", "gamma", "eps"}),
    ("metrics.acc < 0.7", {"beta"}),
    ("metrics.acc <= 0.7", {"beta", "gamma"}),
    ("metrics.acc = 0.5", {"beta"}),
    ("metrics.acc != 0.5", {"alpha", "gamma", "eps"}),
    ("metrics.acc > 1e308", {"eps"}),
    ("metrics.acc < -6", set()),  # the older points do not count
    ("metrics.loss != 0.1", {"eps"}),
    ("metrics.loss < 0", {"eps"}),
    ("metrics.loss > -1e308", {"alpha"}),
    ("metrics.loss IS NULL", {"gamma", "delta"}),
    ("metrics.loss IS NOT NULL", {"alpha", "beta", "eps"}),
    ("metrics.`acc` >= -1e-3", {"alpha", "beta", "gamma", "eps"}),
    # params
    ("params.lr = '0.1'", {"alpha", "gamma"}),
    ("params.lr != '0.1'", {"beta", "eps"}),
    ("params.opt LIKE 'A%'", {"alpha"}),
    ("params.opt LIKE 'a%'", {"beta"}),
    ("params.opt LIKE 'Ada_'", {"alpha"}),
    ("params.opt LIKE 'ADAM'", set()),
    ("params.opt ILIKE 'a%'", {"alpha", "beta"}),
    ("params.opt ILIKE 'ADAM'", {"alpha", "beta"}),
    ("params.opt ILIKE 's_d'", {"delta"}),
    ("params.opt IN ('adam', 'SGD')", {"beta", "delta"}),
    ("params.opt NOT IN ('adam', 'SGD')", {"alpha"}),
    ("params.opt IS NULL", {"gamma", "eps"}),
    ("params.lr IS NOT NULL", {"alpha", "beta", "gamma", "eps"}),
    ("params.lr LIKE '0.1'", {"alpha", "gamma"}),
    ("params.lr LIKE '0_1'", {"alpha", "gamma"}),
    # tags
    ("tags.team = 'ml'", {"alpha", "eps"}),
    ("tags.team LIKE 'M%'", {"beta"}),
    ("tags.team ILIKE 'ml'", {"alpha", "beta", "eps"}),
    ("tags.team NOT IN ('ml')", {"beta", "gamma"}),
    ("tags.team IS NULL", {"delta"}),
    ("tags.note LIKE '50%'", {"alpha"}),
    ("tags.note LIKE '_0%'", {"alpha"}),
    ("tags.note LIKE '%_off'", {"alpha"}),
    ("tags.note LIKE '%'", {"alpha", "gamma", "eps"}),
    ("tags.note LIKE 'a\\\\b'", {"gamma"}),  # a backslash is an ordinary character
    ("tags.note ILIKE 'A\\\\%'", {"gamma"}),
    ("tags.note = 'a\\\\b'", {"gamma"}),
    # attributes
    ("attributes.status = 'FINISHED'", {"alpha", "delta"}),
    ("attributes.status != 'FINISHED'", {"beta", "gamma", "eps"}),
    ("attributes.status IN ('FAILED', 'KILLED')", {"gamma", "eps"}),
    ("status NOT IN ('FAILED', 'KILLED')", {"alpha", "beta", "delta"}),
    ("attributes.status LIKE '%ED'", {"alpha", "gamma", "delta", "eps"}),
    ("attributes.status ILIKE 'running'", {"beta"}),
    ("attributes.run_name LIKE '%a'", {"alpha", "beta", "gamma", "delta"}),
    ("attributes.run_name ILIKE 'ALPHA'", {"alpha"}),
    ("attributes.run_name LIKE 'ALPHA'", set()),
    ("name = 'eps'", {"eps"}),
    ("attributes.user_id = 'alice'", {"alpha", "gamma"}),
    ("attributes.user IN ('bob', 'carol')", {"beta", "delta"}),
    ("attributes.start_time > 2000", {"gamma", "delta", "eps"}),
    ("attributes.start_time >= 2000", {"beta", "gamma", "delta", "eps"}),
    ("attributes.start_time < 2000", {"alpha"}),
    ("attributes.start_time <= 2000", {"alpha", "beta"}),
    ("attributes.start_time = 3000", {"gamma"}),
    ("attributes.start_time != 3000", {"alpha", "beta", "delta", "eps"}),
    ("attributes.start_time < 1000.5", {"alpha"}),
    ("attributes.start_time > 999.5", {"alpha", "beta", "gamma", "delta", "eps"}),
    ("attributes.start_time = 1000.5", set()),
    ("attributes.start_time != 1000.5", {"alpha", "beta", "gamma", "delta", "eps"}),
    ("attributes.start_time <= -0.5", set()),
    ("attributes.start_time > 1e18", set()),
    ("attributes.end_time IS NULL", {"beta"}),
    ("attributes.end_time IS NOT NULL", {"alpha", "gamma", "delta", "eps"}),
    ("attributes.end_time > 3000", {"gamma", "delta", "eps"}),
    ("attributes.end_time != 2000", {"gamma", "delta", "eps"}),
    ("not attributes.end_time > 3000", {"alpha", "beta"}),
    ("not attributes.end_time = 2000", {"beta", "gamma", "delta", "eps"}),
    # and / or / not / parentheses
    ("metrics.acc > 0.6 and params.lr = '0.1'", {"alpha", "gamma"}),
    ("metrics.acc > 0.8 or tags.team = 'data'", {"alpha", "eps", "gamma"}),
    ("not params.lr = '0.1'", {"beta", "delta", "eps"}),
    ("not metrics.loss != 0.1", {"alpha", "beta", "gamma", "delta"}),
    ("not (metrics.acc > 0.6 or params.opt = 'SGD')", {"beta"}),
    ("params.lr = '0.1' and (tags.team = 'data' or metrics.acc > 0.8)", {"alpha", "gamma"}),
    ("params.lr = '0.1' and tags.team = 'data' or metrics.acc > 0.8", {"alpha", "gamma", "eps"}),
    ("NOT metrics.acc IS NULL AND NOT tags.team ILIKE 'ML'", {"gamma"}),
    ("not not tags.team = 'ml'", {"alpha", "eps"}),
    ("(params.opt IS NULL) OR (attributes.status = 'RUNNING' AND metrics.acc < 1)",
     {"beta", "gamma", "eps"}),
]


def test_search_filters(stores: SqlStores, corpus: tuple[str, dict[str, str]]) -> None:
    exp, _ = corpus
    wrong = {}
    for text, expected in FILTERS:
        try:
            got = set(_names(search(stores, [exp], text)))
        except Exception as exc:  # collect every mismatch, not just the first
            got = {f"{type(exc).__name__}: {exc}"}
        if got != expected:
            wrong[text] = (sorted(got), sorted(expected))
    assert not wrong, "\n".join(f"{k}: got {g} expected {e}" for k, (g, e) in wrong.items())


def test_search_attribute_ids(stores: SqlStores, corpus: tuple[str, dict[str, str]]) -> None:
    exp, ids = corpus
    assert _names(search(stores, [exp], f"attributes.run_id = '{ids['gamma']}'")) == ["gamma"]
    assert _names(search(stores, [exp], f"id IN ('{ids['beta']}', '{'f' * 32}')")) == ["beta"]
    assert len(search(stores, [exp], f"attributes.experiment_id = '{exp}'")) == 5
    assert len(search(stores, [exp], f"attributes.experiment_id IN ('{exp}', '999')")) == 5
    assert len(search(stores, [exp], f"attributes.experiment_id != '{exp}'")) == 0
    assert len(search(stores, [exp], f"attributes.experiment_id LIKE '{exp}'")) == 5
    assert len(search(stores, [exp, "0"], "attributes.experiment_id = '0'")) == 1
    with pytest.raises(InvalidFilter):
        search(stores, [exp], "attributes.experiment_id = 'abc'")


def test_search_is_scoped_to_experiments(stores: SqlStores,
                                         corpus: tuple[str, dict[str, str]]) -> None:
    exp, _ = corpus
    assert set(_names(search(stores, ["0"]))) == {"outsider"}
    assert len(search(stores, [exp, "0"])) == 6
    assert len(search(stores, [exp, "0", "12345"], "params.lr = '0.1'")) == 3
    assert search(stores, []).items == []
    assert search(stores, ["12345"]).items == []


def test_deleted_runs_are_hidden_unless_asked_for(stores: SqlStores,
                                                  corpus: tuple[str, dict[str, str]]) -> None:
    exp, _ = corpus
    assert "zeta" not in _names(search(stores, [exp]))
    assert "zeta" not in _names(search(stores, [exp], "metrics.acc > 0.95"))
    assert _names(search(stores, [exp], "metrics.acc > 0.95", view=ViewType.DELETED_ONLY)) == [
        "zeta"]
    assert set(_names(search(stores, [exp], "metrics.acc > 0.95", view=ViewType.ALL))) == {
        "zeta", "eps"}
    assert len(search(stores, [exp], view=ViewType.ALL)) == 6
    assert _names(search(stores, [exp], view=ViewType.DELETED_ONLY)) == ["zeta"]


ORDERS: list[tuple[list[str], list[str]]] = [
    (["metrics.acc DESC"], ["eps", "alpha", "gamma", "beta", "delta"]),
    (["metrics.acc ASC"], ["beta", "gamma", "alpha", "eps", "delta"]),
    (["metrics.acc"], ["beta", "gamma", "alpha", "eps", "delta"]),
    # NaN sorts with the missing values, last in both directions; ties (the missing values
    # too) are broken by run id in the first key's direction
    (["metrics.loss ASC"], ["eps", "alpha", "beta", "gamma", "delta"]),
    (["metrics.loss DESC"], ["alpha", "eps", "delta", "gamma", "beta"]),
    (["params.lr ASC"], ["beta", "alpha", "gamma", "eps", "delta"]),
    (["params.lr DESC"], ["eps", "gamma", "alpha", "beta", "delta"]),
    (["params.opt"], ["alpha", "delta", "beta", "gamma", "eps"]),
    (["tags.team DESC"], ["eps", "alpha", "gamma", "beta", "delta"]),
    (["tags.team ASC"], ["beta", "gamma", "alpha", "eps", "delta"]),
    (["attributes.start_time DESC"], ["eps", "delta", "gamma", "beta", "alpha"]),
    (["attributes.start_time"], ["alpha", "beta", "gamma", "delta", "eps"]),
    (["attributes.end_time ASC"], ["alpha", "gamma", "eps", "delta", "beta"]),
    (["attributes.end_time DESC"], ["delta", "eps", "gamma", "alpha", "beta"]),
    (["attributes.run_name"], ["alpha", "beta", "delta", "eps", "gamma"]),
    (["attributes.status DESC", "attributes.start_time DESC"],
     ["beta", "eps", "delta", "alpha", "gamma"]),
    (["attributes.user_id", "metrics.acc DESC"], ["alpha", "gamma", "beta", "delta", "eps"]),
    (["params.lr ASC", "metrics.acc DESC"], ["beta", "alpha", "gamma", "eps", "delta"]),
    ([], ["eps", "delta", "gamma", "beta", "alpha"]),  # default: newest first
]


def test_search_order_by(stores: SqlStores, corpus: tuple[str, dict[str, str]]) -> None:
    exp, _ = corpus
    wrong = {}
    for order, expected in ORDERS:
        got = _names(search(stores, [exp], None, order))
        if got != expected:
            wrong[" , ".join(order)] = (got, expected)
    assert not wrong, "\n".join(f"{k}: got {g} expected {e}" for k, (g, e) in wrong.items())


def test_ties_break_by_run_id(stores: SqlStores) -> None:
    exp = new_exp(stores)
    order = [7, 3, 9, 1, 5]
    for n in order:  # created out of id order, all with the same start time and metric
        r = new_run(stores, n, exp=exp, name=f"r{n}", start=500)
        log(stores, r, metrics=[Metric("m", 1.0, 0, 0)], params={"p": "same"})
    ascending = [rid(n) for n in sorted(order)]
    # in the first key's direction (the default order is start time, newest first)
    for keys, expected in (([], ascending[::-1]), (["metrics.m DESC"], ascending[::-1]),
                           (["metrics.m ASC"], ascending), (["params.p DESC"], ascending[::-1]),
                           (["attributes.start_time DESC"], ascending[::-1]),
                           (["metrics.missing DESC"], ascending[::-1]),
                           (["tags.none"], ascending),
                           (["tags.none", "metrics.m DESC"], ascending)):
        assert [r.id for r in search(stores, [exp], None, keys)] == expected, keys


def test_paging_covers_every_result_exactly_once(stores: SqlStores) -> None:
    exp = new_exp(stores)
    rng = random.Random(3)
    for n in range(1, 24):
        r = new_run(stores, n, exp=exp, start=rng.randrange(5))
        metrics = [] if n % 5 == 0 else [Metric("m", float(rng.randrange(4)), 0, 0)]
        if n % 7 == 0:
            metrics = [Metric("m", NAN, 0, 0)]
        log(stores, r, metrics=metrics, params={"p": str(n % 3)})
    stores.runs.set_run_lifecycle(rid(11), stage=DELETED, now=1)
    for flt, order, view in [
        (None, [], ViewType.ACTIVE_ONLY),
        (None, ["metrics.m DESC"], ViewType.ACTIVE_ONLY),
        ("params.p != '1'", ["metrics.m ASC", "attributes.start_time DESC"], ViewType.ALL),
        ("metrics.m >= 1 or metrics.m IS NULL", ["params.p"], ViewType.ALL),
    ]:
        whole = [r.id for r in search(stores, [exp], flt, order, view=view)]
        assert whole
        for size in (1, 4, 5, len(whole) - 1, len(whole), len(whole) + 1):
            paged = all_pages(stores, [exp], flt, order, size, view)
            assert paged == whole, (flt, order, size)
            assert len(set(paged)) == len(paged)


def test_a_token_belongs_to_its_query(stores: SqlStores) -> None:
    exp = new_exp(stores)
    for n in range(1, 6):
        log(stores, new_run(stores, n, exp=exp), metrics=[Metric("m", float(n), 0, 0)])
    flt, order = "metrics.m > 1", ["metrics.m DESC"]
    first = search(stores, [exp], flt, order, max_results=2)
    token = first.next_page_token
    assert token is not None
    second = search(stores, [exp], flt, order, max_results=2, token=token)
    assert [r.id for r in second] == [rid(3), rid(2)]
    # max_results may change between pages; nothing else may
    assert len(search(stores, [exp], flt, order, max_results=10, token=token)) == 2
    for kwargs in (
        {"flt": "metrics.m > 2"},
        {"flt": None},
        {"order": ["metrics.m ASC"]},
        {"order": []},
        {"exps": [exp, "0"]},
        {"view": ViewType.ALL},
    ):
        args = {"exps": [exp], "flt": flt, "order": order, "view": ViewType.ACTIVE_ONLY}
        args.update(kwargs)
        with pytest.raises(InvalidArgument) as exc:
            search(stores, args["exps"], args["flt"], args["order"],  # type: ignore[arg-type]
                   view=args["view"], max_results=2, token=token)  # type: ignore[arg-type]
        assert exc.value.field == "page_token"
    with pytest.raises(InvalidArgument):
        search(stores, [exp], flt, order, token="bm90IGEgdG9rZW4")


def test_search_returns_full_runs(stores: SqlStores, corpus: tuple[str, dict[str, str]]) -> None:
    exp, ids = corpus
    (alpha,) = search(stores, [exp], "attributes.run_name = 'alpha'").items
    assert alpha == stores.runs.get_run(ids["alpha"])
    assert alpha.metrics == {"acc": 0.9, "loss": 0.1}
    assert dict(alpha.params) == {"lr": "0.1", "opt": "Adam"}
    assert alpha.latest_metrics["acc"].step == 1
    (beta,) = search(stores, [exp], "name = 'beta'").items
    assert math.isnan(beta.metrics["loss"])


def test_many_runs_in_one_page(stores: SqlStores) -> None:
    """More runs than the loader's IN-list chunk (500) come back complete on one page.

    The rows are inserted in bulk (one statement, not 1201 transactions) to keep this fast."""
    exp = new_exp(stores)
    with stores.engine.begin() as conn:
        conn.execute(schema.runs.insert(), [
            {"run_id": rid(n), "experiment_id": int(exp), "run_name": f"r{n}", "user_id": "u",
             "status": "RUNNING", "start_time": n, "end_time": None,
             "lifecycle_stage": "active", "parent_run_id": None, "deleted_time": None}
            for n in range(1, 1202)
        ])
        conn.execute(schema.tags.insert(), [
            {"run_id": rid(n), "key": "n", "value": str(n)} for n in range(1, 1202)
        ])
    page = search(stores, [exp], None, ["attributes.start_time"], max_results=1201)
    assert len(page) == 1201 and page.next_page_token is None
    assert all(r.tags["n"] == str(r.start_time) for r in page)


# =========================================================================== artifacts


def test_artifact_index(stores: SqlStores) -> None:
    r = new_run(stores, 1)
    other = new_run(stores, 2)
    d = [f"{i:064x}" for i in range(10)]
    entries = [
        ArtifactEntry("a", d[0], 1), ArtifactEntry("a/x.txt", d[1], 2),
        ArtifactEntry("a/y/z.bin", d[2], 3), ArtifactEntry("ab/x", d[3], 4),
        ArtifactEntry("ab", d[4], 5), ArtifactEntry("a_/q", d[5], 6),
        ArtifactEntry("%/w", d[6], 7), ArtifactEntry("model.pkl", d[7], 2**40),
    ]
    stores.artifacts.put_artifacts(r, entries)
    stores.artifacts.put_artifacts(other, [ArtifactEntry("a/x.txt", d[9], 9)])

    def paths(prefix: str) -> list[str]:
        return [e.path for e in stores.artifacts.list_artifacts(r, prefix=prefix)]

    assert paths("") == sorted(e.path for e in entries)
    assert paths("a") == ["a", "a/x.txt", "a/y/z.bin"]  # never 'ab', 'ab/x' or 'a_/q'
    assert paths("a/y") == ["a/y/z.bin"]
    assert paths("a/y/z.bin") == ["a/y/z.bin"]
    assert paths("ab") == ["ab", "ab/x"]
    assert paths("a_") == ["a_/q"]  # LIKE wildcards in a prefix are literal
    assert paths("%") == ["%/w"]
    assert paths("a/x") == []
    assert paths("nothing") == []
    assert stores.artifacts.get_artifact(r, "model.pkl") == ArtifactEntry("model.pkl", d[7], 2**40)
    assert stores.artifacts.get_artifact(other, "a/x.txt").digest == d[9]
    with pytest.raises(ArtifactNotFound) as exc:
        stores.artifacts.get_artifact(r, "a/x")
    assert exc.value.field == "path"
    with pytest.raises(ArtifactNotFound):
        stores.artifacts.get_artifact(other, "model.pkl")

    # putting a path again replaces its entry
    stores.artifacts.put_artifacts(r, [ArtifactEntry("a", d[8], 11)])
    assert stores.artifacts.get_artifact(r, "a") == ArtifactEntry("a", d[8], 11)
    assert len(paths("")) == len(entries)

    for call in (
        lambda: stores.artifacts.put_artifacts(rid(9), [ArtifactEntry("a", d[0], 1)]),
        lambda: stores.artifacts.list_artifacts(rid(9), prefix=""),
        lambda: stores.artifacts.get_artifact(rid(9), "a"),
    ):
        with pytest.raises(RunNotFound):
            call()
    # a deleted run's manifest can still be read, not written
    stores.runs.set_run_lifecycle(other, stage=DELETED, now=1)
    assert [e.path for e in stores.artifacts.list_artifacts(other, prefix="")] == ["a/x.txt"]
    with pytest.raises(InvalidState):
        stores.artifacts.put_artifacts(other, [ArtifactEntry("b", d[0], 1)])


# =========================================================================== maintenance


def test_maintenance_deleted_before_and_purge(stores: SqlStores) -> None:
    keep_exp = new_exp(stores, "keep")
    gone_exp = new_exp(stores, "gone", tags={"t": "1"})
    live = new_run(stores, 1, exp=keep_exp)
    old_deleted = new_run(stores, 2, exp=keep_exp)
    new_deleted = new_run(stores, 3, exp=keep_exp)
    in_gone = new_run(stores, 4, exp=gone_exp)
    in_gone_active_later = new_run(stores, 5, exp=gone_exp)
    for r in (live, old_deleted, in_gone):
        log(stores, r, metrics=[Metric("m", 1.0, 0, 0)], params={"p": "1"}, tags={"t": "1"},
            batch_id=f"batch-{r[-6:]}")
        stores.artifacts.put_artifacts(r, [ArtifactEntry("f", f"{int(r, 16):064x}", 1),
                                           ArtifactEntry("shared", "e" * 64, 1)])
    stores.runs.set_run_lifecycle(old_deleted, stage=DELETED, now=100)
    stores.runs.set_run_lifecycle(new_deleted, stage=DELETED, now=500)
    stores.experiments.set_experiment_lifecycle(gone_exp, stage=DELETED, now=200)

    runs, exps = stores.maintenance.deleted_before(cutoff=50)
    assert (runs, exps) == ([], [])
    runs, exps = stores.maintenance.deleted_before(cutoff=150)
    assert (sorted(runs), exps) == ([old_deleted], [])
    runs, exps = stores.maintenance.deleted_before(cutoff=300)
    assert sorted(runs) == sorted([old_deleted, in_gone, in_gone_active_later])
    assert exps == [gone_exp]
    assert live not in stores.maintenance.deleted_before(cutoff=10**12)[0]

    all_digests = {f"{int(r, 16):064x}" for r in (live, old_deleted, in_gone)} | {"e" * 64}
    assert stores.maintenance.referenced_digests() == all_digests
    excluded = stores.maintenance.referenced_digests(excluding_runs=runs)
    assert excluded == {f"{int(live, 16):064x}", "e" * 64}  # 'shared' is still used by live
    assert stores.maintenance.referenced_digests(excluding_runs=[live, *runs]) == set()

    stores.maintenance.purge(run_ids=runs, experiment_ids=exps)
    for r in runs:
        with pytest.raises(RunNotFound):
            stores.runs.get_run(r)
    with pytest.raises(ExperimentNotFound):
        stores.experiments.get_experiment(gone_exp)
    assert stores.experiments.get_experiment_by_name("gone") is None
    new_exp(stores, "gone")  # the name is free again
    assert stores.maintenance.referenced_digests() == {f"{int(live, 16):064x}", "e" * 64}
    # what was not purged is intact
    run = stores.runs.get_run(live)
    assert run.metrics == {"m": 1.0} and dict(run.params) == {"p": "1"}
    assert stores.runs.get_run(new_deleted).info.lifecycle_stage is DELETED
    assert len(stores.runs.get_metric_history(live, "m")) == 1
    # the purged runs' batch ids went with them; the live run's still guards it
    assert log(stores, live, params={"p": "1"}, batch_id=f"batch-{live[-6:]}") is False
    assert stores.maintenance.deleted_before(cutoff=300) == ([], [])
    # purging nothing, or what is already gone, is harmless
    stores.maintenance.purge(run_ids=[], experiment_ids=[])
    stores.maintenance.purge(run_ids=runs, experiment_ids=exps)


# =========================================================================== SQL vs Python

# The model (support.search_model): a pure-Python evaluator of the filter AST, per
# docs/search.md, and Hypothesis strategies for runs and filters.


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(run_specs(), max_size=6), exprs=st.lists(filters, min_size=1, max_size=3))
def test_sql_search_agrees_with_python_evaluator(
    stores: SqlStores, specs: list[dict[str, object]], exprs: list[Expr]
) -> None:
    exp = new_exp(stores)  # a fresh experiment per example: examples share the database
    model = write_specs(stores, exp, specs)
    for expr in exprs:
        # the AST survives rendering, so what is compiled is what a user could have typed
        assert parse_filter(render(expr)) == expr
        got = {r.id for r in search(stores, [exp], expr)}
        expected = {r for r, data in model.items() if evaluate(expr, data)}
        assert got == expected, render(expr)
