"""The REST API over raw HTTP (httpx against a real uvicorn server): the happy paths and the
protocol-level guarantees (route table, security headers, Host allow-list, downloads)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import blake3
import httpx
import pytest

from modelyard import __version__
from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


@pytest.fixture
def api(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, event_hooks=CLIENT_HOOKS) as client:
        yield client


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "parent", "message", "field", "details"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    err: dict[str, Any] = body["error"]
    return err


def assert_secure(resp: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, (resp.status_code, name, resp.headers)


def test_health(api: httpx.Client) -> None:
    resp = api.get(r.HEALTH.path)
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "version": __version__}
    assert resp.headers["content-type"] == "application/json"
    assert_secure(resp)


def test_openapi_lists_every_route(api: httpx.Client) -> None:
    resp = api.get("/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    for route in r.ALL_ROUTES:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        assert path in paths, f"{route} missing from the OpenAPI schema"
        assert route.method.lower() in paths[path], f"{route.method} {path} missing"
    documented = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    table = {(rt.method, re.sub(r"\{(\w+):\w+\}", r"{\1}", rt.path)) for rt in r.ALL_ROUTES}
    assert documented == table  # and nothing undocumented is served
    batch = paths[r.LOG_BATCH.path]["post"]
    assert "requestBody" in batch  # the fast-path route still documents its body


def test_full_flow_over_http(api: httpx.Client) -> None:
    resp = api.post(r.CREATE_EXPERIMENT.path,
                    json={"name": "http", "description": "d", "tags": {"k": "v"}})
    assert resp.status_code == 201, resp.text
    exp = resp.json()
    assert exp["name"] == "http" and exp["tags"] == {"k": "v"}
    exp_id = exp["experiment_id"]
    assert api.get(r.GET_EXPERIMENT.url(experiment_id=exp_id)).json() == exp
    assert api.get(r.GET_EXPERIMENT_BY_NAME.path, params={"name": "http"}).json() == exp
    listed = api.get(r.LIST_EXPERIMENTS.path).json()
    assert {e["name"] for e in listed["experiments"]} == {"Default", "http"}
    assert listed["next_page_token"] is None
    patched = api.patch(r.UPDATE_EXPERIMENT.url(experiment_id=exp_id),
                        json={"description": "new"}).json()
    assert patched["description"] == "new"
    assert api.post(r.SET_EXPERIMENT_TAG.url(experiment_id=exp_id),
                    json={"key": "k2", "value": "v2"}).status_code == 200

    resp = api.post(r.CREATE_RUN.path, json={"experiment_id": exp_id, "run_name": "r1",
                                             "tags": {"team": "risk"}})
    assert resp.status_code == 201, resp.text
    run = resp.json()
    run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "RUNNING" and run["tags"] == {"team": "risk"}

    batch = {
        "batch_id": "batch-0001",
        "metrics": [
            {"key": "loss", "value": 0.5, "step": 0, "timestamp": 10},
            {"key": "loss", "value": "NaN", "step": 1, "timestamp": 11},
            {"key": "loss", "value": "Infinity", "step": 2, "timestamp": 12},
            {"key": "loss", "value": "-Infinity", "step": 3, "timestamp": 13},
            {"key": "acc", "value": 1, "timestamp": 14},
        ],
        "params": [{"key": "lr", "value": "0.1"}],
        "tags": [{"key": "stage", "value": "dev"}],
    }
    url = r.LOG_BATCH.url(run_id=run_id)
    assert api.post(url, json=batch).json() == {"stored": True, "duplicate": False}
    assert api.post(url, json=batch).json() == {"stored": False, "duplicate": True}
    history = api.get(r.METRIC_HISTORY.url(run_id=run_id), params={"key": "loss"})
    assert history.status_code == 200
    assert "NaN" in history.text and "-Infinity" in history.text  # JSON cannot say NaN

    got = api.get(r.GET_RUN.url(run_id=run_id)).json()
    assert got["params"] == {"lr": "0.1"}
    assert got["tags"] == {"team": "risk", "stage": "dev"}
    assert {m["key"]: m["value"] for m in got["metrics"]} == {"loss": "-Infinity", "acc": 1.0}

    found = api.post(r.SEARCH_RUNS.path, json={"experiment_ids": [exp_id],
                                                "filter": "params.lr = '0.1'",
                                                "order_by": ["metrics.acc DESC"]}).json()
    assert [x["info"]["run_id"] for x in found["runs"]] == [run_id]

    content = b"<html><script>alert(1)</script></html>"
    up = api.put(r.UPLOAD_ARTIFACT.url(run_id=run_id, path="pages/index.html"), content=content)
    assert up.status_code == 201, up.text
    assert up.json() == {"path": "pages/index.html", "digest": blake3.blake3(content).hexdigest(),
                         "size": len(content)}
    listing = api.get(r.LIST_ARTIFACTS.url(run_id=run_id), params={"path": "pages"}).json()
    assert listing == {"files": [up.json()]}
    down = api.get(r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="pages/index.html"))
    assert down.status_code == 200
    assert down.content == content
    # Never rendered in our origin, whatever was uploaded.
    assert down.headers["content-type"] == "application/octet-stream"
    assert down.headers["content-disposition"] == "attachment"
    assert down.headers["x-modelyard-digest"] == up.json()["digest"]
    assert_secure(down)

    ended = api.patch(r.UPDATE_RUN.url(run_id=run_id), json={"status": "FINISHED"}).json()
    assert ended["info"]["status"] == "FINISHED" and ended["info"]["end_time"] is not None
    assert api.delete(r.DELETE_TAG.url(run_id=run_id), params={"key": "stage"}).status_code == 200
    assert api.delete(r.DELETE_RUN.url(run_id=run_id)).status_code == 200
    assert api.get(r.GET_RUN.url(run_id=run_id)).json()["info"]["lifecycle_stage"] == "deleted"
    assert api.post(r.RESTORE_RUN.url(run_id=run_id)).status_code == 200
    assert api.delete(r.DELETE_EXPERIMENT.url(experiment_id=exp_id)).status_code == 200
    assert api.post(r.RESTORE_EXPERIMENT.url(experiment_id=exp_id)).status_code == 200


def test_security_headers_on_every_kind_of_response(api: httpx.Client) -> None:
    responses = [
        api.get(r.HEALTH.path),
        api.get("/no/such/route"),
        api.post(r.HEALTH.path),
        api.post(r.CREATE_EXPERIMENT.path, content=b"{"),
        api.get(r.GET_RUN.url(run_id="0" * 32)),
        api.get(r.HEALTH.path, headers={"host": "evil.example"}),
    ]
    assert [x.status_code for x in responses] == [200, 404, 405, 400, 404, 400]
    for resp in responses:
        assert_secure(resp)
        assert "content-security-policy" in resp.headers
    for resp in responses[1:]:
        assert_error(resp, resp.status_code)


def test_wrong_host_header_is_refused(api: httpx.Client) -> None:
    for host in ["evil.example", "evil.example:8750", "127.0.0.1.evil.example", "localhost.",
                 "", "[::2]:1", "127.0.0.1@evil.example"]:
        resp = api.get(r.HEALTH.path, headers={"host": host})
        err = assert_error(resp, 400, "INVALID_ARGUMENT")
        assert err["field"] == "host"
        assert_secure(resp)
        made = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}, headers={"host": host})
        assert made.status_code == 400, host
    # nothing was done for a request with a foreign Host
    assert api.post(r.SEARCH_RUNS.path, json={"experiment_ids": ["0"]}).json()["runs"] == []
    for host in ["127.0.0.1", "localhost", "localhost:8750", "[::1]:8750", "LOCALHOST"]:
        assert api.get(r.HEALTH.path, headers={"host": host}).status_code == 200, host


def _raw_get(port: int, target: str) -> bytes:
    """A request line sent verbatim: no client-side normalisation of dot segments."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_raw_dot_segments_never_escape_the_store(server: Any, api: httpx.Client) -> None:
    run_id = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}).json()["info"]["run_id"]
    base = f"/api/v1/runs/{run_id}/artifacts"
    for target in [f"{base}/../../../../../../etc/passwd",
                   f"{base}/..%2f..%2f..%2f..%2fetc%2fpasswd",
                   f"{base}/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                   f"{base}/a/../../../../etc/passwd",
                   f"{base}/..\\..\\..\\etc\\passwd",
                   f"{base}?path=../../etc",
                   "/api/v1/runs/../../../../etc/passwd"]:
        raw = _raw_get(server.port, target)
        status = int(raw.split(b" ", 2)[1])
        assert status in (400, 404), (target, raw[:300])
        assert b"root:" not in raw
        assert b"x-frame-options: deny" in raw.lower()


def test_search_totals_counts_and_every_experiment(api: httpx.Client) -> None:
    ids = []
    for name in ("rest-a", "rest-b"):
        resp = api.post(r.CREATE_EXPERIMENT.path, json={"name": name})
        assert resp.status_code == 201, resp.text
        ids.append(resp.json()["experiment_id"])
    for exp_id in ids:
        for i in range(3):
            run = api.post(r.CREATE_RUN.path, json={"experiment_id": exp_id}).json()
            resp = api.post(r.LOG_BATCH.url(run_id=run["info"]["run_id"]), json={
                "metrics": [{"key": "m", "value": i, "step": 0, "timestamp": 0}]})
            assert resp.status_code == 200, resp.text
    # experiment_ids omitted: every experiment
    body = api.post(r.SEARCH_RUNS.path, json={"filter": "metrics.m >= 1", "max_results": 2,
                                              "include_total": True}).json()
    assert body["total"] == 4 and len(body["runs"]) == 2 and body["next_page_token"]
    assert {x["info"]["experiment_id"] for x in body["runs"]} <= set(ids)
    plain = api.post(r.SEARCH_RUNS.path, json={"experiment_ids": ids[:1]}).json()
    assert "total" not in plain and len(plain["runs"]) == 3
    count = api.post(r.COUNT_RUNS.path, json={"experiment_ids": ids, "filter": "metrics.m > 0"})
    assert count.json() == {"count": 4}
    assert api.post(r.COUNT_RUNS.path, json={}).json()["count"] == 6
    # bad input names the field
    for route, payload, status, field in (  # 422: the body's shape; 400: its meaning
        (r.SEARCH_RUNS, {"include_total": "yes"}, 422, "include_total"),
        (r.SEARCH_RUNS, {"experiment_ids": []}, 400, "experiment_ids"),
        (r.COUNT_RUNS, {"experiment_ids": "1"}, 422, "experiment_ids"),
        (r.COUNT_RUNS, {"filter": "metrics.m >"}, 400, "filter"),
        (r.COUNT_RUNS, {"view": "sideways"}, 400, "view"),
        (r.COUNT_RUNS, {"bogus": 1}, 422, "bogus"),
    ):
        err = assert_error(api.post(route.path, json=payload), status)
        assert err["field"] == field, (payload, err)


def test_gc_over_rest_is_a_dry_run_unless_asked(api: httpx.Client) -> None:
    run_id = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}).json()["info"]["run_id"]
    api.put(r.UPLOAD_ARTIFACT.url(run_id=run_id, path="a.txt"), content=b"x" * 100)
    assert api.delete(r.DELETE_RUN.url(run_id=run_id)).status_code in (200, 204)
    time.sleep(0.01)  # a clock tick, not an event to wait for: deleted strictly before "now"
    dry = api.post(r.COLLECT_GARBAGE.path, json={"older_than_ms": 0})
    assert dry.status_code == 200, dry.text
    report = dry.json()
    assert report["dry_run"] is True and report["runs"] == [run_id]
    assert (report["blobs"], report["bytes_freed"]) == (1, 100)
    assert api.get(r.GET_RUN.url(run_id=run_id)).status_code == 200  # still there
    done = api.post(r.COLLECT_GARBAGE.path, json={"older_than_ms": 0, "dry_run": False}).json()
    assert done["dry_run"] is False and done["rows"] == report["rows"]
    assert done["total_bytes_freed"] >= 100
    assert api.get(r.GET_RUN.url(run_id=run_id)).status_code == 404
