"""Schema versioning: upgrade with Alembic; check the revision cheaply at start-up."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text

from modelyard.errors import SchemaOutdated

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration; a test checks it equals Alembic's head, so start-up need not load Alembic.
HEAD_REVISION = "0004"


def _alembic_config(connection: object) -> object:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The revision stamped in the database, or None for an empty database."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        return None if row is None else str(row[0])


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (default: the newest)."""
    from alembic import command

    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        if sqlite:
            # SQLite alters a table by recreating it; with foreign keys on, dropping the old
            # table would cascade-delete every row that references it. The pragma only takes
            # effect outside a transaction, so it is set before the migration's one begins.
            raw.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                command.upgrade(_alembic_config(conn), revision)  # type: ignore[arg-type]
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:  # rolls the whole upgrade back
                        raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def ensure_schema(engine: Engine, *, create_if_empty: bool = True) -> None:
    """Check the schema is current; an empty database is created when allowed.

    Raises:
        SchemaOutdated: the database is at an older (or unknown) revision; the message says
            which command to run.
    """
    rev = current_revision(engine)
    if rev == HEAD_REVISION:
        return
    if rev is None and create_if_empty:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        if not tables:
            upgrade(engine)
            return
    url = engine.url.render_as_string(hide_password=True)
    raise SchemaOutdated(
        f"the database schema is at revision {rev or 'none'} but this modelyard needs "
        f"{HEAD_REVISION}; run: modelyard db upgrade --db '{url}'"
    )
