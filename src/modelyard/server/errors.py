"""THE error-code -> HTTP status table, and the handlers that render every error the same way.

Error body: ``{"error": {"code": "...", "parent": "..." | null, "message": "...",
"field": "..." | null, "details": [{"message": "...", "field": ...}, ...]}}``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from modelyard.errors import (
    ErrorCode,
    ErrorDetail,
    InvalidArgument,
    MethodNotAllowed,
    ModelyardError,
    NotFound,
    SchemaViolation,
    parent_code,
)
from modelyard.server.headers import SECURITY_HEADERS
from modelyard.wire.routes import API

log = logging.getLogger("modelyard.server")

STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.INVALID_FILTER: 400,
    ErrorCode.UNSAFE_PATH: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.EXPERIMENT_NOT_FOUND: 404,
    ErrorCode.RUN_NOT_FOUND: 404,
    ErrorCode.ARTIFACT_NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PARAM_OVERWRITE: 409,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.SCHEMA_VIOLATION: 422,
    ErrorCode.RANGE_NOT_SATISFIABLE: 416,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.INTEGRITY_FAILURE: 500,
    ErrorCode.SCHEMA_OUTDATED: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
    # Raised by the SDK alone (values its background sender could not store); a server never
    # answers it, but a client rebuilding it from a code gets the same class.
    ErrorCode.LOGGING_REFUSED: 409,
}


def error_response(exc: ModelyardError, *, close: bool = False) -> Response:
    """The one error body, at the status the table gives the error's code. It carries the
    security headers itself: Starlette sends its last-resort 500 from outside every
    middleware. ``close``: end the connection after it (a body left unread, too large or too
    slow, must not be read on)."""
    parent = parent_code(exc)
    body = {"error": {"code": exc.code, "parent": parent, "message": exc.message,
                      "field": exc.field,
                      "details": [{"message": d.message, "field": d.field} for d in exc.details]}}
    headers = dict(SECURITY_HEADERS)
    if close:
        headers["connection"] = "close"
    return Response(orjson.dumps(body), status_code=STATUS.get(exc.code, 500),
                    media_type="application/json", headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    # FastAPI puts where the value was (body, query, path) first; a body field may itself be
    # named "path" (an artifact path), so only that leading marker goes.
    if len(loc) > 1 and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    return ".".join(str(p) for p in loc) or "body"


def validation_response(errors: list[Any]) -> Response:
    """Render pydantic errors: malformed JSON is 400, a wrong field 422, each naming the field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return error_response(InvalidArgument("request body is not valid JSON", field="body"))
    field = _field_of(tuple(first.get("loc", ())))
    message = f"{field}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    details = []
    for e in errors[:20]:
        where = _field_of(tuple(e.get("loc", ())))
        details.append(ErrorDetail(f"{where}: {e.get('msg', 'invalid')}", where))
    return error_response(SchemaViolation(message, field=field,
                                          details=details if len(errors) > 1 else ()))


def no_route_message(method: str, path: str) -> str:
    """The 404 message of a request no route answers: it names the route, and says that
    clients take the server's base URL (a URI ending in /api/v1 doubles the prefix)."""
    shown = path if len(path) <= 200 else path[:200] + "..."
    hint = (f"the REST API is under {API}/ and a client's URI (--uri, MODELYARD_URI, "
            "set_uri) must be the server's base URL, such as http://127.0.0.1:8750, "
            f"without {API}")
    if path.startswith(f"{API}{API}/"):
        hint = f"the path holds {API} twice: {hint}"
    return f"no route {method} {shown}; {hint}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelyardError)
    async def _modelyard(_: Request, exc: ModelyardError) -> Response:
        status = STATUS.get(exc.code, 500)
        if status >= 500:
            log.error("request failed: %s (%s)", exc.message, exc.code)
        return error_response(exc, close=status in (408, 413))

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(request: Request, _: ClientDisconnect) -> Response:
        # An ordinary event (a client stopped, a network broke): one line, no traceback.
        log.info("client disconnected before sending the whole body: %s %s",
                 request.method, request.url.path)
        return error_response(InvalidArgument(
            "the client disconnected before sending the whole body", field="body"), close=True)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> Response:
        return validation_response(list(exc.errors()))

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> Response:
        return validation_response(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:  # no route matched (our own not-founds are ModelyardErrors)
            return error_response(NotFound(no_route_message(request.method, request.url.path)))
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(
                f"{request.method} is not a method of {request.url.path[:200]}",
                field="method"))
        return error_response(InvalidArgument(str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error (a bug): %s", type(exc).__name__)
        return error_response(ModelyardError("internal error; see the server log"))
