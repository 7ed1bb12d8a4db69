"""The PostgreSQL server the suite runs against, and emptying a database between tests.

PostgreSQL tests run whenever the server is reachable (``MODELYARD_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``); with ``CI=true`` they are mandatory and fail
loudly when it is not (the ``pg_database`` fixture in ``tests/conftest.py``).
"""

from __future__ import annotations

import os

import psycopg
from sqlalchemy import text

PG_BASE = os.environ.get(
    "MODELYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def pg_unreachable() -> str | None:
    """Why the PostgreSQL server at ``PG_BASE`` cannot be used; None when it can."""
    try:
        with psycopg.connect(PG_BASE, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means "not reachable"; the reason is reported
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


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
