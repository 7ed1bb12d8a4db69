"""Shared fixtures: real SQLite files, the real PostgreSQL server, a real HTTP server.

PostgreSQL tests run whenever the server is reachable (``MODELYARD_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``); with ``CI=true`` they are mandatory and fail
loudly when it is not.

Only fixtures live here; what tests share besides is in ``support`` (``support.servers``,
``support.databases``, ...). Test modules import from there, never from a conftest.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from modelyard.settings import Settings
from modelyard.stores.protocols import ArtifactIndex, ExperimentStore, Maintenance, RunStore
from modelyard.stores.sql import SqlStores, open_sql_stores
from support.databases import IN_CI, PG_BASE, pg_unreachable, reset_postgres
from support.servers import ServerThread


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; its URL."""
    problem = pg_unreachable()
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


@pytest.fixture
def stores(db_url: str) -> Iterator[SqlStores]:
    """The SQL stores on each database, for the store-level tests."""
    s = open_sql_stores(db_url)
    # the SQL stores satisfy the protocols the services are written against
    _e: ExperimentStore = s.experiments
    _r: RunStore = s.runs
    _a: ArtifactIndex = s.artifacts
    _m: Maintenance = s.maintenance
    try:
        yield s
    finally:
        s.close()


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
