from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from modelyard import __version__
from modelyard.server.deps import json
from modelyard.wire import routes as r

router = APIRouter()


@router.get(r.HEALTH.path, tags=["health"])
def health() -> Response:
    return json({"status": "ok", "version": __version__})
