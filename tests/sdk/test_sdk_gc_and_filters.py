"""More of the SDK contract on every backend (embedded and remote, SQLite and PostgreSQL):
garbage collection through the SDK, and the answers of filters with ``or``, ``not``,
parentheses and ``IS NULL``, and paging while runs are being added."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modelyard.errors import InvalidArgument, RunNotFound


def test_collect_garbage_reports_then_frees_and_keeps_what_is_used(sdk: Any,
                                                                   settings: Any) -> None:
    shared, gone = b"s" * 3_000, b"g" * 5_000
    with sdk.start_run(experiment="gc") as doomed:
        doomed.log_metric("loss", 0.5, step=1)
        doomed.log_text(shared.decode(), "shared.txt")
        doomed.log_text(gone.decode(), "gone.txt")
    with sdk.start_run(experiment="gc") as kept:
        kept.log_text(shared.decode(), "shared.txt")
    sdk.delete_run(doomed.id)
    time.sleep(0.01)  # a clock tick, not an event to wait for: deleted strictly before "now"

    report = sdk.collect_garbage(timedelta(0))  # a dry run by default
    assert report.dry_run and report.runs == (doomed.id,)
    assert (report.blobs, report.bytes_freed) == (1, len(gone))
    assert report.rows["runs"] == 1 and report.rows["artifacts"] == 2
    assert sdk.get_run(doomed.id).info.run_id == doomed.id  # nothing changed yet
    assert sdk.collect_garbage(timedelta(days=1)).runs == ()  # too recent to purge

    done = sdk.collect_garbage(timedelta(0), dry_run=False)
    assert not done.dry_run and (done.runs, done.rows, done.bytes_freed) == (
        report.runs, report.rows, report.bytes_freed)
    with pytest.raises(RunNotFound):
        sdk.get_run(doomed.id)
    blobs = Path(settings.artifacts_url) / "objects"
    assert sum(p.stat().st_size for p in blobs.rglob("*") if p.is_file()) == len(shared)
    assert [a.path for a in sdk.list_artifacts(kept.id)] == ["shared.txt"]
    again = sdk.collect_garbage(timedelta(0), dry_run=False)
    assert (again.runs, again.blobs, again.rows_freed) == ((), 0, 0)


@pytest.mark.parametrize("bad", [-timedelta(seconds=1), 30, "30d", None])
def test_collect_garbage_refuses_a_bad_age(sdk: Any, bad: object) -> None:
    with pytest.raises(InvalidArgument) as exc:
        sdk.collect_garbage(bad)
    assert exc.value.field == "older_than"
    with pytest.raises(InvalidArgument) as exc:
        sdk.collect_garbage(timedelta(0), abandoned_after=bad)
    assert exc.value.field == "abandoned_after"


def _ids(page: Any) -> set[str]:
    return {run.id for run in page}


def test_or_not_parentheses_and_is_null_answer_the_same_everywhere(sdk: Any) -> None:
    runs = {}
    for name, lr, acc, team in (("a", "0.1", 0.95, "risk"), ("b", "0.2", 0.80, "risk"),
                                ("c", "0.1", 0.70, None), ("d", None, 0.99, "growth")):
        params = {} if lr is None else {"lr": lr}
        tags = {} if team is None else {"team": team}
        with sdk.start_run(experiment="grammar", params=params, tags=tags) as run:
            run.log_metric("acc", acc)
        runs[name] = run.id

    def match(text: str) -> set[str]:
        return _ids(sdk.search_runs("grammar", filter=text))

    def named(*names: str) -> set[str]:
        return {runs[n] for n in names}

    assert match("metrics.acc > 0.9 or params.lr = '0.2'") == named("a", "b", "d")
    assert match("not (metrics.acc > 0.9)") == named("b", "c")
    assert match("params.lr = '0.1' and (metrics.acc < 0.8 or tags.team = 'risk')") == \
        named("a", "c")
    assert match("not params.lr = '0.1' and metrics.acc > 0.5 or tags.team IS NULL") == \
        named("b", "d", "c")
    assert match("params.lr IS NULL") == named("d")
    assert match("tags.team IS NOT NULL and not tags.team = 'growth'") == named("a", "b")
    assert match("metrics.loss IS NULL") == named("a", "b", "c", "d")
    assert sdk.count_runs("grammar", filter="params.lr IS NULL or tags.team IS NULL") == 2


def test_paging_while_runs_are_added_returns_each_existing_run_once(sdk: Any) -> None:
    existing = set()
    for i in range(7):
        with sdk.start_run(experiment="paging") as run:
            run.log_metric("score", float(i % 3))
        existing.add(run.id)
    seen: list[str] = []
    token = None
    added = 0
    while True:
        page = sdk.search_runs("paging", order_by=["metrics.score DESC"], max_results=2,
                               page_token=token)
        seen += [run.id for run in page]
        with sdk.start_run(experiment="paging") as run:  # lands anywhere in the order
            run.log_metric("score", float(added % 3))
        added += 1
        token = page.next_page_token
        if token is None:
            break
    assert len(seen) == len(set(seen)), "a run came back twice"
    assert existing <= set(seen), "a run that existed at the first page was skipped"
