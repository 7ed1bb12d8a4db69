"""Fixtures of the artifact tests that talk to a real server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelyard.wire import routes as r


@pytest.fixture
def api(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def run_id(api: httpx.Client) -> str:
    resp = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"})
    assert resp.status_code == 201
    return str(resp.json()["info"]["run_id"])
