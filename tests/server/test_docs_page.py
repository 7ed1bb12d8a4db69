"""Swagger UI at /docs, over real HTTP: the page and every file it loads come from this server
(packaged files, no CDN: it works offline), and only the page's CSP is relaxed, as far as it
needs (scripts and styles from 'self')."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from modelyard.server.docs import DOCS_CSP
from modelyard.wire import routes as r
from support.servers import CLIENT_HOOKS

API_CSP = "default-src 'none'; frame-ancestors 'none'"


class Page(HTMLParser):
    """The URLs an HTML page loads, and whether it has inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("src", "href", "data-openapi-url"):
            if a.get(name):
                self.urls.append(str(a[name]))
        if "style" in a or any(k.startswith("on") for k in a):
            self.inline.append(f"{tag} attributes")
        if tag in ("script", "style"):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in and data.strip():
            self.inline.append(f"inline {self._in}")


def directives(csp: str) -> dict[str, set[str]]:
    out = {}
    for part in csp.split(";"):
        name, *values = part.split()
        out[name] = set(values)
    return out


@pytest.fixture
def api(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, event_hooks=CLIENT_HOOKS) as client:
        yield client


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_docs_page_and_its_files_are_served_locally(api: httpx.Client) -> None:
    resp = api.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["x-content-type-options"] == "nosniff"
    # One CSP header, the docs one: scripts and styles from this server only, nothing inline.
    assert resp.headers.get_list("content-security-policy") == [DOCS_CSP]
    csp = directives(DOCS_CSP)
    assert csp["default-src"] == {"'none'"}
    assert csp["script-src"] == {"'self'"} and csp["style-src"] == {"'self'"}
    assert csp["frame-ancestors"] == {"'none'"}
    assert not any("unsafe" in v or v in ("*", "http:", "https:") for vs in csp.values()
                   for v in vs)

    page = Page()
    page.feed(resp.text)
    assert not page.inline, page.inline  # nothing the CSP would block
    assert not re.search(r"(?i)\b(?:https?:)?//", resp.text), "an external URL in the page"
    assert page.urls, resp.text
    loaded = {}
    for url in page.urls:
        if url.startswith("data:"):
            continue
        assert url.startswith("/"), f"{url}: not a local path"
        got = api.get(url)
        assert got.status_code == 200, (url, got.text[:200])
        loaded[url] = got
    kinds = {u: g.headers["content-type"].split(";")[0] for u, g in loaded.items()}
    scripts = [u for u, k in kinds.items() if k == "text/javascript"]
    assert len(scripts) == 2 and "text/css" in kinds.values(), kinds  # nosniff needs the types
    assert "application/json" in kinds.values()  # the OpenAPI document the page names
    bundle = max(scripts, key=lambda u: len(loaded[u].content))
    assert b"SwaggerUIBundle" in loaded[bundle].content and len(loaded[bundle].content) > 500_000
    init = min(scripts, key=lambda u: len(loaded[u].content))
    assert b"SwaggerUIBundle(" in loaded[init].content
    assert b"validatorUrl: null" in loaded[init].content  # no badge from validator.swagger.io
    assert not re.search(rb"https?://", loaded[init].content)
    for url, got in loaded.items():
        if url != "/openapi.json":  # the API's own policy on everything but the page
            assert got.headers["content-security-policy"] == API_CSP, url


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_relaxed_policy_is_the_docs_page_only(api: httpx.Client) -> None:
    for resp in (api.get(r.HEALTH.path), api.get("/openapi.json"), api.get("/docs/nothing"),
                 api.get(r.LIST_EXPERIMENTS.path), api.get("/docs/", follow_redirects=False),
                 api.get("/docs", headers={"host": "evil.example"})):
        assert resp.headers.get_list("content-security-policy") == [API_CSP], resp.url
    assert api.get("/docs/nothing").status_code == 404
    assert api.get("/docs/../pyproject.toml").status_code == 404
    assert api.get("/docs/%2e%2e/%2e%2e/pyproject.toml").status_code == 404
    # The page is not part of the API it documents.
    assert "/docs" not in api.get("/openapi.json").json()["paths"]
