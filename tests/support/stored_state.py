"""Snapshots of everything a server stores: every table of its metadata database and every
entry of its artifact folder, so a test can tell whether a request changed stored data, and
say what it changed.

A snapshot keeps, per table, its rows as canonical text (sorted, so the order the database
returns them in does not matter) and their digest; per path of the artifact folder, its kind,
permission bits, size and a digest of its content; and one digest over all of that. The
database is read directly, never through modelyard: SQLite through a read-only connection
(``mode=ro``), PostgreSQL through psycopg in a read-only repeatable-read transaction, so each
snapshot is one consistent view and the reader never writes (nor holds a lock between
snapshots).

Left out, on purpose:

- PostgreSQL sequences: not tables, and a refused insert rolled back still advances one (not
  transactional by design in PostgreSQL); a gap in ids is not a change of what is stored.
  SQLite's ``sqlite_sequence`` is an ordinary table and is compared.
- Times of files (mtime, atime, ctime): a temporary file created and removed again changes
  its folder's mtime, not what the folder holds.
- The SQLite ``-wal``/``-shm`` files: they are beside the database, not in the artifact folder,
  and what they hold is read through the connection.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

BLOCK = 64 * 1024
_ZEROS = bytes(BLOCK)


def _digest(parts: Iterator[bytes] | list[bytes]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[str, ...]  # repr of each row, sorted
    digest: str


@dataclass(frozen=True, slots=True)
class StoredState:
    tables: dict[str, Table]
    files: dict[str, tuple[Any, ...]]  # relative path -> (kind, mode, size, content digest)
    digest: str

    def changes_since(self, before: StoredState, limit: int = 3) -> list[str]:
        """What differs from ``before``: one line per changed table or path."""
        out: list[str] = []
        for name in sorted(before.tables.keys() | self.tables.keys()):
            old, new = before.tables.get(name), self.tables.get(name)
            if old is None or new is None:
                out.append(f"table {name}: {'created' if old is None else 'dropped'}")
            elif old.digest != new.digest:
                if old.columns != new.columns:
                    out.append(f"table {name}: columns {old.columns} -> {new.columns}")
                    continue
                gone = sorted(set(old.rows) - set(new.rows))
                came = sorted(set(new.rows) - set(old.rows))
                detail = [f"-{row[:200]}" for row in gone[:limit]]
                detail += [f"+{row[:200]}" for row in came[:limit]]
                if len(gone) > limit or len(came) > limit:
                    detail.append(f"(-{len(gone)} +{len(came)} rows in all)")
                if not gone and not came:  # same rows, other multiplicities
                    detail.append(f"{len(old.rows)} -> {len(new.rows)} rows")
                out.append(f"table {name}: " + "; ".join(detail))
        for path in sorted(before.files.keys() | self.files.keys()):
            old_f, new_f = before.files.get(path), self.files.get(path)
            if old_f != new_f:
                what = ("created " + _describe(new_f) if old_f is None
                        else "removed (was " + _describe(old_f) + ")" if new_f is None
                        else f"{_describe(old_f)} -> {_describe(new_f)}")
                out.append(f"artifacts/{path}: {what}")
        return out


def _describe(entry: tuple[Any, ...] | None) -> str:
    assert entry is not None
    kind, mode, size, content = entry
    if kind == "dir":
        return f"dir {mode:o}"
    if kind == "link":
        return f"symlink to {content}"
    return f"{kind} {mode:o} {size} B {'empty' if size == 0 else 'content ' + content[:12]}"


# -- the database -------------------------------------------------------------------------------


class DatabaseReader:
    """A read-only connection to a metadata database, kept open for many snapshots."""

    def __init__(self, db_url: str) -> None:
        url = make_url(db_url)
        self.sqlite = url.get_backend_name() == "sqlite"
        if self.sqlite:
            import sqlite3

            path = urllib.parse.quote(str(url.database))
            # isolation_level None: no implicit transaction; each snapshot opens its own.
            self._conn: Any = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                              isolation_level=None, check_same_thread=False)
        else:
            plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._conn = psycopg.connect(plain, autocommit=True)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> DatabaseReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tables(self) -> dict[str, Table]:
        """Every table's columns and rows, from one consistent view of the database."""
        cur = self._conn.cursor()
        try:
            if self.sqlite:
                cur.execute("BEGIN DEFERRED")
                return self._sqlite_tables(cur)
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return self._postgres_tables(cur)
        finally:
            cur.execute("COMMIT")
            cur.close()

    @staticmethod
    def _sqlite_tables(cur: Any) -> dict[str, Table]:
        out: dict[str, Table] = {}
        names = cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                            "ORDER BY name").fetchall()
        for (name,) in names:
            quoted = '"' + name.replace('"', '""') + '"'
            cur.execute(f"SELECT * FROM {quoted}")  # a name from the catalog
            columns = tuple(d[0] for d in cur.description)
            out[name] = _table(columns, [repr(tuple(row)) for row in cur.fetchall()])
        return out

    @staticmethod
    def _postgres_tables(cur: Any) -> dict[str, Table]:
        # Every schema but the system's; a table of the current one by its bare name. Rows
        # as PostgreSQL's own text of a row, all tables in one query: one round trip.
        listing = cur.execute("""
            SELECT CASE WHEN n.nspname = current_schema() THEN c.relname
                        ELSE n.nspname || '.' || c.relname END,
                   quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                   (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%'
             ORDER BY 1""").fetchall()
        rows: list[list[str]] = [[] for _ in listing]
        if listing:
            union = " UNION ALL ".join(f"SELECT {i}, t::text FROM {quoted} t"
                                       for i, (_, quoted, _) in enumerate(listing))
            for i, row in cur.execute(union):
                rows[i].append(row)
        return {name: _table(tuple((columns or "").split(",")), rows[i])
                for i, (name, _, columns) in enumerate(listing)}


def _table(columns: tuple[str, ...], rows: list[str]) -> Table:
    ordered = tuple(sorted(rows))
    return Table(columns, ordered,
                 _digest([repr(columns).encode(), *(r.encode() for r in ordered)]))


# -- the artifact folder ------------------------------------------------------------------------


def _data_regions(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The [start, end) ranges of a file that hold data; holes read as zeros and are
    skipped (multipart staging files are sparse and may be declared terabytes large)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no SEEK_DATA here
                yield pos, size
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        pos = end


def content_digest(path: str, size: int) -> str:
    """A digest of a file's content: of each non-zero 64 KiB block with its offset. A function
    of the bytes alone (a hole and written zeros are the same content), read only where the
    file holds data."""
    h = hashlib.blake2b(digest_size=16)
    h.update(size.to_bytes(8, "little"))
    done = -1  # the last block hashed (two regions may share one)
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, end in _data_regions(fd, size):
            block = max(start // BLOCK, done + 1)
            while block * BLOCK < end:
                chunk = os.pread(fd, BLOCK, block * BLOCK)
                if chunk != _ZEROS[: len(chunk)]:
                    h.update(block.to_bytes(8, "little"))
                    h.update(chunk)
                done = block
                block += 1
    finally:
        os.close(fd)
    return h.hexdigest()


def artifact_tree(root: str) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root``, by path relative to it: (kind, permission bits, size,
    content digest or link target). Folders count too: an empty one left behind is a change."""
    out: dict[str, tuple[Any, ...]] = {}

    def walk(folder: str, rel: str) -> None:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = f"{rel}{entry.name}"
            st = entry.stat(follow_symlinks=False)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                out[path] = ("dir", mode, 0, "")
                walk(entry.path, f"{path}/")
            elif stat.S_ISLNK(st.st_mode):
                out[path] = ("link", mode, 0, os.readlink(entry.path))
            elif stat.S_ISREG(st.st_mode):
                out[path] = ("file", mode, st.st_size, content_digest(entry.path, st.st_size))
            else:
                out[path] = ("special", mode, 0, "")

    if os.path.isdir(root):
        walk(root, "")
    return out


def snapshot(db: DatabaseReader, artifacts_root: str) -> StoredState:
    tables = db.tables()
    files = artifact_tree(artifacts_root)
    digest = _digest([*(f"{n}={t.digest}".encode() for n, t in tables.items()),
                      *(f"{p}={e!r}".encode() for p, e in files.items())])
    return StoredState(tables, files, digest)
