"""OpenAPI documentation of the routes, which parse their bodies and build their answers
themselves (orjson and pydantic's JSON parser on the hot path, no FastAPI body models).

``api_doc(...)`` gives a route decorator the keyword arguments that document a route's request
body (``wire.schemas``), its success answer (``wire.responses``) and every error status it can
answer, each with the one error body. The schema is documentation: the handlers do not use it,
and ``tests/server/test_openapi_contract.py`` holds it true against real answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel

from modelyard.server.deps import request_schema
from modelyard.wire import routes as r
from modelyard.wire.responses import ErrorOut

API_DESCRIPTION = """\
The modelyard tracking API: experiments, runs, metrics, params, tags and artifacts.

Every route is under `/api/v1`; clients take the server's base URL (such as
`http://127.0.0.1:8750`), not this prefix. Bodies are JSON unless a route says otherwise
(artifact bytes travel as `application/octet-stream`). Metric values are JSON numbers or the
strings `"NaN"`, `"Infinity"` and `"-Infinity"`.

Every error answers `{"error": {"code": "...", "parent": "..." | null, "message": "...",
"field": "..." | null, "details": [...]}}` with a stable code (`parent`: the code of the nearest
more general error, for clients that do not know `code`); each route lists the statuses it can
answer.
"""

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid argument: a malformed value, filter, page token or path, malformed JSON, a "
         "URL that is not UTF-8, or a Host header that does not name this server "
         "(codes INVALID_ARGUMENT, INVALID_FILTER, UNSAFE_PATH).",
    403: "Sent by a web page of another origin, or a CORS preflight (code FORBIDDEN, field "
         "origin).",
    404: "Not found (codes NOT_FOUND, EXPERIMENT_NOT_FOUND, RUN_NOT_FOUND, ARTIFACT_NOT_FOUND).",
    409: "Conflict with the current state (codes ALREADY_EXISTS, CONFLICT, PARAM_OVERWRITE, "
         "INVALID_STATE).",
    408: "The body arrived slower than the server's minimum rate (code REQUEST_TIMEOUT).",
    413: "The body, or the upload it declares, is over the server's limit (code TOO_LARGE).",
    415: "The body's Content-Type is not the one the route takes (code "
         "UNSUPPORTED_MEDIA_TYPE, field content-type).",
    416: "Range not satisfiable (code RANGE_NOT_SATISFIABLE, field Range; Content-Range names "
         "the size).",
    422: "The body or a parameter does not fit the schema (code SCHEMA_VIOLATION, naming the "
         "field; `details` lists each problem when there are several).",
    500: "A bug, or stored bytes that fail their digest (codes INTERNAL, INTEGRITY_FAILURE).",
    503: "The database or blob store is unavailable, or the schema needs `modelyard db "
         "upgrade` (codes UNAVAILABLE, SCHEMA_OUTDATED).",
}

# Every route can answer these: a refused Host header, a bug, the database being unreachable.
ALWAYS = (400, 500, 503)
# What the edge can answer (server.edge): any write, to a foreign Origin; a route that takes
# a body, to its media type, size and rate. Added from the route table.
WRITE_ERRORS = (403,)
BODY_ERRORS = (408, 413, 415)
# ... except the liveness probe, which reads no database.
HEALTH_ERRORS = (400, 500)

BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


def binary_body(media_type: str = "application/octet-stream",
                description: str = "") -> dict[str, Any]:
    """``openapi_extra`` for a raw (streamed) request body."""
    content = {media_type: {"schema": BINARY}}
    return {"requestBody": {"required": True, "content": content, "description": description}}


def api_doc(
    ok: type[BaseModel] | None = None,
    *,
    status: int = 200,
    ok_description: str = "Success.",
    body: type[BaseModel] | None = None,
    body_required: bool | None = None,
    raw_body: dict[str, Any] | None = None,
    content: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
    errors: Iterable[int] = (),
    more: dict[int, dict[str, Any]] | None = None,
    always: Iterable[int] = ALWAYS,
) -> dict[str, Any]:
    """Keyword arguments for ``router.<method>(path, **api_doc(...))``.

    Args:
        ok: the model of the JSON answer (None: ``content`` describes it, or no body).
        status: the success status (also given to the decorator).
        body: the model of the JSON request body; ``body_required`` defaults to whether the
            model has a required field (an empty body reads as ``{}``).
        raw_body: a whole ``openapi_extra`` for a non-JSON body (:func:`binary_body`).
        content: media type -> ``{"schema": ...}`` of a non-JSON (or additional) answer.
        headers: response headers of the success answer, as OpenAPI header objects.
        errors: error statuses beyond ``always`` (:data:`ALWAYS`).
        more: other success answers (status -> OpenAPI response object).
    """
    success: dict[str, Any] = {"description": ok_description}
    if ok is not None:
        success["model"] = ok
    if content is not None:
        success["content"] = content
    if headers is not None:
        success["headers"] = headers
    responses: dict[int, dict[str, Any]] = {status: success, **(more or {})}
    for code in sorted({*always, *errors, *((422,) if body is not None else ())}):
        responses[code] = {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[code]}
    kwargs: dict[str, Any] = {"status_code": status, "responses": responses}
    if ok is None:
        # No JSON model: keep FastAPI from claiming an application/json answer of any shape.
        kwargs["response_class"] = Response
    if body is not None:
        extra = request_schema(body)
        required = body_required if body_required is not None else any(
            f.is_required() for f in body.model_fields.values())
        extra["requestBody"]["required"] = required
        kwargs["openapi_extra"] = extra
    elif raw_body is not None:
        kwargs["openapi_extra"] = raw_body
    return kwargs


# The handlers take ids as plain strings and check them themselves (a malformed one is a 400
# naming the field, as in embedded mode); the document says what they accept.
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "experiment_id": {"type": "string", "pattern": "^[0-9]{1,18}$",
                      "description": "An experiment id: 1-18 digits."},
    "run_id": {"type": "string", "pattern": "^[0-9a-f]{32}$",
               "description": "A run id: 32 lowercase hex digits."},
    "upload_id": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                  "description": "An upload id: 32 lowercase hex digits."},
    "path": {"type": "string", "description": "An artifact path: relative, '/'-separated "
                                              "(slashes stay unencoded)."},
}


def install_openapi(app: FastAPI) -> None:
    """Serve the document FastAPI builds, with the path parameters described
    (:data:`PATH_PARAMETERS`) and less the 422 answers FastAPI adds on its own to every route
    with a parameter: they name FastAPI's validation body, which this server never sends (a
    route that can answer 422 documents it, with the error body, via api_doc)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                              description=app.description)
            for path, operations in doc.get("paths", {}).items():
                for method, operation in operations.items():
                    route = _ROUTES.get((method.upper(), path))
                    for param in operation.get("parameters", ()):
                        if param.get("in") == "path" and param["name"] in PATH_PARAMETERS:
                            described = dict(PATH_PARAMETERS[param["name"]])
                            param["description"] = described.pop("description")
                            param["schema"] = described
                    _add_edge_errors(operation, route)
                    answer = operation.get("responses", {}).get("422", {})
                    schema = answer.get("content", {}).get("application/json", {}).get("schema")
                    if schema == {"$ref": "#/components/schemas/HTTPValidationError"}:
                        del operation["responses"]["422"]
            schemas = doc.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_ROUTES = {(x.method, x.path.replace(":path}", "}")): x for x in r.ALL_ROUTES}


def _add_edge_errors(operation: dict[str, Any], route: r.Route | None) -> None:
    if route is None:
        return
    codes = (*(WRITE_ERRORS if route.method not in ("GET", "HEAD") else ()),
             *(BODY_ERRORS if route.body is not None else ()))
    responses = operation.setdefault("responses", {})
    error = {"$ref": "#/components/schemas/ErrorOut"}
    for code in codes:
        responses.setdefault(str(code), {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": error}}})
    operation["responses"] = dict(sorted(responses.items()))
