"""Engines for SQLite (WAL, busy timeout, foreign keys) and PostgreSQL (psycopg 3).

A SQLite database file that does not exist yet is created here, 0600, before SQLite opens it,
and any missing folder above it 0700, whatever the umask: SQLite itself would create it 0644,
and it gives the ``-wal`` and ``-shm`` files the permission bits of the database file. An
existing file or folder keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from modelyard.errors import InvalidArgument

SQLITE_BUSY_TIMEOUT_MS = 30_000
DB_FILE_MODE = 0o600  # the database and, after it, its -wal and -shm files
DIR_MODE = 0o700


def normalize_db_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` (mapped to psycopg 3), ``sqlite:///``, or a
    bare filesystem path to a SQLite file."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().absolute().as_posix()}"
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite database URL (or bare path) names; None for any other database, an
    in-memory one, or a ``file:`` URI (``?uri=true``), whose file SQLite opens as it says."""
    try:
        parsed = make_url(normalize_db_url(url))
    except ArgumentError:
        return None
    return _sqlite_file(parsed)


def _sqlite_file(parsed: URL) -> Path | None:
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if str(parsed.query.get("uri", "")).lower() in ("true", "1") or database.startswith("file:"):
        return None
    return Path(database)


def _create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (and missing folders above it 0700) unless it
    exists; an explicit mode at creation, so the umask can only narrow it."""
    missing: list[Path] = []
    folder = path.parent
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created concurrently
            new.mkdir(mode=DIR_MODE)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, flags, DB_FILE_MODE))


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
        path = _sqlite_file(parsed)
        if path is not None:
            _create_private_file(path)
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
