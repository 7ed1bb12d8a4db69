"""Run lifecycle through the SDK, embedded and over real HTTP, on both databases: the fluent
module-level calls, resuming a run, client-chosen ids with the creation in the first batch and
the end in the last, and refusals that lose nothing else."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelyard
from modelyard import errors
from modelyard.backend.remote import RemoteBackend
from modelyard.domain.entities import ArtifactEntry, LogBatch, NewRun, Param, RunStatus, Tag
from modelyard.errors import (
    ArtifactNotFound,
    Conflict,
    InvalidArgument,
    InvalidState,
    LoggingRefused,
    ModelyardError,
    RunNotFound,
    UnsafePath,
)
from modelyard.settings import Settings
from modelyard.tracking.source import RecentCaptures
from support.servers import ServerThread


class Counting:
    """A real backend that counts the calls the SDK makes of it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return target(*args, **kwargs)

        return call


@pytest.fixture
def counted(sdk: Any, backend: Any, monkeypatch: pytest.MonkeyPatch) -> Counting:
    from modelyard.client import api

    wrapper = Counting(backend)
    monkeypatch.setattr(api, "backend", lambda uri=None: wrapper)
    return wrapper


# ----------------------------------------------------------------------------- fluent calls


def test_module_level_calls_act_on_the_active_run(sdk: Any, tmp_path: Path) -> None:
    src = tmp_path / "model.txt"
    src.write_text("weights")
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a")
    with sdk.start_run(experiment="fluent") as run:
        sdk.log_metric("loss", np.float32(0.5), step=1)
        sdk.log_metrics({"loss": 0.25, "acc": np.mean([0.9, 0.92])}, step=2)
        sdk.log_param("lr", 0.1)
        sdk.log_params({"depth": 3, "seed": np.int64(7)})
        sdk.set_tag("team", "risk")
        sdk.set_tags({"stage": "dev", "n": 3})
        assert sdk.log_artifact(src, "models") == "models/model.txt"
        assert sdk.log_artifacts(folder, "out") == ["out/sub/a.txt"]
        assert sdk.log_text("hello", "notes.txt") == "notes.txt"
        assert sdk.log_dict({"k": 1}, "cfg.json") == "cfg.json"
        with sdk.start_run(nested=True) as child:
            sdk.log_metric("inner", 1.0)  # the innermost run is the active one
    got = sdk.get_run(run.id)
    assert got.metrics == {"loss": 0.25, "acc": 0.91}
    assert got.params == {"lr": "0.1", "depth": "3", "seed": "7"}
    assert {k: got.tags[k] for k in ("team", "stage", "n")} == {
        "team": "risk", "stage": "dev", "n": "3"}
    assert [e.path for e in sdk.list_artifacts(run.id)] == [
        "cfg.json", "models/model.txt", "notes.txt", "out/sub/a.txt"]
    assert sdk.get_run(child.id).metrics == {"inner": 1.0}
    assert "inner" not in got.metrics


@pytest.mark.parametrize("call", [
    lambda m: m.log_metric("a", 1.0), lambda m: m.log_metrics({"a": 1.0}),
    lambda m: m.log_param("a", 1), lambda m: m.log_params({"a": 1}),
    lambda m: m.set_tag("a", 1), lambda m: m.set_tags({"a": 1}),
    lambda m: m.log_artifact("x"), lambda m: m.log_artifacts("x"),
    lambda m: m.log_text("x", "a.txt"), lambda m: m.log_dict({}, "a.json"),
])
def test_module_level_calls_without_a_run_name_start_run(sdk: Any, call: Any) -> None:
    assert sdk.active_run() is None
    with pytest.raises(InvalidState, match=r"start_run"):
        call(sdk)


def test_every_error_class_is_importable_from_modelyard() -> None:
    classes = [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
               if issubclass(obj, ModelyardError) and obj.__module__ == errors.__name__]
    assert len(classes) >= 15
    for cls in classes:
        assert getattr(modelyard, cls.__name__) is cls, cls.__name__
    # ... and every class docs/sdk.md names
    text = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text()
    for name in set(re.findall(r"`([A-Z]\w+)`", text)):
        if name.endswith(("Error", "Found", "Exists", "Argument", "Filter", "Path", "Overwrite",
                          "State", "Failure", "Outdated", "Unavailable", "Refused")):
            assert hasattr(modelyard, name), name


# ----------------------------------------------------------------------------- resuming


def test_start_run_with_run_id_resumes_the_run(sdk: Any) -> None:
    with sdk.start_run(experiment="resume", params={"lr": 0.1}) as run:
        run.log_metric("loss", 0.5, step=0)
    assert sdk.get_run(run.id).status is RunStatus.FINISHED
    with sdk.start_run(run_id=run.id) as again:
        assert again.id == run.id and again.experiment_id == run.experiment_id
        assert sdk.active_run() is again
        mid = sdk.get_run(run.id)
        assert (mid.status, mid.end_time) == (RunStatus.RUNNING, None)
        again.log_metric("loss", 0.25, step=1)
        again.log_param("lr", 0.1)  # the same value: fine
        with pytest.raises(modelyard.ParamOverwrite):
            again.log_param("lr", 0.2)  # the resumed run knows its params
    got = sdk.get_run(run.id)
    assert got.status is RunStatus.FINISHED and got.end_time is not None
    assert [m.value for m in sdk.get_metric_history(run.id, "loss")] == [0.5, 0.25]
    with pytest.raises(InvalidState), sdk.start_run(run_id=run.id):
        sdk.start_run(run_id=run.id)  # already active here
    with pytest.raises(RunNotFound):
        sdk.start_run(run_id=uuid.uuid4().hex)
    with pytest.raises(InvalidArgument, match="run_id"):
        sdk.start_run(run_id="not-an-id")
    with pytest.raises(InvalidArgument, match="run_id"):
        sdk.start_run(experiment="resume", run_id=run.id)
    sdk.delete_run(run.id)
    with pytest.raises(InvalidState, match="deleted"):
        sdk.start_run(run_id=run.id)


def test_bad_params_or_tags_start_no_run(sdk: Any) -> None:
    sdk.set_experiment("strict")
    with pytest.raises(InvalidArgument, match="tag key"):
        sdk.start_run(experiment="strict", tags={"bad key!": 1})
    with pytest.raises(InvalidArgument, match="NUL"):
        sdk.start_run(experiment="strict", params={"p": "a\x00b"})
    assert sdk.active_run() is None
    assert sdk.count_runs("strict") == 0
    with sdk.start_run(experiment="strict", params={"lr": 0.1}) as run:
        pass
    with pytest.raises(modelyard.ParamOverwrite, match="lr"):
        sdk.start_run(run_id=run.id, params={"lr": 0.2})  # refused before resuming
    assert sdk.get_run(run.id).status is RunStatus.FINISHED
    assert sdk.active_run() is None


def test_the_active_run_knows_its_parent(sdk: Any) -> None:
    with sdk.start_run(experiment="family") as parent:
        assert parent.parent_run_id is None
        with sdk.start_run(nested=True) as child:
            assert child.parent_run_id == parent.id
    explicit = sdk.start_run(parent_run_id=parent.id)
    assert explicit.parent_run_id == parent.id
    explicit.end()
    with pytest.raises(RunNotFound):
        sdk.start_run(parent_run_id=uuid.uuid4().hex)  # refused at once, not at the end
    with pytest.raises(InvalidArgument):
        sdk.start_run(parent_run_id="nope")


# ----------------------------------------------------------------------------- one request


def test_a_short_run_costs_the_backend_one_call(sdk: Any, counted: Counting) -> None:
    sdk.set_experiment("cheap")
    with sdk.start_run(experiment="cheap", params={"a": 1}, tags={"t": "x"}) as warm:
        warm.log_metric("m", 1.0)
    counted.calls.clear()
    with sdk.start_run(experiment="cheap", params={f"p{i}": i for i in range(5)},
                       tags={"t1": "a", "t2": "b"}) as run:
        run.log_metrics({f"m{i}": 0.5 * i for i in range(5)}, step=0)
    assert counted.calls == ["log_batch"]  # creation, values and end travel together
    got = sdk.get_run(run.id)
    assert got.status is RunStatus.FINISHED and got.end_time is not None
    assert got.params == {f"p{i}": str(i) for i in range(5)}
    assert got.metrics == {f"m{i}": 0.5 * i for i in range(5)}
    assert got.tags["t1"] == "a" and got.name == run.name
    assert re.fullmatch(r"[0-9a-f]{32}", run.id)


def test_a_pending_run_is_created_before_it_is_read(sdk: Any) -> None:
    run = sdk.start_run(experiment="pending")
    try:
        got = sdk.get_run(run.id)  # its creation has not travelled yet: reads send it first
        assert got.status is RunStatus.RUNNING and got.name == run.name
        assert [r.id for r in sdk.search_runs("pending")] == [run.id]
        assert sdk.count_runs("pending") == 1
    finally:
        run.end()


def test_the_block_ends_the_run_with_its_status(sdk: Any) -> None:
    with pytest.raises(ZeroDivisionError), sdk.start_run(experiment="status") as failed:
        failed.log_metric("m", 1.0)
        _ = 1 / 0
    assert sdk.get_run(failed.id).status is RunStatus.FAILED
    assert sdk.get_run(failed.id).metrics == {"m": 1.0}
    with pytest.raises(InvalidArgument, match="status"):
        sdk.start_run(experiment="status").end("DONE")
    sdk.end_run("KILLED")  # the run the bad end() left active
    assert sdk.active_run() is None


def test_a_param_set_by_another_process_loses_nothing_else(sdk: Any, backend: Any) -> None:
    with pytest.raises(LoggingRefused) as info, sdk.start_run(experiment="race") as run:
        run.log_param("seed", 1)
        run.flush()
        # Another process sets "lr" first, with another value.
        backend.log_batch(run.id, LogBatch(params=(Param("lr", "0.2"),)))
        run.log_param("lr", 0.1)  # this process has not seen it: accepted here
        run.log_param("depth", 3)
        for step in range(5):
            run.log_metric("loss", 1 / (step + 1), step=step)
        run.set_tag("t", "kept")
    [refused] = info.value.refused
    assert (refused.kind, refused.key) == ("param", "lr")
    assert "'0.2'" in str(info.value) and "lr" in str(info.value)
    got = sdk.get_run(run.id)
    assert got.status is RunStatus.FINISHED  # the status its code gave it
    assert got.params == {"seed": "1", "lr": "0.2", "depth": "3"}
    assert [m.step for m in sdk.get_metric_history(run.id, "loss")] == [0, 1, 2, 3, 4]
    assert got.tags["t"] == "kept"
    assert got.tags["modelyard.logging_errors"] == "1"
    found = sdk.search_runs("race", filter="tags.`modelyard.logging_errors` != '0'")
    assert [r.id for r in found] == [run.id]


def test_a_refusal_at_the_end_does_not_hide_the_blocks_own_error(sdk: Any,
                                                                 backend: Any) -> None:
    with pytest.raises(KeyError) as info, sdk.start_run(experiment="both") as run:
        run.flush()
        backend.log_batch(run.id, LogBatch(params=(Param("lr", "0.2"),)))
        run.log_param("lr", 0.1)
        raise KeyError("training broke")
    assert any("lr" in note for note in getattr(info.value, "__notes__", []))
    assert sdk.get_run(run.id).status is RunStatus.FAILED


# ----------------------------------------------------------------------------- over REST


def test_a_client_chosen_id_is_created_once(settings: Settings) -> None:
    with ServerThread(settings) as srv:
        remote = RemoteBackend(srv.url)
        try:
            run_id = uuid.uuid4().hex
            first = remote.create_run("0", run_id=run_id, run_name="mine", start_time=5,
                                      tags={"a": "1"})
            assert first.id == run_id
            again = remote.create_run("0", run_id=run_id, run_name="mine", start_time=5,
                                      tags={"a": "1"})
            assert again == remote.get_run(run_id)  # a repeat is answered with the run
            with pytest.raises(Conflict, match="other values"):
                remote.create_run("0", run_id=run_id, run_name="other", start_time=5)
            for bad in ("ABC", "0" * 31, "0" * 32 + "\n", "G" * 32):
                with pytest.raises(InvalidArgument, match="run_id"):
                    remote.create_run("0", run_id=bad)
            assert remote.get_run(run_id).name == "mine"
        finally:
            remote.close()


# ----------------------------------------------------------------------------- source capture


def _git(repo: Path, *args: str) -> None:
    cmd = ["git", "-C", str(repo), "-c", "user.name=Test", "-c", "user.email=t@example.invalid",
           "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    subprocess.run(cmd, check=True, capture_output=True, env=env)


@pytest.fixture
def dirty_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git binary not available")
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("print('v1')\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "initial")
    (repo / "train.py").write_text("print('v2')\n")  # uncommitted: a diff to record
    monkeypatch.chdir(repo)
    monkeypatch.setattr(sys, "argv", [str(repo / "train.py")])
    from modelyard.client import run as run_module

    monkeypatch.setattr(run_module, "CAPTURES", RecentCaptures())  # this test's own
    return repo


def test_a_sweep_captures_once_and_stores_its_files_once(sdk: Any, counted: Counting,
                                                         dirty_repo: Path) -> None:
    files = {"modelyard/environment/requirements.txt", "modelyard/source/diff.patch"}
    runs = []
    for i in range(3):
        with sdk.start_run(experiment="sweep", params={"i": i}, capture_source=True) as run:
            run.log_metric("m", float(i))
        runs.append(run.id)
    # The first run uploaded the files; the others named the stored blobs in their one batch.
    assert counted.calls.count("upload_bytes") == 2
    assert counted.calls.count("log_batch") == 1 + 3  # and the first run's creation, early
    listings = [{e.path: e.digest for e in sdk.list_artifacts(r)} for r in runs]
    assert set(listings[0]) == files
    assert listings[0] == listings[1] == listings[2]
    diff = sdk.download_artifacts(runs[2], "modelyard/source/diff.patch", dirty_repo / "out")
    assert "+print('v2')" in diff.read_text()
    for r in runs:
        got = sdk.get_run(r)
        assert got.tags["modelyard.source.git_dirty"] == "true"
        assert got.tags["modelyard.source.entry_point"] == "train.py"
        assert got.status is RunStatus.FINISHED


def test_a_collected_capture_file_is_uploaded_again(sdk: Any, counted: Counting,
                                                    dirty_repo: Path) -> None:
    with sdk.start_run(experiment="collected", capture_source=True) as first:
        pass
    sdk.delete_run(first.id)
    deleted = sdk.get_run(first.id).info.deleted_time
    while int(time.time() * 1000) <= deleted:  # "deleted longer ago than 0 ms": the clock moves
        pass
    report = sdk.collect_garbage(timedelta(0), dry_run=False)
    assert report.blobs >= 2  # the capture files, held by no other run
    counted.calls.clear()
    with sdk.start_run(experiment="collected", capture_source=True) as second:
        second.log_metric("m", 1.0)  # no LoggingRefused: the files went up again
    assert counted.calls.count("upload_bytes") == 2
    assert {e.path for e in sdk.list_artifacts(second.id)} == {
        "modelyard/environment/requirements.txt", "modelyard/source/diff.patch"}
    assert "modelyard.logging_errors" not in sdk.get_run(second.id).tags


def test_a_retried_creation_with_a_padded_experiment_id_is_a_repeat(backend: Any) -> None:
    run_id = uuid.uuid4().hex
    create = NewRun("00", "padded", "u", 1)
    assert backend.log_batch(run_id, LogBatch(), batch_id="pad-00001", create=create)
    assert backend.log_batch(run_id, LogBatch(), batch_id="pad-00002", create=create)
    assert backend.get_run(run_id).experiment_id == "0"


def test_naming_a_blob_the_server_does_not_hold_refuses_only_that(sdk: Any,
                                                                   backend: Any) -> None:
    missing = ArtifactEntry("model.bin", "0" * 64, 10)
    with pytest.raises(LoggingRefused) as info, sdk.start_run(experiment="links") as run:
        run.log_metric("m", 1.0)
        run.flush()
        backend.log_batch(run.id, LogBatch(tags=(Tag("before", "1"),)))
        run._sender.enqueue([missing, Param("p", "1")])  # as a capture would
    [refused] = info.value.refused
    assert (refused.kind, refused.key) == ("artifact", "model.bin"), info.value.refused
    assert isinstance(refused.error, ArtifactNotFound)
    assert sdk.get_run(run.id).params == {"p": "1"}
    assert sdk.list_artifacts(run.id) == []
    with pytest.raises(UnsafePath):
        backend.log_batch(run.id, LogBatch(artifacts=(ArtifactEntry("../x", "0" * 64, 1),)))


def test_recent_captures_are_reused_until_they_age(tmp_path: Path) -> None:
    now = [100.0]
    captures = RecentCaptures(max_age_s=10.0, clock=lambda: now[0])
    assert captures.recent(argv0="a.py", cwd=tmp_path) is None
    first = captures.capture(argv0="a.py", cwd=tmp_path)
    now[0] += 9.0
    assert captures.capture(argv0="a.py", cwd=tmp_path) is first
    assert captures.recent(argv0="b.py", cwd=tmp_path) is None  # another entry point
    now[0] += 2.0
    assert captures.recent(argv0="a.py", cwd=tmp_path) is None
    assert captures.capture(argv0="a.py", cwd=tmp_path) is not first
