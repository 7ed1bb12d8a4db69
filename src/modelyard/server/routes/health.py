from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from modelyard import __version__
from modelyard.server.deps import json
from modelyard.server.openapi import HEALTH_ERRORS, api_doc
from modelyard.wire import responses as out
from modelyard.wire import routes as r

router = APIRouter()


@router.get(r.HEALTH.path, tags=["health"], summary="Liveness and version",
            **api_doc(out.HealthOut, always=HEALTH_ERRORS))
def health() -> Response:
    return json({"status": "ok", "version": __version__})
