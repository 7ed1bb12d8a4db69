"""Artifact upload (streamed into the blob store) and download (streamed, verified; one HTTP
byte range on request, for resuming). Multipart uploads are in ``routes/uploads.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from modelyard.errors import RangeNotSatisfiable
from modelyard.server.deps import json, service
from modelyard.server.errors import error_response
from modelyard.server.openapi import BINARY, api_doc, binary_body
from modelyard.wire import responses as out
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


@router.get(r.LIST_ARTIFACTS.path, summary="List a run's artifacts below a folder",
            **api_doc(out.ArtifactListOut, errors=(404,)))
def list_artifacts(request: Request, run_id: str, path: str = "") -> Response:
    entries = service(request).list_artifacts(run_id, path)
    return json({"files": [w.artifact_to_json(e) for e in entries]})


@router.put(r.UPLOAD_ARTIFACT.path, summary="Upload an artifact (streamed body)",
            **api_doc(out.ArtifactOut, status=201, errors=(404, 409),
                      raw_body=binary_body(description="The file's bytes.")))
async def upload_artifact(request: Request, run_id: str, path: str) -> Response:
    svc = service(request)
    stream = request.stream().__aiter__()
    entry = await anyio.to_thread.run_sync(
        lambda: svc.put_artifact(run_id, path, _sync_chunks(stream))
    )
    return json(w.artifact_to_json(entry), 201)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The one byte range a ``Range`` header asks of ``size`` bytes, as (start, end inclusive).

    Returns:
        None when the header is in a unit other than bytes (it is then ignored, RFC 9110).
    Raises:
        RangeNotSatisfiable: malformed, several ranges, or none of it inside the content.
    """
    unit, sep, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        return None
    spec = spec.strip()
    if not sep or "," in spec:
        raise RangeNotSatisfiable("Range must be one byte range: bytes=START-END, "
                                  "bytes=START- or bytes=-SUFFIX", field="Range")
    first, dash, last = spec.partition("-")
    first, last = first.strip(), last.strip()

    def number(text: str) -> int:
        if not text.isascii() or not text.isdigit() or len(text) > 19:
            raise RangeNotSatisfiable(f"Range {header!r} is not a byte range", field="Range")
        return int(text)

    if not dash or (not first and not last):
        raise RangeNotSatisfiable(f"Range {header!r} is not a byte range", field="Range")
    if not first:  # the last N bytes
        suffix = number(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"Range {header!r} selects no bytes of {size}", field="Range")
        return max(0, size - suffix), size - 1
    start = number(first)
    end = number(last) if last else size - 1
    if last and end < start:
        raise RangeNotSatisfiable(f"Range {header!r} ends before it starts", field="Range")
    if start >= size:
        raise RangeNotSatisfiable(f"Range {header!r} starts at or after the end of the "
                                  f"{size} bytes", field="Range")
    return start, min(end, size - 1)


_DOWNLOAD_HEADERS = {
    "X-Modelyard-Digest": {"description": "BLAKE3 of the whole artifact, hex.",
                           "schema": {"type": "string"}},
    "ETag": {"description": "The digest, quoted.", "schema": {"type": "string"}},
    "Accept-Ranges": {"schema": {"type": "string", "const": "bytes"}},
}
_DOWNLOAD = {"application/octet-stream": {"schema": BINARY}}
_PARTIAL = {"description": "The byte range asked for (Range; If-Range names the digest).",
            "content": _DOWNLOAD,
            "headers": {**_DOWNLOAD_HEADERS, "Content-Range": {"schema": {"type": "string"}}}}


@router.get(r.DOWNLOAD_ARTIFACT.path, summary="Download an artifact (one Range: 206)",
            **api_doc(content=_DOWNLOAD, headers=_DOWNLOAD_HEADERS, errors=(404, 416),
                      more={206: _PARTIAL},
                      ok_description="The whole artifact, verified against its digest as it "
                                     "is read."))
def download_artifact(request: Request, run_id: str, path: str) -> Response:
    svc = service(request)
    headers = {
        "X-Modelyard-Digest": "",
        "Accept-Ranges": "bytes",
        # Never let a browser render an uploaded file in our origin.
        "Content-Disposition": "attachment",
        "X-Content-Type-Options": "nosniff",
    }
    wanted = request.headers.get("range")
    if wanted is not None:
        entry = svc.get_artifact(run_id, path)
        headers["X-Modelyard-Digest"] = entry.digest
        headers["ETag"] = f'"{entry.digest}"'
        if_range = request.headers.get("if-range")
        try:
            # If-Range names the content the client holds a part of; other content: all of it.
            span = parse_range(wanted, entry.size) if if_range in (None, headers["ETag"]) \
                else None
        except RangeNotSatisfiable as exc:
            refused = error_response(exc)
            refused.headers["Content-Range"] = f"bytes */{entry.size}"
            return refused
        if span is not None:
            start, end = span
            chunks = svc.open_artifact_range(run_id, path, start=start, length=end - start + 1)
            headers.update({"Content-Length": str(end - start + 1),
                            "Content-Range": f"bytes {start}-{end}/{entry.size}"})
            return StreamingResponse(chunks, status_code=206, headers=headers,
                                     media_type="application/octet-stream")
    entry, stream = svc.open_artifact(run_id, path)
    headers.update({"Content-Length": str(entry.size), "X-Modelyard-Digest": entry.digest,
                    "ETag": f'"{entry.digest}"'})
    return StreamingResponse(stream, media_type="application/octet-stream", headers=headers)
