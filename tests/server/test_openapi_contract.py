"""The OpenAPI document is true: every route documents its request body, its answers and its
error statuses, and real answers of a real server (over HTTP, on each database) validate
against the documented schemas.

The handlers parse bodies and build answers themselves (for speed), so nothing but this test
keeps ``/openapi.json`` (server/openapi.py, wire/responses.py) in step with the code.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import blake3
import httpx
import pytest
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from modelyard.server.app import create_app
from modelyard.server.openapi import ALWAYS, HEALTH_ERRORS
from modelyard.settings import Settings
from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
# POST routes that take no body at all (restoring a run has nothing to say).
NO_BODY = {r.RESTORE_RUN}
BODY_METHODS = {"POST", "PUT", "PATCH"}


def mounted_routes(app: FastAPI) -> list[Any]:
    """Every route the app serves, through included routers (FastAPI >= 0.160 keeps them
    behind one entry per router in ``app.routes``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is flat
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def doc_path(route: r.Route) -> str:
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)


class Contract:
    """Sends requests and checks each answer against the document: its status documented for
    the route, its media type among the documented ones, a JSON body valid against the schema;
    and the JSON bodies sent valid against the documented request schema."""

    def __init__(self, api: httpx.Client, doc: dict[str, Any]) -> None:
        self.api = api
        self.doc = doc
        self.answered: dict[r.Route, set[int]] = defaultdict(set)

    def operation(self, route: r.Route) -> dict[str, Any]:
        op: dict[str, Any] = self.doc["paths"][doc_path(route)][route.method.lower()]
        return op

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        # "#/components/..." references resolve against the root: give it the components.
        return Draft202012Validator({**schema, "components": self.doc["components"]})

    def request_schema(self, route: r.Route) -> dict[str, Any]:
        schema: dict[str, Any] = (
            self.operation(route)["requestBody"]["content"]["application/json"]["schema"])
        return schema

    def call(self, route: r.Route, *, path: dict[str, str] | None = None,
             json: Any = None, content: bytes | None = None, params: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None, valid_body: bool = True) -> httpx.Response:
        if json is not None and valid_body:
            self.validator(self.request_schema(route)).validate(json)
        url = route.url(**(path or {}))
        resp = self.api.request(route.method, url, json=json, content=content, params=params,
                                headers=headers)
        self.check(route, resp)
        return resp

    def check(self, route: r.Route, resp: httpx.Response) -> None:
        responses = self.operation(route)["responses"]
        status = str(resp.status_code)
        assert status in responses, (
            f"{route.method} {route.path} answered {status}, documented only "
            f"{sorted(responses)}: {resp.text[:300]}")
        content = responses[status].get("content")
        if not content:
            assert resp.content == b"", (route, status)
        else:
            media = resp.headers["content-type"].split(";")[0].strip()
            assert media in content, (route, status, media, list(content))
            if media == "application/json":
                try:
                    self.validator(content[media]["schema"]).validate(resp.json())
                except ValidationError as exc:
                    raise AssertionError(
                        f"{route.method} {route.path} {status}: the answer does not fit its "
                        f"documented schema: {exc.message} at {list(exc.absolute_path)}\n"
                        f"{resp.text[:500]}") from None
        self.answered[route].add(resp.status_code)


@pytest.fixture
def api(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, event_hooks=CLIENT_HOOKS) as client:
        yield client


@pytest.fixture
def doc(api: httpx.Client) -> dict[str, Any]:
    resp = api.get("/openapi.json")
    assert resp.status_code == 200
    document: dict[str, Any] = resp.json()
    return document


def test_every_route_documents_its_request_and_answers(doc: dict[str, Any],
                                                       settings: Settings) -> None:
    # Walk the routes the app really mounts, not only the route table: the same set.
    app = create_app(settings)
    try:
        mounted = {(m, route.path) for route in mounted_routes(app)
                   if getattr(route, "include_in_schema", False)
                   for m in (getattr(route, "methods", None) or ()) if m != "HEAD"}
    finally:
        app.state.stores.close()
    assert mounted == {(route.method, route.path) for route in r.ALL_ROUTES}
    assert "HTTPValidationError" not in str(doc)  # FastAPI's 422 body, which we never send
    schemas = doc["components"]["schemas"]
    for route in r.ALL_ROUTES:
        where = f"{route.method} {route.path}"
        op = doc["paths"][doc_path(route)][route.method.lower()]
        assert op.get("summary"), where
        # The request body, where the route takes one.
        if route.method in BODY_METHODS and route not in NO_BODY:
            body = op.get("requestBody")
            assert body and body.get("content"), f"{where}: no request body documented"
            for media, spec in body["content"].items():
                schema = spec.get("schema")
                assert schema, f"{where}: {media} body without a schema"
                if media == "application/json":
                    assert schema.get("type") == "object" and schema.get("properties"), where
                    assert schema.get("additionalProperties") is False, where  # as parsed
                    Draft202012Validator.check_schema(schema)
        else:
            assert "requestBody" not in op, where
        # The success answer, with its schema (a JSON model, or the media of a download).
        responses = op["responses"]
        ok = [s for s in responses if s.startswith("2")]
        assert ok, f"{where}: no success answer documented"
        for status in ok:
            content = responses[status].get("content")
            if status == "204":
                assert not content, where
                continue
            assert content, f"{where}: {status} without content"
            for media, spec in content.items():
                schema = spec.get("schema")
                assert schema, f"{where} {status} {media}: no schema"
                if media == "application/json":
                    ref = schema["$ref"].rsplit("/", 1)[1]
                    assert schemas[ref].get("additionalProperties") is False, (where, ref)
        # The error body for every error status, and the statuses every route can answer.
        errors = [s for s in responses if not s.startswith("2")]
        always = HEALTH_ERRORS if route is r.HEALTH else ALWAYS
        assert {str(s) for s in always} <= set(errors), where
        if "{" in route.path:
            assert "404" in errors, where
        if "requestBody" in op and "application/json" in op["requestBody"]["content"]:
            assert "422" in errors, where
        for status in errors:
            assert responses[status]["content"]["application/json"]["schema"] == ERROR_REF, (
                where, status)
    error = schemas["ErrorOut"]
    assert error["required"] == ["error"]
    detail = schemas[error["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert set(detail["required"]) == {"code", "parent", "message", "field", "details"}


def test_real_answers_fit_the_documented_schemas(api: httpx.Client,
                                                 doc: dict[str, Any]) -> None:
    c = Contract(api, doc)
    assert c.call(r.HEALTH).status_code == 200

    # experiments
    exp = c.call(r.CREATE_EXPERIMENT, json={"name": "contract", "description": "d",
                                            "tags": {"team": "a"}}).json()
    exp_id = exp["experiment_id"]
    assert c.call(r.CREATE_EXPERIMENT, json={"name": "contract"}).status_code == 409
    assert c.call(r.CREATE_EXPERIMENT, json={"nme": "x"}, valid_body=False).status_code == 422
    assert c.call(r.LIST_EXPERIMENTS, params={"max_results": 1}).status_code == 200
    assert c.call(r.LIST_EXPERIMENTS, params={"max_results": "many"}).status_code == 422
    assert c.call(r.GET_EXPERIMENT_BY_NAME, params={"name": "contract"}).status_code == 200
    assert c.call(r.GET_EXPERIMENT_BY_NAME, params={"name": "nope"}).status_code == 404
    assert c.call(r.GET_EXPERIMENT, path={"experiment_id": exp_id}).status_code == 200
    assert c.call(r.GET_EXPERIMENT, path={"experiment_id": "999999"}).status_code == 404
    assert c.call(r.GET_EXPERIMENT, path={"experiment_id": "x"}).status_code == 400
    assert c.call(r.UPDATE_EXPERIMENT, path={"experiment_id": exp_id},
                  json={"description": "new"}).status_code == 200
    assert c.call(r.SET_EXPERIMENT_TAG, path={"experiment_id": exp_id},
                  json={"key": "k", "value": "v"}).status_code == 200

    # runs
    run = c.call(r.CREATE_RUN, json={"experiment_id": exp_id, "run_name": "one",
                                     "tags": {"t": "1"}}).json()
    run_id = run["info"]["run_id"]
    child = c.call(r.CREATE_RUN, json={"experiment_id": exp_id, "parent_run_id": run_id})
    assert child.status_code == 201
    assert c.call(r.CREATE_RUN, json={"experiment_id": "999999"}).status_code == 404
    rid = {"run_id": run_id}
    batch = {"batch_id": "contract-batch-1",
             "metrics": [{"key": "loss", "value": 0.5, "step": 0, "timestamp": 1},
                         {"key": "loss", "value": 0.25, "step": 1, "timestamp": 2}],
             "params": [{"key": "lr", "value": "0.1"}], "tags": [{"key": "t2", "value": "x"}]}
    assert c.call(r.LOG_BATCH, path=rid, json=batch).json() == {"stored": True,
                                                               "duplicate": False}
    assert c.call(r.LOG_BATCH, path=rid, json=batch).json()["duplicate"] is True
    # A value JSON cannot hold travels as a string (answers below carry "NaN").
    nan = {"metrics": [{"key": "odd", "value": "NaN", "timestamp": 3}]}
    assert c.call(r.LOG_BATCH, path=rid, json=nan, valid_body=False).status_code == 200
    clash = {"params": [{"key": "lr", "value": "0.2"}]}
    assert c.call(r.LOG_BATCH, path=rid, json=clash).status_code == 409
    assert c.call(r.LOG_BATCH, path=rid, json={"metrics": 1},
                  valid_body=False).status_code == 422
    got = c.call(r.GET_RUN, path=rid).json()
    assert {m["key"]: m["value"] for m in got["metrics"]} == {"loss": 0.25, "odd": "NaN"}
    assert c.call(r.GET_RUN, path={"run_id": "0" * 32}).status_code == 404
    assert c.call(r.UPDATE_RUN, path=rid, json={"status": "FINISHED"}).status_code == 200
    assert c.call(r.UPDATE_RUN, path=rid, json={"status": "DONE"}).status_code == 400
    page = c.call(r.SEARCH_RUNS, json={"experiment_ids": [exp_id], "filter": "metrics.loss < 1",
                                       "order_by": ["metrics.loss ASC"], "max_results": 1,
                                       "include_total": True}).json()
    assert page["total"] == 1 and page["runs"][0]["info"]["run_id"] == run_id
    assert c.call(r.SEARCH_RUNS, json={}).status_code == 200
    assert c.call(r.SEARCH_RUNS, json={"experiment_ids": ["999999"]}).status_code == 404
    assert c.call(r.SEARCH_RUNS, json={"filter": "metrics.loss <"}).status_code == 400
    assert c.call(r.COUNT_RUNS, json={"experiment_ids": [exp_id]}).json() == {"count": 2}
    assert c.call(r.COUNT_RUNS, json={"experiment_ids": ["999999"]}).status_code == 404
    hist = c.call(r.METRIC_HISTORY, path=rid, params={"key": "loss"}).json()
    assert hist["steps"] == [0, 1]
    assert c.call(r.METRIC_HISTORY, path=rid, params={"key": "odd"}).json()["values"] == ["NaN"]
    assert c.call(r.METRIC_HISTORY, path=rid, params={"key": "loss", "max_points": 2}) \
        .status_code == 200
    for fmt in ("csv", "arrow"):
        assert c.call(r.METRIC_HISTORY, path=rid,
                      params={"key": "loss", "format": fmt}).status_code == 200
    assert c.call(r.METRIC_HISTORY, path=rid, params={"key": "loss", "format": "xml"}) \
        .status_code == 400
    assert c.call(r.METRIC_HISTORY, path=rid).status_code == 422  # key is required
    assert c.call(r.DELETE_TAG, path=rid, params={"key": "t"}).status_code == 200
    assert c.call(r.DELETE_TAG, path=rid, params={"key": "t"}).status_code == 404

    # artifacts
    data = b"0123456789" * 10
    art = {"run_id": run_id, "path": "dir/model.bin"}
    entry = c.call(r.UPLOAD_ARTIFACT, path=art, content=data,
                   headers={"content-type": "application/octet-stream"}).json()
    assert entry["digest"] == blake3.blake3(data).hexdigest()
    assert c.call(r.UPLOAD_ARTIFACT, path={"run_id": run_id, "path": "a/%2e%2e/b"},
                  content=b"x").status_code == 400
    assert c.call(r.LIST_ARTIFACTS, path=rid, params={"path": "dir"}).json()["files"] == [entry]
    whole = c.call(r.DOWNLOAD_ARTIFACT, path=art)
    assert whole.content == data and whole.headers["x-modelyard-digest"] == entry["digest"]
    part = c.call(r.DOWNLOAD_ARTIFACT, path=art, headers={"range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert c.call(r.DOWNLOAD_ARTIFACT, path=art, headers={"range": "bytes=500-"}) \
        .status_code == 416
    assert c.call(r.DOWNLOAD_ARTIFACT, path={"run_id": run_id, "path": "no/such"}) \
        .status_code == 404

    # multipart uploads
    up = c.call(r.CREATE_UPLOAD, path=rid, json={"path": "big.bin", "size": len(data)}).json()
    uid = {"run_id": run_id, "upload_id": up["upload_id"]}
    assert c.call(r.UPLOAD_PART, path={**uid, "part_number": "1"}, content=data).json()[
        "acknowledged"] is True
    assert c.call(r.UPLOAD_PART, path={**uid, "part_number": "2"}, content=b"x") \
        .status_code == 400
    assert c.call(r.GET_UPLOAD, path=uid).json()["parts"] == [1]
    done = c.call(r.COMPLETE_UPLOAD, path=uid, json={"digest": entry["digest"]})
    assert done.status_code == 201 and done.json()["size"] == len(data)
    assert c.call(r.GET_UPLOAD, path=uid).json()["artifact"]["path"] == "big.bin"
    other = c.call(r.CREATE_UPLOAD, path=rid, json={"path": "gone.bin", "size": 5}).json()
    oid = {"run_id": run_id, "upload_id": other["upload_id"]}
    assert c.call(r.COMPLETE_UPLOAD, path=oid, json={}).status_code == 409  # no parts yet
    assert c.call(r.ABORT_UPLOAD, path=oid).status_code == 204
    assert c.call(r.GET_UPLOAD, path=oid).status_code == 404

    # lifecycles and maintenance
    assert c.call(r.DELETE_RUN, path=rid).status_code == 200
    assert c.call(r.DELETE_RUN, path=rid).status_code == 409
    assert c.call(r.RESTORE_RUN, path=rid).status_code == 200
    eid = {"experiment_id": exp_id}
    assert c.call(r.DELETE_EXPERIMENT, path=eid).status_code == 200
    assert c.call(r.RESTORE_EXPERIMENT, path=eid, json={}).status_code == 200
    assert c.call(r.RESTORE_EXPERIMENT, path=eid).status_code == 409  # not deleted
    report = c.call(r.COLLECT_GARBAGE, json={"older_than_ms": 0}).json()
    assert report["dry_run"] is True
    assert c.call(r.COLLECT_GARBAGE, json={"dry_run": "no"}, valid_body=False) \
        .status_code == 422
    # A refused Host header: the error body, on any route.
    assert c.call(r.HEALTH, headers={"host": "evil.example"}).status_code == 400

    unexercised = [f"{x.method} {x.path}" for x in r.ALL_ROUTES
                   if not any(200 <= s < 300 for s in c.answered[x])]
    assert not unexercised, unexercised
    statuses = set().union(*c.answered.values())
    assert {400, 404, 409, 416, 422} <= statuses


def test_request_schemas_refuse_what_the_server_refuses(doc: dict[str, Any],
                                                        api: httpx.Client) -> None:
    """The documented request schemas are not looser than the parsers: a body with an
    unknown field or a wrong type fails both."""
    c = Contract(api, doc)
    bad = [
        (r.SEARCH_RUNS, {"experiment_ids": "0"}),
        (r.SEARCH_RUNS, {"filters": "x"}),
        (r.COUNT_RUNS, {"view": 3}),
        (r.CREATE_EXPERIMENT, {"name": 5}),
        (r.COLLECT_GARBAGE, {"older_than_ms": "1"}),
        (r.LOG_BATCH, {"metrics": [{"key": "m", "value": 1.0}]}),  # no timestamp
        (r.LOG_BATCH, {"params": [{"key": "p", "value": 1}]}),
    ]
    for route, body in bad:
        assert not c.validator(c.request_schema(route)).is_valid(body), (route, body)
        path = {"run_id": "0" * 32} if "{run_id}" in route.path else {}
        resp = c.call(route, path=path, json=body, valid_body=False)
        assert resp.status_code == 422, (route, body, resp.text)
