"""Artifact fixtures over real HTTP: a client of the ``server`` fixture, and a run to upload to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS


@pytest.fixture
def api(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, event_hooks=CLIENT_HOOKS) as client:
        yield client


@pytest.fixture
def run_id(api: httpx.Client) -> str:
    resp = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"})
    assert resp.status_code == 201
    return str(resp.json()["info"]["run_id"])
