"""Real servers for the tests: uvicorn in a thread of the test process, and ``modelyard
server`` processes waited for until they answer; and the HTTP client hooks every test client
uses."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from modelyard.settings import Settings
from support.waiting import wait_until


def media_type(request: httpx.Request) -> None:
    """Send what every real client of the API sends: uploads as application/octet-stream,
    every other POST and PATCH as JSON (the server refuses other bodies, ``server.edge``).
    Only where the test did not say: tests of the refusals send what they mean to."""
    if "content-type" in request.headers:
        return
    if request.method == "PUT":
        request.headers["content-type"] = "application/octet-stream"
    elif request.method in ("POST", "PATCH"):
        request.headers["content-type"] = "application/json"


#: ``httpx.Client(..., event_hooks=CLIENT_HOOKS)``: a client that sends media types.
CLIENT_HOOKS = {"request": [media_type]}


def free_port() -> int:
    """A loopback port nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real uvicorn server on a loopback port, in a background thread: the app of
    ``settings``, or ``app`` as given; on ``port``, or a free one."""

    def __init__(self, settings: Settings | None = None, *, app: Any = None,
                 port: int | None = None, log_level: str = "warning") -> None:
        if app is None:
            from modelyard.server.app import create_app

            assert settings is not None, "ServerThread needs settings or an app"
            app = create_app(settings)
        self.port = free_port() if port is None else port
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                log_level=log_level, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _started(self) -> bool:
        if not self.server.started and not self.thread.is_alive():
            raise RuntimeError("test server stopped before it started (see its log above)")
        return bool(self.server.started)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(self._started, timeout=15, what=f"the test server on port {self.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def wait_healthy(url: str, proc: subprocess.Popen[Any], *, timeout: float = 30.0,
                 log: Path | None = None) -> None:
    """Wait until the server process ``proc`` answers ``GET {url}/health`` with 200; fail at
    once if it exits first, saying how (and what ``log`` holds)."""

    def its_log() -> str:
        return f"; its log:\n{log.read_text(errors='replace')[-8000:]}" if log else ""

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with code {proc.returncode}{its_log()}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, timeout=timeout, interval=0.05, what=f"{url}/health to answer 200")
    except AssertionError as exc:
        if proc.poll() is not None:
            raise
        raise AssertionError(f"{exc}{its_log()}") from None
