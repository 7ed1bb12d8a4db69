"""Multipart uploads and ranged downloads over real HTTP, on SQLite and PostgreSQL: the happy
path, every refusal (and that a refusal leaves what is stored as it was), dropped connections."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.artifacts import hash_bytes
from modelyard.artifacts.reaper import REAPER
from modelyard.settings import Settings
from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS
from support.waiting import wait_until

MIB = 1 << 20


def _objects(settings: Settings) -> list[str]:
    root = Path(settings.artifacts_url) / "objects"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _error(resp: httpx.Response, status: int, code: str, field: str | None = None) -> str:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code, err
    if field is not None:
        assert err["field"] == field, err
    return str(err["message"])


class Upload:
    def __init__(self, api: httpx.Client, run_id: str, data: bytes, *, path: str = "big.bin",
                 part_size: int = MIB, digest: str | None = None) -> None:
        self.api, self.run_id, self.data = api, run_id, data
        body: dict[str, Any] = {"path": path, "size": len(data), "part_size": part_size}
        if digest is not None:
            body["digest"] = digest
        resp = api.post(r.CREATE_UPLOAD.url(run_id=run_id), json=body)
        assert resp.status_code == 201, resp.text
        self.state = resp.json()
        self.id = self.state["upload_id"]

    def part_bytes(self, n: int) -> bytes:
        size = self.state["part_size"]
        return self.data[(n - 1) * size : n * size]

    def put(self, n: int, content: bytes | None = None, **kwargs: Any) -> httpx.Response:
        url = r.UPLOAD_PART.url(run_id=self.run_id, upload_id=self.id, part_number=str(n))
        return self.api.put(url, content=self.part_bytes(n) if content is None else content,
                            **kwargs)

    def status(self) -> dict[str, Any]:
        resp = self.api.get(r.GET_UPLOAD.url(run_id=self.run_id, upload_id=self.id))
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def complete(self, digest: str | None = None) -> httpx.Response:
        return self.api.post(r.COMPLETE_UPLOAD.url(run_id=self.run_id, upload_id=self.id),
                             json={} if digest is None else {"digest": digest})


def test_a_multipart_upload_end_to_end(api: httpx.Client, run_id: str,
                                       settings: Settings) -> None:
    data = os.urandom(3 * MIB + 500)
    up = Upload(api, run_id, data, path="models/weights.bin", digest=hash_bytes(data))
    assert up.state["part_count"] == 4 and up.state["parts"] == []
    assert len(up.id) == 32 and set(up.id) <= set("0123456789abcdef")
    for n in (4, 2, 1):
        resp = up.put(n)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"part_number": n, "size": len(up.part_bytes(n)),
                               "acknowledged": True, "already_had": False}
    assert up.status()["parts"] == [1, 2, 4]
    assert up.put(2).json()["already_had"] is True  # a retried part is fine
    msg = _error(up.complete(), 409, "CONFLICT", "parts")
    assert "missing part 3 of 4" in msg
    assert api.get(r.LIST_ARTIFACTS.url(run_id=run_id)).json()["files"] == []  # not visible
    assert up.put(3).status_code == 200
    done = up.complete(hash_bytes(data))
    assert done.status_code == 201, done.text
    entry = {"path": "models/weights.bin", "digest": hash_bytes(data), "size": len(data)}
    assert done.json() == entry
    assert up.complete().json() == entry  # completing again answers the same
    assert up.status()["completed"] is True and up.status()["artifact"] == entry
    assert api.get(r.LIST_ARTIFACTS.url(run_id=run_id)).json()["files"] == [entry]
    got = api.get(r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="models/weights.bin"))
    assert got.content == data and got.headers["x-modelyard-digest"] == hash_bytes(data)
    # Only the blob is left: the staging file and part markers are gone.
    staging = Path(settings.artifacts_url) / "uploads" / up.id
    assert sorted(p.name for p in staging.rglob("*")) == ["result.json", "session.json"]
    msg = _error(up.put(1), 409, "CONFLICT", "upload_id")
    assert "already complete" in msg


def test_an_upload_of_content_already_stored_frees_its_staging_file(
        api: httpx.Client, run_id: str, settings: Settings) -> None:
    data = os.urandom(2 * MIB + 7)
    for path in ("first.bin", "again.bin"):  # the second is deduplicated
        up = Upload(api, run_id, data, path=path)
        for n in (1, 2, 3):
            assert up.put(n).status_code == 200
        assert up.complete(hash_bytes(data)).status_code == 201
        staging = Path(settings.artifacts_url) / "uploads" / up.id
        assert sorted(p.name for p in staging.rglob("*")) == ["result.json", "session.json"]
    assert REAPER.drain()  # the duplicate's bytes were freed after the answer
    assert _objects(settings) == [hash_bytes(data)[2:]]
    tmp = Path(settings.artifacts_url) / "tmp"
    assert [p for p in tmp.rglob("*") if p.is_file()] == []
    got = api.get(r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="again.bin"))
    assert got.content == data


def test_part_size_and_content_length_are_checked(api: httpx.Client, run_id: str) -> None:
    data = os.urandom(MIB + 10)
    up = Upload(api, run_id, data)
    msg = _error(up.put(1, b"x" * (MIB - 1)), 400, "INVALID_ARGUMENT", "Content-Length")
    assert f"exactly {MIB} bytes" in msg
    _error(up.put(2, b"x" * 11), 400, "INVALID_ARGUMENT", "Content-Length")
    _error(up.put(2, b""), 400, "INVALID_ARGUMENT", "Content-Length")
    for bad in ("0", "3", "-1", "1.0", "x", "+1", "\u0661", "9" * 30):
        url = r.UPLOAD_PART.url(run_id=run_id, upload_id=up.id, part_number=bad)
        _error(api.put(url, content=b"x" * 10), 400, "INVALID_ARGUMENT", "part_number")

    def chunked() -> Iterator[bytes]:
        yield up.part_bytes(2)

    _error(up.put(2, chunked()), 400, "INVALID_ARGUMENT", "Content-Length")  # type: ignore[arg-type]
    assert up.status()["parts"] == []
    for body, field in (({"path": "f", "size": 10, "part_size": MIB // 2}, "part_size"),
                        ({"path": "f", "size": 10, "part_size": 512 * MIB}, "part_size"),
                        ({"path": "f", "size": -5}, "size"),
                        ({"path": "f", "size": 20 * 1024 * MIB, "part_size": MIB},
                         "part_size"),  # over 10,000 parts
                        ({"path": "f", "size": 10, "digest": "abc"}, "digest"),
                        ({"path": "../etc/passwd", "size": 10}, "path"),
                        ({"path": "f", "size": "10"}, "size"),
                        ({"size": 10}, "path")):
        resp = api.post(r.CREATE_UPLOAD.url(run_id=run_id), json=body)
        assert resp.status_code in (400, 422), (body, resp.text)
        assert resp.json()["error"]["field"] == field, (body, resp.text)


def test_unknown_forged_and_foreign_upload_ids(api: httpx.Client, run_id: str) -> None:
    up = Upload(api, run_id, os.urandom(100))
    other_run = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"}).json()["info"]["run_id"]
    for rid, uid in ((run_id, uuid.uuid4().hex), (other_run, up.id)):
        _error(api.get(r.GET_UPLOAD.url(run_id=rid, upload_id=uid)), 404, "NOT_FOUND",
               "upload_id")
        _error(api.put(r.UPLOAD_PART.url(run_id=rid, upload_id=uid, part_number="1"),
                       content=b"x" * 100), 404, "NOT_FOUND", "upload_id")
        _error(api.post(r.COMPLETE_UPLOAD.url(run_id=rid, upload_id=uid), json={}), 404,
               "NOT_FOUND", "upload_id")
        _error(api.delete(r.ABORT_UPLOAD.url(run_id=rid, upload_id=uid)), 404, "NOT_FOUND",
               "upload_id")
    for bad in ("%2e%2e", up.id.upper(), up.id[:-1], up.id + "0", "..%2f" + up.id[5:],
                "%2e%2e%2fsession.json", up.id[:-2] + "%00", "%2E" * 32):
        raw = r.GET_UPLOAD.url(run_id=run_id, upload_id=bad).encode("ascii")
        resp = api.get(httpx.URL(api.base_url.join("/"), raw_path=raw))  # sent as it is
        if "%2f" in bad:  # a decoded slash adds a segment: no route matches at all
            _error(resp, 404, "NOT_FOUND")
        else:
            _error(resp, 400, "INVALID_ARGUMENT", "upload_id")
    _error(api.get(r.GET_UPLOAD.url(run_id="0" * 32, upload_id=up.id)), 404, "RUN_NOT_FOUND")
    assert up.status()["parts"] == []  # the real session is untouched


def test_a_digest_mismatch_stores_nothing_and_keeps_what_was_there(
    api: httpx.Client, run_id: str, settings: Settings
) -> None:
    old = b"the artifact as it was"
    assert api.put(r.UPLOAD_ARTIFACT.url(run_id=run_id, path="big.bin"),
                   content=old).status_code == 201
    before = _objects(settings)
    data = os.urandom(2 * MIB)
    up = Upload(api, run_id, data)
    assert up.put(1).status_code == up.put(2).status_code == 200
    declared = hash_bytes(b"something else")
    msg = _error(up.complete(declared), 400, "INVALID_ARGUMENT", "digest")
    assert hash_bytes(data) in msg and declared in msg and "nothing was stored" in msg
    assert _objects(settings) == before
    assert not (Path(settings.artifacts_url) / "uploads" / up.id).exists()
    assert list((Path(settings.artifacts_url) / "tmp").iterdir()) == []
    assert api.get(r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="big.bin")).content == old
    _error(up.complete(), 404, "NOT_FOUND", "upload_id")

    # A digest given at creation is checked too, and must agree with one given at the end.
    up = Upload(api, run_id, data, digest=declared)
    up.put(1), up.put(2)
    _error(up.complete(hash_bytes(data)), 400, "INVALID_ARGUMENT", "digest")
    _error(up.complete(), 400, "INVALID_ARGUMENT", "digest")
    assert api.get(r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="big.bin")).content == old
    assert _objects(settings) == before


def test_abort_and_deleted_runs(api: httpx.Client, run_id: str, settings: Settings) -> None:
    up = Upload(api, run_id, os.urandom(2 * MIB))
    up.put(1)
    resp = api.delete(r.ABORT_UPLOAD.url(run_id=run_id, upload_id=up.id))
    assert resp.status_code == 204
    assert not (Path(settings.artifacts_url) / "uploads" / up.id).exists()
    _error(up.put(2), 404, "NOT_FOUND")

    up = Upload(api, run_id, os.urandom(MIB))
    up.put(1)
    assert api.delete(r.DELETE_RUN.url(run_id=run_id)).status_code in (200, 204)
    _error(up.complete(), 409, "INVALID_STATE", "run_id")
    _error(api.post(r.CREATE_UPLOAD.url(run_id=run_id), json={"path": "f", "size": 1}), 409,
           "INVALID_STATE", "run_id")
    assert _objects(settings) in ([], [hash_bytes(up.data)[2:]])  # at most unreferenced: gc's


def test_a_dropped_connection_mid_part_acknowledges_nothing(
    api: httpx.Client, run_id: str, server: Any
) -> None:
    data = os.urandom(2 * MIB)
    up = Upload(api, run_id, data)
    url = r.UPLOAD_PART.url(run_id=run_id, upload_id=up.id, part_number="1")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"PUT {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {MIB}\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n".encode())
        sock.sendall(b"\xff" * (MIB // 2))  # half a part of wrong bytes, then the line drops
    assert up.status()["parts"] == []

    def put_once_the_drop_is_seen() -> httpx.Response | None:
        resp = up.put(1)
        return None if resp.status_code == 503 else resp  # 503: the part is still in flight

    resp = wait_until(put_once_the_drop_is_seen, timeout=10, interval=0.05,
                      what="the server to see the dropped connection (part 1 no longer 503)")
    assert resp.status_code == 200 and resp.json()["already_had"] is False, resp.text
    up.put(2)
    assert up.complete(hash_bytes(data)).status_code == 201
    got = api.get(r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="big.bin"))
    assert got.content == data


# ------------------------------------------------------------------------------- ranges


@pytest.fixture
def blob(api: httpx.Client, run_id: str) -> tuple[str, bytes]:
    data = os.urandom(10_000)
    assert api.put(r.UPLOAD_ARTIFACT.url(run_id=run_id, path="r.bin"),
                   content=data).status_code == 201
    return r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="r.bin"), data


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-0", 0, 0), ("bytes=0-9999", 0, 9999), ("bytes=100-199", 100, 199),
    ("bytes=9000-", 9000, 9999), ("bytes=9999-", 9999, 9999), ("bytes=-10", 9990, 9999),
    ("bytes=-20000", 0, 9999), ("bytes=5000-99999999", 5000, 9999), ("BYTES = 1-2", 1, 2),
])
def test_single_ranges_are_206(api: httpx.Client, blob: tuple[str, bytes], header: str,
                               start: int, end: int) -> None:
    url, data = blob
    resp = api.get(url, headers={"Range": header})
    assert resp.status_code == 206, resp.text
    assert resp.content == data[start : end + 1]
    assert resp.headers["content-range"] == f"bytes {start}-{end}/10000"
    assert resp.headers["content-length"] == str(end - start + 1)
    assert resp.headers["x-modelyard-digest"] == hash_bytes(data)
    assert resp.headers["etag"] == f'"{hash_bytes(data)}"'


@pytest.mark.parametrize("header", [
    "bytes=10000-", "bytes=10000-10005", "bytes=-0", "bytes=5-4", "bytes=0-1,5-6", "bytes=",
    "bytes=-", "bytes=a-b", "bytes=1-2-3", "bytes=\u0661-2", "bytes=99999999999999999999-",
])
def test_unsatisfiable_or_malformed_ranges_are_416(api: httpx.Client, blob: tuple[str, bytes],
                                                  header: str) -> None:
    url, _ = blob
    resp = api.get(url, headers={"Range": header.encode("utf-8")})
    _error(resp, 416, "RANGE_NOT_SATISFIABLE", "Range")
    assert resp.headers["content-range"] == "bytes */10000"


def test_ranges_that_do_not_apply_get_the_whole_content(api: httpx.Client,
                                                        blob: tuple[str, bytes]) -> None:
    url, data = blob
    for headers in ({"Range": "items=0-5"}, {"Range": "bytes=0-5", "If-Range": '"stale"'},
                    {}):
        resp = api.get(url, headers=headers)
        assert resp.status_code == 200 and resp.content == data, headers
        assert resp.headers["accept-ranges"] == "bytes"
    digest = hash_bytes(data)
    resp = api.get(url, headers={"Range": "bytes=0-5", "If-Range": f'"{digest}"'})
    assert resp.status_code == 206 and resp.content == data[:6]


def test_ranges_of_missing_artifacts_and_empty_files(api: httpx.Client, run_id: str) -> None:
    missing = r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="nope.bin")
    _error(api.get(missing, headers={"Range": "bytes=0-1"}), 404, "ARTIFACT_NOT_FOUND")
    api.put(r.UPLOAD_ARTIFACT.url(run_id=run_id, path="empty"), content=b"")
    empty = r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="empty")
    _error(api.get(empty, headers={"Range": "bytes=0-"}), 416, "RANGE_NOT_SATISFIABLE", "Range")
    assert api.get(empty).content == b""


def test_concurrent_completions_agree(api: httpx.Client, run_id: str, server: Any) -> None:
    data = os.urandom(3 * MIB)
    up = Upload(api, run_id, data)
    for n in (1, 2, 3):
        assert up.put(n).status_code == 200
    answers: list[httpx.Response] = []

    def complete() -> None:
        with httpx.Client(base_url=server.url, timeout=30, event_hooks=CLIENT_HOOKS) as c:
            answers.append(c.post(r.COMPLETE_UPLOAD.url(run_id=run_id, upload_id=up.id),
                                  json={"digest": hash_bytes(data)}))

    threads = [threading.Thread(target=complete) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    expected = {"path": "big.bin", "digest": hash_bytes(data), "size": len(data)}
    assert [(a.status_code, a.json()) for a in answers] == [(201, expected)] * 4
    assert api.get(r.LIST_ARTIFACTS.url(run_id=run_id)).json()["files"] == [expected]
