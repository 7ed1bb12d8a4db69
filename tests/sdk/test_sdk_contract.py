"""The SDK contract, run against every backend: embedded and remote, on SQLite and PostgreSQL.

Each test uses the ``sdk`` fixture (the ``modelyard`` module wired to one backend), so the same
assertions hold in embedded mode and over real HTTP. Error tests assert the *exact* class, and
``test_local_and_remote_raise_the_same_errors`` compares both backends side by side.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.backend.local import LocalBackend
from modelyard.backend.remote import RemoteBackend
from modelyard.domain.entities import LogBatch, Metric, Param, RunStatus
from modelyard.errors import (
    AlreadyExists,
    ArtifactNotFound,
    ExperimentNotFound,
    InvalidArgument,
    InvalidFilter,
    InvalidState,
    LoggingRefused,
    ModelyardError,
    NotFound,
    ParamOverwrite,
    RunNotFound,
    UnsafePath,
)
from modelyard.settings import Settings
from support.servers import ServerThread

TRAVERSALS = ["../x", "/etc/passwd", "a/%2e%2e/b", "a/../../b", "..", "./..", "a\\..\\b",
              "%2e%2e/x", "a/%252e%252e/b"]
UNKNOWN_RUN = "0" * 32


def raised(fn: Callable[[], object]) -> BaseException:
    """The exception ``fn`` raises (the test fails when it raises none)."""
    try:
        fn()
    except BaseException as exc:  # KeyboardInterrupt included, on purpose
        return exc
    pytest.fail(f"{fn} raised nothing")


def raises_exactly(cls: type[BaseException], fn: Callable[[], object]) -> Any:
    exc = raised(fn)
    assert type(exc) is cls, f"expected exactly {cls.__name__}, got {type(exc).__name__}: {exc}"
    return exc


# ----------------------------------------------------------------------------- the example


def test_issue_example_round_trips(sdk: Any, tmp_path: Path) -> None:
    figure = tmp_path / "plot.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    outdir = tmp_path / "outdir"
    (outdir / "sub").mkdir(parents=True)
    (outdir / "a.txt").write_text("alpha\n")
    (outdir / "sub" / "b.bin").write_bytes(os.urandom(3000))

    before = int(time.time() * 1000)
    with sdk.start_run(experiment="churn", name=None, params={"lr": 0.1},
                       tags={"team": "risk"}) as run:
        assert sdk.active_run() is run
        assert run.name  # a generated name
        run.log_param("epochs", 10)
        run.log_params({"optimizer": "adam", "lr": 0.1})  # same value again is fine
        run.log_metric("loss", 0.9, step=0)
        run.log_metric("loss", 0.5, step=1)
        run.log_metrics({"loss": 0.25, "acc": 0.8}, step=2)
        run.set_tag("stage", "dev")
        run.set_tags({"owner": "ana", "priority": 3})
        assert run.log_artifact(figure, path="figures") == "figures/plot.png"
        assert run.log_artifacts(outdir, path="out") == ["out/a.txt", "out/sub/b.bin"]
        assert run.log_text("hello\n", "notes/readme.txt") == "notes/readme.txt"
        assert run.log_dict({"b": [1, 2], "a": "x"}, "config.json") == "config.json"
        run.flush()
        mid = sdk.get_run(run.id)
        assert mid.status is RunStatus.RUNNING
        assert mid.end_time is None
        assert mid.metrics == {"loss": 0.25, "acc": 0.8}
    after = int(time.time() * 1000)
    assert sdk.active_run() is None

    got = sdk.get_run(run.id)
    assert got.id == run.id
    assert got.status is RunStatus.FINISHED
    assert got.experiment_id == sdk.get_experiment_by_name("churn").experiment_id
    assert got.params == {"lr": "0.1", "epochs": "10", "optimizer": "adam"}
    assert got.metrics == {"loss": 0.25, "acc": 0.8}
    assert {k: got.tags[k] for k in ("team", "stage", "owner", "priority")} == {
        "team": "risk", "stage": "dev", "owner": "ana", "priority": "3"}
    assert got.end_time is not None
    assert before <= got.start_time <= got.end_time <= after

    history = sdk.get_metric_history(run.id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.25)]
    assert all(before <= m.timestamp <= after for m in history)

    config = sdk.download_artifacts(run.id, "config.json", tmp_path / "cfg")
    assert json.loads(config.read_text()) == {"a": "x", "b": [1, 2]}
    listing = {e.path: e.size for e in sdk.list_artifacts(run.id)}
    assert listing == {
        "figures/plot.png": figure.stat().st_size,
        "out/a.txt": 6,
        "out/sub/b.bin": 3000,
        "notes/readme.txt": 6,
        "config.json": config.stat().st_size,
    }
    assert [e.path for e in sdk.list_artifacts(run.id, "out")] == ["out/a.txt", "out/sub/b.bin"]

    one = sdk.download_artifacts(run.id, "figures/plot.png", tmp_path / "dl1")
    assert one == (tmp_path / "dl1" / "plot.png").resolve()
    assert one.read_bytes() == figure.read_bytes()

    folder = sdk.download_artifacts(run.id, "out", tmp_path / "dl2")
    assert folder == (tmp_path / "dl2" / "out").resolve()
    assert (folder / "a.txt").read_text() == "alpha\n"
    assert (folder / "sub" / "b.bin").read_bytes() == (outdir / "sub" / "b.bin").read_bytes()

    everything = sdk.download_artifacts(run.id, "", tmp_path / "dl3")
    assert sorted(p.relative_to(everything).as_posix() for p in everything.rglob("*")
                  if p.is_file()) == sorted(listing)
    text = sdk.download_artifacts(run.id, "notes/readme.txt", tmp_path / "dl4")
    assert text.read_text() == "hello\n"

    raises_exactly(ArtifactNotFound,
                   lambda: sdk.download_artifacts(run.id, "missing.txt", tmp_path / "dl5"))


def test_metric_history_is_faithful_for_nan_and_infinities(sdk: Any) -> None:
    points = [(0, math.nan, 1_000), (1, math.inf, 1_001), (2, -math.inf, 1_002),
              (3, -0.0, 1_003), (3, 1.5, 1_004), (4, 1e308, 1_005), (5, 5e-324, 1_006),
              (6, 7, 1_007)]
    with sdk.start_run(experiment="nan") as run:
        for step, value, ts in points:
            run.log_metric("x", value, step=step, timestamp=ts)
        run.log_metrics({"only_nan": math.nan, "only_inf": -math.inf}, step=0, timestamp=5)
    history = sdk.get_metric_history(run.id, "x")
    assert [(m.key, m.step, m.timestamp) for m in history] == [("x", s, t) for s, _, t in points]
    assert math.isnan(history[0].value)
    assert [m.value for m in history[1:]] == [math.inf, -math.inf, -0.0, 1.5, 1e308, 5e-324, 7.0]
    assert all(type(m.value) is float for m in history)
    got = sdk.get_run(run.id)
    assert got.metrics["x"] == 7.0
    assert math.isnan(got.metrics["only_nan"])
    assert got.metrics["only_inf"] == -math.inf
    assert sdk.get_metric_history(run.id, "never-logged") == []

    with sdk.start_run(experiment="bulk") as run:
        for i in range(10_500):  # more than one batch
            run.log_metric("m", i * 0.5, step=i, timestamp=1_000 + i)
    history = sdk.get_metric_history(run.id, "m")
    assert [m.step for m in history] == list(range(10_500))
    assert history[-1].value == 5249.5




# ----------------------------------------------------------------------------- search


def test_search_runs_filter_order_and_paging(sdk: Any) -> None:
    ids = {}
    for i in range(7):
        with sdk.start_run(experiment="search", name=f"r{i}",
                           params={"group": "a" if i % 2 else "b"}) as run:
            run.log_metric("acc", i / 10)
            run.set_tag("parity", str(i % 2))
        ids[f"r{i}"] = run.id
    with sdk.start_run(experiment="other", params={"group": "b"}) as run:
        run.log_metric("acc", 0.99)

    everything = sdk.search_runs("search")
    assert {r.name for r in everything} == set(ids)
    assert everything.next_page_token is None

    names: list[str] = []
    token = None
    pages = 0
    while True:
        page = sdk.search_runs("search", filter="params.group = 'b' and metrics.acc > 0.05",
                               order_by=["metrics.acc DESC"], max_results=1, page_token=token)
        assert len(page) <= 1
        names += [r.name for r in page]
        pages += 1
        token = page.next_page_token
        if token is None:
            break
        assert pages < 10
    assert names == ["r6", "r4", "r2"]  # r0 has acc 0.0, the odd ones are group 'a'

    page = sdk.search_runs(["search", "other"], filter="metrics.acc >= 0.5",
                           order_by=["metrics.acc ASC"], max_results=3)
    assert [r.metrics["acc"] for r in page] == [0.5, 0.6, 0.99][:3]
    assert [r.name for r in sdk.search_runs("search", filter="tags.parity = '1'",
                                            order_by=["attributes.run_name DESC"])] == [
        "r5", "r3", "r1"]
    by_id = sdk.search_runs("search", filter=f"attributes.run_id = '{ids['r3']}'")
    assert [r.id for r in by_id] == [ids["r3"]]
    assert sdk.search_runs("search", filter="status = 'FINISHED'", max_results=50000).items

    exc = raises_exactly(InvalidArgument, lambda: sdk.search_runs("search", page_token="garbage"))
    assert exc.field == "page_token"
    first = sdk.search_runs("search", max_results=2)
    assert first.next_page_token
    exc = raises_exactly(InvalidArgument, lambda: sdk.search_runs(
        "search", filter="params.group = 'a'", max_results=2, page_token=first.next_page_token))
    assert exc.field == "page_token"  # a token from another query is refused
    raises_exactly(InvalidArgument, lambda: sdk.search_runs("search", max_results=0))
    raises_exactly(InvalidArgument, lambda: sdk.search_runs("search", max_results=50001))
    raises_exactly(ExperimentNotFound, lambda: sdk.search_runs("no-such-experiment"))


def test_counts_totals_and_searching_several_or_all_experiments(sdk: Any) -> None:
    where = {}
    for exp, n in (("count-a", 4), ("count-b", 3)):
        for i in range(n):
            with sdk.start_run(experiment=exp) as run:
                run.log_metric("acc", i / 10)
            where[run.id] = run.experiment_id
    flt = "metrics.acc >= 0.1"
    assert sdk.count_runs("count-a", filter=flt) == 3
    assert sdk.count_runs(["count-a", "count-b"], filter=flt) == 5
    assert sdk.count_runs(experiments=["count-a", "count-b"]) == 7
    assert sdk.count_runs(search_all_experiments=True, filter=flt) == 5
    page = sdk.search_runs(experiments=["count-a", "count-b"], filter=flt, max_results=2,
                           include_total=True, order_by=["metrics.acc DESC"])
    assert (len(page), page.total) == (2, 5)
    assert page.next_page_token is not None
    assert sdk.search_runs("count-a", max_results=2).total is None  # only when asked
    # each run says which experiment it is in
    everywhere = sdk.search_runs(search_all_experiments=True, filter=flt, max_results=1000)
    found = {r.id: r.info.experiment_id for r in everywhere if r.id in where}
    assert found == {r: e for r, e in where.items() if r in found} and len(found) == 5
    raises_exactly(InvalidArgument, lambda: sdk.search_runs(experiments=[]))
    raises_exactly(InvalidArgument, lambda: sdk.count_runs(experiments=[]))
    raises_exactly(InvalidArgument, lambda: sdk.search_runs("count-a", experiments=["count-b"]))
    raises_exactly(InvalidArgument, lambda: sdk.count_runs(experiments=["count-a"],
                                                           search_all_experiments=True))
    raises_exactly(InvalidFilter, lambda: sdk.count_runs("count-a", filter="metrics.acc >"))
    raises_exactly(ExperimentNotFound, lambda: sdk.count_runs("no-such-experiment"))


BAD_FILTERS = [
    ("metrics.acc >> 1", 13),
    ("params.lr = ", 12),
    ("metrics.acc > 1 and", 19),
    ("bogus.x = 1", 0),
    ("metrics.acc > 'high'", 14),
    ("(metrics.acc > 1", 16),
    ("params.x = 'a' $", 15),
    ("attributes.start_time > 1e30", 24),
    ("params.x = '\x00'", 12),
]


def test_bad_filters_raise_invalid_filter_naming_the_position(sdk: Any) -> None:
    with sdk.start_run(experiment="deep") as run:
        pass
    for text, position in BAD_FILTERS:
        exc = raises_exactly(InvalidFilter, lambda text=text: sdk.search_runs("deep", filter=text))
        assert f"position {position}" in exc.message, (text, exc.message)
        assert exc.field == "filter"
        assert isinstance(exc, InvalidArgument)
    ok = "not (" * 5 + "params.a = '1'" + ")" * 5  # an odd number of nots: the run matches
    assert [r.id for r in sdk.search_runs("deep", filter=ok)] == [run.id]
    assert list(sdk.search_runs("deep", filter="not " + ok)) == []
    for text in ["(" * 3000 + "params.a = '1'" + ")" * 3000,
                 "not " * 2000 + "params.a = '1'",
                 "".join(f"(metrics.m > {i} or not params.p = 'x' and " for i in range(40))
                 + "tags.t = 'x'" + ")" * 40,
                 "params.a = '\x00'"]:
        raises_exactly(InvalidFilter, lambda text=text: sdk.search_runs("deep", filter=text))
    raises_exactly(InvalidFilter, lambda: sdk.search_runs("deep", order_by=["bogus.x"]))
    raises_exactly(InvalidFilter, lambda: sdk.search_runs("deep", order_by=["metrics.m sideways"]))


# ----------------------------------------------------------------------------- run endings


def test_with_block_ends_finished_failed_or_killed(sdk: Any) -> None:
    class Boom(Exception):
        pass

    ids: list[str] = []

    def body(exc: BaseException | None) -> None:
        with sdk.start_run(experiment="endings") as run:
            ids.append(run.id)
            run.log_metric("m", 1.0)
            run.log_param("p", "v")
            if exc is not None:
                raise exc

    body(None)
    raises_exactly(Boom, lambda: body(Boom("training diverged")))
    raises_exactly(KeyboardInterrupt, lambda: body(KeyboardInterrupt()))
    raises_exactly(SystemExit, lambda: body(SystemExit(0)))
    raises_exactly(SystemExit, lambda: body(SystemExit(3)))
    got = [sdk.get_run(i) for i in ids]
    assert [r.status for r in got] == [RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED,
                                       RunStatus.FINISHED, RunStatus.FAILED]
    for r in got:  # what was logged before the failure is kept
        assert r.end_time is not None and r.end_time >= r.start_time
        assert r.metrics == {"m": 1.0} and r.params == {"p": "v"}
    assert sdk.active_run() is None

    run = sdk.start_run(experiment="endings")
    run.log_metric("m", 2.0)
    sdk.end_run()
    run.end("FAILED")  # already ended: nothing changes
    assert sdk.get_run(run.id).status is RunStatus.FINISHED
    assert sdk.get_run(run.id).metrics == {"m": 2.0}
    assert sdk.active_run() is None
    raises_exactly(ModelyardError, lambda: run.log_metric("m", 3.0))
    sdk.end_run()  # no active run: a no-op


def test_nested_runs_set_parent_run_id(sdk: Any) -> None:
    with sdk.start_run(experiment="nesting") as parent:
        with sdk.start_run(nested=True, name="child") as child:
            assert sdk.active_run() is child
            with sdk.start_run(nested=True) as grandchild:
                assert sdk.active_run() is grandchild
            child.log_metric("m", 1.0)
        assert sdk.active_run() is parent
        explicit = sdk.start_run(parent_run_id=parent.id)
        explicit.end()
    got_child = sdk.get_run(child.id)
    assert got_child.parent_run_id == parent.id
    assert got_child.experiment_id == parent.experiment_id  # a nested run joins the parent's
    assert sdk.get_run(grandchild.id).parent_run_id == child.id
    assert sdk.get_run(parent.id).parent_run_id is None
    assert sdk.get_run(explicit.id).parent_run_id == parent.id
    assert all(sdk.get_run(r.id).status is RunStatus.FINISHED
               for r in (parent, child, grandchild))

    exc = raises_exactly(InvalidArgument, lambda: sdk.start_run(nested=True))
    assert exc.field == "nested"
    raises_exactly(RunNotFound, lambda: sdk.start_run(parent_run_id=UNKNOWN_RUN))
    raises_exactly(InvalidArgument, lambda: sdk.start_run(parent_run_id="not-a-run-id"))


# ----------------------------------------------------------------------------- refusals


def test_param_overwrite_raises_and_same_value_is_fine(sdk: Any, backend: Any) -> None:
    with sdk.start_run(experiment="params", params={"lr": 0.1}) as run:
        run.log_param("lr", 0.1)
        run.log_params({"lr": "0.1", "layers": 3})
        exc = raises_exactly(ParamOverwrite, lambda: run.log_param("lr", 0.2))
        assert exc.field == "params.lr"
        assert isinstance(exc, ModelyardError)
        raises_exactly(ParamOverwrite, lambda: run.log_params({"new": 1, "layers": 4}))
        run.flush()
        # The stored value wins even when this process never saw it (another writer).
        backend.log_batch(run.id, LogBatch(params=(Param("other", "x"),)))
        exc = raises_exactly(ParamOverwrite, lambda: backend.log_batch(
            run.id, LogBatch(params=(Param("other", "y"),))))
        assert exc.field == "params.other"
        assert backend.log_batch(run.id, LogBatch(params=(Param("other", "x"),))) is True
    assert sdk.get_run(run.id).params == {"lr": "0.1", "layers": "3", "other": "x"}


INVALID_CALLS: list[Callable[[Any], object]] = [
    lambda run: run.log_metric("bad key!", 1.0),
    lambda run: run.log_metric("", 1.0),
    lambda run: run.log_metric("a//b", 1.0),
    lambda run: run.log_metric("../up", 1.0),
    lambda run: run.log_metric("k" * 251, 1.0),
    lambda run: run.log_metric("m", "high"),
    lambda run: run.log_metric("m", True),
    lambda run: run.log_metric("m", 1.0, step=2**63),
    lambda run: run.log_metric("m", 10**400),
    lambda run: run.log_metrics({"ok": 1.0, "not ok?": 2.0}),
    lambda run: run.log_param("spa ce/but?", 1),
    lambda run: run.log_param("p", "v" * 6001),
    lambda run: run.log_param("p", "nul\x00"),
    lambda run: run.set_tag("t\n", "v"),
    lambda run: run.set_tags({"t": "v" * 8001}),
    lambda run: run.log_artifact("/definitely/not/a/file"),
    lambda run: run.log_artifacts("/definitely/not/a/dir"),
]


def test_invalid_input_raises_invalid_argument_at_call_time(sdk: Any) -> None:
    with sdk.start_run(experiment="invalid") as run:
        for call in INVALID_CALLS:
            exc = raised(lambda call=call: call(run))
            assert type(exc) is InvalidArgument, repr(exc)
            assert exc.field
        run.log_metric("fine", 1.0)  # the run goes on
    got = sdk.get_run(run.id)
    assert got.status is RunStatus.FINISHED
    assert got.metrics == {"fine": 1.0}
    assert got.params == {} and "t\n" not in got.tags


def test_unknown_ids_raise_not_found(sdk: Any, tmp_path: Path) -> None:
    raises_exactly(RunNotFound, lambda: sdk.get_run(UNKNOWN_RUN))
    raises_exactly(RunNotFound, lambda: sdk.get_metric_history(UNKNOWN_RUN, "m"))
    raises_exactly(RunNotFound, lambda: sdk.delete_run(UNKNOWN_RUN))
    raises_exactly(RunNotFound, lambda: sdk.restore_run(UNKNOWN_RUN))
    raises_exactly(ExperimentNotFound, lambda: sdk.get_experiment("424242"))
    raises_exactly(ExperimentNotFound, lambda: sdk.get_experiment_by_name("nope"))
    raises_exactly(ExperimentNotFound, lambda: sdk.delete_experiment("424242"))
    raises_exactly(InvalidArgument, lambda: sdk.get_run("not-a-run-id"))
    raises_exactly(InvalidArgument, lambda: sdk.get_run(""))
    raises_exactly(InvalidArgument, lambda: sdk.get_run(".."))
    raises_exactly(InvalidArgument, lambda: sdk.get_experiment("one"))
    raises_exactly(InvalidArgument, lambda: sdk.get_experiment(""))
    assert issubclass(RunNotFound, NotFound) and issubclass(ExperimentNotFound, NotFound)
    with sdk.start_run(experiment="unknown") as run:
        pass
    raises_exactly(ArtifactNotFound, lambda: sdk.download_artifacts(run.id, "x.txt", tmp_path))


def test_experiments_create_get_list_delete_restore(sdk: Any) -> None:
    exp = sdk.create_experiment("exp-a", description="first", tags={"k": "v"})
    assert exp.name == "exp-a"
    assert exp.description == "first"
    assert dict(exp.tags) == {"k": "v"}
    assert exp.lifecycle_stage.value == "active"
    assert sdk.get_experiment(exp.experiment_id) == exp
    assert sdk.get_experiment_by_name("exp-a").experiment_id == exp.experiment_id
    assert sdk.set_experiment("exp-a").experiment_id == exp.experiment_id
    created = sdk.set_experiment("exp-b")  # created on first use
    assert sdk.get_experiment_by_name("exp-b") == created

    names = {e.name for e in sdk.list_experiments()}
    assert {"Default", "exp-a", "exp-b"} <= names
    collected: list[str] = []
    token = None
    while True:
        page = sdk.list_experiments(max_results=1, page_token=token)
        collected += [e.name for e in page]
        token = page.next_page_token
        if token is None:
            break
    assert sorted(collected) == sorted(names)

    exc = raises_exactly(AlreadyExists, lambda: sdk.create_experiment("exp-a"))
    assert "exp-a" in exc.message
    raises_exactly(AlreadyExists, lambda: sdk.create_experiment("  exp-a "))  # canonical form
    raises_exactly(InvalidArgument, lambda: sdk.create_experiment(""))
    raises_exactly(InvalidArgument, lambda: sdk.create_experiment("x" * 501))

    sdk.delete_experiment(exp.experiment_id)
    deleted = sdk.get_experiment(exp.experiment_id)
    assert deleted.lifecycle_stage.value == "deleted"
    assert deleted.deleted_time is not None
    assert "exp-a" not in {e.name for e in sdk.list_experiments()}
    assert "exp-a" in {e.name for e in sdk.list_experiments(view="deleted_only")}
    assert "exp-a" in {e.name for e in sdk.list_experiments(view="all")}
    raises_exactly(InvalidArgument, lambda: sdk.list_experiments(view="bogus"))
    # the deleted experiment still answers to its name until another one takes it
    assert sdk.get_experiment_by_name("exp-a").experiment_id == exp.experiment_id

    # the name is free again (MLflow keeps it blocked: its issue #2651)
    successor = sdk.create_experiment("exp-a")
    assert successor.experiment_id != exp.experiment_id
    assert sdk.get_experiment_by_name("exp-a").experiment_id == successor.experiment_id
    exc = raises_exactly(AlreadyExists, lambda: sdk.restore_experiment(exp.experiment_id))
    assert exc.field == "name" and "new_name" in exc.message
    assert sdk.get_experiment(exp.experiment_id).lifecycle_stage.value == "deleted"
    raises_exactly(AlreadyExists, lambda: sdk.restore_experiment(exp.experiment_id,
                                                                 new_name="exp-b"))
    raises_exactly(InvalidArgument, lambda: sdk.restore_experiment(exp.experiment_id,
                                                                   new_name=""))
    sdk.restore_experiment(exp.experiment_id, new_name="exp-a-old")
    restored = sdk.get_experiment(exp.experiment_id)
    assert restored.lifecycle_stage.value == "active"
    assert restored.name == "exp-a-old"
    assert {"exp-a", "exp-a-old"} <= {e.name for e in sdk.list_experiments()}

    # Runs of a deleted experiment; deleted and restored runs.
    with sdk.start_run(experiment="lifecycle") as run:
        run.log_metric("m", 1.0)
    exp_id = run.experiment_id
    sdk.delete_run(run.id)
    assert sdk.get_run(run.id).info.lifecycle_stage.value == "deleted"
    assert list(sdk.search_runs("lifecycle")) == []
    assert [r.id for r in sdk.search_runs("lifecycle", view="deleted_only")] == [run.id]
    sdk.restore_run(run.id)
    assert [r.id for r in sdk.search_runs("lifecycle")] == [run.id]
    sdk.delete_experiment(exp_id)
    # start_run returns at once with the id this process looked the name up to before; the
    # run's creation travels with its first batch, is refused there, and so is what was logged.
    with pytest.raises(LoggingRefused) as at_end, \
            sdk.start_run(experiment="lifecycle") as doomed:
        doomed.log_metric("m", 2.0)
        with pytest.raises(LoggingRefused, match="deleted") as at_flush:
            doomed.flush()
        with pytest.raises(InvalidState, match="could not be created"):
            doomed.log_metric("m", 3.0)  # from now on refused at the call
    assert {(r.kind, r.key) for r in at_flush.value.refused} == {("run", "creation"),
                                                                ("metric", "m")}
    assert {(r.kind, r.key) for r in at_end.value.refused} == {("run", "end")}
    assert all(isinstance(r.error, InvalidState) for r in at_flush.value.refused)
    # ... and the name is looked up again: the next start_run is refused at once.
    raises_exactly(InvalidState, lambda: sdk.start_run(experiment="lifecycle"))
    raises_exactly(RunNotFound, lambda: sdk.get_run(doomed.id))
    sdk.restore_experiment(exp_id)
    with sdk.start_run(experiment="lifecycle"):
        pass


# ----------------------------------------------------------------------------- artifact paths


def test_artifact_path_traversal_is_refused(sdk: Any, backend: Any, tmp_path: Path) -> None:
    src = tmp_path / "srcdir" / "f.txt"
    src.parent.mkdir()
    src.write_text("payload")
    dest = tmp_path / "dest" / "inner"
    dest.mkdir(parents=True)
    with sdk.start_run(experiment="paths") as run:
        run.log_text("ok", "ok.txt")
        for bad in TRAVERSALS:
            _try_traversal(sdk, backend, run, bad, src, dest)
    assert [e.path for e in sdk.list_artifacts(run.id)] == ["ok.txt"]
    # Nothing was written anywhere but the stores: no stray file under the test folder (the
    # blob store, the SQLite file and the source excepted), nor beside it.
    stray = [p for p in tmp_path.rglob("*") if p.is_file() and p != src
             and "artifacts" not in p.relative_to(tmp_path).parts
             and not p.name.startswith("modelyard.db")]
    assert stray == []
    assert not (tmp_path.parent / "x").exists()


def _try_traversal(sdk: Any, backend: Any, run: Any, bad: str, src: Path, dest: Path) -> None:
    attempts = [
        lambda: run.log_artifact(src, path=bad),
        lambda: run.log_artifacts(src.parent, path=bad),
        lambda: run.log_text("x", bad),
        lambda: run.log_dict({"a": 1}, bad),
        lambda: sdk.download_artifacts(run.id, bad, dest),
        lambda: sdk.list_artifacts(run.id, bad),
        lambda: backend.upload_bytes(run.id, bad, b"x"),
        lambda: backend.upload_file(run.id, bad, src),
        lambda: backend.download_file(run.id, bad, dest / "out"),
        lambda: backend.list_artifacts(run.id, bad),
    ]
    for attempt in attempts:
        exc = raises_exactly(UnsafePath, attempt)
        assert exc.field == "path", (bad, exc)


# ----------------------------------------------------------------------------- same classes


def _error_cases(run_id: str, deleted_id: str, tmp: Path) -> dict[str, Callable[[Any], object]]:
    def batch(*metrics: Metric) -> LogBatch:
        return LogBatch(metrics=metrics)

    m = Metric("m", 1.0, 0, 1)
    cases: dict[str, Callable[[Any], object]] = {
        "get unknown run": lambda b: b.get_run(UNKNOWN_RUN),
        "get malformed run id": lambda b: b.get_run("xyz"),
        "get empty run id": lambda b: b.get_run(""),
        "get dot-dot run id": lambda b: b.get_run(".."),
        "get slashed run id": lambda b: b.get_run("a/b"),
        "update unknown run": lambda b: b.update_run(UNKNOWN_RUN, status="FINISHED"),
        "update bad status": lambda b: b.update_run(run_id, status="EXPLODED"),
        "log to unknown run": lambda b: b.log_batch(UNKNOWN_RUN, batch(m)),
        "log to dot-dot run": lambda b: b.log_batch("..", batch(m)),
        "log to deleted run": lambda b: b.log_batch(deleted_id, batch(m)),
        "tag deleted run": lambda b: b.delete_tag(deleted_id, "k"),
        "restore run of deleted experiment": lambda b: b.restore_run(deleted_id),
        "log bad key": lambda b: b.log_batch(run_id, batch(Metric("no way!", 1.0, 0, 1))),
        "log too many": lambda b: b.log_batch(run_id, batch(*[m] * 10_001)),
        "log bad batch id": lambda b: b.log_batch(run_id, batch(m), batch_id="x"),
        "param twice differently": lambda b: b.log_batch(
            run_id, LogBatch(params=(Param("q", "1"), Param("q", "2")))),
        "param overwrite": lambda b: b.log_batch(run_id, LogBatch(params=(Param("p", "other"),))),
        "history of unknown run": lambda b: b.get_metric_history(UNKNOWN_RUN, "m"),
        "history bad key": lambda b: b.get_metric_history(run_id, "bad key?"),
        "delete missing tag": lambda b: b.delete_tag(run_id, "missing"),
        "create run in unknown experiment": lambda b: b.create_run("424242"),
        "create run bad experiment id": lambda b: b.create_run("abc"),
        "create run unknown parent": lambda b: b.create_run("0", parent_run_id=UNKNOWN_RUN),
        "get unknown experiment": lambda b: b.get_experiment("424242"),
        "get empty experiment id": lambda b: b.get_experiment(""),
        "get dot experiment id": lambda b: b.get_experiment("."),
        "delete empty experiment id": lambda b: b.delete_experiment(""),
        "experiment by unknown name": lambda b: b.get_experiment_by_name("nope"),
        "duplicate experiment": lambda b: b.create_experiment("Default"),
        "rename onto a taken name": lambda b: b.update_experiment("0", name="Default2"),
        "restore active experiment": lambda b: b.restore_experiment("0"),
        "bad filter": lambda b: b.search_runs(["0"], filter="metrics.m >"),
        "bad order": lambda b: b.search_runs(["0"], order_by=["nope"]),
        "bad page token": lambda b: b.search_runs(["0"], page_token="!!!"),
        "no experiments": lambda b: b.search_runs([]),
        "bad view": lambda b: b.list_experiments(view="some"),
        "missing artifact": lambda b: b.download_file(run_id, "missing", tmp / "m"),
        "artifact of unknown run": lambda b: b.upload_bytes(UNKNOWN_RUN, "f", b"1"),
        "empty artifact path": lambda b: b.upload_bytes(run_id, "", b"1"),
        "dot artifact path": lambda b: b.upload_bytes(run_id, ".", b"1"),
        "url-ish artifact path": lambda b: b.upload_bytes(run_id, "s3://bucket/x", b"1"),
        "query in artifact path": lambda b: b.upload_bytes(run_id, "a?b=1", b"1"),
    }
    for i, bad in enumerate(TRAVERSALS):
        cases[f"upload traversal {i}"] = lambda b, bad=bad: b.upload_bytes(run_id, bad, b"1")
        cases[f"download traversal {i}"] = lambda b, bad=bad: b.download_file(
            run_id, bad, tmp / "t")
    return cases


def test_local_and_remote_raise_the_same_errors(settings: Settings, tmp_path: Path) -> None:
    local = LocalBackend(settings)
    with ServerThread(settings) as srv:
        remote = RemoteBackend(srv.url)
        try:
            run = local.create_run("0")
            local.log_batch(run.id, LogBatch(params=(Param("p", "v"),)))
            local.create_experiment("Default2")
            gone = local.create_experiment("gone").experiment_id
            deleted = local.create_run(gone)
            local.delete_run(deleted.id)
            local.delete_experiment(gone)
            cases = _error_cases(run.id, deleted.id, tmp_path)
            seen: dict[str, tuple[str, str | None]] = {}
            for name, case in cases.items():
                outcomes = []
                for b in (local, remote):
                    exc = raised(lambda b=b, case=case: case(b))
                    assert isinstance(exc, ModelyardError), f"{name}: {exc!r}"
                    outcomes.append((type(exc).__name__, exc.field, exc.message))
                local_says, remote_says = outcomes
                assert local_says == remote_says, f"{name}: {local_says} != {remote_says}"
                seen[name] = outcomes[0][:2]
            assert seen["get unknown run"][0] == "RunNotFound"
            assert seen["duplicate experiment"][0] == "AlreadyExists"
            assert seen["param overwrite"] == ("ParamOverwrite", "params.p")
            assert seen["bad filter"][0] == "InvalidFilter"
            assert seen["log to deleted run"][0] == "InvalidState"
            assert all(seen[f"upload traversal {i}"][0] == "UnsafePath"
                       for i in range(len(TRAVERSALS)))
            assert not (tmp_path / "t").exists() and not (tmp_path / "m").exists()
        finally:
            remote.close()
            local.close()


# ----------------------------------------------------------------------------- real processes

_SIGTERM_SCRIPT = textwrap.dedent("""
    import time
    import modelyard

    with modelyard.start_run(experiment="subprocess", name="sigterm") as run:
        for i in range(100):
            run.log_metric("m", float(i), step=i)
        run.log_param("p", "v")
        run.flush()
        print(run.id, flush=True)
        i = 100
        while True:
            run.log_metric("m", float(i), step=i)
            i += 1
            if i == 120:
                print("logging", flush=True)  # mid-run: the test may send its signal now
            time.sleep(0.005)  # a training step's pace, the script's behaviour: not a wait
""")

_ATEXIT_SCRIPT = textwrap.dedent("""
    import modelyard

    run = modelyard.start_run(experiment="subprocess", name="atexit", params={"lr": 0.1})
    for i in range(2500):
        run.log_metric("m", float(i), step=i)
    run.set_tag("done", "yes")
    print(run.id, flush=True)
    # no with-block, no end(): the interpreter exits with the run open
""")


@pytest.fixture
def script_env(server: Any) -> dict[str, str]:
    env = {k: val for k, val in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(MODELYARD_URI=server.url, MODELYARD_CAPTURE_SOURCE="false")
    return env


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The script's next line of output, waited for until ``timeout``. Read a byte at a time
    from the pipe itself, so nothing beyond the line sits unseen in a buffer while the next
    call waits for the pipe."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "the script did not signal readiness in time"
        byte = os.read(fd, 1)
        assert byte, f"the script ended its output before a whole line: {line!r}"
        line += byte
    return line.decode().strip()


@pytest.fixture
def remote_reader(server: Any) -> Iterator[RemoteBackend]:
    rb = RemoteBackend(server.url)
    yield rb
    rb.close()


def test_sigterm_mid_run_ends_it_killed(script_env: dict[str, str], tmp_path: Path,
                                        remote_reader: RemoteBackend) -> None:
    script = tmp_path / "train.py"
    script.write_text(_SIGTERM_SCRIPT)
    with subprocess.Popen([sys.executable, str(script)], env=script_env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            run_id = _read_line(proc, 30)
            assert len(run_id) == 32, run_id
            assert remote_reader.get_run(run_id).status is RunStatus.RUNNING
            assert _read_line(proc, 30) == "logging"  # mid-run: logging in progress
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    got = remote_reader.get_run(run_id)
    assert got.status is RunStatus.KILLED
    assert got.end_time is not None
    assert got.params == {"p": "v"}
    steps = [m.step for m in remote_reader.get_metric_history(run_id, "m")]
    assert steps[:100] == list(range(100))
    assert steps == list(range(len(steps)))  # what was logged before the signal, no gaps


def test_exit_without_with_block_finishes_run_at_exit(script_env: dict[str, str],
                                                      tmp_path: Path,
                                                      remote_reader: RemoteBackend) -> None:
    script = tmp_path / "train.py"
    script.write_text(_ATEXIT_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], env=script_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    got = remote_reader.get_run(run_id)
    assert got.status is RunStatus.FINISHED
    assert got.end_time is not None
    assert got.params == {"lr": "0.1"}
    assert got.tags["done"] == "yes"
    history = remote_reader.get_metric_history(run_id, "m")
    assert [(m.step, m.value) for m in history] == [(i, float(i)) for i in range(2500)]
