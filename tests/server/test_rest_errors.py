"""Every route's bad inputs over raw HTTP: each gets the documented status and error body, and
no input, however garbled, gets a 500."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from modelyard.domain.validation import MAX_BATCH_METRICS, MAX_BATCH_PARAMS, MAX_BATCH_TAGS
from modelyard.settings import Settings
from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS, ServerThread

UNKNOWN_RUN = "0" * 32
UNKNOWN_EXP = "424242"

BODY_ROUTES = [r.CREATE_EXPERIMENT, r.UPDATE_EXPERIMENT, r.SET_EXPERIMENT_TAG, r.CREATE_RUN,
               r.SEARCH_RUNS, r.UPDATE_RUN, r.LOG_BATCH, r.COLLECT_GARBAGE]

FUZZ_REQUESTS_PER_ROUTE = 100  # per route and database; seeded, so failures reproduce


@pytest.fixture
def api(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, event_hooks=CLIENT_HOOKS) as client:
        yield client


@pytest.fixture
def ids(api: httpx.Client) -> dict[str, str]:
    """A live experiment, a run in it with a param, and an artifact."""
    exp = api.post(r.CREATE_EXPERIMENT.path, json={"name": "errors"}).json()["experiment_id"]
    run = api.post(r.CREATE_RUN.path, json={"experiment_id": exp}).json()["info"]["run_id"]
    resp = api.post(r.LOG_BATCH.url(run_id=run), json={"params": [{"key": "lr", "value": "0.1"}]})
    assert resp.status_code == 200
    assert api.put(r.UPLOAD_ARTIFACT.url(run_id=run, path="f.txt"), content=b"x").status_code == 201
    upload = api.post(r.CREATE_UPLOAD.url(run_id=run), json={"path": "big.bin", "size": 10})
    assert upload.status_code == 201
    return {"experiment_id": exp, "run_id": run, "path": "f.txt",
            "upload_id": upload.json()["upload_id"], "part_number": "1"}


def url_for(route: r.Route, ids: dict[str, str]) -> str:
    return route.url(**ids)


def assert_error(resp: httpx.Response, status: int | tuple[int, ...], code: str | None = None,
                 field: str | None = None) -> dict[str, Any]:
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status_code in statuses, (resp.request.method, resp.request.url, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "parent", "message", "field", "details"}, err
    assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"]
    assert err["field"] is None or isinstance(err["field"], str)
    if code is not None:
        assert err["code"] == code, err
    if field is not None:
        assert err["field"] == field, err
    return dict(err)


# ----------------------------------------------------------------------------- bodies


MALFORMED = [b"{", b'{"name": }', b"\xff\xfe{}", b"[1, 2", b"nul", b'{"a": 1}}',
             b'{"name": "\\ud800"}', b"{'name': 'x'}", b'{"name": "x",}']


def test_malformed_json_is_400_on_every_body_route(api: httpx.Client,
                                                   ids: dict[str, str]) -> None:
    for route in BODY_ROUTES:
        for raw in MALFORMED:
            resp = api.request(route.method, url_for(route, ids), content=raw,
                               headers={"content-type": "application/json"})
            assert_error(resp, 400, "INVALID_ARGUMENT", "body")


WRONG_SHAPES = [
    (r.CREATE_EXPERIMENT, {"name": 1}, "name"),
    (r.CREATE_EXPERIMENT, {}, "name"),
    (r.CREATE_EXPERIMENT, {"name": "x", "bogus": 1}, "bogus"),
    (r.CREATE_EXPERIMENT, {"name": "x", "tags": {"a": 1}}, "tags.a"),
    (r.CREATE_EXPERIMENT, {"name": "x", "tags": []}, "tags"),
    (r.CREATE_EXPERIMENT, [1, 2], "body"),
    (r.UPDATE_EXPERIMENT, {"name": 5}, "name"),
    (r.UPDATE_EXPERIMENT, {"title": "x"}, "title"),
    (r.SET_EXPERIMENT_TAG, {"key": "k"}, "value"),
    (r.SET_EXPERIMENT_TAG, {"key": 1, "value": "v"}, "key"),
    (r.CREATE_RUN, {"experiment_id": 0}, "experiment_id"),
    (r.CREATE_RUN, {"experiment_id": "0", "start_time": "now"}, "start_time"),
    (r.CREATE_RUN, {"experiment_id": "0", "start_time": 1.5}, "start_time"),
    (r.CREATE_RUN, {"experiment_id": "0", "zzz": 1}, "zzz"),
    (r.CREATE_RUN, {"experiment_id": "0", "tags": {"t": None}}, "tags.t"),
    (r.SEARCH_RUNS, {"experiment_ids": "0"}, "experiment_ids"),
    (r.SEARCH_RUNS, {"experiment_ids": [0]}, "experiment_ids.0"),
    (r.SEARCH_RUNS, {"experiment_ids": ["0"], "max_results": "5"}, "max_results"),
    (r.SEARCH_RUNS, {"experiment_ids": ["0"], "max_results": True}, "max_results"),
    (r.SEARCH_RUNS, {"experiment_ids": ["0"], "order_by": "x"}, "order_by"),
    (r.SEARCH_RUNS, {"experiment_ids": ["0"], "filters": "x"}, "filters"),
    (r.UPDATE_RUN, {"status": 1}, "status"),
    (r.UPDATE_RUN, {"end_time": 1.5}, "end_time"),
    (r.UPDATE_RUN, {"end_time": "1"}, "end_time"),
    (r.LOG_BATCH, {"metrics": [{"key": "m", "value": "high", "timestamp": 1}]},
     "metrics.0.value"),
    (r.LOG_BATCH, {"metrics": [{"key": "m", "value": True, "timestamp": 1}]},
     "metrics.0.value"),
    (r.LOG_BATCH, {"metrics": [{"key": "m", "value": 1}]}, "metrics.0.timestamp"),
    (r.LOG_BATCH, {"metrics": [{"key": "m", "value": 1, "timestamp": 1.5}]},
     "metrics.0.timestamp"),
    (r.LOG_BATCH, {"metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": "2"}]},
     "metrics.0.step"),
    (r.LOG_BATCH, {"metrics": [{"key": 5, "value": 1, "timestamp": 1}]}, "metrics.0.key"),
    (r.LOG_BATCH, {"metrics": [{"key": "m", "value": 1, "timestamp": 1, "x": 1}]},
     "metrics.0.x"),
    (r.LOG_BATCH, {"metrics": [{"key": "m", "value": 1, "timestamp": 1}, 7]}, "metrics.1"),
    (r.LOG_BATCH, {"metrics": {}}, "metrics"),
    (r.LOG_BATCH, {"params": [{"key": "p"}]}, "params.0.value"),
    (r.LOG_BATCH, {"params": [{"key": "p", "value": 1}]}, "params.0.value"),
    (r.LOG_BATCH, {"tags": [{"key": "t", "value": "v", "extra": 1}]}, "tags.0"),
    (r.LOG_BATCH, {"batch_id": 12345678}, "batch_id"),
    (r.LOG_BATCH, {"bogus": []}, "bogus"),
    (r.LOG_BATCH, [], "body"),
    (r.COLLECT_GARBAGE, {"older_than_ms": "30d"}, "older_than_ms"),
    (r.COLLECT_GARBAGE, {"older_than_ms": 1.5}, "older_than_ms"),
    (r.COLLECT_GARBAGE, {"dry_run": "no"}, "dry_run"),
    (r.COLLECT_GARBAGE, {"abandoned_after_ms": None}, "abandoned_after_ms"),
    (r.COLLECT_GARBAGE, {"older_than": 5}, "older_than"),
]


def test_wrong_types_and_unknown_fields_are_422_naming_the_field(
    api: httpx.Client, ids: dict[str, str]
) -> None:
    for route, body, field in WRONG_SHAPES:
        resp = api.request(route.method, url_for(route, ids), json=body)
        err = assert_error(resp, 422, "SCHEMA_VIOLATION")
        assert err["field"] == field, (route, body, err)
        assert field.split(".")[0] in err["message"] or field == "body", err


def test_query_parameters_of_the_wrong_type_are_422(api: httpx.Client,
                                                     ids: dict[str, str]) -> None:
    for route, params, field in [
        (r.LIST_EXPERIMENTS, {"max_results": "abc"}, "max_results"),
        (r.LIST_EXPERIMENTS, {"max_results": "1.5"}, "max_results"),
        (r.GET_EXPERIMENT_BY_NAME, {}, "name"),
        (r.METRIC_HISTORY, {}, "key"),
        (r.DELETE_TAG, {}, "key"),
    ]:
        resp = api.request(route.method, url_for(route, ids), params=params)
        assert_error(resp, 422, "SCHEMA_VIOLATION", field)


# ----------------------------------------------------------------------------- ids


def test_unknown_ids_are_404_with_their_code(api: httpx.Client, ids: dict[str, str]) -> None:
    unknown = {"experiment_id": UNKNOWN_EXP, "run_id": UNKNOWN_RUN, "path": "f.txt",
               "upload_id": "0" * 32, "part_number": "1"}
    bodies: dict[r.Route, Any] = {
        r.UPDATE_EXPERIMENT: {"description": "x"},
        r.SET_EXPERIMENT_TAG: {"key": "k", "value": "v"},
        r.UPDATE_RUN: {"status": "FINISHED"},
        r.LOG_BATCH: {"metrics": [{"key": "m", "value": 1, "timestamp": 1}]},
        r.CREATE_UPLOAD: {"path": "f.bin", "size": 1},
        r.COMPLETE_UPLOAD: {},
    }
    query: dict[r.Route, dict[str, str]] = {r.METRIC_HISTORY: {"key": "m"},
                                            r.DELETE_TAG: {"key": "k"}}
    checked = 0
    for route in r.ALL_ROUTES:
        names = set(re.findall(r"\{(\w+)", route.path))
        if not names & {"experiment_id", "run_id"}:
            continue
        code = "RUN_NOT_FOUND" if "run_id" in names else "EXPERIMENT_NOT_FOUND"
        kwargs: dict[str, Any] = {"params": query.get(route)}
        if route in bodies:
            kwargs["json"] = bodies[route]
        elif route is r.UPLOAD_ARTIFACT:
            kwargs["content"] = b"data"
        resp = api.request(route.method, url_for(route, unknown), **kwargs)
        assert_error(resp, 404, code, "run_id" if "run_id" in names else "experiment_id")
        checked += 1
    assert checked == 20

    resp = api.post(r.CREATE_RUN.path, json={"experiment_id": UNKNOWN_EXP})
    assert_error(resp, 404, "EXPERIMENT_NOT_FOUND", "experiment_id")
    resp = api.post(r.CREATE_RUN.path, json={"experiment_id": "0", "parent_run_id": UNKNOWN_RUN})
    assert_error(resp, 404, "RUN_NOT_FOUND")
    assert_error(api.get(r.GET_EXPERIMENT_BY_NAME.path, params={"name": "nope"}), 404,
                 "EXPERIMENT_NOT_FOUND", "name")
    assert_error(api.get(r.DOWNLOAD_ARTIFACT.url(run_id=ids["run_id"], path="missing.bin")), 404,
                 "ARTIFACT_NOT_FOUND", "path")
    assert_error(api.delete(r.DELETE_TAG.url(run_id=ids["run_id"]), params={"key": "nope"}), 404,
                 "NOT_FOUND", "key")
    # Malformed ids are a 400 naming the field, not a 404 nor a 500.
    for bad in ["xyz", "0" * 31, "0" * 32 + "\n", "G" * 32]:
        assert_error(api.get(r.GET_RUN.url(run_id=quote(bad, safe=""))), 400, "INVALID_ARGUMENT",
                     "run_id")
    for bad in ["abc", "-1", "1\n", "9" * 19, "\u0661"]:
        assert_error(api.get(r.GET_EXPERIMENT.url(experiment_id=quote(bad, safe=""))), 400,
                     "INVALID_ARGUMENT",
                     "experiment_id")


# ----------------------------------------------------------------------------- conflicts


def test_gc_refuses_ages_out_of_range_naming_them(api: httpx.Client) -> None:
    # The schema holds the range (0 to 2**63 - 1 ms): a body outside it is a 422.
    for field in ("older_than_ms", "abandoned_after_ms"):
        for age in (-1, 2**63, 10**30):
            resp = api.post(r.COLLECT_GARBAGE.path, json={field: age, "dry_run": False})
            assert_error(resp, 422, "SCHEMA_VIOLATION", field)


def test_duplicate_experiment_is_409(api: httpx.Client, ids: dict[str, str]) -> None:
    assert_error(api.post(r.CREATE_EXPERIMENT.path, json={"name": "errors"}), 409,
                 "ALREADY_EXISTS")
    assert_error(api.post(r.CREATE_EXPERIMENT.path, json={"name": "Default"}), 409,
                 "ALREADY_EXISTS")
    other = api.post(r.CREATE_EXPERIMENT.path, json={"name": "other"}).json()["experiment_id"]
    assert_error(api.patch(r.UPDATE_EXPERIMENT.url(experiment_id=other), json={"name": "errors"}),
                 409, "ALREADY_EXISTS")


def test_param_overwrite_is_409_naming_the_key(api: httpx.Client, ids: dict[str, str]) -> None:
    url = r.LOG_BATCH.url(run_id=ids["run_id"])
    err = assert_error(api.post(url, json={"params": [{"key": "lr", "value": "0.2"}],
                                           "metrics": [{"key": "m", "value": 1,
                                                        "timestamp": 1}]}),
                       409, "PARAM_OVERWRITE", "params.lr")
    assert "lr" in err["message"]
    assert api.post(url, json={"params": [{"key": "lr", "value": "0.1"}]}).status_code == 200
    got = api.get(r.GET_RUN.url(run_id=ids["run_id"])).json()
    assert got["metrics"] == [] and got["params"] == {"lr": "0.1"}  # the refused batch: nothing
    err = assert_error(api.post(url, json={"params": [{"key": "q", "value": "1"},
                                                      {"key": "q", "value": "2"}]}), 400)
    assert err["field"] == "params"


def test_batches_over_the_limits_are_400_naming_the_field(api: httpx.Client,
                                                          ids: dict[str, str]) -> None:
    url = r.LOG_BATCH.url(run_id=ids["run_id"])
    metric = {"key": "m", "value": 1.0, "timestamp": 1}
    kv = {"key": "k", "value": "v"}
    cases = [
        ({"metrics": [metric] * (MAX_BATCH_METRICS + 1)}, "metrics"),
        ({"params": [{"key": f"p{i}", "value": "v"} for i in range(MAX_BATCH_PARAMS + 1)]},
         "params"),
        ({"tags": [kv] * (MAX_BATCH_TAGS + 1)}, "tags"),
        ({"metrics": [{**metric, "key": "k" * 251}]}, "metric key"),
        ({"metrics": [{**metric, "key": "bad key!"}]}, "metric key"),
        ({"metrics": [{**metric, "step": 2**63}]}, None),
        ({"params": [{"key": "p", "value": "v" * 6001}]}, None),
        ({"tags": [{"key": "t", "value": "v" * 8001}]}, None),
        ({"tags": [{"key": "t", "value": "a\x00b"}]}, None),
        ({"batch_id": "short", "metrics": [metric]}, "batch_id"),
        ({"batch_id": "x" * 65, "metrics": [metric]}, "batch_id"),
        ({"batch_id": "has space ok", "metrics": [metric]}, "batch_id"),
    ]
    for body, field in cases:
        err = assert_error(api.post(url, json=body), 400, "INVALID_ARGUMENT")
        if field is not None:
            assert err["field"] == field, (field, err)
        else:
            assert err["field"], err
    assert api.post(url, json={"metrics": [metric] * MAX_BATCH_METRICS}).status_code == 200


def test_bodies_over_the_size_limit_are_413(settings: Settings) -> None:
    small = dataclasses.replace(settings, max_request_bytes=2048)
    with ServerThread(small) as srv, httpx.Client(base_url=srv.url, timeout=30,
                                                  event_hooks=CLIENT_HOOKS) as api:
        run = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}).json()["info"]["run_id"]
        big = {"metrics": [{"key": "m", "value": 1.0, "timestamp": i} for i in range(200)]}
        for route in BODY_ROUTES:
            url = url_for(route, {"experiment_id": "0", "run_id": run})
            refused = api.request(route.method, url, json=big)
            assert_error(refused, 413, "TOO_LARGE", "body")
            assert "2048 bytes" in refused.json()["error"]["message"]
            assert refused.headers["connection"] == "close"

            def chunked() -> Iterator[bytes]:  # no content-length: the limit still holds
                yield json.dumps(big).encode()

            assert_error(api.request(route.method, url, content=chunked(),
                                     headers={"content-type": "application/json"}),
                         413, "TOO_LARGE", "body")


# ----------------------------------------------------------------------------- search


def test_filter_syntax_error_is_400_invalid_filter_with_position(
    api: httpx.Client, ids: dict[str, str]
) -> None:
    for text, position in [
        ("metrics.acc >> 1", 13), ("params.lr = ", 12), ("(metrics.a > 1", 14),
        ("metrics.a > 1 and or", 18), ("tags.t ~ 'x'", 7), ("attributes.nope = 'x'", 11),
        ("params.a = '\x00'", 12), ("(" * 100 + "params.a = 'x'" + ")" * 100, 20),
    ]:
        resp = api.post(r.SEARCH_RUNS.path, json={"experiment_ids": [ids["experiment_id"]],
                                                  "filter": text})
        err = assert_error(resp, 400, "INVALID_FILTER", "filter")
        assert f"position {position}" in err["message"], err
    resp = api.post(r.SEARCH_RUNS.path, json={"experiment_ids": [ids["experiment_id"]],
                                              "order_by": ["metrics.m sideways"]})
    assert_error(resp, 400, "INVALID_FILTER", "order_by")


def test_bad_page_tokens_are_400(api: httpx.Client, ids: dict[str, str]) -> None:
    exp = ids["experiment_id"]
    for token in ["garbage", "!!!", "eyJvIjotMSwicSI6IngifQ", "e30", "bnVsbA", "\u00e9"]:
        resp = api.post(r.SEARCH_RUNS.path, json={"experiment_ids": [exp], "page_token": token})
        assert_error(resp, 400, "INVALID_ARGUMENT", "page_token")
        resp = api.get(r.LIST_EXPERIMENTS.path, params={"page_token": token})
        assert_error(resp, 400, "INVALID_ARGUMENT", "page_token")
    for _ in range(3):
        api.post(r.CREATE_RUN.path, json={"experiment_id": exp})
    first = api.post(r.SEARCH_RUNS.path, json={"experiment_ids": [exp], "max_results": 1}).json()
    token = first["next_page_token"]
    assert token
    resp = api.post(r.SEARCH_RUNS.path, json={"experiment_ids": [exp], "max_results": 1,
                                              "filter": "params.lr = '0.1'",
                                              "page_token": token})
    assert_error(resp, 400, "INVALID_ARGUMENT", "page_token")  # belongs to another query
    for bad in (0, -1, 50001):
        resp = api.post(r.SEARCH_RUNS.path, json={"experiment_ids": [exp], "max_results": bad})
        assert_error(resp, 400, "INVALID_ARGUMENT", "max_results")
    assert_error(api.post(r.SEARCH_RUNS.path, json={"experiment_ids": []}), 400,
                 "INVALID_ARGUMENT", "experiment_ids")


# ----------------------------------------------------------------------------- artifact URLs

TRAVERSAL_PATHS = [
    "..%2f..%2fetc%2fpasswd",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e/%252e%252e/etc/passwd",
    "%25252e%25252e%25252fetc%25252fpasswd",
    "a/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "..%5c..%5cetc%5cpasswd",
    "%2fetc%2fpasswd",
    "%5cetc%5cpasswd",
    "C:%5cWindows%5cwin.ini",
    "file:%2f%2f%2fetc%2fpasswd",
    "a%00b",
    "%ef%bc%8e%ef%bc%8e/etc/passwd",
    ".%2e/.%2e/etc/passwd",
]


def test_artifact_traversal_urls_are_refused(api: httpx.Client, ids: dict[str, str]) -> None:
    base = f"/api/v1/runs/{ids['run_id']}/artifacts/"
    for raw in TRAVERSAL_PATHS:
        url = httpx.URL(api.base_url.join(base), raw_path=(base + raw).encode())
        down = api.get(url)
        assert down.status_code in (400, 404), (raw, down.status_code, down.text)
        err = assert_error(down, (400, 404))
        assert err["code"] in ("UNSAFE_PATH", "NOT_FOUND", "ARTIFACT_NOT_FOUND"), (raw, err)
        assert b"root:" not in down.content
        up = api.put(url, content=b"planted")
        assert up.status_code in (400, 404), (raw, up.status_code, up.text)
        listing = api.get(f"/api/v1/runs/{ids['run_id']}/artifacts",
                          params={"path": raw.replace("%25", "%")})
        assert listing.status_code in (200, 400), (raw, listing.text)
    assert_error(api.get(base + "..%2f..%2fetc%2fpasswd"), 400, "UNSAFE_PATH", "path")
    assert_error(api.get(base + "%252e%252e/x"), 400, "UNSAFE_PATH", "path")
    files = api.get(f"/api/v1/runs/{ids['run_id']}/artifacts").json()["files"]
    assert [f["path"] for f in files] == ["f.txt"]  # nothing was planted


# ----------------------------------------------------------------------------- fuzzing

_SCALARS: list[Any] = [None, True, False, 0, -1, 1, 2**63, -(2**63) - 1, 10**30, 1.5, -0.0,
                       1e308, "", "x", "0", "1", "NaN", "Infinity", "-Infinity", "a" * 300,
                       "\x00", "\u00e9", "\ud7ff", "../x", "%2e%2e", "/etc/passwd", "a/b", "*",
                       "params.a = '1'", "metrics.m > 1", "((", "not", "FINISHED",
                       "active_only", "deleted_only", "0" * 32, "9" * 19, "eyJvIjowfQ",
                       [], {}, [1], {"a": 1}]
_KEYS = ["name", "description", "tags", "experiment_id", "run_name", "user_id", "start_time",
         "parent_run_id", "status", "end_time", "batch_id", "metrics", "params", "key", "value",
         "step", "timestamp", "experiment_ids", "filter", "order_by", "view", "max_results",
         "page_token", "zz"]
_SEGMENTS = ["0", "1", "-1", "abc", "..", ".", "%2e%2e", "%00", "%ff", "%2F", "%5c", "\u00e9",
             "%F0%9F%98%80", "%20", "x" * 300, "a;b", "null", "9" * 25, "0" * 32, "G" * 32,
             "%252e", "~", "*", "a:b", "%E2%80%AE"]
_FILTERS = ["metrics.m > 1", "params.p = 'x'", "tags.t LIKE '%a%'", "attributes.status = 'X'",
            "not", "(", ")", "and", "or", "metrics.m IN ('1')", "params.p NOT IN ('a', 'b')",
            "attributes.start_time < 99999999999999999999", "attributes.end_time IS NULL",
            "attributes.experiment_id = '\u00b2'", "run_name ILIKE 'x'", "'\x00'", "`k`",
            "metrics.`a b` >= -1e308", "1e999", "params.\"q\" != 'z'", "tags.t = '\\'"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.5:
        return rng.choice(_SCALARS)
    if roll < 0.7:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(_KEYS): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _filter(rng: random.Random) -> str:
    return " ".join(rng.choice(_FILTERS) for _ in range(rng.randint(1, 6)))


def _body(rng: random.Random, route: r.Route, ids: dict[str, str]) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return rng.randbytes(rng.randint(0, 64))
    if roll < 0.2:
        return rng.choice([b"", b"{", b"null", b"[]", b"1", b'"x"', b'{"a":', b"\xff\xfe",
                           b'{"name":"x","name":"y"}', b"NaN", b"{}" * 3, b"\x00",
                           b'{"metrics":[{"key":"m","value":NaN,"timestamp":1}]}'])
    if roll < 0.45:  # close to a valid body, with one part garbled
        plausible: dict[str, Any] = {
            "POST /api/v1/experiments": {"name": f"n{rng.random()}"},
            "POST /api/v1/runs": {"experiment_id": ids["experiment_id"]},
            "POST /api/v1/runs/search": {"experiment_ids": [ids["experiment_id"]],
                                         "filter": _filter(rng),
                                         "order_by": [rng.choice(_FILTERS)]},
            "POST /api/v1/runs/{run_id}/batch": {
                "metrics": [{"key": "m", "value": rng.choice(_SCALARS), "step": 0,
                             "timestamp": 1}],
                "params": [{"key": rng.choice(["p", "lr", "a b", ""]), "value": "v"}]},
        }.get(f"{route.method} {route.path}", {"key": "k", "value": "v"})
        plausible[rng.choice(_KEYS)] = _value(rng)
        return json.dumps(plausible).encode()
    try:
        return json.dumps(_value(rng), allow_nan=True).encode()
    except (ValueError, TypeError):
        return b"{}"


def _path(rng: random.Random, route: r.Route, ids: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if rng.random() < 0.35:
            return ids[name]
        if name == "path":
            return "/".join(rng.choice([*_SEGMENTS, "f.txt", "a"])
                            for _ in range(rng.randint(1, 4)))
        return rng.choice(_SEGMENTS)

    return re.sub(r"\{(\w+)(?::\w+)?\}", fill, route.path)


def _query(rng: random.Random) -> dict[str, str]:
    names = ["name", "view", "max_results", "page_token", "key", "path", "zz"]
    return {rng.choice(names): str(rng.choice(_SCALARS)) for _ in range(rng.randint(0, 3))}


def test_fuzzed_requests_never_get_a_500(api: httpx.Client, ids: dict[str, str]) -> None:
    rng = random.Random(20240601)
    problems: list[str] = []
    statuses: set[int] = set()
    content_types = ["application/json", "text/plain", "application/octet-stream",
                     "multipart/form-data; boundary=x", ""]
    for route in r.ALL_ROUTES:
        for _ in range(FUZZ_REQUESTS_PER_ROUTE):
            path = _path(rng, route, ids)
            body = _body(rng, route, ids)
            try:
                raw = quote(path, safe="/%:;~*@!$&'()+,=").encode("ascii")
                url = httpx.URL(api.base_url.join("/"), raw_path=raw)
                resp = api.request(route.method, url, params=_query(rng), content=body,
                                   headers={"content-type": rng.choice(content_types)})
            except httpx.TransportError as exc:  # the server dropped the connection
                problems.append(f"{route.method} {path} {body[:80]!r}: {exc!r}")
                continue
            statuses.add(resp.status_code)
            if resp.status_code >= 500:
                problems.append(f"{route.method} {path} {body[:80]!r}: {resp.status_code} "
                                f"{resp.text[:200]}")
            elif resp.status_code >= 400:
                try:
                    assert_error(resp, resp.status_code)
                except AssertionError as exc:
                    problems.append(f"{route.method} {path}: bad error body {exc}")
    assert problems == [], "\n".join(problems[:20])
    assert {200, 400, 404, 422} <= statuses  # the fuzz reached past validation too
