"""A server started over an older (or unstamped) schema refuses at once, naming the command that
fixes it; ``modelyard db upgrade`` prepares a fresh database the server then starts on."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from modelyard.stores.sql.engine import make_engine
from modelyard.stores.sql.migrate import HEAD_REVISION, current_revision, upgrade
from support.processes import ServerProcess, run_cli, show_on_failure, squash
from support.servers import CLIENT_HOOKS, free_port


def migrated_db(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        assert current_revision(engine) == HEAD_REVISION
    finally:
        engine.dispose()
    return url


def tamper(path: Path, how: str) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            if how == "older-stamp":
                conn.execute("UPDATE alembic_version SET version_num = '0000'")
            else:  # tables present, but no revision recorded
                conn.execute("DELETE FROM alembic_version")
    finally:
        conn.close()


@pytest.mark.parametrize(("how", "workers"), [("older-stamp", 1), ("older-stamp", 2),
                                              ("unstamped", 1)])
def test_server_refuses_outdated_schema(tmp_path: Path, how: str, workers: int) -> None:
    db = tmp_path / "old.db"
    url = migrated_db(db)
    tamper(db, how)
    port = free_port()
    started = time.monotonic()
    result = run_cli(["server", "--host", "127.0.0.1", "--port", str(port), "--db", url,
                      "--artifacts", str(tmp_path / "artifacts"), "--workers", str(workers)],
                     timeout=60)
    elapsed = time.monotonic() - started
    output = squash(result.stdout + result.stderr)
    assert result.returncode != 0, output
    assert "modelyard db upgrade" in output, output
    assert "SCHEMA_OUTDATED" in output, output
    assert "Traceback" not in output, output
    assert elapsed < 30, f"took {elapsed:.1f} s to refuse"
    # It refused before listening, and left the database as it was.
    with httpx.Client(timeout=1.0) as http, pytest.raises(httpx.TransportError):
        http.get(f"http://127.0.0.1:{port}/health")
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        conn.close()
    assert rows == ([("0000",)] if how == "older-stamp" else [])


def test_db_upgrade_then_server_starts(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    url = f"sqlite:///{db}"
    result = run_cli(["db", "upgrade", "--db", url])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"schema at {HEAD_REVISION}" in squash(result.stdout)
    engine = make_engine(url)
    try:
        assert current_revision(engine) == HEAD_REVISION
    finally:
        engine.dispose()
    # A second upgrade is a no-op that still succeeds.
    again = run_cli(["db", "upgrade", "--db", url])
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"was {HEAD_REVISION}" in squash(again.stdout)

    logs = tmp_path / "logs"
    logs.mkdir()
    server = ServerProcess(db_url=url, artifacts=tmp_path / "artifacts", port=free_port(),
                           log_path=logs / "server.log")
    with show_on_failure(logs), server, httpx.Client(
            base_url=server.url, timeout=10, event_hooks=CLIENT_HOOKS) as http:
        resp = http.post("/api/v1/experiments", json={"name": "after-upgrade"})
        assert resp.status_code in (200, 201), resp.text
        listed = http.get("/api/v1/experiments").json()["experiments"]
        assert "after-upgrade" in {e["name"] for e in listed}
