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


HANDOFF_BYTES = 1 << 20


def _sync_chunks(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Pull an async request stream from a worker thread in ~1 MiB pieces (constant memory).

    The server delivers the body in small chunks; coalescing them on the event loop side means
    one thread hand-off per MiB instead of one per network read.
    """
    done = False

    async def next_piece() -> bytes:
        nonlocal done
        parts: list[bytes] = []
        size = 0
        while size < HANDOFF_BYTES:
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                done = True
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    while not done:
        piece = anyio.from_thread.run(next_piece)
        if piece:
            yield piece


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
