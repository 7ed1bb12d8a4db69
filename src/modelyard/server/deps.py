"""Request helpers shared by the route modules."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from modelyard.tracking.service import TrackingService

M = TypeVar("M", bound=BaseModel)


def service(request: Request) -> TrackingService:
    svc: TrackingService = request.app.state.service
    return svc


def json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def read_body(request: Request) -> bytes:
    """The request body (an empty one reads as ``{}``). The edge has checked its media type,
    and meters it as it arrives: past the size limit or too slow, reading it raises
    ``TooLarge`` or ``RequestTimeout`` (``server.edge``, ``server.body_meter``)."""
    return await request.body() or b"{}"


async def parse_body(request: Request, model: type[M]) -> M:
    """Read and validate a JSON body in one pass (pydantic's JSON parser, no dict detour)."""
    return model.model_validate_json(await read_body(request))


def request_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a route that parses its body itself (a fast path)."""
    schema = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    content = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": True, "content": content}}
