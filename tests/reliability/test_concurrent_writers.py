"""16 SDK processes log to one real server at once: nothing is lost, nothing is doubled."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from modelyard.backend.remote import RemoteBackend
from modelyard.domain.entities import RunStatus
from support.databases import reset_postgres
from support.processes import (
    ServerProcess,
    assert_clean_log,
    show_on_failure,
    start_worker,
    wait_all,
)
from support.servers import free_port
from support.waiting import wait_until

WORKERS = 16
KEYS = 4
STEPS = 500  # KEYS * STEPS = 2,000 points per worker
FLUSH_EVERY = 100  # steps
EXPERIMENT = "concurrency"


def value_of(index: int, key: int, step: int) -> float:
    return index * 1000.0 + key + step / 1024.0  # the same formula as support/scripts/sdk_worker.py


def last_json_line(path: Path) -> dict[str, object]:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("{")]
    assert lines, f"{path.name} has no JSON report"
    report: dict[str, object] = json.loads(lines[-1])
    return report


def run_concurrent_writers(db_url: str, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    sync = tmp_path / "sync"
    logs.mkdir()
    sync.mkdir()
    server = ServerProcess(db_url=db_url, artifacts=tmp_path / "artifacts", port=free_port(),
                           log_path=logs / "server.log", workers=2)
    procs = []
    t0 = time.monotonic()
    with show_on_failure(logs), server:
        print(f"server healthy after {time.monotonic() - t0:.1f} s")
        try:
            for i in range(WORKERS):
                procs.append(start_worker(
                    ["concurrent", server.url, EXPERIMENT, str(i), str(KEYS), str(STEPS),
                     str(FLUSH_EVERY), str(sync)],
                    out=logs / f"worker-{i:02}.out", err=logs / f"worker-{i:02}.err"))
            # Release every worker at once, after all have started their run.
            def all_ready() -> bool:
                crashed = [i for i, p in enumerate(procs) if p.poll() is not None]
                assert not crashed, f"workers {crashed} exited before logging"
                return len(list(sync.glob("ready-*"))) == WORKERS

            wait_until(all_ready, timeout=120, interval=0.05,
                       what=f"all {WORKERS} workers to start their run")
            started = time.monotonic()
            print(f"all workers ready after {started - t0:.1f} s")
            (sync / "go").touch()
            codes = wait_all(procs, timeout=150)
            elapsed = time.monotonic() - started
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
        assert codes == [0] * WORKERS, f"worker exit codes {codes}"
        print(f"{WORKERS} workers x {KEYS * STEPS} points logged in {elapsed:.1f} s")

        run_ids: dict[str, int] = {}
        for i in range(WORKERS):
            stderr = (logs / f"worker-{i:02}.err").read_text()
            assert "Traceback" not in stderr and "modelyard:" not in stderr, stderr
            report = last_json_line(logs / f"worker-{i:02}.out")
            records = report["log_records"]
            assert isinstance(records, list)
            errors = [r for r in records if r["level"] in ("ERROR", "CRITICAL")]
            assert not errors, f"worker {i} sender errors: {errors}"
            assert report["logged"] == KEYS * STEPS
            run_ids[str(report["run_id"])] = i
        assert len(run_ids) == WORKERS, "two workers reported the same run id"

        backend = RemoteBackend(server.url)
        try:
            exp = backend.get_experiment_by_name(EXPERIMENT)
            found = {r.id for r in backend.search_runs([exp.experiment_id], max_results=100)}
            assert found == set(run_ids)
            for run_id, i in run_ids.items():
                run = backend.get_run(run_id)
                assert run.info.status is RunStatus.FINISHED
                assert run.info.end_time is not None
                assert dict(run.params) == {"worker": str(i), "lr": str(0.001 * (i + 1)),
                                            "keys": str(KEYS), "halfway": "yes"}
                assert run.tags["role"] == "concurrency"
                assert run.tags["progress"] == "done"
                assert run.tags[f"worker.{i}"] == str(i)
                assert set(run.latest_metrics) == {f"m{k}" for k in range(KEYS)}
                for k in range(KEYS):
                    history = backend.get_metric_history(run_id, f"m{k}")
                    assert [m.step for m in history] == list(range(STEPS)), (
                        f"run {run_id} m{k}: {len(history)} points, expected {STEPS}")
                    assert [m.value for m in history] == [value_of(i, k, s)
                                                          for s in range(STEPS)]
                    assert run.latest_metrics[f"m{k}"].value == value_of(i, k, STEPS - 1)
        finally:
            backend.close()
        print(f"verified after {time.monotonic() - t0:.1f} s")
    assert_clean_log(server.log_path)


@pytest.mark.slow
def test_sixteen_processes_sqlite(tmp_path: Path) -> None:
    run_concurrent_writers(f"sqlite:///{tmp_path / 'x.db'}", tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_sixteen_processes_postgres(pg_database: str, tmp_path: Path) -> None:
    reset_postgres(pg_database)
    run_concurrent_writers(pg_database, tmp_path)
