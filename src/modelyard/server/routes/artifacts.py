"""Artifact upload (streamed into the blob store) and download (streamed, verified)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from modelyard.server.deps import json, service
from modelyard.wire import routes as r
from modelyard.wire import schemas as w

router = APIRouter(tags=["artifacts"])


def _sync_chunks(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Pull an async request stream from a worker thread, chunk by chunk (constant memory)."""
    async def next_chunk() -> bytes:
        return await stream.__anext__()

    while True:
        try:
            chunk = anyio.from_thread.run(next_chunk)
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


@router.get(r.LIST_ARTIFACTS.path)
def list_artifacts(request: Request, run_id: str, path: str = "") -> Response:
    entries = service(request).list_artifacts(run_id, path)
    return json({"files": [w.artifact_to_json(e) for e in entries]})


@router.put(r.UPLOAD_ARTIFACT.path, status_code=201)
async def upload_artifact(request: Request, run_id: str, path: str) -> Response:
    svc = service(request)
    stream = request.stream().__aiter__()
    entry = await anyio.to_thread.run_sync(
        lambda: svc.put_artifact(run_id, path, _sync_chunks(stream))
    )
    return json(w.artifact_to_json(entry), 201)


@router.get(r.DOWNLOAD_ARTIFACT.path)
def download_artifact(request: Request, run_id: str, path: str) -> Response:
    entry, chunks = service(request).open_artifact(run_id, path)
    headers = {
        "Content-Length": str(entry.size),
        "X-Modelyard-Digest": entry.digest,
        # Never let a browser render an uploaded file in our origin.
        "Content-Disposition": "attachment",
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(chunks, media_type="application/octet-stream", headers=headers)
