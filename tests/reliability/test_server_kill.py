"""The server dies mid-ingestion (SIGKILL) and comes back: the client's sender retries, every
point lands exactly once, and the SQLite file is intact. Plus: a batch sent twice under the same
``batch_id`` is stored once, on both databases."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.backend.remote import RemoteBackend
from modelyard.domain.entities import LogBatch, Metric, Param, RunStatus, Tag
from support.processes import ServerProcess, assert_clean_log, show_on_failure, start_worker, tail
from support.servers import ServerThread, free_port
from support.waiting import wait_until

POINTS = 200_000
FLUSH_EVERY = 10_000


def wait_for_line(path: Path, prefix: str, proc: subprocess.Popen[bytes],
                  timeout: float) -> str:
    """The first line of ``path`` that starts with ``prefix``, once the client wrote it."""

    def line() -> str | None:
        for ln in path.read_text().splitlines():
            if ln.startswith(prefix):
                return ln
        assert proc.poll() is None, f"client exited early:\n{tail(path)}"
        return None

    try:
        return wait_until(line, timeout=timeout, what=f"a {prefix!r} line from the client")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{tail(path)}") from None


@pytest.mark.slow
def test_sigkill_mid_ingestion_then_restart(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    db_file = tmp_path / "x.db"
    server = ServerProcess(db_url=f"sqlite:///{db_file}", artifacts=tmp_path / "artifacts",
                           port=free_port(), log_path=logs / "server.log")
    out, err = logs / "client.out", logs / "client.err"
    with show_on_failure(logs):
        server.start()
        client = start_worker(["stream", server.url, "crash", str(POINTS), str(FLUSH_EVERY)],
                              out=out, err=err)
        try:
            # Kill once the client is demonstrably streaming: its first flush came back, and
            # the server holds points logged after it (batches are on their way).
            run_id = wait_for_line(out, "run ", client, timeout=60).split()[1]
            wait_for_line(out, "flushed ", client, timeout=60)
            watcher = RemoteBackend(server.url)
            try:
                wait_until(lambda: watcher.get_run(run_id).latest_metrics["loss"].step
                           >= FLUSH_EVERY, timeout=60,
                           what="points after the first flush to reach the server")
            finally:
                watcher.close()
            server.kill()
            killed_at = sum(1 for ln in out.read_text().splitlines()
                            if ln.startswith("flushed "))
            assert client.poll() is None, "the client finished before the server was killed"
            # The sender meets connection errors (and backs off) before the server is back.
            wait_for_line(out, "log WARNING modelyard: backend unavailable", client, timeout=60)
            server.start()
            client.wait(180)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(10)
        try:
            assert client.returncode == 0, f"client failed:\n{tail(err)}"
            report = json.loads(out.read_text().splitlines()[-1])
            assert report["logged"] == POINTS
            run_id = report["run_id"]
            records = report["log_records"]
            assert not [r for r in records if r["level"] != "WARNING"], records
            assert any("unavailable" in r["message"] for r in records), (
                "the sender never had to retry: the kill did not hit ingestion")
            assert killed_at * FLUSH_EVERY < POINTS
            print(f"killed after {killed_at} flushes; sender retried "
                  f"{len(records)} times")

            backend = RemoteBackend(server.url)
            try:
                run = backend.get_run(run_id)
                assert run.info.status is RunStatus.FINISHED
                assert run.params == {"points": str(POINTS)}
                history = backend.get_metric_history(run_id, "loss")
                steps = [m.step for m in history]
                assert len(steps) == len(set(steps)), "a retried batch was stored twice"
                assert steps == list(range(POINTS))
                assert all(m.value == m.step / 1024.0 for m in history)
                assert run.latest_metrics["loss"].step == POINTS - 1
            finally:
                backend.close()
        finally:
            server.stop()

        assert_clean_log(server.log_path)
        conn = sqlite3.connect(db_file)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            # Stored once each, in either tier of the history (rows, packed chunks).
            rows = conn.execute("SELECT COUNT(*) FROM metrics WHERE run_id = ? AND key = 'loss'",
                                (run_id,)).fetchone()[0]
            packed = conn.execute("SELECT COALESCE(SUM(n), 0) FROM metric_chunks "
                                  "WHERE run_id = ? AND key = 'loss'", (run_id,)).fetchone()[0]
            assert rows + packed == POINTS
        finally:
            conn.close()


# ---------------------------------------------------------------------- same batch_id twice


@pytest.fixture
def remote(server: ServerThread) -> Iterator[RemoteBackend]:
    rb = RemoteBackend(server.url)
    yield rb
    rb.close()


def _batch(n: int) -> LogBatch:
    return LogBatch(
        metrics=tuple(Metric("acc", i / 8, i, 1_700_000_000_000 + i) for i in range(n)),
        params=(Param("seed", "7"),),
        tags=(Tag("phase", "train"),),
    )


def test_same_batch_id_is_stored_once(remote: RemoteBackend) -> None:
    exp = remote.create_experiment("dedup")
    run = remote.create_run(exp.experiment_id)
    batch_id = uuid.uuid4().hex
    assert remote.log_batch(run.id, _batch(50), batch_id=batch_id) is True
    assert remote.log_batch(run.id, _batch(50), batch_id=batch_id) is False
    history = remote.get_metric_history(run.id, "acc")
    assert [m.step for m in history] == list(range(50))
    fresh = remote.get_run(run.id)
    assert fresh.params == {"seed": "7"}
    assert fresh.tags["phase"] == "train"
    # The id, not the content, decides: the same points under a new id are new points.
    assert remote.log_batch(run.id, _batch(50), batch_id=uuid.uuid4().hex) is True
    assert len(remote.get_metric_history(run.id, "acc")) == 100


def test_same_batch_id_raced_from_many_threads(remote: RemoteBackend) -> None:
    exp = remote.create_experiment("dedup-race")
    run = remote.create_run(exp.experiment_id)
    batch_id = uuid.uuid4().hex
    barrier = threading.Barrier(8)
    results: list[bool] = []
    failures: list[BaseException] = []

    def send() -> None:
        try:
            barrier.wait(10)
            results.append(remote.log_batch(run.id, _batch(200), batch_id=batch_id))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert sorted(results) == [False] * 7 + [True]
    assert len(remote.get_metric_history(run.id, "acc")) == 200
