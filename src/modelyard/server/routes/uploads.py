"""Resumable multipart uploads: open a session, PUT parts, ask what arrived, complete, abort.

The handlers only parse and stream; ``tracking.uploads.UploadService`` holds the rules, and the
session state lives in the blob store, so any replica can serve any request of an upload.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from modelyard.artifacts.upload_parts import PartWriter
from modelyard.errors import TooLarge
from modelyard.server.deps import json, parse_body
from modelyard.server.direct_body import RawBody, take_over_body
from modelyard.server.openapi import api_doc, binary_body
from modelyard.tracking.uploads import UploadService, UploadState
from modelyard.wire import responses as out
from modelyard.wire import routes as r
from modelyard.wire import schemas as w

router = APIRouter(tags=["uploads"])

HANDOFF_BYTES = 1 << 20  # body bytes gathered on the event loop per hand-off to a thread


def _uploads(request: Request) -> UploadService:
    svc: UploadService = request.app.state.uploads
    return svc


def state_to_json(state: UploadState) -> dict[str, Any]:
    s = state.session
    return {
        "upload_id": s.upload_id, "run_id": s.run_id, "path": s.path, "size": s.size,
        "part_size": s.part_size, "part_count": s.part_count, "digest": s.digest,
        "created_time": s.created_time, "parts": list(state.parts),
        "completed": state.artifact is not None,
        "artifact": None if state.artifact is None else w.artifact_to_json(state.artifact),
    }


@router.post(r.CREATE_UPLOAD.path, summary="Open a resumable multipart upload",
             **api_doc(out.UploadStateOut, status=201, body=w.CreateUploadIn,
                       errors=(404, 409, 413)))
async def create_upload(request: Request, run_id: str) -> Response:
    body = await parse_body(request, w.CreateUploadIn)
    limit: int = request.app.state.settings.max_artifact_bytes
    if body.size > limit:  # refused before any space is set aside for it
        raise TooLarge(f"the upload declares {body.size} bytes; the server's limit for one "
                       f"artifact is {limit} bytes", field="size")
    svc = _uploads(request)
    state = await anyio.to_thread.run_sync(
        lambda: svc.create(run_id, body.path, size=body.size, part_size=body.part_size,
                           digest=body.digest))
    return json(state_to_json(state), 201)


@router.get(r.GET_UPLOAD.path, summary="The parts of an upload received so far",
            **api_doc(out.UploadStateOut, errors=(404,)))
def get_upload(request: Request, run_id: str, upload_id: str) -> Response:
    return json(state_to_json(_uploads(request).status(run_id, upload_id)))


@router.put(r.UPLOAD_PART.path, summary="Upload one part (exact Content-Length)",
            **api_doc(out.PartOut, errors=(404, 409),
                      raw_body=binary_body(description="The part's bytes: exactly part_size "
                                           "bytes (fewer for the last part).")))
async def upload_part(request: Request, run_id: str, upload_id: str,
                      part_number: str) -> Response:
    svc = _uploads(request)
    length = request.headers.get("content-length")
    writer = await anyio.to_thread.run_sync(
        lambda: svc.open_part(run_id, upload_id, part_number, content_length=length))
    direct: bool = request.app.state.direct_upload_body  # opt-in, checked at start-up
    raw = (take_over_body(request)
           if direct and writer.takes_descriptors and not writer.already else None)
    try:
        if raw is not None:  # the fast way: from the socket into the file, in the kernel
            await anyio.to_thread.run_sync(_receive_raw, writer, raw)
            fresh = await anyio.to_thread.run_sync(writer.commit)
            return _acknowledged(writer, fresh)
        pending: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            pending.append(chunk)
            size += len(chunk)
            if size >= HANDOFF_BYTES:
                await anyio.to_thread.run_sync(writer.write, pending)
                pending, size = [], 0
        if pending:
            await anyio.to_thread.run_sync(writer.write, pending)
        fresh = await anyio.to_thread.run_sync(writer.commit)
    except ClientDisconnect:
        # The connection broke mid-part: nothing is acknowledged; nobody reads this answer.
        return Response(status_code=400)
    finally:
        writer.close()
    return _acknowledged(writer, fresh)


def _receive_raw(writer: PartWriter, raw: RawBody) -> None:
    if raw.buffered:
        writer.write([raw.buffered])
    writer.receive_from(raw.sock, raw.deadline)


def _acknowledged(writer: PartWriter, fresh: bool) -> Response:
    return json({"part_number": writer.number, "size": writer.length, "acknowledged": True,
                 "already_had": not fresh})


@router.post(r.COMPLETE_UPLOAD.path, summary="Verify and publish an upload as an artifact",
             **api_doc(out.ArtifactOut, status=201, body=w.CompleteUploadIn,
                       errors=(404, 409)))
async def complete_upload(request: Request, run_id: str, upload_id: str) -> Response:
    body = await parse_body(request, w.CompleteUploadIn)
    svc = _uploads(request)
    entry = await anyio.to_thread.run_sync(
        lambda: svc.complete(run_id, upload_id, digest=body.digest))
    return json(w.artifact_to_json(entry), 201)


@router.delete(r.ABORT_UPLOAD.path, summary="Abort an upload",
               **api_doc(status=204, ok_description="Aborted.", errors=(404, 409)))
def abort_upload(request: Request, run_id: str, upload_id: str) -> Response:
    _uploads(request).abort(run_id, upload_id)
    return Response(status_code=204)
