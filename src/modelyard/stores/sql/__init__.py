"""The SQL implementation of every store protocol (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from modelyard.stores.sql.artifact_index import SqlArtifactIndex
from modelyard.stores.sql.engine import make_engine
from modelyard.stores.sql.experiments import SqlExperimentStore
from modelyard.stores.sql.maintenance import SqlMaintenance
from modelyard.stores.sql.migrate import ensure_schema
from modelyard.stores.sql.runs import SqlRunStore


@dataclass(frozen=True, slots=True)
class SqlStores:
    engine: Engine
    experiments: SqlExperimentStore
    runs: SqlRunStore
    artifacts: SqlArtifactIndex
    maintenance: SqlMaintenance

    def close(self) -> None:
        self.engine.dispose()


def open_sql_stores(url: str, *, create_if_empty: bool = True) -> SqlStores:
    """Connect to a database, check (or create) its schema, and build the stores.

    Raises:
        InvalidArgument: not a supported database URL.
        SchemaOutdated: the schema needs ``modelyard db upgrade``.
        Unavailable: the database cannot be reached.
    """
    engine = make_engine(url)
    try:
        ensure_schema(engine, create_if_empty=create_if_empty)
    except Exception:
        engine.dispose()
        raise
    return SqlStores(
        engine=engine,
        experiments=SqlExperimentStore(engine),
        runs=SqlRunStore(engine),
        artifacts=SqlArtifactIndex(engine),
        maintenance=SqlMaintenance(engine),
    )


__all__ = ["SqlStores", "open_sql_stores"]
