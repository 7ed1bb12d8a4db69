"""A log batch is all or nothing: a batch refused halfway (param overwrite, one bad key) leaves
no metric, param or tag of it behind, and does not use up its batch id. Over real HTTP, on
SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelyard.wire.schemas import history_from_json
from support.servers import CLIENT_HOOKS, ServerThread

API = "/api/v1"
TS = 1_700_000_000_000


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, event_hooks=CLIENT_HOOKS) as client:
        yield client


def metric(key: str, value: float, step: int) -> dict[str, Any]:
    return {"key": key, "value": value, "step": step, "timestamp": TS + step}


def kv(key: str, value: str) -> dict[str, str]:
    return {"key": key, "value": value}


def new_run(http: httpx.Client) -> str:
    resp = http.post(f"{API}/experiments", json={"name": f"atomic-{uuid.uuid4().hex[:8]}"})
    assert resp.status_code in (200, 201), resp.text
    resp = http.post(f"{API}/runs", json={"experiment_id": resp.json()["experiment_id"]})
    assert resp.status_code == 201, resp.text
    run_id: str = resp.json()["info"]["run_id"]
    first = {"batch_id": uuid.uuid4().hex, "metrics": [metric("loss", 1.0, 0)],
             "params": [kv("lr", "0.1"), kv("depth", "3")], "tags": [kv("stage", "warmup")]}
    resp = http.post(f"{API}/runs/{run_id}/batch", json=first)
    assert resp.status_code == 200 and resp.json()["stored"] is True, resp.text
    return run_id


def snapshot(http: httpx.Client, run_id: str, keys: tuple[str, ...]) -> dict[str, Any]:
    run = http.get(f"{API}/runs/{run_id}")
    assert run.status_code == 200, run.text
    body = run.json()
    histories = {}
    for key in keys:
        resp = http.get(f"{API}/runs/{run_id}/metrics/history", params={"key": key})
        assert resp.status_code == 200, resp.text
        histories[key] = [(m.step, m.timestamp, m.value)
                          for m in history_from_json(resp.json())]
    return {"params": body["params"], "tags": body["tags"],
            "latest": sorted(body["metrics"], key=lambda m: m["key"]), "history": histories}


BEFORE: dict[str, Any] = {
    "params": {"lr": "0.1", "depth": "3"},
    "tags": {"stage": "warmup"},
    "latest": [{"key": "loss", "value": 1.0, "step": 0, "timestamp": TS}],
}
NEW_KEYS = ("loss", "acc", "f1")


def assert_unchanged(state: dict[str, Any]) -> None:
    assert state["params"] == BEFORE["params"]
    assert state["tags"] == BEFORE["tags"]
    assert state["latest"] == BEFORE["latest"]
    assert state["history"] == {"loss": [(0, TS, 1.0)], "acc": [], "f1": []}


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_param_overwrite_rejects_whole_batch(http: httpx.Client, position: str) -> None:
    run_id = new_run(http)
    new_params = [kv(f"p{i}", str(i)) for i in range(20)]
    bad = kv("lr", "0.2")
    at = {"first": 0, "middle": 10, "last": 20}[position]
    batch: dict[str, Any] = {
        "batch_id": uuid.uuid4().hex,
        "metrics": [metric("acc", i / 10, i) for i in range(50)]
        + [metric("loss", 0.5, 1), metric("f1", 0.3, 0)],
        "params": [*new_params[:at], bad, *new_params[at:], kv("depth", "3")],
        "tags": [kv("stage", "train"), kv("fresh", "yes")],
    }
    for attempt in range(2):  # a retry under the same id meets the same refusal
        resp = http.post(f"{API}/runs/{run_id}/batch", json=batch)
        assert resp.status_code == 409, (attempt, resp.text)
        err = resp.json()["error"]
        assert err["code"] == "PARAM_OVERWRITE"
        assert err["field"] == "params.lr"
        assert "'lr'" in err["message"]
        assert_unchanged(snapshot(http, run_id, NEW_KEYS))

    # The refusal did not consume the batch id: the corrected batch under it is stored.
    batch["params"] = [p for p in batch["params"] if p != bad]
    resp = http.post(f"{API}/runs/{run_id}/batch", json=batch)
    assert resp.status_code == 200 and resp.json()["stored"] is True, resp.text
    state = snapshot(http, run_id, NEW_KEYS)
    assert state["params"] == {**BEFORE["params"], **{p["key"]: p["value"] for p in new_params}}
    assert state["tags"] == {"stage": "train", "fresh": "yes"}
    assert len(state["history"]["acc"]) == 50 and len(state["history"]["loss"]) == 2


@pytest.mark.parametrize("bad_key", ["bad key!", "a/../b"])
def test_one_invalid_metric_key_rejects_whole_batch(http: httpx.Client, bad_key: str) -> None:
    run_id = new_run(http)
    batch: dict[str, Any] = {
        "batch_id": uuid.uuid4().hex,
        "metrics": [metric("acc", 0.1, 0), metric("loss", 0.5, 1), metric(bad_key, 1.0, 0),
                    metric("f1", 0.3, 0)],
        "params": [kv("fresh", "1")],
        "tags": [kv("stage", "train")],
    }
    resp = http.post(f"{API}/runs/{run_id}/batch", json=batch)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "INVALID_ARGUMENT"
    assert "metric key" in resp.json()["error"]["message"]
    assert_unchanged(snapshot(http, run_id, NEW_KEYS))
    # And the id is still free.
    batch["metrics"] = [m for m in batch["metrics"] if m["key"] != bad_key]
    resp = http.post(f"{API}/runs/{run_id}/batch", json=batch)
    assert resp.status_code == 200 and resp.json()["stored"] is True, resp.text


def test_one_malformed_point_rejects_whole_batch(http: httpx.Client) -> None:
    run_id = new_run(http)
    batch: dict[str, Any] = {
        "metrics": [metric("acc", 0.1, 0), {"key": "f1", "value": "high", "timestamp": TS},
                    metric("loss", 0.5, 1)],
        "params": [kv("fresh", "1")],
        "tags": [kv("stage", "train")],
    }
    resp = http.post(f"{API}/runs/{run_id}/batch", json=batch)
    assert resp.status_code in (400, 422), resp.text
    assert resp.json()["error"]["field"] == "metrics.1.value"
    assert_unchanged(snapshot(http, run_id, NEW_KEYS))
