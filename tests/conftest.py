"""Shared fixtures: real SQLite files, the real PostgreSQL server, a real HTTP server.

PostgreSQL tests run whenever the server is reachable (``MODELYARD_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``); with ``CI=true`` they are mandatory and fail
loudly when it is not.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy import text

from modelyard.settings import Settings

PG_BASE = os.environ.get(
    "MODELYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_BASE, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means "not reachable"; the reason is reported
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; its URL."""
    problem = _pg_reachable()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"CI=true but PostgreSQL at {PG_BASE} is unreachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_BASE}: {problem}")
    name = f"modelyard_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_BASE.rpartition("/")
    url = f"{base}/{name}"
    yield url
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def reset_postgres(url: str) -> None:
    """Empty every table (keeping the schema and the Default experiment)."""
    from modelyard.stores.sql.engine import make_engine
    from modelyard.stores.sql.migrate import ensure_schema

    engine = make_engine(url)
    try:
        ensure_schema(engine)
        with engine.begin() as conn:
            conn.execute(text(
                "TRUNCATE metrics, metric_chunks, latest_metrics, params, tags, artifacts, "
                "ingested_batches, runs, experiment_tags, blob_leases RESTART IDENTITY CASCADE"
            ))
            conn.execute(text("DELETE FROM experiments WHERE experiment_id <> 0"))
            conn.execute(text("UPDATE experiments SET lifecycle_stage = 'active', "
                              "deleted_time = NULL"))
            conn.execute(text("SELECT setval(pg_get_serial_sequence('experiments', "
                              "'experiment_id'), 1, false)"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty metadata database: a SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'modelyard.db'}"
    url: str = request.getfixturevalue("pg_database")
    reset_postgres(url)
    return url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(db_url=db_url, artifacts_url=str(tmp_path / "artifacts"))


def _media_type(request: httpx.Request) -> None:
    """Send what every real client of the API sends: uploads as application/octet-stream,
    every other POST and PATCH as JSON (the server refuses other bodies, ``server.edge``).
    Only where the test did not say: tests of the refusals send what they mean to."""
    if "content-type" in request.headers:
        return
    if request.method == "PUT":
        request.headers["content-type"] = "application/octet-stream"
    elif request.method in ("POST", "PATCH"):
        request.headers["content-type"] = "application/json"


#: ``httpx.Client(..., event_hooks=CLIENT_HOOKS)``: a client that sends media types.
CLIENT_HOOKS = {"request": [_media_type]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real uvicorn server on a loopback port, in a background thread."""

    def __init__(self, settings: Settings) -> None:
        from modelyard.server.app import create_app

        self.port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(settings) as srv:
        yield srv


@pytest.fixture(params=["local", "remote"])
def backend(request: pytest.FixtureRequest, settings: Settings) -> Iterator[object]:
    """The SDK's backend in embedded mode and over real HTTP, on each database."""
    if request.param == "local":
        from modelyard.backend.local import LocalBackend

        b: object = LocalBackend(settings)
        yield b
        b.close()  # type: ignore[attr-defined]
        return
    from modelyard.backend.remote import RemoteBackend

    with ServerThread(settings) as srv:
        rb = RemoteBackend(srv.url)
        yield rb
        rb.close()


@pytest.fixture
def sdk(backend: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The ``modelyard`` module wired to ``backend`` (embedded or remote)."""
    import modelyard
    from modelyard.client import api

    monkeypatch.setattr(api, "backend", lambda uri=None: backend)
    monkeypatch.setenv("MODELYARD_CAPTURE_SOURCE", "false")
    yield modelyard
    for run in list(api._open_runs.values()):
        run.end("KILLED")
