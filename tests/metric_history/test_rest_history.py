"""``GET /api/v1/runs/{run_id}/metrics/history`` over raw HTTP: JSON (full or downsampled),
streamed CSV and Arrow downloads with their content types, and every refusal naming its
field."""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pyarrow as pa
import pytest

from modelyard.backend.remote import RemoteBackend
from modelyard.domain.entities import LogBatch, Metric
from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS


@pytest.fixture
def api(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, event_hooks=CLIENT_HOOKS) as client:
        yield client


@pytest.fixture
def run_id(server: Any) -> str:
    b = RemoteBackend(server.url)
    try:
        run = b.create_run("0")
        points = [Metric("loss", 1.0 / (i + 1), i, 10 * i) for i in range(1_000)]
        points[500] = Metric("loss", math.nan, 500, 5_000)
        points[600] = Metric("loss", math.inf, 600, 6_000)
        b.log_batch(run.id, LogBatch(metrics=tuple(points)))
        return run.id
    finally:
        b.close()


def url(run_id: str) -> str:
    return r.METRIC_HISTORY.url(run_id=run_id)


def error(resp: httpx.Response, status: int, field: str) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["field"] == field, err
    assert field in err["message"] or field in ("run_id",), err
    return str(err["code"])


def test_json_full_and_downsampled(api: httpx.Client, run_id: str) -> None:
    full = api.get(url(run_id), params={"key": "loss"}).json()
    assert set(full) == {"key", "steps", "timestamps", "values"}
    assert full["steps"] == list(range(1_000))
    assert full["values"][500] == "NaN" and full["values"][600] == "Infinity"
    small = api.get(url(run_id), params={"key": "loss", "max_points": 20}).json()
    assert len(small["steps"]) <= 20
    assert small["steps"][0] == 0 and small["steps"][-1] == 999
    assert 500 in small["steps"] and 600 in small["steps"]  # NaN and inf are kept


def test_csv_and_arrow_downloads(api: httpx.Client, run_id: str) -> None:
    resp = api.get(url(run_id), params={"key": "loss", "format": "csv"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"
    assert resp.headers["content-disposition"].startswith("attachment")
    assert resp.headers.get("transfer-encoding") == "chunked"  # streamed, not buffered
    lines = resp.text.splitlines()
    assert lines[0] == "step,timestamp,value" and len(lines) == 1_001
    assert lines[501] == "500,5000,nan" and lines[601] == "600,6000,inf"
    assert float(lines[3].split(",")[2]) == 1 / 3

    resp = api.get(url(run_id), params={"key": "loss", "format": "arrow"})
    assert resp.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(io.BytesIO(resp.content)).read_all()
    assert table.column("step").to_pylist() == list(range(1_000))
    assert table.column("value")[2].as_py() == 1 / 3

    small = api.get(url(run_id), params={"key": "loss", "format": "arrow", "max_points": 10})
    table = pa.ipc.open_stream(io.BytesIO(small.content)).read_all()
    assert 2 <= table.num_rows <= 10


@pytest.mark.parametrize("fmt", ["json", "csv", "arrow"])
def test_refusals_name_the_field(api: httpx.Client, run_id: str, fmt: str) -> None:
    def get(**params: Any) -> httpx.Response:
        return api.get(url(params.pop("run", run_id)), params={"format": fmt, **params})

    assert error(get(key="loss", max_points=1), 400, "max_points") == "INVALID_ARGUMENT"
    assert error(get(key="loss", max_points=100_001), 400, "max_points") == "INVALID_ARGUMENT"
    assert error(get(key="loss", max_points="many"), 422, "max_points") == "SCHEMA_VIOLATION"
    assert error(get(), 422, "key") == "SCHEMA_VIOLATION"
    assert error(get(key="bad key!"), 400, "key") == "INVALID_ARGUMENT"
    assert error(get(key="loss", run=uuid.uuid4().hex), 404, "run_id") == "RUN_NOT_FOUND"
    assert error(get(key="loss", run="not-an-id"), 400, "run_id") == "INVALID_ARGUMENT"


def test_unknown_format(api: httpx.Client, run_id: str) -> None:
    resp = api.get(url(run_id), params={"key": "loss", "format": "xml"})
    assert error(resp, 400, "format") == "INVALID_ARGUMENT"
    assert "json, csv or arrow" in resp.json()["error"]["message"]
