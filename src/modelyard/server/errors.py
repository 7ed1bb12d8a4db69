"""THE error-code -> HTTP status table, and the handlers that render every error the same way.

Error body: ``{"error": {"code": "...", "message": "...", "field": "..." | null}}``.
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

from modelyard.errors import ErrorCode, ModelyardError

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
    ErrorCode.INTEGRITY_FAILURE: 500,
    ErrorCode.SCHEMA_OUTDATED: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    body = {"error": {"code": code, "message": message, "field": field}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


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
        return error_response(400, ErrorCode.INVALID_ARGUMENT, "request body is not valid JSON",
                              "body")
    field = _field_of(tuple(first.get("loc", ())))
    message = f"{field}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_response(422, ErrorCode.INVALID_ARGUMENT, message, field)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelyardError)
    async def _modelyard(_: Request, exc: ModelyardError) -> Response:
        status = STATUS.get(exc.code, 500)
        if status >= 500:
            log.error("request failed: %s (%s)", exc.message, exc.code)
        return error_response(status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> Response:
        return validation_response(list(exc.errors()))

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> Response:
        return validation_response(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_ARGUMENT
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error (a bug): %s", type(exc).__name__)
        return error_response(500, ErrorCode.INTERNAL, "internal error; see the server log")
