"""Upload parts read straight from the socket (splice) on a real uvicorn server, the cases
that fall back to the ordinary body stream, and the receiving end on its own over real
sockets."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_uploads_rest

from modelyard.artifacts import FsspecBlobStore, hash_bytes
from modelyard.artifacts.upload_parts import LocalPartWriter
from modelyard.artifacts.uploads import UploadArea
from modelyard.errors import InvalidArgument, RequestTimeout
from modelyard.wire import routes as r

MIB = 1 << 20
api = test_uploads_rest.api  # the REST tests' fixtures: a server, a client, a run
run_id = test_uploads_rest.run_id
linux_only = pytest.mark.skipif(not LocalPartWriter.takes_descriptors,
                                reason="parts are spliced from the socket on Linux only")


def _open(api: httpx.Client, run_id: str, data: bytes, part_size: int = MIB) -> str:
    resp = api.post(r.CREATE_UPLOAD.url(run_id=run_id),
                    json={"path": "w.bin", "size": len(data), "part_size": part_size})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["upload_id"])


def _read_answer(sock: socket.socket) -> bytes:
    got = b""
    while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < _length(got):
        more = sock.recv(65536)
        if not more:
            break
        got += more
    return got


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


@linux_only
def test_a_part_is_taken_from_the_socket_and_the_connection_closes(
        api: httpx.Client, run_id: str) -> None:
    data = os.urandom(2 * MIB + 10)
    up = _open(api, run_id, data)
    for n in (1, 2, 3):
        url = r.UPLOAD_PART.url(run_id=run_id, upload_id=up, part_number=str(n))
        resp = api.put(url, content=data[(n - 1) * MIB:n * MIB])
        assert resp.status_code == 200, resp.text
        assert resp.json()["already_had"] is False
        assert resp.headers["connection"] == "close"  # read past the parser: one request only
    # A part sent again is compared with what is stored: the ordinary stream, kept alive.
    again = api.put(r.UPLOAD_PART.url(run_id=run_id, upload_id=up, part_number="2"),
                    content=data[MIB:2 * MIB])
    assert again.json()["already_had"] is True and "close" not in again.headers.get(
        "connection", "")
    done = api.post(r.COMPLETE_UPLOAD.url(run_id=run_id, upload_id=up),
                    json={"digest": hash_bytes(data)})
    assert done.status_code == 201, done.text
    got = api.get(r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="w.bin"))
    assert got.content == data


def test_expect_100_continue_is_answered_and_the_part_stored(
        api: httpx.Client, run_id: str, server: Any) -> None:
    """The client waits for "100 Continue" before it sends the body: the ordinary stream
    (which answers it) takes the part."""
    data = os.urandom(MIB)
    up = _open(api, run_id, data)
    url = r.UPLOAD_PART.url(run_id=run_id, upload_id=up, part_number="1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"PUT {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {MIB}\r\n"
                     "Content-Type: application/octet-stream\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(data)
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    done = api.post(r.COMPLETE_UPLOAD.url(run_id=run_id, upload_id=up),
                    json={"digest": hash_bytes(data)})
    assert done.status_code == 201, done.text


@linux_only
def test_a_part_with_bytes_beyond_its_length_stores_only_the_part(
        api: httpx.Client, run_id: str, server: Any) -> None:
    """Bytes after the body on the same connection (a pipelined request) are never written
    into the part: exactly Content-Length bytes are taken, then the connection closes."""
    data = os.urandom(MIB)
    up = _open(api, run_id, data)
    url = r.UPLOAD_PART.url(run_id=run_id, upload_id=up, part_number="1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"PUT {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {MIB}\r\n"
                     "Content-Type: application/octet-stream\r\n"
                     "\r\n".encode() + data + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    done = api.post(r.COMPLETE_UPLOAD.url(run_id=run_id, upload_id=up),
                    json={"digest": hash_bytes(data)})
    assert done.status_code == 201, done.text


# -- the receiving end over a socket pair ---------------------------------------------------


@pytest.fixture
def area(tmp_path: Path) -> UploadArea:
    return UploadArea(FsspecBlobStore(str(tmp_path / "blobs")))


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a TCP connection on loopback, like an HTTP server's (the server's end
    non-blocking, as under an event loop)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    ours.setblocking(False)
    return ours, theirs


def _writer(area: UploadArea, size: int) -> tuple[Any, LocalPartWriter]:
    session = area.create(run_id="c" * 32, path="p.bin", size=size, part_size=MIB,
                          digest=None, now_ms=0)
    writer = area.open_part(session, 1)
    assert isinstance(writer, LocalPartWriter)
    return session, writer


@linux_only
def test_receive_from_a_socket(area: UploadArea) -> None:
    data = os.urandom(MIB)
    session, writer = _writer(area, len(data))
    ours, theirs = _tcp_pair()
    try:
        sender = threading.Thread(target=theirs.sendall, args=(data[100:],))
        sender.start()
        writer.write([data[:100]])  # what the HTTP server had already read
        writer.receive_from(ours.fileno(), lambda received: time.monotonic() + 10)
        sender.join()
        assert writer.commit() is True
    finally:
        writer.close()
        ours.close()
        theirs.close()
    assert area.stage(session).ref.digest == hash_bytes(data)


@linux_only
@pytest.mark.parametrize("ending", ["stall", "close"])
def test_a_sender_that_stops_acknowledges_nothing(area: UploadArea, ending: str) -> None:
    session, writer = _writer(area, MIB)
    ours, theirs = _tcp_pair()
    start = time.monotonic()
    try:
        theirs.sendall(os.urandom(MIB // 4))
        if ending == "close":
            theirs.close()
        # The rule a metered body sets: 0.3 s of grace, then 1 MiB a second.
        expected = RequestTimeout if ending == "stall" else InvalidArgument
        with pytest.raises(expected) as info:
            writer.receive_from(ours.fileno(), lambda got: start + 0.3 + got / MIB)
        assert info.value.field == "body"
        if ending == "stall":
            assert f"{MIB // 4} of {MIB} bytes" in info.value.message
            assert "too slowly" in info.value.message
        else:
            assert f"stopped after {MIB // 4} of {MIB} bytes" in info.value.message
            assert "the connection ended" in info.value.message
    finally:
        writer.close()
        ours.close()
        theirs.close()
    assert area.acknowledged(session) == []


def test_platform_flag_matches_the_platform() -> None:
    assert LocalPartWriter.takes_descriptors == (sys.platform.startswith("linux")
                                                 and hasattr(os, "splice"))
