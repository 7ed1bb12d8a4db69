"""The application factory: ``create_app(settings)`` builds everything and keeps it on app.state."""

from __future__ import annotations

import json as _json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from modelyard import __version__
from modelyard.artifacts.blobs import FsspecBlobStore
from modelyard.artifacts.reaper import REAPER
from modelyard.artifacts.uploads import UploadArea
from modelyard.server import docs
from modelyard.server.direct_body import direct_body_usable
from modelyard.server.edge import EdgeGuard, EdgePolicy
from modelyard.server.errors import install_error_handlers
from modelyard.server.headers import SecurityHeaders
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
    # Opt-in; refused with one warning when uvicorn's internals are not what it reads.
    app.state.direct_upload_body = settings.direct_upload_body and direct_body_usable()
    app.state.stores = stores
    app.state.service = service
    app.state.uploads = UploadService(runs=stores.runs, artifact_index=stores.artifacts,
                                      blobs=blobs, area=area, clock=now_ms)
    install_error_handlers(app)
    for module in (health, experiments, runs, history, artifacts, uploads, maintenance):
        app.include_router(module.router)
    app.include_router(docs.router)
    install_openapi(app)
    app.add_middleware(EdgeGuard, policy=EdgePolicy.from_settings(settings))
    app.add_middleware(SecurityHeaders)  # added last: outermost, so even a refusal carries them
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: settings arrive serialised in one variable."""
    data = _json.loads(os.environ[SETTINGS_ENV])
    for name in ("allowed_hosts", "allowed_origins"):
        data[name] = tuple(data[name])
    return create_app(Settings(**data))
