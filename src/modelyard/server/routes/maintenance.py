"""Garbage collection over REST: the same collection as ``modelyard gc``, run by the server on
its own database and blob store (a dry run unless ``"dry_run": false``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from modelyard.server.deps import json, parse_body, service
from modelyard.server.openapi import api_doc
from modelyard.wire import responses as out
from modelyard.wire import routes as r
from modelyard.wire import schemas as w

router = APIRouter(tags=["maintenance"])


@router.post(r.COLLECT_GARBAGE.path, summary="Collect garbage (a dry run by default)",
             **api_doc(out.GcReportOut, body=w.CollectGarbageIn, errors=(409,)))
async def collect_garbage(request: Request) -> Response:
    body = await parse_body(request, w.CollectGarbageIn)
    report = await run_in_threadpool(
        lambda: service(request).collect_garbage(
            older_than_ms=body.older_than_ms, dry_run=body.dry_run,
            abandoned_after_ms=body.abandoned_after_ms))
    return json(report.to_json())
