"""Alembic environment: runs on the connection modelyard hands it (see ``migrate.py``)."""

from __future__ import annotations

from alembic import context

from modelyard.stores.sql.schema import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached via the alembic CLI during development
    from modelyard.stores.sql.engine import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    connection = engine.connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
