"""Upload parts read straight from the socket (splice) on a real uvicorn server when the
server is started with ``direct_upload_body``, the cases that fall back to the ordinary body
stream, the default (the stream, connections kept alive), the start-up check of uvicorn's
internals, and the receiving end on its own over real sockets."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn.protocols.http.httptools_impl as httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl

from modelyard.artifacts import FsspecBlobStore, hash_bytes
from modelyard.artifacts.upload_parts import LocalPartWriter
from modelyard.artifacts.uploads import UploadArea
from modelyard.errors import InvalidArgument, RequestTimeout
from modelyard.server import direct_body
from modelyard.server.app import SETTINGS_ENV, app_from_env, create_app
from modelyard.settings import Settings
from modelyard.wire import routes as r
from support.processes import ServerProcess
from support.servers import CLIENT_HOOKS, ServerThread, free_port

MIB = 1 << 20
linux_only = pytest.mark.skipif(not LocalPartWriter.takes_descriptors,
                                reason="parts are spliced from the socket on Linux only")


@pytest.fixture
def direct_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, direct_upload_body=True)


@pytest.fixture
def direct_server(direct_settings: Settings) -> Iterator[ServerThread]:
    """A server started with the fast path on (``--direct-upload-body``)."""
    with ServerThread(direct_settings) as srv:
        yield srv


@pytest.fixture
def direct_api(direct_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=direct_server.url, timeout=30,
                      event_hooks=CLIENT_HOOKS) as client:
        yield client


@pytest.fixture
def direct_run_id(direct_api: httpx.Client) -> str:
    return _new_run(direct_api)


def _new_run(api: httpx.Client) -> str:
    resp = api.post(r.CREATE_RUN.path, json={"experiment_id": "0"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["info"]["run_id"])


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
        direct_api: httpx.Client, direct_run_id: str) -> None:
    api, run_id = direct_api, direct_run_id
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
        direct_api: httpx.Client, direct_run_id: str, direct_server: ServerThread) -> None:
    """The client waits for "100 Continue" before it sends the body: even with the fast path
    on, the ordinary stream (which answers it) takes the part."""
    api, run_id, server = direct_api, direct_run_id, direct_server
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
        direct_api: httpx.Client, direct_run_id: str, direct_server: ServerThread) -> None:
    """Bytes after the body on the same connection (a pipelined request) are never written
    into the part: exactly Content-Length bytes are taken, then the connection closes."""
    api, run_id, server = direct_api, direct_run_id, direct_server
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


@linux_only
def test_a_trickled_part_taken_from_the_socket_is_cut_off(direct_settings: Settings) -> None:
    """The spliced path keeps to the body's minimum rate too: 408, nothing acknowledged."""
    slow = dataclasses.replace(direct_settings, min_body_rate=2000, body_grace_s=0.5)
    with ServerThread(slow) as srv, httpx.Client(base_url=srv.url, timeout=30,
                                                 event_hooks=CLIENT_HOOKS) as api:
        run = _new_run(api)
        up = _open(api, run, os.urandom(MIB))
        url = r.UPLOAD_PART.url(run_id=run, upload_id=up, part_number="1")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(f"PUT {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {MIB}"
                         "\r\nContent-Type: application/octet-stream\r\n\r\n".encode())
            sent, give_up = 0, time.monotonic() + 30
            while not select.select([sock], [], [], 0)[0] and time.monotonic() < give_up:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(b"x" * 10)  # 100 bytes a second
                sent += 10
                time.sleep(0.1)
            answer = _read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"REQUEST_TIMEOUT" in answer and b"connection: close" in answer.lower()
        assert b"part 1 arrived too slowly" in answer  # said by the spliced path, not the meter
        assert sent < MIB
        assert api.get(r.GET_UPLOAD.url(run_id=run, upload_id=up)).json()["parts"] == []


# -- the default: the ordinary stream --------------------------------------------------------


def _put_parts_on_one_connection(port: int, run_id: str, upload_id: str, data: bytes,
                                 part_size: int = MIB) -> None:
    """Every part of ``data`` PUT over one connection, then a GET on it: each answer must be
    200 and keep the connection open (a part taken from the socket would close it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for n, at in enumerate(range(0, len(data), part_size), start=1):
            part = data[at:at + part_size]
            url = r.UPLOAD_PART.url(run_id=run_id, upload_id=upload_id, part_number=str(n))
            sock.sendall(f"PUT {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Content-Length: {len(part)}\r\n"
                         "Content-Type: application/octet-stream\r\n\r\n".encode() + part)
            answer = _read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
            assert b"connection: close" not in answer.lower(), answer[:300]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["already_had"] is False
        sock.sendall(f"GET {r.HEALTH.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert _read_answer(sock).startswith(b"HTTP/1.1 200")  # still the same connection


def _complete_and_check(api: httpx.Client, run_id: str, upload_id: str, data: bytes) -> None:
    done = api.post(r.COMPLETE_UPLOAD.url(run_id=run_id, upload_id=upload_id),
                    json={"digest": hash_bytes(data)})
    assert done.status_code == 201, done.text
    assert api.get(r.DOWNLOAD_ARTIFACT.url(run_id=run_id, path="w.bin")).content == data


def test_by_default_parts_arrive_through_the_stream_on_a_kept_alive_connection(
        api: httpx.Client, run_id: str, server: Any, settings: Settings) -> None:
    assert settings.direct_upload_body is False  # the default
    data = os.urandom(2 * MIB + 10)
    up = _open(api, run_id, data)
    _put_parts_on_one_connection(server.port, run_id, up, data)
    _complete_and_check(api, run_id, up, data)


# -- the start-up check of uvicorn's internals ------------------------------------------------


def test_the_startup_check_passes_on_the_installed_uvicorn(
        direct_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    assert direct_body.missing_internals() == []
    with caplog.at_level(logging.WARNING, logger="modelyard.server"):
        app = create_app(direct_settings)
    try:
        assert app.state.direct_upload_body is True
        assert [rec for rec in caplog.records if rec.name == "modelyard.server"] == []
    finally:
        app.state.stores.close()
    off = create_app(dataclasses.replace(direct_settings, direct_upload_body=False))
    try:
        assert off.state.direct_upload_body is False
    finally:
        off.state.stores.close()


def test_the_setting_reaches_worker_processes(direct_settings: Settings,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers build their app from the settings as JSON (``app_from_env``): the field
    survives the round trip."""
    monkeypatch.setenv(SETTINGS_ENV, json.dumps(dataclasses.asdict(direct_settings)))
    app = app_from_env()
    try:
        assert app.state.settings == direct_settings
        assert app.state.direct_upload_body is True
    finally:
        app.state.stores.close()


class RenamedCycle:
    """uvicorn's request-response cycle as another release might have it: ``keep_alive``
    renamed, which a write would silently add as a new attribute."""

    def __init__(self, transport: Any, flow: FlowControl) -> None:
        self.transport = transport
        self.flow = flow
        self.disconnected = False
        self.keep_connection = True
        self.waiting_for_100_continue = False
        self.body = bytearray()
        self.response_started = False

    def send(self) -> None:
        if not self.keep_connection:
            self.transport.close()

    def receive(self) -> bytes:
        body, self.body = bytes(self.body), bytearray()
        return body


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [rec.getMessage() for rec in caplog.records
            if rec.name == "modelyard.server" and rec.levelno >= logging.WARNING]


def test_an_incompatible_uvicorn_is_refused_with_one_warning_and_the_stream_used(
        direct_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.MonkeyPatch.context() as mp, \
            caplog.at_level(logging.WARNING, logger="modelyard.server"):
        mp.setattr(httptools_impl, "RequestResponseCycle", RenamedCycle)
        srv = ServerThread(direct_settings)  # the app is built (and checked) here
    # uvicorn's own class is back before the server runs: only the check saw the other one.
    assert _warnings(caplog) == [
        f"direct upload body refused, upload parts use the ordinary stream: uvicorn "
        f"{uvicorn_version()} lacks uvicorn.protocols.http.httptools_impl."
        "RequestResponseCycle.keep_alive (set in __init__)"]
    with srv, httpx.Client(base_url=srv.url, timeout=30, event_hooks=CLIENT_HOOKS) as api:
        run = _new_run(api)
        data = os.urandom(2 * MIB + 10)
        up = _open(api, run, data)
        _put_parts_on_one_connection(srv.port, run, up, data)
        _complete_and_check(api, run, up, data)
    assert len(_warnings(caplog)) == 1


class ReadNowhere:
    """``keep_alive`` still set, but no method reads it any more."""

    def __init__(self, transport: Any, flow: FlowControl) -> None:
        self.transport = transport
        self.flow = flow
        self.disconnected = False
        self.keep_alive = True
        self.waiting_for_100_continue = False
        self.body = bytearray()
        self.response_started = False

    def receive(self) -> bytes:
        return bytes(self.body)


class NoFlowControl:
    def __init__(self, transport: Any, flow: object) -> None:
        self.transport, self.flow, self.disconnected, self.keep_alive = transport, flow, 0, 1
        self.waiting_for_100_continue = self.response_started = False
        self.body = bytearray()

    def send(self) -> bool:
        return bool(self.keep_alive) and bool(self.body)


@pytest.mark.parametrize(("target", "named"), [
    (ReadNowhere, "a read of uvicorn.protocols.http.httptools_impl.RequestResponseCycle."
                  "keep_alive by its other methods"),
    (NoFlowControl, "pause_reading on the type of "
                    "uvicorn.protocols.http.httptools_impl.RequestResponseCycle.flow"),
    (None, "the module uvicorn.protocols.http.httptools_impl"),  # no httptools
])
def test_each_missing_internal_is_named_in_the_one_warning(
        target: type | None, named: str, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.MonkeyPatch.context() as mp, \
            caplog.at_level(logging.WARNING, logger="modelyard.server"):
        if target is None:  # importing the module fails, as without httptools installed
            mp.setitem(sys.modules, httptools_impl.__name__, None)
        else:
            mp.setattr(httptools_impl, "RequestResponseCycle", target)
        (missing,) = direct_body.missing_internals()  # only what is missing
        assert direct_body.direct_body_usable() is False
    (message,) = _warnings(caplog)
    assert missing.startswith(named), missing
    assert message.endswith(f" lacks {missing}") and "\n" not in message, message


def uvicorn_version() -> str:
    import uvicorn

    return str(uvicorn.__version__)


# -- the command line --------------------------------------------------------------------------


@linux_only
def test_the_flag_turns_the_fast_path_on_in_every_worker(tmp_path: Path) -> None:
    """``--direct-upload-body`` with two workers: the settings travel to the worker processes
    as JSON, and every part is taken from the socket (its answer closes the connection)."""
    log_path = tmp_path / "server.log"
    with ServerProcess(db_url=f"sqlite:///{tmp_path / 'my.db'}", artifacts=tmp_path / "art",
                       port=free_port(), log_path=log_path, workers=2,
                       extra_args=["--direct-upload-body"]) as srv, \
            httpx.Client(base_url=srv.url, timeout=30, event_hooks=CLIENT_HOOKS) as api:
        run = _new_run(api)
        data = os.urandom(4 * MIB)
        up = _open(api, run, data)
        for n in (1, 2, 3, 4):
            resp = api.put(r.UPLOAD_PART.url(run_id=run, upload_id=up, part_number=str(n)),
                           content=data[(n - 1) * MIB:n * MIB])
            assert resp.status_code == 200, resp.text
            assert resp.headers["connection"] == "close"
        _complete_and_check(api, run, up, data)
    assert "refused" not in log_path.read_text()  # no worker fell back


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
