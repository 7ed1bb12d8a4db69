"""A client pointed at the API prefix (``--uri http://host:8750/api/v1``) or at something that is
not a modelyard server says that the URI must be the server's base URL, instead of a bare
``Not Found``; and the server's 404 for an unknown route names the route and says the same."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelyard.backend.remote import RemoteBackend
from modelyard.cli.main import app as cli
from modelyard.errors import InvalidArgument, NotFound
from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.mark.parametrize("suffix", ["/api/v1", "/api/v1/", "/API/V1"])
def test_remote_backend_refuses_the_api_prefix(suffix: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        RemoteBackend(f"http://127.0.0.1:8750{suffix}")
    assert caught.value.field == "uri"
    assert "base URL" in caught.value.message
    assert "'http://127.0.0.1:8750'" in caught.value.message
    # Behind a reverse proxy's prefix: the same mistake, the same answer.
    with pytest.raises(InvalidArgument, match="'http://proxy/modelyard'"):
        RemoteBackend("http://proxy/modelyard/api/v1")


@sqlite_only
def test_base_urls_with_a_prefix_still_work(server: Any) -> None:
    backend = RemoteBackend(server.url + "/")
    try:
        assert backend.get_experiment("0").name == "Default"
    finally:
        backend.close()


@sqlite_only
def test_unknown_route_names_it_and_hints_at_the_base_url(server: Any) -> None:
    with httpx.Client(base_url=server.url, event_hooks=CLIENT_HOOKS) as api:
        resp = api.get(f"{r.API}{r.LIST_EXPERIMENTS.path}")  # the prefix twice
        assert resp.status_code == 404
        err = resp.json()["error"]
        assert err["code"] == "NOT_FOUND"
        assert f"GET {r.API}{r.API}/experiments" in err["message"]
        assert "twice" in err["message"] and "base URL" in err["message"]
        other = api.post("/nothing/here", json={}).json()["error"]
        assert "POST /nothing/here" in other["message"] and "base URL" in other["message"]
        assert "twice" not in other["message"]
        # A long path is cut, not echoed whole.
        long = api.get("/" + "x" * 5000).json()["error"]["message"]
        assert len(long) < 600


@sqlite_only
def test_the_cli_says_so(server: Any) -> None:
    result = CliRunner().invoke(cli, ["experiments", "list", "--uri", server.url + "/api/v1"])
    assert result.exit_code != 0
    assert "base URL" in result.stderr and result.stdout == "", result.output
    assert server.url + "'" in result.stderr  # the URI to use instead


class _NotModelyard(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>Not Found</html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotModelyard)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_a_404_from_something_else_hints_at_the_base_url(other_server: str) -> None:
    backend = RemoteBackend(other_server)
    try:
        with pytest.raises(NotFound) as caught:
            backend.get_experiment("0")
    finally:
        backend.close()
    assert caught.value.field == "uri" and "base URL" in caught.value.message
