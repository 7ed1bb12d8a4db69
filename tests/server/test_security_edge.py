"""The attacks of issue 18 replayed against a real server on loopback: cross-site request
forgery, bodies that exhaust it, junk Host headers and URLs, and what the edge answers.

Each test sends what the attacker would (raw sockets where an HTTP library would not), then
checks the answer AND that nothing stored changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.settings import Settings
from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS, ServerThread
from support.waiting import wait_until

EVIL = "http://evil.example"
SIMPLE_TYPES = [None, "text/plain", "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x"]
GC_ATTACK = json.dumps({"dry_run": False, "older_than_ms": 0, "abandoned_after_ms": 0})


@pytest.fixture
def api(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, event_hooks=CLIENT_HOOKS) as client:
        yield client


def _error(resp: httpx.Response, status: int, code: str, field: str | None = None) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)
    err = resp.json()["error"]
    assert err["code"] == code, err
    if field is not None:
        assert err["field"] == field, err
    message: str = err["message"]
    return message


def _victim(api: httpx.Client) -> dict[str, str]:
    """A soft-deleted run with an artifact, a live run, an open multipart upload."""
    exp = api.post(r.CREATE_EXPERIMENT.path, json={"name": "victim"}).json()["experiment_id"]
    doomed = api.post(r.CREATE_RUN.path, json={"experiment_id": exp}).json()["info"]["run_id"]
    assert api.put(r.UPLOAD_ARTIFACT.url(run_id=doomed, path="model.bin"),
                   content=b"weights").status_code == 201
    assert api.delete(r.DELETE_RUN.url(run_id=doomed)).status_code == 200
    live = api.post(r.CREATE_RUN.path, json={"experiment_id": exp}).json()["info"]["run_id"]
    upload = api.post(r.CREATE_UPLOAD.url(run_id=live), json={"path": "big.bin", "size": 10})
    assert upload.status_code == 201, upload.text
    return {"experiment_id": exp, "doomed": doomed, "live": live,
            "upload_id": upload.json()["upload_id"]}


def _stored(api: httpx.Client, ids: dict[str, str]) -> Any:
    """What the attack must leave as it was."""
    experiments = api.get(r.LIST_EXPERIMENTS.path, params={"view": "all"}).json()
    runs = api.post(r.SEARCH_RUNS.path, json={"view": "all"}).json()
    upload = api.get(r.GET_UPLOAD.url(run_id=ids["live"], upload_id=ids["upload_id"]))
    artifacts = api.get(r.LIST_ARTIFACTS.url(run_id=ids["doomed"])).json()
    return experiments, runs, upload.status_code, upload.json(), artifacts


def test_the_demonstrated_gc_attack_changes_nothing(api: httpx.Client) -> None:
    """A page POSTs a 'simple' body (no preflight) to /api/v1/gc: it purged a deleted run and
    every upload. Now: 403 for the foreign Origin, and 415 for the type even without one."""
    ids = _victim(api)
    before = _stored(api, ids)
    for content_type in SIMPLE_TYPES:
        headers = {} if content_type is None else {"content-type": content_type}
        # httpx adds no content type of its own to bytes content
        with httpx.Client(base_url=str(api.base_url)) as plain:
            forged = plain.post(r.COLLECT_GARBAGE.path, content=GC_ATTACK,
                                headers={**headers, "origin": EVIL})
            _error(forged, 403, "FORBIDDEN", "origin")
            no_origin = plain.post(r.COLLECT_GARBAGE.path, content=GC_ATTACK, headers=headers)
            msg = _error(no_origin, 415, "UNSUPPORTED_MEDIA_TYPE", "content-type")
            assert "application/json" in msg
    assert _stored(api, ids) == before
    # The deleted run is still there to restore, with its artifact.
    assert api.post(r.RESTORE_RUN.url(run_id=ids["doomed"])).status_code == 200
    got = api.get(r.DOWNLOAD_ARTIFACT.url(run_id=ids["doomed"], path="model.bin"))
    assert got.content == b"weights"


@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
def test_no_write_route_takes_a_simple_body(api: httpx.Client, content_type: str | None) -> None:
    ids = _victim(api)
    before = _stored(api, ids)
    headers = {} if content_type is None else {"content-type": content_type}
    writes = [
        (r.CREATE_EXPERIMENT, {}, {"name": "forged"}),
        (r.CREATE_RUN, {}, {"experiment_id": ids["experiment_id"]}),
        (r.SET_EXPERIMENT_TAG, {"experiment_id": ids["experiment_id"]},
         {"key": "owner", "value": "evil"}),
        (r.RESTORE_RUN, {"run_id": ids["doomed"]}, {}),
        (r.RESTORE_EXPERIMENT, {"experiment_id": ids["experiment_id"]}, {}),
        (r.LOG_BATCH, {"run_id": ids["live"]},
         {"tags": [{"key": "owner", "value": "evil"}]}),
        (r.UPDATE_RUN, {"run_id": ids["live"]}, {"status": "KILLED"}),
        (r.COMPLETE_UPLOAD, {"run_id": ids["live"], "upload_id": ids["upload_id"]}, {}),
    ]
    with httpx.Client(base_url=str(api.base_url)) as plain:
        for route, path, body in writes:
            resp = plain.request(route.method, route.url(**path), content=json.dumps(body),
                                 headers=headers)
            _error(resp, 415, "UNSUPPORTED_MEDIA_TYPE", "content-type")
        for route in (r.UPLOAD_ARTIFACT, r.UPLOAD_PART):
            url = route.url(run_id=ids["live"], path="x.bin", upload_id=ids["upload_id"],
                            part_number="1")
            resp = plain.put(url, content=b"0123456789", headers=headers)
            _error(resp, 415, "UNSUPPORTED_MEDIA_TYPE", "content-type")
    assert _stored(api, ids) == before


def test_a_foreign_origin_is_refused_on_every_write_and_allowed_on_reads(
        api: httpx.Client, server: Any) -> None:
    ids = _victim(api)
    before = _stored(api, ids)
    own = f"http://127.0.0.1:{server.port}"
    for origin in (EVIL, "null", f"http://127.0.0.1:{server.port + 1}", "http://localhost",
                   f"ftp://127.0.0.1:{server.port}", "http://127.0.0.1.evil.example"):
        resp = api.post(r.CREATE_EXPERIMENT.path, json={"name": "forged"},
                        headers={"origin": origin})
        _error(resp, 403, "FORBIDDEN", "origin")
        _error(api.delete(r.DELETE_RUN.url(run_id=ids["live"]), headers={"origin": origin}),
               403, "FORBIDDEN", "origin")
        _error(api.patch(r.UPDATE_RUN.url(run_id=ids["live"]), json={"status": "KILLED"},
                         headers={"origin": origin}), 403, "FORBIDDEN", "origin")
        _error(api.put(r.UPLOAD_ARTIFACT.url(run_id=ids["live"], path="x"), content=b"x",
                       headers={"origin": origin}), 403, "FORBIDDEN", "origin")
        # Reads are not refused (a page cannot read the answer: no CORS headers, ever).
        read = api.get(r.GET_RUN.url(run_id=ids["live"]), headers={"origin": origin})
        assert read.status_code == 200
        assert "access-control-allow-origin" not in read.headers
    assert _stored(api, ids) == before
    # The server's own pages (Swagger UI at /docs) may write, under either scheme.
    for origin in (own, f"https://127.0.0.1:{server.port}", own.upper()):
        made = api.post(r.CREATE_EXPERIMENT.path, json={"name": f"own {origin}"},
                        headers={"origin": origin})
        assert made.status_code == 201, made.text


def test_a_request_without_a_body_needs_no_media_type_but_keeps_to_its_origin(
        api: httpx.Client) -> None:
    """``curl -X POST .../restore`` works; the same bodiless POST from a web page (which always
    sends its Origin with a POST) restores nothing."""
    ids = _victim(api)
    before = _stored(api, ids)
    with httpx.Client(base_url=str(api.base_url)) as plain:
        url = r.RESTORE_RUN.url(run_id=ids["doomed"])
        _error(plain.post(url, headers={"origin": EVIL}), 403, "FORBIDDEN", "origin")
        _error(plain.post(url, headers={"origin": EVIL, "content-length": "0"}), 403,
               "FORBIDDEN", "origin")
        assert _stored(api, ids) == before
        assert plain.post(url).status_code == 200
    assert api.get(r.GET_RUN.url(run_id=ids["doomed"])).json()["info"]["lifecycle_stage"] \
        == "active"


def test_preflights_are_refused(api: httpx.Client) -> None:
    resp = api.options(r.CREATE_EXPERIMENT.path, headers={
        "origin": EVIL, "access-control-request-method": "POST",
        "access-control-request-headers": "content-type"})
    _error(resp, 403, "FORBIDDEN", "origin")
    assert not [h for h in resp.headers if h.startswith("access-control-")]


def test_an_operator_allowed_origin_may_write(settings: Settings) -> None:
    allowed = dataclasses.replace(settings, allowed_origins=("https://ui.example.com",))
    with ServerThread(allowed) as srv, httpx.Client(base_url=srv.url) as api:
        ok = api.post(r.CREATE_EXPERIMENT.path, json={"name": "from the ui"},
                      headers={"origin": "https://ui.example.com"})
        assert ok.status_code == 201, ok.text
        _error(api.post(r.CREATE_EXPERIMENT.path, json={"name": "x"},
                        headers={"origin": "https://ui.example.com.evil.example"}),
               403, "FORBIDDEN")


def test_json_must_be_utf8_and_exactly_json(api: httpx.Client) -> None:
    body = json.dumps({"name": "typed"}).encode()
    with httpx.Client(base_url=str(api.base_url)) as plain:
        for bad in ("application/json; charset=latin-1", "application/jsonx",
                    "application/json-patch+json", "text/json", "application/octet-stream"):
            _error(plain.post(r.CREATE_EXPERIMENT.path, content=body,
                              headers={"content-type": bad}), 415, "UNSUPPORTED_MEDIA_TYPE")
        two = plain.post(r.CREATE_EXPERIMENT.path, content=body, headers=[
            ("content-type", "application/json"), ("content-type", "text/plain")])
        _error(two, 415, "UNSUPPORTED_MEDIA_TYPE")
        ok = plain.post(r.CREATE_EXPERIMENT.path, content=body,
                        headers={"content-type": "Application/JSON; charset=UTF-8"})
        assert ok.status_code == 201, ok.text


# ------------------------------------------------------------------ raw sockets


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one whole HTTP answer (the server closes or sends Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def _send_until_answered(sock: socket.socket, head: bytes, pieces: Iterator[bytes]) -> int:
    """Send ``head`` then ``pieces`` until the server answers (or stops reading); the number
    of body bytes that were sent."""
    sock.sendall(head)
    sent = 0
    for piece in pieces:
        if _readable(sock):
            break
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(piece)
    return sent


def _chunked(total: int, size: int = 1 << 16) -> Iterator[bytes]:
    piece = b"x" * size
    for _ in range(total // size):
        yield b"%x\r\n%s\r\n" % (size, piece)
    yield b"0\r\n\r\n"


def test_a_chunked_body_is_cut_off_at_the_limit(settings: Settings) -> None:
    limit = 1 << 20
    small = dataclasses.replace(settings, max_request_bytes=limit)
    with ServerThread(small) as srv:
        sock = _connect(srv.port)
        head = (f"POST {r.CREATE_EXPERIMENT.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        total = 400 << 20
        sent = _send_until_answered(sock, head, _chunked(total))
        status, headers, body = _answer(sock)
        sock.close()
        assert status == 413, body
        assert json.loads(body)["error"]["code"] == "TOO_LARGE"
        assert headers["connection"] == "close"
        # Answered long before the 400 MiB were sent: only socket buffers' worth past the limit.
        assert sent < total // 4, sent
        with httpx.Client(base_url=srv.url) as api:
            assert api.get(r.HEALTH.path).status_code == 200
            names = [e["name"] for e in api.get(r.LIST_EXPERIMENTS.path).json()["experiments"]]
            assert names == ["Default"]


def test_uploads_over_the_artifact_limit_are_refused_up_front(settings: Settings) -> None:
    limit = 1 << 20
    small = dataclasses.replace(settings, max_artifact_bytes=limit)
    with ServerThread(small) as srv, httpx.Client(base_url=srv.url,
                                                  event_hooks=CLIENT_HOOKS) as api:
        run = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}).json()["info"]["run_id"]
        # A multipart session declaring more than the limit: refused before any space is taken.
        staging = Path(settings.artifacts_url) / "uploads"
        before = sorted(staging.rglob("*")) if staging.exists() else []
        for size in (limit + 1, 2_600_000_000_000):
            resp = api.post(r.CREATE_UPLOAD.url(run_id=run), json={"path": "big", "size": size})
            msg = _error(resp, 413, "TOO_LARGE", "size")
            assert str(limit) in msg
        assert (sorted(staging.rglob("*")) if staging.exists() else []) == before
        # One PUT declaring more: refused on its headers, before a byte of the body is sent.
        sock = _connect(srv.port)
        sock.sendall((f"PUT {r.UPLOAD_ARTIFACT.url(run_id=run, path='big.bin')} HTTP/1.1\r\n"
                      f"Host: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                      f"Content-Length: {limit + 1}\r\n\r\n").encode())
        status, _, body = _answer(sock)
        sock.close()
        assert status == 413, body
        # The same bytes chunked (no declared length): cut off as they pass the limit.
        sock = _connect(srv.port)
        head = (f"PUT {r.UPLOAD_ARTIFACT.url(run_id=run, path='big.bin')} HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                "Transfer-Encoding: chunked\r\n\r\n").encode()
        sent = _send_until_answered(sock, head, _chunked(200 << 20))
        status, _, body = _answer(sock)
        sock.close()
        assert status == 413, body
        assert sent < 100 << 20
        assert api.get(r.LIST_ARTIFACTS.url(run_id=run)).json()["files"] == []
        # At the limit, it is stored.
        ok = api.put(r.UPLOAD_ARTIFACT.url(run_id=run, path="ok.bin"), content=b"x" * limit)
        assert ok.status_code == 201, ok.text


def _trickle(sock: socket.socket, head: bytes, total: int, step: int, pause_s: float,
             give_up_s: float) -> int:
    """A slow client: ``step`` bytes every ``pause_s`` seconds (the attack's pace), until the
    server answers or ``give_up_s`` passes; the number of bytes sent."""
    sock.sendall(head)
    sent = 0
    deadline = time.monotonic() + give_up_s
    while sent < total and time.monotonic() < deadline:
        if _readable(sock):
            break
        try:
            sock.sendall(b"x" * step)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += step
        time.sleep(pause_s)  # the attacker's pace, the behaviour under test: not a wait
    return sent


def test_a_trickling_client_is_cut_off(settings: Settings) -> None:
    """After a grace period a body must average min_body_rate: a client sending 100 bytes a
    second to a server that wants 2,000 is answered 408 and let go, on the JSON, the upload
    and the multipart part routes alike (the part from the socket by splice, with
    --direct-upload-body, keeps the same deadline: tests/artifacts/test_direct_body.py)."""
    slow = dataclasses.replace(settings, min_body_rate=2000, body_grace_s=0.5)
    with ServerThread(slow) as srv, httpx.Client(base_url=srv.url,
                                                 event_hooks=CLIENT_HOOKS) as api:
        run = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}).json()["info"]["run_id"]
        up = api.post(r.CREATE_UPLOAD.url(run_id=run),
                      json={"path": "p.bin", "size": 1 << 20, "part_size": 1 << 20})
        assert up.status_code == 201, up.text
        targets = [
            ("POST", r.LOG_BATCH.url(run_id=run), "application/json", 100_000),
            ("PUT", r.UPLOAD_ARTIFACT.url(run_id=run, path="slow.bin"),
             "application/octet-stream", 100_000),
            ("PUT", r.UPLOAD_PART.url(run_id=run, upload_id=up.json()["upload_id"],
                                      part_number="1"), "application/octet-stream", 1 << 20),
        ]
        for method, url, media, length in targets:
            sock = _connect(srv.port)
            head = (f"{method} {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {media}\r\n"
                    f"Content-Length: {length}\r\n\r\n").encode()
            sent = _trickle(sock, head, length, step=10, pause_s=0.1, give_up_s=30)
            status, _, body = _answer(sock)
            sock.close()
            assert status == 408, (url, status, body)
            assert json.loads(body)["error"]["code"] == "REQUEST_TIMEOUT"
            assert sent < length, url  # cut off, not served to the end
        assert api.get(r.LIST_ARTIFACTS.url(run_id=run)).json()["files"] == []
        assert api.get(r.GET_UPLOAD.url(run_id=run, upload_id=up.json()["upload_id"])
                       ).json()["parts"] == []


def test_a_client_that_disconnects_mid_body_is_one_log_line(
        server: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="modelyard.server"):
        sock = _connect(server.port)
        sock.sendall((f"POST {r.CREATE_EXPERIMENT.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                      '{"name": "half').encode())
        sock.close()
        wait_until(lambda: any("disconnected" in rec.getMessage() for rec in caplog.records),
                   timeout=15, what="the server to log the disconnect")
    records = [rec for rec in caplog.records if rec.name == "modelyard.server"]
    assert all(rec.exc_info is None and "a bug" not in rec.getMessage() for rec in records)
    assert all(rec.levelno < logging.WARNING for rec in records)


# ------------------------------------------------------------------ Host and URL


def _raw_get(port: int, head: str) -> tuple[int, dict[str, str], bytes]:
    sock = _connect(port)
    sock.sendall(head.encode("latin-1"))
    answer = _answer(sock)
    sock.close()
    return answer


@pytest.mark.parametrize("hosts", [["localhost:junk"], ["[::1]evil"], ["localhost:99999"],
                                   ["localhost:"], ["127.0.0.1", "evil.example"],
                                   ["127.0.0.1", "127.0.0.1"], []])
def test_malformed_or_repeated_host_headers_are_refused(server: Any, hosts: list[str]) -> None:
    lines = "".join(f"Host: {h}\r\n" for h in hosts)
    status, headers, body = _raw_get(
        server.port, f"GET {r.HEALTH.path} HTTP/1.1\r\n{lines}Connection: close\r\n\r\n")
    if not hosts and status != 400:
        pytest.fail(f"no Host: {status} {body!r}")
    assert status == 400, (hosts, body)
    assert json.loads(body)["error"]["field"] == "host"
    assert headers["x-frame-options"] == "DENY"


def test_urls_that_are_not_utf8_are_refused(api: httpx.Client, server: Any) -> None:
    run = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}).json()["info"]["run_id"]
    for raw in ("%FF.txt", "a%C3.txt", "%ED%A0%80.txt", "%C0%AF.txt"):
        target = f"/api/v1/runs/{run}/artifacts/{raw}"
        for method in ("GET", "PUT"):
            status, _, body = _raw_get(server.port, (
                f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n"
                "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\nx"))
            assert status == 400, (raw, body)
            assert json.loads(body)["error"]["field"] == "path"
        status, _, body = _raw_get(server.port, (
            f"GET {r.LIST_ARTIFACTS.url(run_id=run)}?path={raw} HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\nConnection: close\r\n\r\n"))
        assert status == 400, body
        assert json.loads(body)["error"]["field"] == "query"
    assert api.get(r.LIST_ARTIFACTS.url(run_id=run)).json()["files"] == []


# ------------------------------------------------------------------ headers


def test_the_last_resort_500_carries_the_security_headers(settings: Settings) -> None:
    """Starlette answers an exception that escapes every handler from outside all middleware;
    that answer carries the headers too."""
    from modelyard.server.app import create_app

    app = create_app(settings)

    def boom() -> None:
        raise RuntimeError("a bug, on purpose")

    app.add_api_route("/boom", boom)
    with ServerThread(app=app, log_level="critical") as srv:
        resp = httpx.get(f"{srv.url}/boom")
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "INTERNAL"
    for name, value in (("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                        ("cross-origin-resource-policy", "same-origin"),
                        ("referrer-policy", "no-referrer")):
        assert resp.headers.get(name) == value, (name, resp.headers)


def test_every_kind_of_answer_carries_cross_origin_resource_policy(
        api: httpx.Client, server: Any) -> None:
    run = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}).json()["info"]["run_id"]
    api.put(r.UPLOAD_ARTIFACT.url(run_id=run, path="a.txt"), content=b"a")
    answers = [
        api.get(r.HEALTH.path), api.get("/openapi.json"), api.get("/docs"),
        api.get(r.DOWNLOAD_ARTIFACT.url(run_id=run, path="a.txt")),
        api.get(r.GET_RUN.url(run_id="0" * 32)),
        api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}, headers={"origin": EVIL}),
        api.get(r.HEALTH.path, headers={"host": "evil.example"}),
        httpx.post(f"{server.url}{r.CREATE_RUN.path}", content=b"{}",
                   headers={"content-type": "text/plain"}),
    ]
    for resp in answers:
        assert resp.headers.get("cross-origin-resource-policy") == "same-origin", resp.url
        assert resp.headers.get("x-content-type-options") == "nosniff", resp.url
