"""A request body read straight from the connection's socket, past the HTTP server.

uvicorn hands a request body to the app in pieces through the event loop, copying each piece
several times on the way; for multipart upload parts that, not the disk, set the speed (one
process: about 0.3 s of event-loop CPU per 200 MB, where reading the socket costs 0.1 s). So
for a part, the route asks for the socket itself: uvicorn stops reading the connection, the
body bytes it already holds are handed over, and the rest moves from the socket into the
staging file inside the kernel (``splice``, see ``artifacts.upload_parts``).

uvicorn's parser then never sees the end of that body, so the connection cannot carry another
request: the response closes it (the client opens a new one, on loopback a fraction of a
millisecond). Anything else falls back to the ordinary stream: another server than uvicorn's
httptools protocol, TLS (the socket holds ciphertext), a Unix socket, a chunked body,
``Expect: 100-continue`` (the app would have to answer it), or a body that has begun to be
read.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from modelyard.server.body_meter import BodyMeter

_UVICORN_CYCLE = "uvicorn.protocols.http.httptools_impl"


@dataclass(frozen=True, slots=True)
class RawBody:
    """The rest of a request body: ``buffered`` bytes already read, then ``sock``; the body
    must keep to ``deadline`` (bytes received -> ``time.monotonic()``, ``server.body_meter``)."""

    sock: int
    buffered: bytes
    deadline: Callable[[int], float]


def take_over_body(request: Request) -> RawBody | None:
    """Take the body of ``request`` out of the HTTP server's hands, if it can be done safely.

    Call it before anything reads the body.

    Returns:
        None when the ordinary stream must be used; otherwise the socket (non-blocking) and
        the bytes already received. The connection closes after the response.
    """
    meter = getattr(request.receive, "__self__", None)
    if not isinstance(meter, BodyMeter):  # every body is metered (server.edge)
        return None
    cycle: Any = getattr(meter.inner, "__self__", None)
    if type(cycle).__module__ != _UVICORN_CYCLE:
        return None
    headers = request.headers
    if "transfer-encoding" in headers or "content-length" not in headers:
        return None
    try:
        transport = cycle.transport
        if (transport.get_extra_info("sslcontext") is not None
                or cycle.waiting_for_100_continue or cycle.disconnected
                or cycle.response_started):
            return None
        sock = transport.get_extra_info("socket")
        # TCP only: over a Unix socket splice(2) can block past its non-blocking flag.
        tcp = sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
        fd = sock.fileno() if tcp else None
        flow, body = cycle.flow, cycle.body
    except (AttributeError, OSError, ValueError):  # another uvicorn than we know: leave it
        return None
    if fd is None:
        return None
    flow.pause_reading()
    cycle.body = bytearray()
    cycle.keep_alive = False  # the parser is behind the socket now: close after answering
    return RawBody(fd, bytes(body), meter.deadline)
