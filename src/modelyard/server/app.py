"""The application factory: ``create_app(settings)`` builds everything and keeps it on app.state."""

from __future__ import annotations

import json as _json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelyard import __version__
from modelyard.artifacts.blobs import FsspecBlobStore
from modelyard.artifacts.reaper import REAPER
from modelyard.artifacts.uploads import UploadArea
from modelyard.errors import ErrorCode
from modelyard.server import docs
from modelyard.server.errors import error_response, install_error_handlers
from modelyard.server.openapi import API_DESCRIPTION, install_openapi
from modelyard.server.routes import (
    artifacts,
    experiments,
    health,
    history,
    maintenance,
    runs,
    uploads,
)
from modelyard.settings import Settings
from modelyard.stores.sql import open_sql_stores
from modelyard.tracking.service import TrackingService, now_ms
from modelyard.tracking.uploads import UploadService

SETTINGS_ENV = "MODELYARD_SERVER_SETTINGS"


_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    """Headers that keep browsers from sniffing, framing or running what the API returns."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                # Added once: a route that sets one itself (downloads) must not get it twice.
                headers += [(name, value) for name, value in _SECURITY_HEADERS
                            if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_name(header: str) -> str:
    """The host part of a Host header: ``example.com:8750`` -> ``example.com``,
    ``[::1]:8750`` -> ``[::1]`` (an IPv6 literal keeps its brackets)."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[: end + 1] if end != -1 else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class TrustedHosts:
    """Answer only requests whose Host header names this server (DNS-rebinding protection);
    refuse others with the ordinary error body, field ``host``."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allowed = frozenset(h.lower() for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
            host = Headers(scope=scope).get("host", "")
            if host_name(host) not in self.allowed:
                response = error_response(400, ErrorCode.INVALID_ARGUMENT,
                                          "the Host header does not name this server", "host")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    """Build the API over the database and blob store that ``settings`` names.

    Raises:
        SchemaOutdated: the database needs ``modelyard db upgrade`` first.
    """
    stores = open_sql_stores(settings.db_url)
    blobs = FsspecBlobStore(settings.artifacts_url)
    area = UploadArea(blobs)
    service = TrackingService(
        experiments=stores.experiments,
        runs=stores.runs,
        artifact_index=stores.artifacts,
        maintenance=stores.maintenance,
        blobs=blobs,
        upload_area=area,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        REAPER.drain()  # files let go by the last requests (see artifacts.reaper)
        stores.close()

    # FastAPI's own /docs loads Swagger UI from a CDN; server.docs serves packaged files.
    app = FastAPI(title="modelyard", version=__version__, description=API_DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.stores = stores
    app.state.service = service
    app.state.uploads = UploadService(runs=stores.runs, artifact_index=stores.artifacts,
                                      blobs=blobs, area=area, clock=now_ms)
    install_error_handlers(app)
    for module in (health, experiments, runs, history, artifacts, uploads, maintenance):
        app.include_router(module.router)
    app.include_router(docs.router)
    install_openapi(app)
    app.add_middleware(TrustedHosts, allowed_hosts=list(settings.allowed_hosts))
    app.add_middleware(SecurityHeaders)  # added last: outermost, so even a refusal carries them
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: settings arrive serialised in one variable."""
    data = _json.loads(os.environ[SETTINGS_ENV])
    data["allowed_hosts"] = tuple(data["allowed_hosts"])
    return create_app(Settings(**data))
