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

This reaches into uvicorn's private request-response cycle, so it is opt-in
(``Settings.direct_upload_body``, ``modelyard server --direct-upload-body``) and checked when
the app is built (:func:`direct_body_usable`): a uvicorn whose internals have moved gets the
ordinary stream and one warning, never a write into an attribute uvicorn no longer reads.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import socket
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from modelyard.server.body_meter import BodyMeter

log = logging.getLogger("modelyard.server")

_UVICORN_CYCLE = "uvicorn.protocols.http.httptools_impl"
_CYCLE_CLASS = "RequestResponseCycle"
#: What :func:`take_over_body` reads of a cycle, and what it writes (``body`` both).
CYCLE_READS = ("transport", "waiting_for_100_continue", "disconnected", "response_started",
               "flow", "body")
CYCLE_WRITES = ("body", "keep_alive")


@dataclass(frozen=True, slots=True)
class RawBody:
    """The rest of a request body: ``buffered`` bytes already read, then ``sock``; the body
    must keep to ``deadline`` (bytes received -> ``time.monotonic()``, ``server.body_meter``)."""

    sock: int
    buffered: bytes
    deadline: Callable[[int], float]


def take_over_body(request: Request) -> RawBody | None:
    """Take the body of ``request`` out of the HTTP server's hands, if it can be done safely.

    Call it before anything reads the body, and only when the app was built with
    ``Settings.direct_upload_body`` and :func:`direct_body_usable` passed
    (``app.state.direct_upload_body``).

    Returns:
        None when the ordinary stream must be used; otherwise the socket (non-blocking) and
        the bytes already received. The connection closes after the response.
    """
    meter = getattr(request.receive, "__self__", None)
    if not isinstance(meter, BodyMeter):  # every body is metered (server.edge)
        return None
    cycle: Any = getattr(meter.inner, "__self__", None)
    if type(cycle).__module__ != _UVICORN_CYCLE or type(cycle).__name__ != _CYCLE_CLASS:
        return None  # another server, or uvicorn's h11 protocol
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


def direct_body_usable() -> bool:
    """Whether this uvicorn has every internal :func:`take_over_body` relies on; when it has
    not, one warning (logger ``modelyard.server``) names what is missing.

    Called once when the app is built with ``Settings.direct_upload_body`` on."""
    missing = missing_internals()
    if not missing:
        return True
    log.warning("direct upload body refused, upload parts use the ordinary stream: uvicorn "
                "%s lacks %s", _uvicorn_version(), "; ".join(missing))
    return False


def missing_internals() -> list[str]:
    """What of uvicorn's internals the direct path needs is not where it expects it ([]: all is).

    The cycle object exists only during a request, and its attributes are instance attributes
    (no ``__slots__``, nothing on the class), so nothing can be looked up without building one
    (that needs a live transport and protocol). Instead the class's source is parsed:

    - ``uvicorn.protocols.http.httptools_impl`` imports (so httptools is installed, which is
      the protocol uvicorn's ``--http auto`` picks) and defines ``RequestResponseCycle``;
    - its ``__init__`` assigns ``self.<name>`` for every attribute read or written
      (:data:`CYCLE_READS`, :data:`CYCLE_WRITES`), so each exists on every cycle;
    - each attribute written is also read by another of its methods (``send`` reads
      ``keep_alive``, ``receive`` reads ``body``): a renamed attribute would otherwise take the
      write silently and the next request on the connection would be swallowed;
    - the type ``__init__`` annotates ``flow`` with, looked up in that module, has
      ``pause_reading``.

    An assignment moved to a base class or a helper method fails the check: refused, not guessed.
    At request time :func:`take_over_body` still checks the cycle's class (a server run with
    ``--http h11`` has another) and falls back on any attribute it cannot use.
    """
    where = f"{_UVICORN_CYCLE}.{_CYCLE_CLASS}"
    try:
        module = importlib.import_module(_UVICORN_CYCLE)
    except ImportError as exc:
        return [f"the module {_UVICORN_CYCLE} ({_one_line(str(exc))})"]
    cls = getattr(module, _CYCLE_CLASS, None)
    if not isinstance(cls, type):
        return [f"the class {where}"]
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return [f"readable source of {where} (to find its attributes)"]
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    methods = [] if node is None else [
        m for m in node.body if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)]
    init = next((m for m in methods if m.name == "__init__"), None)
    assigned = set() if init is None else _self_attributes(init, ast.Store)
    read = set().union(*(_self_attributes(m, ast.Load) for m in methods if m is not init))
    missing = [f"{where}.{name} (set in __init__)"
               for name in dict.fromkeys((*CYCLE_READS, *CYCLE_WRITES)) if name not in assigned]
    missing += [f"a read of {where}.{name} by its other methods" for name in CYCLE_WRITES
                if name in assigned and name not in read]
    flow_type = _annotation(cls, "flow", vars(module))
    if not callable(getattr(flow_type, "pause_reading", None)):
        missing.append(f"pause_reading on the type of {where}.flow")
    return missing


def _self_attributes(method: ast.FunctionDef | ast.AsyncFunctionDef,
                     ctx: type[ast.expr_context]) -> set[str]:
    """The names of ``self.<name>`` that ``method`` stores (``ast.Store``) or loads."""
    if not method.args.args:
        return set()
    me = method.args.args[0].arg
    return {n.attr for n in ast.walk(method)
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ctx)
            and isinstance(n.value, ast.Name) and n.value.id == me}


def _annotation(cls: type, parameter: str, namespace: dict[str, Any]) -> object:
    """The type ``cls``'s own ``__init__`` annotates ``parameter`` with, resolved in
    ``namespace``."""
    init = vars(cls).get("__init__")
    if not callable(init):
        return None
    try:
        param = inspect.signature(init).parameters.get(parameter)
    except (TypeError, ValueError):
        return None
    if param is None:
        return None
    annotation = param.annotation
    return namespace.get(annotation) if isinstance(annotation, str) else annotation


def _uvicorn_version() -> str:
    try:
        return str(importlib.import_module("uvicorn").__version__)
    except (ImportError, AttributeError):
        return "(version unknown)"


def _one_line(text: str) -> str:
    return " ".join(text.split())
