"""What the store-level history tests share: stores on each database, and a fresh run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from modelyard.stores.sql import SqlStores, open_sql_stores


@pytest.fixture
def stores(db_url: str) -> Iterator[SqlStores]:
    s = open_sql_stores(db_url)
    try:
        yield s
    finally:
        s.close()


def new_run(stores: SqlStores) -> str:
    run_id = uuid.uuid4().hex
    stores.runs.create_run(run_id=run_id, experiment_id="0", run_name="r", user_id="u",
                           start_time=0, tags={}, parent_run_id=None)
    return run_id
