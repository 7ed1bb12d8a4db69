"""Engines for SQLite (WAL, busy timeout, foreign keys) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from modelyard.errors import InvalidArgument

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_db_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` (mapped to psycopg 3), ``sqlite:///``, or a
    bare filesystem path to a SQLite file."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().absolute().as_posix()}"
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so BEGIN IMMEDIATE can be issued.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        # WAL + NORMAL survives a killed process intact; only an OS crash may lose the last
        # transactions, never corrupt the file.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA case_sensitive_like=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front: a deferred transaction that later upgrades to write
        # fails with SQLITE_BUSY at once instead of waiting for busy_timeout.
        mode = "IMMEDIATE" if conn.get_execution_options().get("write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Build an engine for a database URL.

    Raises:
        InvalidArgument: the URL is not a database URL modelyard supports.
    """
    normalized = normalize_db_url(url)
    try:
        parsed = make_url(normalized)
    except ArgumentError:
        raise InvalidArgument(f"not a database URL: {url!r}", field="db") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(normalized, **kwargs)
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        return create_engine(normalized, **kwargs)
    raise InvalidArgument(
        f"unsupported database {backend!r}: use sqlite:///path or postgresql://...", field="db"
    )
