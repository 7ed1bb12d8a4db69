"""What every SQL store shares: the engine, read/write transactions, dialect-aware upserts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from modelyard.errors import Unavailable


class SqlBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self._compiled: dict[tuple[int, tuple[str, ...]], str] = {}

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except (OperationalError, PoolTimeout) as exc:
            raise Unavailable(f"the metadata database is unavailable: {_short(exc)}") from exc

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A read transaction whose statements all see one snapshot of the database.

        PostgreSQL's default isolation (READ COMMITTED) gives each statement its own; SQLite
        holds one from the first read of a transaction, which is begun here explicitly (reads
        on the driver's own cursor would not begin one).
        """
        with self._read() as conn:
            if self._dialect == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction that commits on success and rolls back on any exception."""
        try:
            with self.engine.connect().execution_options(write=True) as conn, conn.begin():
                yield conn
        except (OperationalError, PoolTimeout) as exc:
            raise Unavailable(f"the metadata database is unavailable: {_short(exc)}") from exc

    def _bulk(self, conn: Connection, stmt: Any, columns: tuple[str, ...],
              rows: Sequence[Sequence[Any]]) -> None:
        """Execute a multi-row statement as fast as the dialect allows.

        SQLite: the driver's executemany on SQL compiled once from the SQLAlchemy statement
        (in-process, so per-row statements are cheap and SQLAlchemy's per-row parameter
        handling would cost more than the database). PostgreSQL: SQLAlchemy's batched
        multi-row VALUES, which saves the network round trip per row.
        """
        if self._dialect != "sqlite":
            conn.execute(stmt, [dict(zip(columns, row, strict=True)) for row in rows])
            return
        key = (id(stmt), columns)
        sql = self._compiled.get(key)
        if sql is None:
            compiled = stmt.compile(dialect=self.engine.dialect, column_keys=list(columns))
            if list(compiled.positiontup or ()) != list(columns):
                raise RuntimeError(f"unexpected bind order {compiled.positiontup}")
            sql = self._compiled[key] = str(compiled)
        conn.exec_driver_sql(sql, list(rows))

    def _append(self, conn: Connection, table: Table, columns: tuple[str, ...],
                rows: Sequence[Sequence[Any]]) -> None:
        """Append rows to a table that takes no ON CONFLICT (the metric history).

        PostgreSQL: ``COPY ... FROM STDIN`` through psycopg on the transaction's own
        connection, several times faster than multi-row INSERTs. Elsewhere: :meth:`_bulk`.
        """
        if self._dialect != "postgresql":
            self._bulk(conn, table.insert(), columns, rows)
            return
        quote = self.engine.dialect.identifier_preparer.quote
        sql = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
        raw: Any = conn.connection.dbapi_connection  # psycopg.Connection, inside our transaction
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)

    def _insert(self, table: Table) -> Any:
        """``INSERT`` with ``ON CONFLICT`` support for the engine's dialect."""
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)


def _short(exc: BaseException) -> str:
    # Only the driver's first line (e.g. "database is locked"): never SQL text or parameters.
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0][:200] if str(orig) else type(orig).__name__
